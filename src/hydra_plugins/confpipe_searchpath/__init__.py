"""Registers confpipe's search-path plugin with Hydra: a user's project ``./conf`` is searched
without ``--config-dir`` (see ``confpipe.config.search``)."""

from hydra.core.config_search_path import ConfigSearchPath
from hydra.plugins.search_path_plugin import SearchPathPlugin

from confpipe.config.search import add_project_conf

__all__ = ["ConfpipeSearchPath"]


class ConfpipeSearchPath(SearchPathPlugin):
    """Adds the working folder's ``./conf`` to confpipe's (and only confpipe's) search path."""

    def manipulate_search_path(self, search_path: ConfigSearchPath) -> None:
        add_project_conf(search_path)
