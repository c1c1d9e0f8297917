"""A lean HTTP/1.1 client for gateway → replica: pooled keep-alive connections on asyncio
Protocols, one `transport.write` per request head (plus body when it is in memory), responses
parsed as they arrive and streamed to the caller.

Why not aiohttp's ClientSession: on the proxy path it cost more CPU than the gateway's whole
server side (URL objects, request/response classes, tracing, cookie jar, timers per request),
and on a 2-core host that CPU comes straight out of the function's throughput. This client does
only what the invoke path needs: one origin per replica, no redirects, no cookies, no
decompression, no proxies, no TLS.
"""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterable, Coroutine, Iterable
from typing import Any, cast

from multidict import CIMultiDict, CIMultiDictProxy

from runtime.upstream.body import BodyStream
from runtime.upstream.http1 import (
    MAX_HEAD_BYTES,
    ChunkedDecoder,
    Framing,
    ProtocolError,
    encode_request_head,
    parse_response_head,
)

RequestBody = bytes | AsyncIterable[bytes] | None

# RFC 9110 §9.2.2: a request with one of these methods may be sent again after the connection
# broke before any answer, as aiohttp does on reused connections.
_IDEMPOTENT = frozenset({"GET", "HEAD", "OPTIONS", "TRACE", "PUT", "DELETE"})
_EMPTY_HEADERS: CIMultiDictProxy[str] = CIMultiDictProxy(CIMultiDict())
# One copy of head+body beats two writes (two syscalls) up to about this size.
_COALESCE_BYTES = 16 * 1024
# Deadlines are checked this often rather than with a timer per request: a uvloop timer costs
# a libuv handle to create and close, measurable at thousands of requests per second, while a
# 504 a tenth of a second late is not.
DEADLINE_TICK_S = 0.1


class UpstreamDisconnected(ConnectionError):
    """The replica closed the connection before the response was complete."""


class _Stale(ConnectionError):
    """A reused keep-alive connection was found closed before any answer: safe to retry."""


class UpstreamResponse:
    """Status and headers of a replica's answer; the body streams through ``content``."""

    __slots__ = ("_conn", "content", "content_length", "headers", "reason", "status")

    def __init__(self, conn: _Connection, content: BodyStream) -> None:
        self.status = 0
        self.reason = ""
        self.headers = _EMPTY_HEADERS
        # Body bytes still to come; None when only the end of the stream will tell.
        self.content_length: int | None = None
        self.content = content
        self._conn: _Connection | None = conn

    async def read(self) -> bytes:
        return await self.content.read()

    def release(self) -> None:
        """Done with this response: a connection still busy with it cannot be reused."""
        conn = self._conn
        if conn is not None:
            self._conn = None
            conn.abandon()


