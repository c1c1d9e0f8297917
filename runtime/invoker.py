"""The one invoke path: gateway routes, async workers and every connector call `Invoker.call`.

It resolves the function, picks the least busy ready replica (waiting, bounded, when none is
ready yet), counts the request in flight, forwards it over a pooled keep-alive connection and
records metrics, so every trigger behaves the same.
"""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import AsyncIterable, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from functools import partial
from types import TracebackType

from multidict import CIMultiDict, CIMultiDictProxy

from runtime.errors import (
    InvalidSpec,
    PayloadTooLarge,
    UpstreamFailed,
    UpstreamTimeout,
)
from runtime.functions import FunctionManager, FunctionRuntime
from runtime.metrics import FunctionMetrics, GatewayMetrics
from runtime.router import ReplicaHandle
from runtime.upstream import UpstreamClient, UpstreamResponse
from runtime.upstream.client import settle_waiter

Body = bytes | AsyncIterable[bytes] | None
# Any mapping (dict, CIMultiDict: every pair is sent) or a sequence of (name, value) pairs.
Headers = Mapping[str, str] | Sequence[tuple[str, str]]
OnHead = Callable[[BaseException | None], None]

# The Invoker sets X-Call-Id from `Invocation.call_id`; a caller's copy in the headers goes.
_REPLACED = frozenset({"x-call-id"})
_COUNTED_MAX = 4096

# Call ids are made in batches by C-level byte operations, one random byte per character:
# hex digits from the low 4 bits, uuid4's variant digit (10xx: one of 8 9 a b) from the low 2.
_HEX_DIGITS = bytes(b"0123456789abcdef"[b & 15] for b in range(256))
_VARIANT_DIGITS = bytes(b"89ab"[b & 3] for b in range(256))
_BATCH = 256
_ID_CHARS = 36  # 8-4-4-4-12


class _CallIds:
    """Random (version 4) UUID strings, as `str(uuid.uuid4())` (122 random bits from the same
    CSPRNG, the OS's) but in a fraction of the time."""

    def __init__(self) -> None:
        self._ids: list[str] = []

    def next(self) -> str:
        ids = self._ids
        if not ids:
            ids = self._ids = _batch()
        return ids.pop()


def _batch() -> list[str]:
    raw = os.urandom(_ID_CHARS * _BATCH)
    chars = bytearray(raw.translate(_HEX_DIGITS))
    chars[19::_ID_CHARS] = raw[19::_ID_CHARS].translate(_VARIANT_DIGITS)
    chars[14::_ID_CHARS] = b"4" * _BATCH  # the version
    for dash in (8, 13, 18, 23):
        chars[dash::_ID_CHARS] = b"-" * _BATCH
    text = chars.decode("ascii")
    return [text[i : i + _ID_CHARS] for i in range(0, len(text), _ID_CHARS)]


new_call_id = _CallIds().next


@dataclass(frozen=True, slots=True)
class Invocation:
    name: str
    namespace: str
    method: str = "POST"
    path: str = "/"  # as sent on the wire: percent-encoded, starting with "/"
    query_string: str = ""  # raw, without "?"
    headers: Headers = field(default_factory=CIMultiDict)
    body: Body = None
    body_length: int | None = None  # bytes of an iterable body when known (else chunked)
    call_id: str = field(default_factory=new_call_id)
    timeout_s: float = 60.0

    @property
    def function_name(self) -> str:
        return f"{self.name}.{self.namespace}"


@dataclass(frozen=True)
class BufferedResult:
    status: int
    headers: CIMultiDictProxy[str]
    body: bytes


