"""The watchdog's HTTP front and its lifetime: listen, start the mode, serve, drain, exit.

The front answers ``/_/health`` and ``/_/ready`` itself and wraps every other request with
the in-flight limit, ``X-Duration-Seconds`` and metrics before handing it to the mode. Both
ports are served by our own small HTTP/1.1 server (``watchdog.httpserver``), for every mode:
no aiohttp on the start-up path (importing ``aiohttp.web`` took most of a cold start).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import time
from collections.abc import Callable
from contextlib import AsyncExitStack
from time import perf_counter

from watchdog.config import WatchdogConfig
from watchdog.drain import Drain, StopRequest
from watchdog.http11 import Headers, Request, Response, StreamResponse
from watchdog.httpserver import HttpServer
from watchdog.metrics import CONTENT_TYPE as METRICS_CONTENT_TYPE
from watchdog.metrics import Metrics
from watchdog.modes import Mode, create_mode
from watchdog.responses import (
    DURATION_HEADER,
    ORIGIN_HEADER,
    ORIGIN_VALUE,
    TEXT_CONTENT_TYPE,
    duration_value,
    refusal,
    text_response,
)

log = logging.getLogger("watchdog")

HEALTH_PATH = "/_/health"
READY_PATH = "/_/ready"


class Watchdog:
    """The request handler for the function port."""

    def __init__(self, config: WatchdogConfig, mode: Mode) -> None:
        self._mode = mode
        self._handle = mode.handle
        self._max_inflight = config.max_inflight
        self._in_flight = 0
        self._draining = False
        self._idle: asyncio.Event | None = None  # exists only while draining
        self.metrics = Metrics(lambda: self._in_flight)
        self._observe = self.metrics.observe
        self._busy_text = f"too many requests in flight (max_inflight={config.max_inflight})"

    @property
    def in_flight(self) -> int:
        return self._in_flight

    async def __call__(self, request: Request) -> Response | StreamResponse:
        # raw_path is the path as sent: cheaper than the percent-decoded one.
        if request.raw_path.startswith("/_/"):
            path = request.path
            if path == HEALTH_PATH:
                return self._health()
            if path == READY_PATH:
                return await self._ready()
            # Any other /_/ path belongs to the function.
        if self._max_inflight and self._in_flight >= self._max_inflight:
            return self._refuse_busy(request)
        self._in_flight += 1
        start = perf_counter()
        try:
            response = await self._handle(request, start)
        except Exception as exc:
            # A bug in a mode is logged here and answered like any other failure.
            log.error("internal error handling a request: %r", exc, exc_info=exc)
            response = refusal(500, "watchdog internal error")
        finally:
            self._in_flight -= 1
            if self._idle is not None and not self._in_flight:
                self._idle.set()
        duration_s = perf_counter() - start
        if not response.prepared:  # a streamed response stamped its own header
            response.headers[DURATION_HEADER] = duration_value(duration_s)
        self._observe(response.status, request.method, duration_s)
        return response

    def _refuse_busy(self, request: Request) -> Response:
        response = Response(
            429,
            self._busy_text.encode(),
            Headers(
                [
                    ("Content-Type", TEXT_CONTENT_TYPE),
                    (ORIGIN_HEADER, ORIGIN_VALUE),
                    (DURATION_HEADER, duration_value(0.0)),
                ]
            ),
        )
        self._observe(429, request.method, 0.0)
        return response

    def _health(self) -> Response:
        if self._draining:
            return text_response(503, "draining")
        return text_response(200, "OK")

    async def _ready(self) -> Response:
        if self._draining:
            return text_response(503, "draining")
        if not self._mode.ready:
            return text_response(503, "not ready")
        if self._max_inflight and self._in_flight >= self._max_inflight:
            return text_response(429, "busy")
        if not await self._mode.check_ready():
            return text_response(503, "not ready")
        return text_response(200, "OK")

    def mark_draining(self) -> None:
        self._draining = True

    async def wait_idle(self, timeout_s: float) -> bool:
        """Wait until nothing is in flight; False if ``timeout_s`` passed first."""
        self._idle = asyncio.Event()
        if not self._in_flight:
            return True
        try:
            async with asyncio.timeout(timeout_s):
                await self._idle.wait()
        except TimeoutError:
            return False
        return True

    async def serve_metrics(self, request: Request) -> Response:
        """The request handler for the metrics port."""
        if request.path != "/metrics":
            return text_response(404, "not found; metrics are at /metrics")
        return Response(
            200,
            self.metrics.render().encode(),
            Headers([("Content-Type", METRICS_CONTENT_TYPE)]),
        )


async def serve(config: WatchdogConfig, started_at: float) -> int:
    """Run the watchdog until it is told to stop; return the process exit status."""
    loop = asyncio.get_running_loop()
    mode = create_mode(config)
    front = Watchdog(config, mode)
    stop = StopRequest()
    async with AsyncExitStack() as resources:
        resources.push_async_callback(mode.close)
        # No per-request logging, and bodies reach the function (or the upstream) exactly as
        # sent (no decompression): max_body_bytes counts real bytes.
        function_port = HttpServer(front, config.read_timeout_s, "function")
        metrics_port = HttpServer(front.serve_metrics, config.read_timeout_s, "metrics")
        try:
            port = await function_port.start(config.port)
            resources.push_async_callback(function_port.close)
            bound_metrics_port = await metrics_port.start(config.metrics_port)
            resources.push_async_callback(metrics_port.close)
        except OSError as exc:
            log.error("cannot listen: %s", exc)
            return 1
        log.info("listening port=%d metrics_port=%d mode=%s", port, bound_metrics_port, config.mode)

        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(signum, stop.request, signal.Signals(signum).name)
            resources.callback(loop.remove_signal_handler, signum)

        def on_fatal(reason: str) -> None:
            stop.request(reason, exit_code=1, urgent=True)

        starting = asyncio.create_task(_start_mode(config, mode, on_fatal, started_at))
        resources.push_async_callback(_cancel, starting)

        await stop.wait()
        await Drain(config, front, function_port, mode, resources).run(stop)
    return stop.exit_code


async def _start_mode(
    config: WatchdogConfig, mode: Mode, on_fatal: Callable[[str], None], started_at: float
) -> None:
    try:
        ready = await mode.start(on_fatal)
    except Exception as exc:
        log.error("mode %s failed to start: %s", config.mode, exc, exc_info=exc)
        on_fatal(f"mode {config.mode} failed to start")
        return
    if ready:
        log.info(
            "ready mode=%s %s in %d ms",
            config.mode,
            mode.description,
            (time.perf_counter() - started_at) * 1000,
        )


async def _cancel(task: asyncio.Task[None]) -> None:
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task


def run(config: WatchdogConfig, started_at: float) -> int:
    """Run ``serve`` on uvloop when it is installed (it is optional), else on asyncio's loop."""
    try:
        import uvloop
    except ImportError:
        return asyncio.run(serve(config, started_at))
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        return runner.run(serve(config, started_at))
