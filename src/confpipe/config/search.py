"""Where configs are found: the shipped ``conf/`` folder (``config.yaml``, ``backend/``,
``experiment/``).

In a checkout the folder is the repository's top-level ``conf/``; an installed wheel holds it
as ``confpipe/conf/`` (see pyproject.toml's package-dir).
"""

from __future__ import annotations

from pathlib import Path

_PACKAGE = Path(__file__).resolve().parents[1]  # .../confpipe


def shipped_conf() -> str:
    """The absolute path of confpipe's own config folder."""
    installed = _PACKAGE / "conf"
    if (installed / "config.yaml").is_file():
        return str(installed)
    return str(_PACKAGE.parents[1] / "conf")  # a checkout: src/confpipe -> conf
