"""HTTP mode: run ``fprocess`` once as a child and reverse-proxy requests to it.

Bodies stream both ways (nothing is buffered whole) over one pooled keep-alive client
session. The function is ready only once the upstream answers (``ready_path`` if set). If the
child exits, the watchdog logs it and exits non-zero so Docker restarts or replaces it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator
from time import perf_counter
from typing import Any

import aiohttp
from yarl import URL

from watchdog.body import too_large
from watchdog.child import Child
from watchdog.config import WatchdogConfig
from watchdog.http11 import Request, Response, StreamResponse
from watchdog.modes import OnFatal
from watchdog.responses import DURATION_HEADER, duration_value, refusal

log = logging.getLogger("watchdog")

# Hop-by-hop headers (RFC 9110 §7.6.1) belong to one connection and are not forwarded.
HOP_BY_HOP = frozenset(
    {
        "connection",
        "keep-alive",
        "proxy-authenticate",
        "proxy-authorization",
        "proxy-connection",
        "te",
        "trailer",
        "transfer-encoding",
        "upgrade",
    }
)
# We answer Expect: 100-continue ourselves; forwarding it would make the upstream wait too.
REQUEST_HOP_BY_HOP = HOP_BY_HOP | {"expect"}
_POLL_FIRST_S = 0.01
_POLL_MAX_S = 0.5
_POLL_REQUEST_TIMEOUT_S = 2.0
_STILL_WAITING_LOG_S = 10.0


class HttpMode:
    """Proxies every function request to the child's HTTP server."""

    def __init__(self, config: WatchdogConfig) -> None:
        self._config = config
        self._child = Child(config.fprocess_argv, config.env, config.prefix_logs)
        self._base = config.upstream_url
        self._ready_url = URL(config.upstream_url + (config.ready_path or "/"))
        self._session: aiohttp.ClientSession | None = None
        self._ready = False
        self._settled = asyncio.Event()  # set once ready, or once it never will be
        self._watcher: asyncio.Task[None] | None = None
        self._exec_timeout_s = config.exec_timeout_s
        self._max_body_bytes = config.max_body_bytes

    @property
    def description(self) -> str:
        return f"upstream={self._base}"

    @property
    def ready(self) -> bool:
        return self._ready

    async def start(self, on_fatal: OnFatal) -> bool:
        self._session = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(limit=self._config.max_inflight, keepalive_timeout=30.0),
            # exec_timeout is enforced per request by us; aiohttp's 5-minute default must not cut
            # long streams.
            timeout=aiohttp.ClientTimeout(total=None),
            # Pass bodies through byte for byte, and never share cookies between callers.
            auto_decompress=False,
            cookie_jar=aiohttp.DummyCookieJar(),
            # Send only the caller's headers, not aiohttp's defaults.
            skip_auto_headers=("User-Agent", "Accept", "Accept-Encoding", "Content-Type"),
        )
        try:
            await self._child.start()
        except OSError as exc:
            log.error("cannot start fprocess %r: %s", self._config.fprocess, exc)
            self._settled.set()
            on_fatal("fprocess could not be started")
            return False
        self._watcher = asyncio.create_task(self._watch_child(on_fatal))
        return await self._wait_for_upstream()

    async def _watch_child(self, on_fatal: OnFatal) -> None:
        code = await self._child.wait()
        self._ready = False
        self._settled.set()
        if not self._child.stopping:
            log.error("fprocess exited with code %d; the watchdog exits too", code)
            on_fatal(f"fprocess exited with code {code}")

    async def _wait_for_upstream(self) -> bool:
        # Backoff from 10 ms: most servers listen within a few hundred ms, and the first
        # request is usually waiting for this.
        delay_s = _POLL_FIRST_S
        began = perf_counter()
        next_log_s = _STILL_WAITING_LOG_S
        while self._child.running:
            if await self._upstream_ready(
                _POLL_REQUEST_TIMEOUT_S, any_status=not self._config.ready_path
            ):
                self._ready = True
                self._settled.set()
                return True
            waited_s = perf_counter() - began
            if waited_s >= next_log_s:
                log.info("still waiting for upstream %s after %.0fs", self._ready_url, waited_s)
                next_log_s *= 2
            await asyncio.sleep(delay_s)
            delay_s = min(delay_s * 2, _POLL_MAX_S)
        return False

    async def _upstream_ready(self, timeout_s: float, any_status: bool) -> bool:
        """Ask the upstream; without ready_path any HTTP answer means it is up."""
        assert self._session is not None
        try:
            async with self._session.get(
                self._ready_url,
                allow_redirects=False,
                timeout=aiohttp.ClientTimeout(total=timeout_s),
            ) as response:
                await response.read()
                return any_status or 200 <= response.status < 300
        except (aiohttp.ClientError, OSError, TimeoutError):
            return False

    async def check_ready(self) -> bool:
        if not self._ready:
            return False
        if not self._config.ready_path:
            return True
        return await self._upstream_ready(
            self._config.read_timeout_s or _POLL_REQUEST_TIMEOUT_S, any_status=False
        )

    async def handle(self, request: Request, start: float) -> Response | StreamResponse:
        if not self._ready:
            refused = await self._wait_ready()
            if refused is not None:
                return refused
        length = request.content_length
        if length is not None and length > self._max_body_bytes:
            return refusal(413, too_large(self._max_body_bytes).message)
        assert self._session is not None
        target = request.target  # as sent (an absolute-form target was reduced to its path)
        data: Any = None
        guard = _BodyGuard(self._max_body_bytes)
        if request.body_exists:
            await request.send_continue()
            # A declared length was checked above; only chunked bodies need counting.
            data = request.stream() if length is not None else guard.stream(request.stream())
        response: StreamResponse | None = None
        deadline = asyncio.timeout(self._exec_timeout_s or None)
        try:
            async with (
                deadline,
                self._session.request(
                    request.method,
                    URL(self._base + target, encoded=True),
                    headers=_forwarded(request.headers, REQUEST_HOP_BY_HOP),
                    data=data,
                    allow_redirects=False,
                ) as upstream,
            ):
                response = StreamResponse(
                    status=upstream.status,
                    reason=upstream.reason,
                    headers=_forwarded(upstream.headers),
                )
                response.headers[DURATION_HEADER] = duration_value(perf_counter() - start)
                await response.prepare(request)
                async for chunk in upstream.content.iter_any():
                    await response.write(chunk)
                await response.write_eof()
                return response
        except TimeoutError:
            if not deadline.expired():
                raise
            # Leaving the `async with` above closed the upstream connection: the upstream
            # sees the request aborted.
            log.warning("exec_timeout %gs reached: upstream request aborted", self._exec_timeout_s)
            if response is None:
                return refusal(
                    504, f"function timed out after exec_timeout ({self._exec_timeout_s:g}s)"
                )
            return _abort(request, response)
        except (aiohttp.ClientError, OSError) as exc:
            if guard.exceeded:
                return refusal(413, too_large(self._max_body_bytes).message)
            if response is None:
                log.warning("upstream request failed: %s: %s", type(exc).__name__, exc)
                return refusal(502, "upstream did not answer")
            # Either side went away mid-stream; the status is already sent.
            return _abort(request, response)

    async def _wait_ready(self) -> Response | None:
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(self._exec_timeout_s or None):
                await self._settled.wait()
        if self._ready:
            return None
        return refusal(503, "function not ready: upstream not answering")

    async def stop(self) -> None:
        await self._child.stop()

    async def close(self) -> None:
        await self._child.close()
        if self._watcher is not None:
            self._watcher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._watcher
        if self._session is not None:
            await self._session.close()


class _BodyGuard:
    """Counts a streamed request body and stops it past max_body_bytes."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.exceeded = False

    async def stream(self, content: AsyncIterator[bytes]) -> AsyncIterator[bytes]:
        size = 0
        async for chunk in content:
            size += len(chunk)
            if size > self.limit:
                self.exceeded = True
                raise too_large(self.limit)
            yield chunk


def _forwarded(headers: Any, drop: frozenset[str] = HOP_BY_HOP) -> list[tuple[str, str]]:
    """``headers`` minus those in ``drop`` and those the Connection header names."""
    connection = headers.get("Connection")
    if connection:
        drop = drop | {name.strip().lower() for name in connection.split(",")}
    return [(name, value) for name, value in headers.items() if name.lower() not in drop]


def _abort(request: Request, response: StreamResponse) -> StreamResponse:
    # Close the client connection without finishing the body: a truncated stream must look
    # broken to the caller, not complete.
    request.force_close()
    return response
