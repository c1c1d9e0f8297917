"""Python mode: call an OpenFaaS python3-http ``handle(event, context)`` in process.

No second HTTP hop and no WSGI server: the handler module is imported once, ``async def``
handlers run on the event loop and plain ``def`` handlers on a thread pool sized to
max_inflight.
"""

from __future__ import annotations

import asyncio
import importlib
import inspect
import logging
import os
import sys
from collections.abc import Callable
from typing import Any

from watchdog.body import BodyError
from watchdog.config import WatchdogConfig
from watchdog.http11 import Headers, Query, Request, Response
from watchdog.modes import OnFatal
from watchdog.modes.python_result import ResultError, to_response
from watchdog.modes.threads import ThreadPool
from watchdog.responses import refusal

log = logging.getLogger("watchdog")

# Threads for sync handlers when max_inflight is 0 (unlimited): enough for blocking handlers,
# few enough that GIL contention does not eat the throughput.
UNLIMITED_THREADS = 100

Handler = Callable[["Event", "Context"], Any]


class Event:
    """The request as python3-http handlers see it: body, headers, method, query, path.

    ``headers`` is case-insensitive (``get`` gives the first value, ``getall``/``getlist``
    every one); ``query`` gives the first value of a key (as Flask's ``request.args``) and
    every value through ``getall``/``getlist``; ``path`` is percent-decoded.
    """

    __slots__ = ("_request", "body")

    def __init__(self, body: bytes, request: Request) -> None:
        self.body = body
        self._request = request

    # Properties, not copies: most handlers read one or two fields, and parsing the query on
    # every request would cost the ones that never look at it.
    @property
    def headers(self) -> Headers:
        return self._request.headers

    @property
    def method(self) -> str:
        return self._request.method

    @property
    def query(self) -> Query:
        return self._request.query

    @property
    def path(self) -> str:
        return self._request.path


class Context:
    """What python3-http handlers get as ``context``: the container's hostname."""

    __slots__ = ("hostname",)

    def __init__(self, hostname: str) -> None:
        self.hostname = hostname


class HandlerLoadError(Exception):
    """The handler module imported but does not provide a usable handler."""


def load_handler(module_name: str, function_name: str) -> Handler:
    """Import ``module_name`` and return its callable ``function_name``."""
    module = importlib.import_module(module_name)
    handler = getattr(module, function_name, None)
    if handler is None:
        raise HandlerLoadError(f"module {module_name!r} has no attribute {function_name!r}")
    if not callable(handler):
        raise HandlerLoadError(f"{module_name}.{function_name} is not callable")
    return handler  # type: ignore[no-any-return]


def is_async_handler(handler: Handler) -> bool:
    return inspect.iscoroutinefunction(handler) or inspect.iscoroutinefunction(
        getattr(handler, "__call__", None)  # noqa: B004 - an object with async __call__
    )