class _Connection(asyncio.Protocol):
    """One keep-alive connection to a replica, carrying one exchange at a time."""

    def __init__(self, client: UpstreamClient, key: tuple[str, int]) -> None:
        self._client = client
        self._loop = client.loop
        self.key = key
        self.transport: asyncio.Transport | None = None
        self.lost = False
        self.served = 0  # exchanges completed on this connection
        self.idle_since = 0.0
        self.deadline = 0.0
        self._response: UpstreamResponse | None = None
        self._method = "GET"
        self._head_waiter: asyncio.Future[None] | None = None
        self._head_buf = b""
        self._in_head = False
        self._got_bytes = False
        self._framing = Framing.NONE
        self._remaining = 0
        self._chunks: ChunkedDecoder | None = None
        self._keep_alive = False
        self._response_done = False
        self._request_sent = False
        self._upload: asyncio.Task[None] | None = None
        self._write_paused = False
        self._drain_waiter: asyncio.Future[None] | None = None

    # -- asyncio.Protocol ------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports do not subclass asyncio.Transport, so no isinstance check here.
        self.transport = cast(asyncio.Transport, transport)
        sock = transport.get_extra_info("socket")
        if sock is not None:
            # Request heads are small writes that must not wait for an ACK (Nagle).
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def connection_lost(self, exc: Exception | None) -> None:
        self.lost = True
        self._client.untrack(self)
        self._wake_drain()
        if self._response is None:
            self._client.forget(self)
            return
        if self._in_head:
            if not self._got_bytes and self.served:
                self._fail(_Stale("reused connection was closed by the replica"))
            else:
                self._fail(UpstreamDisconnected("replica closed the connection before answering"))
        elif not self._response_done:
            if self._framing is Framing.UNTIL_CLOSE:
                self._body_done()
            else:
                self._fail(UpstreamDisconnected("replica closed the connection mid-body"))

    def eof_received(self) -> bool:
        return False  # close our side too; connection_lost does the rest

    def pause_writing(self) -> None:
        self._write_paused = True

    def resume_writing(self) -> None:
        self._write_paused = False
        self._wake_drain()

    def data_received(self, data: bytes) -> None:
        response = self._response
        if response is None or self._response_done:
            # Nothing asked for: a server that talks out of turn cannot be trusted with the
            # next request on this connection.
            self._keep_alive = False
            self.close()
            return
        self._got_bytes = True
        if self._in_head:
            rest = self._parse_head(response, data)
            if rest is None:
                return
            data = rest
        if data:
            self._feed_body(response, data)

    # -- exchange --------------------------------------------------------------------------

    async def exchange(
        self, head: bytes, body: RequestBody, body_length: int | None, method: str, deadline: float
    ) -> UpstreamResponse:
        transport = self.transport
        assert transport is not None and self._response is None
        loop = self._loop
        response = UpstreamResponse(self, BodyStream(loop, self))
        self._response = response
        self._method = method
        self._in_head = True
        self._got_bytes = False
        self._response_done = False
        self._head_waiter = waiter = loop.create_future()
        self.deadline = deadline
        self._client.track(self)
        if body is None:
            transport.write(head)
            self._request_sent = True
        elif isinstance(body, bytes):
            if len(body) <= _COALESCE_BYTES:
                transport.write(head + body)
            else:
                transport.writelines((head, body))
            self._request_sent = True
        else:
            self._request_sent = False
            transport.write(head)
            self._upload = self._client.spawn(self._send_body(body, body_length))
        try:
            await waiter
        except BaseException:
            # Whoever failed the waiter already cleared it; on cancellation it is still ours.
            # (After a success this connection may already carry the next exchange: touch
            # nothing of it here.)
            if self._head_waiter is waiter:
                self._head_waiter = None
            response.release()
            raise
        return response

    def _parse_head(self, response: UpstreamResponse, data: bytes) -> bytes | None:
        """Consume head bytes; returns what follows the head, or None while it is incomplete."""
        buf = self._head_buf + data if self._head_buf else data
        while True:
            end = buf.find(b"\r\n\r\n")
            if end < 0:
                if len(buf) > MAX_HEAD_BYTES:
                    self._fail(ProtocolError("response head is too large"))
                    return None
                self._head_buf = buf
                return None
            try:
                head = parse_response_head(buf[:end], request_method=self._method)
            except ProtocolError as exc:
                self._fail(exc)
                return None
            buf = buf[end + 4 :]
            if head.status >= 200:
                break
            if head.status == 101:
                self._fail(ProtocolError("replica switched protocols, which was not asked for"))
                return None
            # 1xx interim answers (100 Continue, 103 Early Hints): the real one follows.
        self._head_buf = b""
        self._in_head = False
        response.status = head.status
        response.reason = head.reason
        response.headers = head.headers
        self._keep_alive = head.keep_alive
        self._framing = framing = head.framing
        if framing is Framing.LENGTH:
            assert head.length is not None
            response.content_length = self._remaining = head.length
        elif framing is Framing.CHUNKED:
            self._chunks = ChunkedDecoder()
        elif framing is Framing.NONE:
            response.content_length = 0
        waiter, self._head_waiter = self._head_waiter, None
        if waiter is not None and not waiter.done():
            waiter.set_result(None)
        if framing is Framing.NONE or (framing is Framing.LENGTH and not head.length):
            if buf:
                self._keep_alive = False  # bytes where no body may be: out of sync
            self._body_done()
            return None
        return buf

    def _feed_body(self, response: UpstreamResponse, data: bytes) -> None:
        framing = self._framing
        if framing is Framing.LENGTH:
            remaining = self._remaining
            if len(data) > remaining:
                self._keep_alive = False  # more than it announced: out of sync
                data = data[:remaining]
            response.content.feed(data)
            self._remaining = remaining = remaining - len(data)
            if remaining == 0:
                self._body_done()
        elif framing is Framing.CHUNKED:
            assert self._chunks is not None
            try:
                pieces, extra = self._chunks.feed(data)
            except ProtocolError as exc:
                self._fail(exc)
                return
            for piece in pieces:
                response.content.feed(piece)
            if self._chunks.done:
                if extra:
                    self._keep_alive = False
                self._body_done()
        elif framing is Framing.UNTIL_CLOSE:
            response.content.feed(data)

    def _body_done(self) -> None:
        response = self._response
        assert response is not None
        self._response_done = True
        self._client.untrack(self)
        response.content.feed_eof()
        self._settle()

    def _settle(self) -> None:
        """Back to the pool once both directions are finished, so the next request can use
        this connection while the caller is still sending this response on."""
        if not (self._response_done and self._request_sent):
            return
        response = self._response
        if response is not None:
            response._conn = None
        self._response = None
        self._chunks = None
        self._upload = None
        if self._keep_alive and not self.lost:
            self.served += 1
            self._client.put_back(self)
        else:
            self.close()

    async def _send_body(self, body: AsyncIterable[bytes], length: int | None) -> None:
        transport = self.transport
        assert transport is not None
        try:
            sent = 0
            async for piece in body:
                if self.lost:
                    return  # connection_lost already told the waiting side
                if not piece:
                    continue
                sent += len(piece)
                if length is None:
                    transport.writelines((b"%x\r\n" % len(piece), piece, b"\r\n"))
                elif sent > length:
                    raise ValueError(f"request body is longer than its length {length}")
                else:
                    transport.write(piece)
                if self._write_paused:
                    await self._drain()
            if self.lost:
                return
            if length is None:
                transport.write(b"0\r\n\r\n")
            elif sent != length:
                raise ValueError(f"request body is {sent} bytes, shorter than its length {length}")
        except asyncio.CancelledError:
            self.close(abort=True)
            raise
        except Exception as exc:  # the caller gets the body's own error (e.g. too large)
            # The replica must not see a truncated body as a complete request.
            self._fail(exc)
            return
        self._request_sent = True
        self._settle()

    async def _drain(self) -> None:
        waiter = self._drain_waiter = self._loop.create_future()
        try:
            await waiter
        finally:
            self._drain_waiter = None

    def _wake_drain(self) -> None:
        waiter = self._drain_waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    # -- failure and teardown --------------------------------------------------------------

    def _fail(self, exc: BaseException) -> None:
        """End the current exchange with ``exc`` and drop the connection."""
        waiter, self._head_waiter = self._head_waiter, None
        if waiter is not None and not waiter.done():
            waiter.set_exception(exc)
        elif self._response is not None:
            self._response.content.set_exception(exc)
        self.close(abort=True)

    def on_deadline(self) -> None:
        self._fail(TimeoutError("the replica did not finish answering in time"))

    def abandon(self) -> None:
        """The caller is done before this exchange finished: the connection is out of sync."""
        upload = self._upload
        if upload is not None and not upload.done():
            upload.cancel()
        self._response = None
        self.close(abort=True)

    def close(self, *, abort: bool = False) -> None:
        self._client.untrack(self)
        self._keep_alive = False
        transport = self.transport
        if transport is not None and not transport.is_closing():
            if abort:
                transport.abort()
            else:
                transport.close()

    def pause_reading(self) -> None:
        if self.transport is not None and not self.lost:
            self.transport.pause_reading()

    def resume_reading(self) -> None:
        if self.transport is not None and not self.lost:
            self.transport.resume_reading()