class Invoker:
    def __init__(
        self,
        functions: FunctionManager,
        client: UpstreamClient,
        metrics: GatewayMetrics,
        *,
        ready_wait_s: float | None = None,
    ) -> None:
        self._functions = functions
        self._client = client
        self._metrics = metrics
        # Longest wait for a replica; by default the call's own timeout, which the wait uses up.
        self._ready_wait_s = ready_wait_s
        # Per function: its name for metrics and errors, and its counters (looked up once).
        self._counted: dict[FunctionRuntime, tuple[str, FunctionMetrics]] = {}

    def counters(self, fn: FunctionRuntime) -> tuple[str, FunctionMetrics]:
        found = self._counted.get(fn)
        if found is None:
            if len(self._counted) >= _COUNTED_MAX:
                self._counted.clear()  # functions deleted and deployed again: start over
            label = fn.qualified_name
            found = self._counted[fn] = (label, self._metrics.function(label))
        return found

    def call(self, inv: Invocation) -> Call:
        """``async with invoker.call(inv) as response``: forward ``inv`` to a replica.

        The response's head is in; its body streams through ``response.content``. The replica
        stays leased (counted in flight) until the block exits, so a streaming response keeps
        it from being drained away under the caller. Raises FunctionNotFound, NoReadyReplica,
        UpstreamFailed (502) or UpstreamTimeout (504) before the block runs; while reading the
        body, TimeoutError or ConnectionError.
        """
        target = inv.path or "/"
        if inv.query_string:
            target += "?" + inv.query_string
        headers = inv.headers
        return Call(
            self,
            inv.name,
            inv.namespace,
            inv.method,
            target,
            headers if isinstance(headers, list) else _pairs(headers),
            inv.body,
            inv.body_length,
            inv.call_id,
            inv.timeout_s,
        )

    async def call_buffered(self, inv: Invocation) -> BufferedResult:
        """For connectors and async workers, which need the whole response."""
        async with self.call(inv) as resp:
            try:
                body = await resp.read()
            except TimeoutError as exc:
                raise UpstreamTimeout(
                    f"function {inv.function_name} did not answer within {inv.timeout_s:g}s"
                ) from exc
            except OSError as exc:
                raise UpstreamFailed(f"function {inv.function_name} broke off: {exc}") from exc
            return BufferedResult(resp.status, resp.headers, body)


def _pairs(headers: Headers) -> Iterable[tuple[str, str]]:
    return headers.items() if isinstance(headers, Mapping) else headers


