"""Registers confpipe's launcher (``hydra/launcher=confpipe``) and sweeper
(``hydra/sweeper=confpipe``) with Hydra.

Hydra finds plugins by importing the modules of the ``hydra_plugins`` namespace package and
instantiates only classes defined there, so these thin subclasses are the plugins; the
launcher itself lives in ``confpipe.sweep``.
"""

from collections.abc import Sequence
from dataclasses import dataclass

from hydra._internal.core_plugins.basic_sweeper import BasicSweeper, BasicSweeperConf
from hydra.core.config_store import ConfigStore

from confpipe import sweep

__all__ = ["ConfpipeLauncher", "ConfpipeLauncherConf", "ConfpipeSweeper", "ConfpipeSweeperConf"]


class ConfpipeLauncher(sweep.ConfpipeLauncher):
    """confpipe.sweep.ConfpipeLauncher, where Hydra accepts plugins."""


class ConfpipeSweeper(BasicSweeper):
    """Hydra's basic sweeper without its up-front compose of every point (~60 ms each: a
    minute for 1,000 points); the confpipe launcher builds and checks every point anyway,
    before anything runs."""

    def validate_batch_is_legal(self, batch: Sequence[Sequence[str]]) -> None:
        return None


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
