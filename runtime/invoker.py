"""The one invoke path: gateway routes, async workers and every connector call `Invoker.call`.

It resolves the function, picks the least busy ready replica (waiting, bounded, when none is
ready yet), counts the request in flight, forwards it over a pooled keep-alive connection and
records metrics, so every trigger behaves the same.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import AsyncIterable, AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field

import aiohttp
from multidict import CIMultiDict, CIMultiDictProxy

from runtime.errors import NoReadyReplica, UpstreamFailed, UpstreamTimeout
from runtime.functions import FunctionManager
from runtime.metrics import GatewayMetrics

Body = bytes | AsyncIterable[bytes] | aiohttp.StreamReader | None

# RFC 9110 §7.6.1 connection-specific headers; never forwarded in either direction.
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


def strip_hop_by_hop(headers: CIMultiDictProxy[str] | CIMultiDict[str]) -> CIMultiDict[str]:
    """Copy of ``headers`` without hop-by-hop headers, including those named in Connection."""
    named = {
        token.strip().lower()
        for value in headers.getall("Connection", [])
        for token in value.split(",")
    }
    out: CIMultiDict[str] = CIMultiDict()
    for key, value in headers.items():
        lowered = key.lower()
        if lowered not in HOP_BY_HOP and lowered not in named:
            out.add(key, value)
    return out


def new_call_id() -> str:
    return str(uuid.uuid4())


@dataclass(frozen=True)
class Invocation:
    name: str
    namespace: str
    method: str = "POST"
    path: str = "/"
    query_string: str = ""
    headers: CIMultiDict[str] = field(default_factory=CIMultiDict)
    body: Body = None
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
        session: aiohttp.ClientSession,
        metrics: GatewayMetrics,
        *,
        ready_wait_s: float = 30.0,
    ) -> None:
        self._functions = functions
        self._session = session
        self._metrics = metrics
        self._ready_wait_s = ready_wait_s

    @asynccontextmanager
    async def call(self, inv: Invocation) -> AsyncIterator[aiohttp.ClientResponse]:
        """Forward ``inv`` to a replica; yields the upstream response with its body unread.

        The replica stays leased (counted in flight) until the block exits, so a streaming
        response keeps it from being drained away under the caller.
        """
        fn = self._functions.get(inv.name, inv.namespace)
        handle = fn.pool.pick()
        if handle is None:
            handle = await fn.pool.wait_ready(min(self._ready_wait_s, inv.timeout_s))
            if handle is None:
                raise NoReadyReplica(
                    f"function {inv.function_name} has no ready replica", retry_after_s=1
                )
        headers = CIMultiDict(inv.headers)
        headers["X-Call-Id"] = inv.call_id
        headers.setdefault("X-Start-Time", str(time.time_ns()))
        url = handle.base_url + (inv.path or "/")
        if inv.query_string:
            url += "?" + inv.query_string
        label = inv.function_name
        started = time.perf_counter()
        status = 502
        fn.invocation_count += 1
        self._metrics.invocation_started.labels(label).inc()
        self._metrics.in_flight.labels(label).inc()
        try:
            with handle.lease():
                try:
                    async with self._session.request(
                        inv.method,
                        url,
                        data=inv.body,
                        headers=headers,
                        allow_redirects=False,
                        auto_decompress=False,
                        timeout=aiohttp.ClientTimeout(total=inv.timeout_s),
                        skip_auto_headers=("User-Agent", "Content-Type", "Accept-Encoding"),
                    ) as resp:
                        status = resp.status
                        yield resp
                except TimeoutError as exc:
                    status = 504
                    raise UpstreamTimeout(
                        f"function {label} did not answer within {inv.timeout_s:g}s"
                    ) from exc
                except aiohttp.ClientConnectionError as exc:
                    status = 502
                    raise UpstreamFailed(f"function {label} could not be reached: {exc}") from exc
        finally:
            elapsed_s = time.perf_counter() - started
            code = str(status)
            self._metrics.in_flight.labels(label).dec()
            self._metrics.invocation_total.labels(label, code).inc()
            self._metrics.function_seconds.labels(label, code).observe(elapsed_s)

    async def call_buffered(self, inv: Invocation) -> BufferedResult:
        """For connectors and async workers, which need the whole response."""
        async with self.call(inv) as resp:
            body = await resp.read()
            return BufferedResult(resp.status, resp.headers, body)
