"""Writes held back to the end of the event loop's round, then made together.

Why: a write to a local socket wakes the process reading it, which on a small host often
preempts the writer (the scheduler favours the woken task). Writing each request or answer as
soon as it is ready wakes the replica (or the caller) about once per request, and each wake-up
finds one request to serve. Measured here (2 cores, wrk -c50): behind the gateway the replica
switched context once per request and spent 80-100 µs of CPU on each, against 40 µs with the
same load sent straight to its address; with the writes of a round made together after its
callbacks, a third as many switches and 60-75 µs, and the gateway's own CPU per request fell
by a fifth.
"""

from __future__ import annotations

import asyncio
import logging
import weakref
from typing import Protocol

log = logging.getLogger("localfaas.gateway")


class Flushable(Protocol):
    def flush(self) -> None: ...


class WriteBatch:
    """Who has writes held; `flush`es them once the loop has run its ready callbacks."""

    __slots__ = ("_held", "_loop", "_scheduled")

    @classmethod
    def of(cls, loop: asyncio.AbstractEventLoop) -> WriteBatch:
        """The loop's batch, shared by everyone writing on it (one flush per round)."""
        batch = _BATCHES.get(loop)
        if batch is None:
            batch = _BATCHES[loop] = cls(loop)
        return batch

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        # Weakly: the batch is kept per loop in a WeakKeyDictionary, and must not keep it.
        self._loop = weakref.ref(loop)
        self._held: list[Flushable] = []
        self._scheduled = False

    def add(self, writer: Flushable) -> None:
        """``writer`` holds a write: it is flushed at the end of this round (call once per
        write held, on the first one)."""
        self._held.append(writer)
        if not self._scheduled:
            loop = self._loop()
            assert loop is not None
            self._scheduled = True
            loop.call_soon(self._flush)

    def _flush(self) -> None:
        held, self._held = self._held, []
        self._scheduled = False
        for writer in held:
            try:
                writer.flush()
            except Exception:  # one writer's trouble must not hold back the others' writes
                log.exception("flushing %r failed", writer)


_BATCHES: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, WriteBatch] = (
    weakref.WeakKeyDictionary()
)