class Call:
    """One invocation (what `Invoker.call` returns), used one of two ways:

    - ``async with call as response``: waits (bounded) for a ready replica and for the head;
    - ``call.start(on_head)``: sends right away if a replica is ready, and tells ``on_head``
      when the head is in, from the event loop's callbacks. The gateway's front serves its
      requests this way: no task, future or coroutine per request.

    A class rather than an @asynccontextmanager, whose generator machinery cost measurably
    per request.
    """

    __slots__ = (
        "_body",
        "_body_length",
        "_call_id",
        "_handle",
        "_headers",
        "_invoker",
        "_label",
        "_method",
        "_name",
        "_namespace",
        "_on_head",
        "_started",
        "_stats",
        "_target",
        "_timeout_s",
        "response",
    )

    def __init__(
        self,
        invoker: Invoker,
        name: str,
        namespace: str,
        method: str,
        target: str,
        headers: Iterable[tuple[str, str]] | bytes,
        body: Body,
        body_length: int | None,
        call_id: str,
        timeout_s: float,
    ) -> None:
        """``target``: path and query as sent on the wire. ``headers`` as bytes are lines
        already encoded and checked (``Name: value\\r\\n`` each, no framing, hop-by-hop, Host
        or X-Call-Id field): the gateway's front has them so; they go out as they are."""
        self._invoker = invoker
        self._name = name
        self._namespace = namespace
        self._method = method
        self._target = target
        self._headers = headers
        self._body = body
        self._body_length = body_length
        self._call_id = call_id
        self._timeout_s = timeout_s
        self._label = ""
        self._handle: ReplicaHandle | None = None  # None once finished
        self._stats: FunctionMetrics | None = None
        self._on_head: OnHead | None = None
        self._started = 0.0
        self.response: UpstreamResponse | None = None

    @property
    def function_name(self) -> str:
        return f"{self._name}.{self._namespace}"

    def start(self, on_head: OnHead) -> bool:
        """Send the call now if a replica is ready to take it; False if none is (then use
        ``async with``, which waits for one). Raises FunctionNotFound, and the errors of a
        request that cannot go out at all (counted).

        After True: ``on_head(None)`` once the response head is in (``self.response``; the
        body streams through its ``content``): the replica stays leased until `close`. Or
        ``on_head(error)`` (UpstreamFailed, UpstreamTimeout, ...) if the call failed before:
        it is over and counted. Either comes once, from the event loop, never from here.
        """
        fn = self._invoker._functions.get(self._name, self._namespace)
        handle = fn.pool.pick()
        if handle is None:
            return False
        self._send(fn, handle, on_head)
        return True

    def _send(self, fn: FunctionRuntime, handle: ReplicaHandle, on_head: OnHead) -> None:
        """Count the call in flight on ``handle`` and send it."""
        invoker = self._invoker
        counted = invoker._counted.get(fn) or invoker.counters(fn)
        self._label, self._stats = counted
        stats = counted[1]
        endpoint = handle.replica.endpoint
        target = self._target
        fn.invocation_count += 1
        stats.started += 1
        stats.in_flight += 1
        if stats.in_flight > stats.peak_in_flight:
            stats.peak_in_flight = stats.in_flight
        self._handle = handle
        handle.acquire()
        self._started = time.perf_counter()
        self._on_head = on_head
        try:
            if endpoint is None or not target.startswith("/"):
                raise ValueError(f"replica endpoint {endpoint} or target {target!r} is not usable")
            headers = self._headers
            self.response = invoker._client.start(
                *endpoint,
                self._method,
                target,
                headers,
                (("X-Call-Id", self._call_id),),
                # Encoded lines are final as made (the front's carry X-Start-Time).
                () if isinstance(headers, bytes) else (("X-Start-Time", str(time.time_ns())),),
                _REPLACED,
                self._body,
                self._body_length,
                self._timeout_s,
                self._head_in,
            )
        except BaseException as exc:
            error = self._failed(exc)
            if error is exc:
                raise
            raise error from exc

    def _head_in(self, exc: BaseException | None) -> None:
        on_head = self._on_head
        assert on_head is not None
        self._on_head = None
        on_head(None if exc is None else self._failed(exc))

    def _failed(self, exc: BaseException) -> BaseException:
        """Count the call as failed; the error to raise for ``exc``, in the gateway's terms."""
        label = self._label
        error: BaseException
        if isinstance(exc, TimeoutError):
            self._finish(504)
            error = UpstreamTimeout(f"function {label} did not answer within {self._timeout_s:g}s")
        elif isinstance(exc, OSError):
            self._finish(502)
            error = UpstreamFailed(f"function {label} could not be reached: {exc}")
        elif isinstance(exc, ValueError):
            self._finish(400)
            error = InvalidSpec(f"cannot invoke {label}: {exc}")
        else:  # e.g. the request body's own error, or cancellation
            self._finish(413 if isinstance(exc, PayloadTooLarge) else 500)
            return exc
        error.__cause__ = exc
        return error

    async def __aenter__(self) -> UpstreamResponse:
        invoker = self._invoker
        fn = invoker._functions.get(self._name, self._namespace)
        handle = fn.pool.pick()
        if handle is None:
            # The activator: resumes or starts a replica and waits for it. The wait counts
            # against the call's timeout.
            limit_s = invoker._ready_wait_s
            wait_s = self._timeout_s if limit_s is None else min(limit_s, self._timeout_s)
            began = time.monotonic()
            handle = await invoker._functions.wait_for_replica(fn, wait_s)
            self._timeout_s = max(self._timeout_s - (time.monotonic() - began), 0.001)
        waiter: asyncio.Future[None] = invoker._client.loop.create_future()
        self._send(fn, handle, partial(settle_waiter, waiter))
        try:
            await waiter
        except BaseException:
            if self._handle is not None:
                # Cancelled while waiting (or just as the head came): drop the exchange.
                self.abort()
            raise  # else the exchange failed, and is counted
        response = self.response
        assert response is not None
        return response

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def close(self) -> None:
        """Done with the response (all of it, or giving up on it): the replica is free, the
        call counted with the response's status."""
        response = self.response
        assert response is not None
        response.release()
        self._finish(response.status)

    def abort(self) -> None:
        """Give up on the call before its head came: counted as failed (500)."""
        response = self.response
        if response is not None:
            response.release()
        self._finish(500)

    def _finish(self, status: int) -> None:
        handle, stats = self._handle, self._stats
        if handle is None or stats is None:
            return  # finished already
        self._handle = None
        handle.release()
        stats.in_flight -= 1
        stats.finished(status, time.perf_counter() - self._started)
