"""Where configs are found: confpipe's own ``conf/``, then the user's project ``./conf/``.

confpipe's folder (``config.yaml``, ``backend/``, ``experiment/``) is the repository's
top-level ``conf/`` in a checkout, and ``confpipe/conf/`` in an installed wheel (see
pyproject.toml's package-dir). Run inside a user's project, ``python -m confpipe`` also
searches that project's ``./conf/`` (its ``experiment/*.yaml`` and ``backend/*.yaml``), as if
it were given with ``--config-dir``: ``add_project_conf`` is called by Hydra through the
search-path plugin ``hydra_plugins.confpipe_searchpath``. ``--config-dir`` and
``hydra.searchpath`` add folders after it, as Hydra orders them. Where two folders hold a
config of the same name, the first on the search path wins: confpipe's own, then the
project's.
"""

from __future__ import annotations

import os
from pathlib import Path

from hydra.core.config_search_path import ConfigSearchPath

PROJECT = "confpipe project (./conf)"  # the provider name Hydra shows for the project folder
_PACKAGE = Path(__file__).resolve().parents[1]  # .../confpipe


def shipped_conf() -> str:
    """The absolute path of confpipe's own config folder."""
    installed = _PACKAGE / "conf"
    if (installed / "config.yaml").is_file():
        return str(installed)
    return str(_PACKAGE.parents[1] / "conf")  # a checkout: src/confpipe -> conf


def project_conf(folder: Path) -> Path | None:
    """``folder/conf`` if it is a config folder other than confpipe's own, else None."""
    conf = folder / "conf"
    if not conf.is_dir() or _same(conf, shipped_conf()):
        return None
    return conf.resolve()


def add_project_conf(search_path: ConfigSearchPath) -> None:
    """Put the working folder's ``./conf`` on confpipe's search path (other Hydra apps in the
    same environment are left alone: their main folder is not confpipe's)."""
    ours = any(
        element.provider == "main" and _same(element.path, shipped_conf())
        for element in search_path.get_path()
    )
    found = project_conf(Path.cwd()) if ours else None
    if found is not None:
        search_path.append(PROJECT, f"file://{found}")


def _same(path: str | Path, other: str) -> bool:
    text = str(path).removeprefix("file://")
    try:
        return os.path.samefile(text, other)
    except OSError:
        return False
