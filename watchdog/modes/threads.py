"""A small pool of daemon threads for blocking handler calls, awaited from the event loop.

Why not ``concurrent.futures.ThreadPoolExecutor``: measured here, its hop (work item,
concurrent Future, ``wrap_future`` chaining) halves the requests per second of a hello-world
sync handler, while a ``SimpleQueue`` plus one ``call_soon_threadsafe`` per result costs
little. And its threads are joined at interpreter exit, so one handler stuck past its
exec_timeout would keep the container from stopping; these threads are daemons.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable
from queue import SimpleQueue
from typing import Any, TypeVar

_T = TypeVar("_T")
_Job = tuple["asyncio.Future[Any]", Callable[..., Any], tuple[Any, ...]]


class ThreadPool:
    """Runs ``fn(*args)`` on up to ``max_threads`` threads, started only when needed."""

    def __init__(self, loop: asyncio.AbstractEventLoop, max_threads: int, name: str) -> None:
        self._loop = loop
        self._max_threads = max_threads
        self._name = name
        self._queue: SimpleQueue[_Job | None] = SimpleQueue()
        self._threads = 0
        # Submitted and not yet reported back; only the loop thread touches it, so no lock.
        self._outstanding = 0

    def submit(self, fn: Callable[..., _T], *args: Any) -> asyncio.Future[_T]:
        """Queue ``fn(*args)``; the future gets its result (ignored if it is already done)."""
        future: asyncio.Future[_T] = self._loop.create_future()
        self._outstanding += 1
        # A thread finishing a job counts as busy until its result reaches the loop, so we may
        # start a thread a moment early; never more than max_threads.
        if self._outstanding > self._threads and self._threads < self._max_threads:
            self._threads += 1
            threading.Thread(
                target=self._work, name=f"{self._name}-{self._threads}", daemon=True
            ).start()
        self._queue.put((future, fn, args))
        return future

    def close(self) -> None:
        """Let idle threads end; a thread still inside a handler ends with the process."""
        for _ in range(self._threads):
            self._queue.put(None)
        self._threads = 0

    def _work(self) -> None:
        get = self._queue.get
        call_soon_threadsafe = self._loop.call_soon_threadsafe
        while (job := get()) is not None:
            future, fn, args = job
            try:
                result = fn(*args)
            except BaseException as exc:  # the handler's problem; the loop thread decides
                if not isinstance(exc, Exception):
                    # SystemExit and friends would stop the event loop if re-raised there.
                    exc = RuntimeError(f"handler raised {type(exc).__name__}")
                outcome: tuple[bool, Any] = (False, exc)
            else:
                outcome = (True, result)
            try:
                call_soon_threadsafe(self._finish, future, outcome)
            except RuntimeError:  # the loop is closed: the process is exiting
                return
            del job, future, fn, args, outcome

    def _finish(self, future: asyncio.Future[Any], outcome: tuple[bool, Any]) -> None:
        self._outstanding -= 1
        if future.done():  # timed out or cancelled: nobody waits for this result any more
            return
        ok, value = outcome
        if ok:
            future.set_result(value)
        else:
            future.set_exception(value)
