"""The four ways a watchdog runs a function, behind one small interface.

Each mode lives in its own module and is imported only when selected, so a python-mode
cold start never loads subprocess or client code it does not use.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    from watchdog.config import WatchdogConfig
    from watchdog.http11 import Request, Response, StreamResponse

# Called by a mode when the function can no longer run (e.g. http mode's child exited);
# the argument says why. The watchdog then shuts down and exits non-zero.
OnFatal = Callable[[str], None]


class Mode(Protocol):
    """What the server needs from a mode; the server owns timing, limits and probes."""

    @property
    def description(self) -> str:
        """Words for the ready log line, e.g. ``handler=function.handler:handle``."""
        ...

    @property
    def ready(self) -> bool:
        """True once the function can take requests."""
        ...

    async def start(self, on_fatal: OnFatal) -> bool:
        """Get the function ready (import, spawn, wait); return False if it never will be."""
        ...

    async def check_ready(self) -> bool:
        """The readiness answer for ``/_/ready`` (may ask the function, e.g. ``ready_path``)."""
        ...

    async def handle(self, request: Request, start: float) -> Response | StreamResponse:
        """Run one function request, enforcing exec_timeout and max_body_bytes.

        ``start`` is the ``perf_counter()`` at which the watchdog took the request; a mode
        that streams its response sets ``X-Duration-Seconds`` from it before sending headers.
        """
        ...

    async def stop(self) -> None:
        """Stop the function's long-lived child, if any (drain step 4)."""
        ...

    async def close(self) -> None:
        """Release everything else the mode holds (drain step 5)."""
        ...


def create_mode(config: WatchdogConfig) -> Mode:
    """Import and build the mode ``config.mode`` names."""
    if config.mode == "python":
        from watchdog.modes.python import PythonMode

        return PythonMode(config)
    if config.mode == "http":
        from watchdog.modes.http import HttpMode

        return HttpMode(config)
    if config.mode == "fork":
        from watchdog.modes.fork import ForkMode

        return ForkMode(config)
    from watchdog.modes.static import StaticMode

    return StaticMode(config)
