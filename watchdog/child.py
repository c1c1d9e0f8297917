"""The long-lived child process of http mode: started once, logged, watched, stopped.

The child gets its own session (process group), so stopping it reaches everything it
started: SIGTERM to the group, then SIGKILL after a grace period.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import sys
from collections.abc import Mapping

from watchdog.logs import relay_lines

log = logging.getLogger("watchdog")

STOP_GRACE_S = 5.0  # between SIGTERM and SIGKILL
_RELAY_FINISH_S = 1.0  # grandchildren can hold our pipes open after the child exits


class Child:
    """One child process whose stdout and stderr are relayed to ours, line by line."""

    def __init__(self, argv: list[str], env: Mapping[str, str], prefix_logs: bool) -> None:
        self._argv = argv
        self._env = dict(env)
        self._prefix_logs = prefix_logs
        self._process: asyncio.subprocess.Process | None = None
        self._relays: list[asyncio.Task[None]] = []
        self.stopping = False  # set before we signal it, so its exit is not a surprise

    @property
    def pid(self) -> int | None:
        return None if self._process is None else self._process.pid

    @property
    def running(self) -> bool:
        return self._process is not None and self._process.returncode is None

    async def start(self) -> None:
        """Start the child; raises OSError when the command cannot be run."""
        process = await asyncio.create_subprocess_exec(
            *self._argv,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
            env=self._env,
            start_new_session=True,
        )
        self._process = process
        assert process.stdout is not None and process.stderr is not None
        out_prefix, err_prefix = (b"stdout: ", b"stderr: ") if self._prefix_logs else (b"", b"")
        self._relays = [
            asyncio.create_task(relay_lines(process.stdout, sys.stdout.buffer, out_prefix)),
            asyncio.create_task(relay_lines(process.stderr, sys.stderr.buffer, err_prefix)),
        ]
        log.info("started fprocess pid=%d: %s", process.pid, " ".join(self._argv))

    async def wait(self) -> int:
        """Wait for the child to exit (and its output to be relayed); return its exit code."""
        assert self._process is not None
        code = await self._process.wait()
        await self._finish_relays()
        return code

    async def stop(self, grace_s: float = STOP_GRACE_S) -> None:
        """SIGTERM the child's process group, SIGKILL it after ``grace_s``; wait for exit."""
        process = self._process
        if process is None or process.returncode is not None:
            return
        self.stopping = True
        log.info("stopping fprocess pid=%d (SIGTERM)", process.pid)
        _signal_group(process.pid, signal.SIGTERM)
        try:
            async with asyncio.timeout(grace_s):
                code = await process.wait()
        except TimeoutError:
            log.warning("fprocess pid=%d still running after %gs: SIGKILL", process.pid, grace_s)
            _signal_group(process.pid, signal.SIGKILL)
            code = await process.wait()
        # Anything the child left behind in its group goes too.
        _signal_group(process.pid, signal.SIGKILL)
        await self._finish_relays()
        log.info("fprocess pid=%d exited with code %d", process.pid, code)

    async def close(self) -> None:
        """Last resort on the way out: nothing of the child may outlive the watchdog."""
        if self._process is not None and self._process.returncode is None:
            self.stopping = True
            _signal_group(self._process.pid, signal.SIGKILL)
            await self._process.wait()
        await self._finish_relays()

    async def _finish_relays(self) -> None:
        if not self._relays:
            return
        _, pending = await asyncio.wait(self._relays, timeout=_RELAY_FINISH_S)
        for task in pending:
            task.cancel()
        for task in pending:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._relays = []


def _signal_group(pgid: int, signum: signal.Signals) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, signum)