class PythonMode:
    """Runs the configured python3-http handler in this process."""

    def __init__(self, config: WatchdogConfig) -> None:
        self._config = config
        self._handler: Handler | None = None
        self._is_async = False
        self._import_failed = False
        self._imported = asyncio.Event()
        self._pool: ThreadPool | None = None
        self._exec_timeout_s = config.exec_timeout_s
        self._max_body_bytes = config.max_body_bytes
        self._read_timeout_s = config.read_timeout_s
        self._hostname = config.hostname

    @property
    def description(self) -> str:
        return f"handler={self._config.handler}"

    @property
    def ready(self) -> bool:
        return self._handler is not None

    async def start(self, on_fatal: OnFatal) -> bool:
        loop = asyncio.get_running_loop()
        self._pool = ThreadPool(loop, self._config.max_inflight or UNLIMITED_THREADS, "handler")
        # `python -m` puts the working directory first on sys.path; other launchers may not.
        cwd = os.getcwd()
        if cwd not in sys.path:
            sys.path.insert(0, cwd)
        try:
            # On a thread: the import can take long (numpy, models, ...) and /_/health must
            # answer meanwhile.
            handler = await self._pool.submit(
                load_handler, self._config.handler_module, self._config.handler_function
            )
        except Exception as exc:
            log.error(
                "handler import failed: %s: %s: %s; the function stays unready",
                self._config.handler,
                type(exc).__name__,
                exc,
                exc_info=exc,
            )
            self._import_failed = True
            return False
        finally:
            self._imported.set()
        self._is_async = is_async_handler(handler)
        self._handler = handler
        return True

    async def check_ready(self) -> bool:
        return self._handler is not None

    async def handle(self, request: Request, start: float) -> Response:
        handler = self._handler
        if handler is None:
            handler = await self._wait_for_handler()
            if handler is None:
                return refusal(503, self._not_ready_reason())
        if request.body_done:
            body = b""
        else:
            try:
                body = await request.read(self._max_body_bytes, self._read_timeout_s)
            except BodyError as exc:
                return refusal(exc.status, exc.message)
        event = Event(body, request)
        context = Context(self._hostname)
        if self._is_async:
            return await self._call_async(handler, event, context)
        return await self._call_sync(handler, event, context)

    async def _call_sync(self, handler: Handler, event: Event, context: Context) -> Response:
        assert self._pool is not None  # set in start(), before any handler exists
        future = self._pool.submit(handler, event, context)
        timer = None
        if self._exec_timeout_s:
            timer = asyncio.get_running_loop().call_later(self._exec_timeout_s, _expire, future)
        try:
            result = await future
        except _Expired:
            # A thread cannot be killed from outside in Python. The caller gets its 504 at the
            # deadline; the handler runs on in its thread, holding one pool slot until it returns.
            log.warning(
                "exec_timeout %gs reached: answered 504; the sync handler keeps running in its "
                "thread (threads cannot be killed)",
                self._exec_timeout_s,
            )
            return _timed_out(self._exec_timeout_s)
        except Exception as exc:
            return _handler_failed(exc)
        finally:
            if timer is not None:
                timer.cancel()
        return _respond(result)

    async def _call_async(self, handler: Handler, event: Event, context: Context) -> Response:
        timer = deadline = None
        if self._exec_timeout_s:
            # A plain timer that cancels this task: measured here, asyncio.timeout() costs a
            # quarter of the throughput of a hello-world async handler.
            deadline = _Deadline(asyncio.current_task())
            timer = asyncio.get_running_loop().call_later(self._exec_timeout_s, deadline.expire)
        try:
            result = await handler(event, context)
        except asyncio.CancelledError:
            if deadline is None or not deadline.expired:
                raise  # shutdown, not our deadline
            deadline.task.uncancel()
            log.warning(
                "exec_timeout %gs reached: handler cancelled, answered 504", self._exec_timeout_s
            )
            return _timed_out(self._exec_timeout_s)
        except (Exception, SystemExit) as exc:  # SystemExit here would stop the whole loop
            return _handler_failed(exc)
        finally:
            if timer is not None:
                timer.cancel()
        if deadline is not None and deadline.expired:
            deadline.task.uncancel()  # the handler swallowed our cancellation and returned
        return _respond(result)

    async def _wait_for_handler(self) -> Handler | None:
        # Requests that arrive while the module is still importing wait for it (bounded by
        # exec_timeout) instead of failing: the first request often is what woke us up.
        if not self._import_failed:
            try:
                async with asyncio.timeout(self._exec_timeout_s or None):
                    await self._imported.wait()
            except TimeoutError:
                return None
        return self._handler

    def _not_ready_reason(self) -> str:
        if self._import_failed:
            return "function not ready: handler failed to import (see the watchdog log)"
        return "function not ready: handler still importing"

    async def stop(self) -> None:
        """Nothing to stop: the handler lives in this process."""

    async def close(self) -> None:
        if self._pool is not None:
            self._pool.close()


class _Deadline:
    """Cancels a handler's task at exec_timeout and remembers that it did."""

    __slots__ = ("expired", "task")

    def __init__(self, task: asyncio.Task[Any] | None) -> None:
        assert task is not None  # each connection serves its requests in a task
        self.task = task
        self.expired = False

    def expire(self) -> None:
        self.expired = True
        self.task.cancel()


class _Expired(Exception):
    """Set on a sync handler's future when exec_timeout passes first."""


def _expire(future: asyncio.Future[Any]) -> None:
    if not future.done():
        future.set_exception(_Expired())


def _respond(result: object) -> Response:
    try:
        return to_response(result)
    except ResultError as exc:
        log.error("handler result rejected: %s", exc)
        return refusal(500, "handler error: invalid result")


def _handler_failed(exc: BaseException) -> Response:
    # The traceback is for the log only; the caller learns the exception type.
    log.error("handler error: %s: %s", type(exc).__name__, exc, exc_info=exc)
    return refusal(500, f"handler error: {type(exc).__name__}")


def _timed_out(exec_timeout_s: float) -> Response:
    return refusal(504, f"function timed out after exec_timeout ({exec_timeout_s:g}s)")
