"""Static mode: serve the files under ``static_path``.

``/`` and directories serve their ``index.html``; there are no directory listings, and paths
that resolve outside the folder (``..``, symlinks) are not found. Responses carry
``Content-Type`` (from the file name), ``Last-Modified``, an ``ETag`` and ``Accept-Ranges``;
``If-None-Match``/``If-Modified-Since`` give 304 and one ``Range: bytes=`` gives 206 (several
ranges get the whole file). Small files are sent in one piece, larger ones streamed, read on
a worker thread.
"""

from __future__ import annotations

import asyncio
import logging
import mimetypes
import os
from email.utils import parsedate_to_datetime
from time import perf_counter
from typing import BinaryIO

from watchdog.config import WatchdogConfig
from watchdog.http11 import Headers, Request, Response, StreamResponse, http_date
from watchdog.modes import OnFatal
from watchdog.responses import DURATION_HEADER, TEXT_CONTENT_TYPE, duration_value

log = logging.getLogger("watchdog")

INDEX = "index.html"
_WHOLE_FILE_BYTES = 256 * 1024  # up to this size a file is read and sent in one piece
_CHUNK_BYTES = 256 * 1024


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

    async def handle(self, request: Request, start: float) -> Response | StreamResponse:
        if request.method not in ("GET", "HEAD"):
            return _text(405, "method not allowed", [("Allow", "GET, HEAD")])
        path = self.resolve(request.path)
        if path is None:
            return _text(404, "not found")
        try:
            # A local file: opening it is as quick as the stat() calls in resolve().
            file = open(path, "rb")  # noqa: ASYNC230 - closed below
        except OSError:
            return _text(404, "not found")
        try:
            return await _send_file(request, file, path, start)
        finally:
            file.close()

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


def _text(status: int, text: str, extra: list[tuple[str, str]] | None = None) -> Response:
    return Response(status, text.encode(), [("Content-Type", TEXT_CONTENT_TYPE), *(extra or [])])


async def _send_file(
    request: Request, file: BinaryIO, path: str, start: float
) -> Response | StreamResponse:
    stat = os.fstat(file.fileno())
    size = stat.st_size
    etag = f'"{stat.st_mtime_ns:x}-{size:x}"'
    validators = [("ETag", etag), ("Last-Modified", http_date(stat.st_mtime))]
    if _not_modified(request, etag, int(stat.st_mtime)):
        return Response(304, b"", validators)
    content_type, encoding = mimetypes.guess_type(path)
    headers = Headers([("Content-Type", content_type or "application/octet-stream")])
    if encoding:
        headers.add("Content-Encoding", encoding)
    for name, value in validators:
        headers.add(name, value)
    headers.add("Accept-Ranges", "bytes")

    status, offset, length = 200, 0, size
    wanted = _range(request, etag, size)
    if isinstance(wanted, str):  # unsatisfiable
        return _text(416, "range not satisfiable", [("Content-Range", f"bytes */{size}")])
    if wanted is not None:
        offset, length = wanted
        status = 206
        headers.add("Content-Range", f"bytes {offset}-{offset + length - 1}/{size}")

    if length <= _WHOLE_FILE_BYTES:
        # For HEAD too: the server sends this body's Content-Length and leaves the body out.
        file.seek(offset)
        return Response(status, file.read(length), headers)

    headers.add("Content-Length", str(length))
    headers[DURATION_HEADER] = duration_value(perf_counter() - start)
    stream = StreamResponse(status, headers=headers)
    await stream.prepare(request)
    if request.method == "HEAD":
        await stream.write_eof()
        return stream
    loop = asyncio.get_running_loop()
    file.seek(offset)
    left = length
    while left:
        chunk = await loop.run_in_executor(None, file.read, min(left, _CHUNK_BYTES))
        if not chunk:  # the file shrank under us: the response cannot be completed
            request.force_close()
            return stream
        left -= len(chunk)
        await stream.write(chunk)
    await stream.write_eof()
    return stream


def _not_modified(request: Request, etag: str, mtime_s: int) -> bool:
    if_none_match = request.headers.get("If-None-Match")
    if if_none_match is not None:
        tags = {tag.strip().removeprefix("W/") for tag in if_none_match.split(",")}
        return "*" in tags or etag in tags
    if_modified_since = request.headers.get("If-Modified-Since")
    if if_modified_since is not None:
        try:
            return mtime_s <= int(parsedate_to_datetime(if_modified_since).timestamp())
        except (TypeError, ValueError, IndexError, OverflowError):
            return False
    return False


def _range(request: Request, etag: str, size: int) -> tuple[int, int] | str | None:
    """(offset, length) for one satisfiable byte range, "unsatisfiable", or None (whole file)."""
    raw = request.headers.get("Range")
    if raw is None or size == 0:
        return None
    if_range = request.headers.get("If-Range")
    if if_range is not None and if_range.strip() != etag:
        return None  # the client's copy is stale: send it all
    unit, _, spec = raw.partition("=")
    if unit.strip().lower() != "bytes" or "," in spec:
        return None
    first, dash, last = spec.strip().partition("-")
    if not dash or not (first.isdigit() or last.isdigit()):
        return None
    if not first:  # the last N bytes
        if not last.isdigit():
            return None
        count = int(last)
        if count == 0:
            return "unsatisfiable"
        count = min(count, size)
        return size - count, count
    if not first.isdigit() or (last and not last.isdigit()):
        return None
    begin = int(first)
    end = min(int(last), size - 1) if last else size - 1
    if begin >= size:
        return "unsatisfiable"
    if end < begin:
        return None
    return begin, end - begin + 1
