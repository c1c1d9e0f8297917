"""How the watchdog stops: a stop request, and the drain procedure that follows it.

SIGTERM (and SIGINT) start a graceful drain; a fatal error (the function's child died)
starts an urgent one that skips the grace interval and makes the process exit non-zero.
"""

from __future__ import annotations

import asyncio
import logging
import time
from contextlib import AsyncExitStack
from typing import Protocol

from watchdog.config import WatchdogConfig
from watchdog.modes import Mode

log = logging.getLogger("watchdog")


class StopRequest:
    """The first reason to stop; later ones are logged and otherwise ignored."""

    def __init__(self) -> None:
        self._requested = asyncio.Event()
        self.reason = ""
        self.exit_code = 0
        self.urgent = False

    def request(self, reason: str, exit_code: int = 0, urgent: bool = False) -> None:
        if self._requested.is_set():
            log.info("%s received while stopping (%s); carrying on", reason, self.reason)
            return
        self.reason = reason
        self.exit_code = exit_code
        self.urgent = urgent
        self._requested.set()

    async def wait(self) -> None:
        await self._requested.wait()


class Front(Protocol):
    """The request side as the drain sees it."""

    @property
    def in_flight(self) -> int: ...

    def mark_draining(self) -> None: ...

    async def wait_idle(self, timeout_s: float) -> bool: ...


class Listener(Protocol):
    async def stop_accepting(self) -> None: ...


class Drain:
    """The shutdown procedure; ``run`` is the whole of it, in order."""

    def __init__(
        self,
        config: WatchdogConfig,
        front: Front,
        listener: Listener,
        mode: Mode,
        resources: AsyncExitStack,
    ) -> None:
        self._config = config
        self._front = front
        self._listener = listener
        self._mode = mode
        self._resources = resources

    async def run(self, stop: StopRequest) -> None:
        began = time.perf_counter()
        config = self._config

        # 1. Mark unready: /_/ready and /_/health answer 503 from now on, so whoever routes to
        #    this replica stops sending new work.
        self._front.mark_draining()
        log.info("draining: %s; unready now, %d in flight", stop.reason, self._front.in_flight)

        # 2. Keep serving for one healthcheck_interval: routers poll readiness, and requests
        #    they send before they notice must still succeed. Skipped when the function is
        #    already gone.
        if not stop.urgent and config.healthcheck_interval_s > 0:
            await asyncio.sleep(config.healthcheck_interval_s)

        # 3. Stop accepting connections and let requests in flight finish, up to write_timeout.
        await self._listener.stop_accepting()
        in_flight = self._front.in_flight
        if in_flight:
            log.info("draining: %d in flight, waiting up to %gs", in_flight, config.write_timeout_s)
            if not await self._front.wait_idle(config.write_timeout_s):
                log.warning(
                    "draining: write_timeout %gs passed with %d in flight; closing them",
                    config.write_timeout_s,
                    self._front.in_flight,
                )

        # 4. Only now stop the function's child (SIGTERM to its process group, SIGKILL after a
        #    grace period). Signalling it at the start of the drain, as of-watchdog does, would
        #    fail the very requests steps 2 and 3 wait for.
        await self._mode.stop()

        # 5. Close listeners, connections, sessions and pools, in reverse order of creation.
        await self._resources.aclose()
        log.info("stopped after %d ms", (time.perf_counter() - began) * 1000)
