"""Static mode: serve the files under ``static_path``.

``/`` and directories serve their ``index.html``; there are no directory listings, and paths
that resolve outside the folder (``..``, symlinks) are not found.
"""

from __future__ import annotations

import logging
import os

from aiohttp import web

from watchdog.config import WatchdogConfig
from watchdog.modes import OnFatal

log = logging.getLogger("watchdog")

INDEX = "index.html"


class StaticMode:
    """Serves a folder; GET and HEAD only."""

    def __init__(self, config: WatchdogConfig) -> None:
        self._root = os.path.realpath(config.static_path)
        self._ready = False

    @property
    def description(self) -> str:
        return f"static_path={self._root}"

    @property
    def ready(self) -> bool:
        return self._ready

    async def start(self, on_fatal: OnFatal) -> bool:
        self._ready = self._root_exists()
        return self._ready

    def _root_exists(self) -> bool:
        if os.path.isdir(self._root):
            return True
        log.error("static_path %s is not a directory; the function stays unready", self._root)
        return False

    async def check_ready(self) -> bool:
        return self._ready

    async def handle(self, request: web.BaseRequest, start: float) -> web.StreamResponse:
        if request.method not in ("GET", "HEAD"):
            return web.Response(
                status=405, text="method not allowed", headers={"Allow": "GET, HEAD"}
            )
        path = self.resolve(request.path)
        if path is None:
            return web.Response(status=404, text="not found")
        return web.FileResponse(path)

    def resolve(self, url_path: str) -> str | None:
        """The file a URL path names, or None if there is none inside the folder."""
        if "\x00" in url_path:
            return None
        candidate = os.path.realpath(os.path.join(self._root, url_path.lstrip("/")))
        if candidate != self._root and not candidate.startswith(self._root + os.sep):
            return None  # escaped the folder: .. or a symlink pointing outside
        if os.path.isdir(candidate):
            candidate = os.path.join(candidate, INDEX)
        return candidate if os.path.isfile(candidate) else None

    async def stop(self) -> None:
        """Nothing to stop."""

    async def close(self) -> None:
        """Nothing held."""
