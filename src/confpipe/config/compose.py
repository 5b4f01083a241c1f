"""Hydra composes a launch's config once, not twice.

``@hydra.main`` composes the whole config two times per launch: ``Hydra.get_mode`` composes
it (skipping nothing it will later need) only to read ``hydra.mode``, and ``Hydra.run`` (or
``Hydra.multirun``) composes it again. On a fully cached run that second compose is a fifth
of the wall time. ``install(multirun=...)`` makes ``get_mode`` compose with the rules of the
mode the command line asked for and keep the result; the compose that follows takes it
instead of composing again.

``--cfg job --resolve`` shows each ``${step:NAME}`` as NAME's output path (the steps compiled
for it), not as the marker a run resolves it to.

A Ctrl-C or SIGTERM while composing stops the launch: OmegaConf turns the KeyboardInterrupt
into one of its own errors, which would have been retried (Hydra's way) or reported as a
config error, so it is raised again as what it was.

Whenever the shortcut might differ from Hydra's own path, Hydra's code runs unchanged: a
composition error (Hydra's ``get_mode`` is retried, so the error is raised where Hydra
raises it), a config whose ``hydra.mode`` asks for the other mode, verbose Hydra logging, or
a compose with other arguments. The shortcut is a no-op on a Hydra without these methods.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

from confpipe.config import composecache, yamlcache, yamlload
from confpipe.config.refs import showing_paths

__all__ = ["install", "interrupted", "stops_on_interrupt"]

_MODE_OVERRIDE = "hydra.mode="


def install(*, multirun: bool) -> None:
    """Patch this process's Hydra so that a launch composes its config once, its YAML files'
    aliases bounded (``confpipe.config.yamlload``), each file parsed once per content
    (``confpipe.config.yamlcache``), and Ctrl-C or SIGTERM stopping it."""
    yamlload.install()
    yamlcache.install()
    try:
        from hydra._internal.hydra import Hydra
        from hydra.core.utils import configure_log
        from hydra.types import RunMode
    except ImportError:  # another Hydra: keep its own path
        return
    get_mode, compose_config, show_cfg = Hydra.get_mode, Hydra.compose_config, Hydra.show_cfg
    if getattr(get_mode, "_confpipe_once", False):
        return
    wanted = RunMode.MULTIRUN if multirun else RunMode.RUN
    kept: dict[str, Any] = {}

    def get_mode_once(self: Any, config_name: Any, overrides: list[str]) -> Any:
        try:
            cfg = composecache.compose(self, config_name, overrides, wanted, compose_config)
        except Exception as err:
            interrupted(err)
            with stops_on_interrupt():
                return get_mode(self, config_name, overrides)  # Hydra's way, and its errors
        mode = cfg.hydra.mode
        if mode in (None, wanted) and not cfg.hydra.verbose:
            kept.update(key=(config_name, tuple(overrides)), cfg=cfg)
        return mode

    def compose_config_once(
        self: Any, config_name: Any, overrides: list[str], **kwargs: Any
    ) -> Any:
        cfg, key = kept.pop("cfg", None), kept.pop("key", None)
        given = (config_name, tuple(overrides))
        # Hydra may have appended hydra.mode=X after get_mode: the kept config then lacks it
        added = overrides[-1] if overrides and overrides[-1].startswith(_MODE_OVERRIDE) else None
        same_args = (
            kwargs.get("run_mode") == wanted
            and kwargs.get("from_shell", True)
            and kwargs.get("validate_sweep_overrides", True)
        )
        appended = added is not None and key == (config_name, tuple(overrides[:-1]))
        if cfg is None or not same_args or not (key == given or appended):
            with stops_on_interrupt():
                return compose_config(self, config_name, overrides, **kwargs)
        if appended:  # apply it as Hydra would have
            cfg.hydra.mode = wanted
            cfg.hydra.overrides.hydra.append(added)
        if kwargs.get("with_log_configuration"):
            configure_log(cfg.hydra.hydra_logging, cfg.hydra.verbose)
        return cfg

    def show_cfg_with_paths(self: Any, *args: Any, **kwargs: Any) -> None:
        # imported when shown: the compiler (and the step modules it imports) is only
        # needed for --cfg's output paths
        from confpipe.config.compiler import output_paths

        with showing_paths(output_paths):
            show_cfg(self, *args, **kwargs)

    get_mode_once._confpipe_once = True  # type: ignore[attr-defined]
    Hydra.get_mode = get_mode_once  # type: ignore[method-assign]
    Hydra.compose_config = compose_config_once  # type: ignore[method-assign, assignment]
    Hydra.show_cfg = show_cfg_with_paths  # type: ignore[method-assign]


def interrupted(err: BaseException) -> None:
    """Raise KeyboardInterrupt if ``err`` came of one: OmegaConf turns a KeyboardInterrupt
    raised while it builds nodes into a ConfigKeyError, which a retry would then ignore."""
    seen: BaseException | None = err
    while seen is not None:
        if isinstance(seen, KeyboardInterrupt):
            raise KeyboardInterrupt(*seen.args) from None
        seen = seen.__cause__ or seen.__context__


@contextlib.contextmanager
def stops_on_interrupt() -> Iterator[None]:
    """Ctrl-C (and SIGTERM, which the CLI raises as one) during the block stays an interrupt."""
    try:
        yield
    except Exception as err:
        interrupted(err)
        raise