class UpstreamClient:
    """Keep-alive connection pools, one per replica address (`host:port`).

    Idle connections are reused newest first (fewer stay warm) and closed after
    ``idle_timeout_s``, well before the replica's own keep-alive limit, so a request rarely
    meets a connection the replica is closing; when it does, idempotent requests are retried
    once on a fresh connection.
    """

    def __init__(self, *, idle_timeout_s: float = 30.0) -> None:
        self.loop = asyncio.get_running_loop()
        self._idle_timeout_s = idle_timeout_s
        self._idle: dict[tuple[str, int], list[_Connection]] = {}
        self._active: set[_Connection] = set()  # connections with an exchange under a deadline
        self._tasks: set[asyncio.Task[None]] = set()
        self._sweeper: asyncio.TimerHandle | None = None
        self._ticker: asyncio.TimerHandle | None = None
        self._closed = False

    async def request(
        self,
        host: str,
        port: int,
        method: str,
        target: str,
        headers: Iterable[tuple[str, str]],
        *,
        extra_headers: Iterable[tuple[str, str]] = (),
        default_headers: Iterable[tuple[str, str]] = (),
        skip_headers: frozenset[str] = frozenset(),
        body: RequestBody = None,
        body_length: int | None = None,
        timeout_s: float,
    ) -> UpstreamResponse:
        """Send one request; returns once the response head is in (body still streaming).

        ``headers`` lose names in ``skip_headers`` (lower case) and framing/hop-by-hop ones;
        ``extra_headers`` are added, ``default_headers`` unless ``headers`` has the name.
        ``body_length`` is the byte count of an iterable body when known (None: chunked).
        The caller must ``release()`` the response. Connection problems raise OSError
        subclasses; the deadline (``timeout_s``, covering the whole body) raises TimeoutError.
        """
        if self._closed:
            raise UpstreamDisconnected("the upstream client is closed")
        if isinstance(body, bytes):
            body_length = len(body)
        head = encode_request_head(
            method,
            target,
            f"{host}:{port}",
            headers,
            extra_headers,
            defaults=default_headers,
            skip=skip_headers,
            body_length=body_length,
            has_body=body is not None,
        )
        deadline = self.loop.time() + timeout_s
        key = (host, port)
        conn = self._take_idle(key)
        if conn is None:
            conn = await self._connect(key, deadline)
        try:
            return await conn.exchange(head, body, body_length, method, deadline)
        except _Stale:
            if not (method in _IDEMPOTENT and (body is None or isinstance(body, bytes))):
                raise UpstreamDisconnected(
                    "replica closed a kept-alive connection as the request was sent"
                ) from None
        conn = await self._connect(key, deadline)
        return await conn.exchange(head, body, body_length, method, deadline)

    def _take_idle(self, key: tuple[str, int]) -> _Connection | None:
        idle = self._idle.get(key)
        while idle:
            conn = idle.pop()
            if not conn.lost:
                return conn
        return None

    async def _connect(self, key: tuple[str, int], deadline: float) -> _Connection:
        async with asyncio.timeout_at(deadline):
            _, conn = await self.loop.create_connection(lambda: _Connection(self, key), *key)
        return conn

    # -- pool bookkeeping (called by connections) ------------------------------------------

    def put_back(self, conn: _Connection) -> None:
        if self._closed:
            conn.close()
            return
        conn.idle_since = self.loop.time()
        self._idle.setdefault(conn.key, []).append(conn)
        if self._sweeper is None:
            self._sweeper = self.loop.call_later(self._idle_timeout_s / 2, self._sweep)

    def track(self, conn: _Connection) -> None:
        self._active.add(conn)
        if self._ticker is None:
            self._ticker = self.loop.call_later(DEADLINE_TICK_S, self._tick)

    def untrack(self, conn: _Connection) -> None:
        self._active.discard(conn)

    def _tick(self) -> None:
        now = self.loop.time()
        for conn in [c for c in self._active if c.deadline <= now]:
            conn.on_deadline()
        self._ticker = self.loop.call_later(DEADLINE_TICK_S, self._tick) if self._active else None

    def forget(self, conn: _Connection) -> None:
        idle = self._idle.get(conn.key)
        if idle is not None and conn in idle:
            idle.remove(conn)
            if not idle:
                del self._idle[conn.key]

    def spawn(self, coro: Coroutine[Any, Any, None]) -> asyncio.Task[None]:
        task = self.loop.create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    def _sweep(self) -> None:
        self._sweeper = None
        cutoff = self.loop.time() - self._idle_timeout_s
        for key, idle in list(self._idle.items()):
            keep = [c for c in idle if not c.lost and c.idle_since > cutoff]
            for conn in idle:
                if conn not in keep:
                    conn.close()
            if keep:
                self._idle[key] = keep
            else:
                del self._idle[key]
        if self._idle:
            self._sweeper = self.loop.call_later(self._idle_timeout_s / 2, self._sweep)

    def idle_connections(self, host: str, port: int) -> int:
        return len(self._idle.get((host, port), ()))

    async def close(self) -> None:
        """Close idle connections and stop body uploads still running."""
        self._closed = True
        for timer in (self._sweeper, self._ticker):
            if timer is not None:
                timer.cancel()
        self._sweeper = self._ticker = None
        for idle in self._idle.values():
            for conn in idle:
                conn.close()
        self._idle.clear()
        for task in list(self._tasks):
            task.cancel()
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)
