"""The one invoke path: gateway routes, async workers and every connector call `Invoker.call`.

It resolves the function, picks the least busy ready replica (waiting, bounded, when none is
ready yet), counts the request in flight, forwards it over a pooled keep-alive connection and
records metrics, so every trigger behaves the same.
"""

from __future__ import annotations

import os
import time
from collections.abc import AsyncIterable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from types import TracebackType

from multidict import CIMultiDict, CIMultiDictProxy

from runtime.errors import (
    InvalidSpec,
    NoReadyReplica,
    PayloadTooLarge,
    UpstreamFailed,
    UpstreamTimeout,
)
from runtime.functions import FunctionManager
from runtime.metrics import FunctionMetrics, GatewayMetrics
from runtime.router import ReplicaHandle
from runtime.upstream import UpstreamClient, UpstreamResponse

Body = bytes | AsyncIterable[bytes] | None
# Any mapping (dict, CIMultiDict: every pair is sent) or a sequence of (name, value) pairs.
Headers = Mapping[str, str] | Sequence[tuple[str, str]]

# The Invoker sets X-Call-Id from `Invocation.call_id`; a caller's copy in the headers goes.
_REPLACED = frozenset({"x-call-id"})
# uuid4's variant nibble is 10xx: the first hex digit of the fourth group is one of 8 9 a b.
_VARIANT = {c: "89ab"[int(c, 16) & 3] for c in "0123456789abcdef"}


class _CallIds:
    """Random (version 4) UUID strings, as `str(uuid.uuid4())` but in a fraction of the time:
    the randomness is fetched from the OS (the same CSPRNG) 256 ids at a time."""

    def __init__(self) -> None:
        self._hex = ""
        self._pos = 0

    def __call__(self) -> str:
        pos = self._pos
        if pos >= len(self._hex):
            self._hex = os.urandom(16 * 256).hex()
            pos = 0
        self._pos = pos + 32
        h = self._hex[pos : pos + 32]
        return f"{h[:8]}-{h[8:12]}-4{h[13:16]}-{_VARIANT[h[16]]}{h[17:20]}-{h[20:]}"


new_call_id = _CallIds()


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
        ready_wait_s: float = 30.0,
    ) -> None:
        self._functions = functions
        self._client = client
        self._metrics = metrics
        self._ready_wait_s = ready_wait_s

    def call(self, inv: Invocation) -> Call:
        """``async with invoker.call(inv) as response``: forward ``inv`` to a replica.

        The response's head is in; its body streams through ``response.content``. The replica
        stays leased (counted in flight) until the block exits, so a streaming response keeps
        it from being drained away under the caller. Raises FunctionNotFound, NoReadyReplica,
        UpstreamFailed (502) or UpstreamTimeout (504) before the block runs; while reading the
        body, TimeoutError or ConnectionError.
        """
        return Call(self, inv)

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
    """One invocation in progress (what `Invoker.call` returns): a class rather than an
    @asynccontextmanager, whose generator machinery cost measurably per request."""

    __slots__ = ("_handle", "_inv", "_invoker", "_response", "_started", "_stats")

    def __init__(self, invoker: Invoker, inv: Invocation) -> None:
        self._invoker = invoker
        self._inv = inv
        self._handle: ReplicaHandle | None = None
        self._stats: FunctionMetrics | None = None
        self._response: UpstreamResponse | None = None
        self._started = 0.0

    async def __aenter__(self) -> UpstreamResponse:
        inv = self._inv
        invoker = self._invoker
        fn = invoker._functions.get(inv.name, inv.namespace)
        handle = fn.pool.pick()
        label = fn.qualified_name
        if handle is None:
            handle = await fn.pool.wait_ready(min(invoker._ready_wait_s, inv.timeout_s))
            if handle is None:
                raise NoReadyReplica(f"function {label} has no ready replica", retry_after_s=1)
        endpoint = handle.replica.endpoint
        target = inv.path or "/"
        if inv.query_string:
            target += "?" + inv.query_string
        extra = [("X-Call-Id", inv.call_id)]
        fn.invocation_count += 1
        self._stats = stats = invoker._metrics.function(label)
        stats.started += 1
        stats.in_flight += 1
        self._handle = handle
        handle.acquire()
        self._started = time.perf_counter()
        try:
            if endpoint is None or not target.startswith("/"):
                raise ValueError(f"replica endpoint {endpoint} or path {inv.path!r} is not usable")
            self._response = await invoker._client.request(
                *endpoint,
                inv.method,
                target,
                headers if isinstance(headers := inv.headers, list) else _pairs(headers),
                extra_headers=extra,
                default_headers=(("X-Start-Time", str(time.time_ns())),),
                skip_headers=_REPLACED,
                body=inv.body,
                body_length=inv.body_length,
                timeout_s=inv.timeout_s,
            )
        except TimeoutError as exc:
            self._finish(504)
            raise UpstreamTimeout(
                f"function {label} did not answer within {inv.timeout_s:g}s"
            ) from exc
        except OSError as exc:
            self._finish(502)
            raise UpstreamFailed(f"function {label} could not be reached: {exc}") from exc
        except ValueError as exc:
            self._finish(400)
            raise InvalidSpec(f"cannot invoke {label}: {exc}") from exc
        except BaseException as exc:  # e.g. the request body's own error, or cancellation
            self._finish(413 if isinstance(exc, PayloadTooLarge) else 500)
            raise
        return self._response

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        response = self._response
        assert response is not None
        response.release()
        self._finish(response.status)

    def _finish(self, status: int) -> None:
        handle, stats = self._handle, self._stats
        assert handle is not None and stats is not None
        handle.release()
        stats.in_flight -= 1
        stats.finished(status, time.perf_counter() - self._started)
