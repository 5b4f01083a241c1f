"""Registers confpipe's launcher (``hydra/launcher=confpipe``) and sweeper
(``hydra/sweeper=confpipe``) with Hydra.

Hydra finds plugins by importing the modules of the ``hydra_plugins`` namespace package and
instantiates only classes defined there, so these thin subclasses are the plugins; the
launcher itself lives in ``confpipe.cli.sweep``.
"""

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from hydra._internal.core_plugins.basic_sweeper import BasicSweeper, BasicSweeperConf
from hydra.core.config_store import ConfigStore
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.core.utils import JobReturn
from omegaconf import OmegaConf

from confpipe.cli import sweep, sweepend
from confpipe.errors import ConfigError

__all__ = ["ConfpipeLauncher", "ConfpipeLauncherConf", "ConfpipeSweeper", "ConfpipeSweeperConf"]


class ConfpipeLauncher(sweep.ConfpipeLauncher):
    """confpipe.cli.sweep.ConfpipeLauncher, where Hydra accepts plugins."""


class ConfpipeSweeper(BasicSweeper):
    """Hydra's basic sweeper without its up-front compose of every point (~60 ms each: a
    minute for 1,000 points); the confpipe launcher builds and checks every point anyway,
    before anything runs. A failed point doesn't stop the sweep (nor print Hydra's "Error
    executing job" for the first one only): every batch runs, and the CLI ends with one
    line naming every failed point. An empty sweep is a config error, not a silent exit 0."""

    def validate_batch_is_legal(self, batch: Sequence[Sequence[str]]) -> None:
        return None

    def sweep(self, arguments: list[str]) -> Any:
        """The basic sweep; then an empty one is an error, and its temp folder is removed."""
        assert self.config is not None
        folder = Path(str(self.config.hydra.sweep.dir))
        try:
            returns = self._batches(arguments)
        finally:
            sweep.tidy_sweep_dir(folder)
        if not any(returns):
            empty = ", ".join(self._empty(arguments)) or "the sweep"
            raise ConfigError(f"-m: {empty} has no values, so the sweep has no points to run")
        return returns

    def _batches(self, arguments: list[str]) -> list[Sequence[JobReturn]]:
        """BasicSweeper.sweep, but a failed point is noted (``confpipe.cli.sweep.
        note_failed``), not raised: Hydra's sweeper raises the first one after its batch, so
        later batches never run and the end names only that point."""
        assert self.config is not None and self.launcher is not None
        assert self.hydra_context is not None
        parser = OverridesParser.create(config_loader=self.hydra_context.config_loader)
        overrides = parser.parse_overrides([*self._parse_config(), *arguments])
        self.overrides = self.split_arguments(overrides, self.max_batch_size)
        folder = Path(str(self.config.hydra.sweep.dir))
        folder.mkdir(parents=True, exist_ok=True)
        OmegaConf.save(self.config, folder / "multirun.yaml")  # as Hydra's sweepers do
        returns: list[Sequence[JobReturn]] = []
        first = 0
        while not self.is_done():
            batch = self.get_job_batch()
            done = self.launcher.launch(batch, initial_job_idx=first)
            sweepend.note_failed(done)
            first += len(batch)
            returns.append(done)
        return returns

    def _empty(self, arguments: list[str]) -> list[str]:
        """The sweep overrides (command line or ``hydra.sweeper.params``) with no values."""
        assert self.hydra_context is not None
        parser = OverridesParser.create(config_loader=self.hydra_context.config_loader)
        found = parser.parse_overrides([*self._parse_config(), *arguments])
        return [
            str(o.input_line)
            for o in found
            if o.is_sweep_override() and not list(o.sweep_string_iterator())
        ]


@dataclass
class ConfpipeLauncherConf:
    """``hydra/launcher=confpipe``: no settings; the run options come from the config."""

    _target_: str = "hydra_plugins.confpipe_launcher.ConfpipeLauncher"


@dataclass
class ConfpipeSweeperConf(BasicSweeperConf):
    """``hydra/sweeper=confpipe``: the basic sweeper's settings (max_batch_size, params)."""

    _target_: str = "hydra_plugins.confpipe_launcher.ConfpipeSweeper"


ConfigStore.instance().store(
    group="hydra/launcher", name="confpipe", node=ConfpipeLauncherConf, provider="confpipe"
)
ConfigStore.instance().store(
    group="hydra/sweeper", name="confpipe", node=ConfpipeSweeperConf, provider="confpipe"
)
