"""A lean HTTP/1.1 client for gateway → replica: pooled keep-alive connections on asyncio
Protocols, one `transport.write` per request head (plus body when it is in memory), responses
parsed as they arrive and streamed to the caller. `UpstreamClient.start` tells a callback when
the head is in (the gateway's front needs no task or future per request that way);
`UpstreamClient.request` awaits it.

Why not aiohttp's ClientSession: on the proxy path it cost more CPU than the gateway's whole
server side (URL objects, request/response classes, tracing, cookie jar, timers per request),
and on a 2-core host that CPU comes straight out of the function's throughput. This client does
only what the invoke path needs: one origin per replica, no redirects, no cookies, no
decompression, no proxies, no TLS.
"""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterable, Callable, Coroutine, Iterable
from functools import partial
from typing import Any, cast

from multidict import CIMultiDictProxy

from runtime.upstream.batch import WriteBatch
from runtime.upstream.body import BodyStream, ReadFlow
from runtime.upstream.http1 import (
    MAX_HEAD_BYTES,
    ChunkedDecoder,
    Framing,
    ProtocolError,
    ResponseHead,
    encode_request_head,
    parse_response_head,
)

RequestBody = bytes | AsyncIterable[bytes] | None
OnHead = Callable[[BaseException | None], None]

# RFC 9110 §9.2.2: a request with one of these methods may be sent again after the connection
# broke before any answer, as aiohttp does on reused connections.
_IDEMPOTENT = frozenset({"GET", "HEAD", "OPTIONS", "TRACE", "PUT", "DELETE"})
# Members as plain names: looking one up on its Enum class goes through EnumType.__getattr__.
_NONE, _LENGTH, _CHUNKED, _UNTIL_CLOSE = Framing
_NO_HEAD = ResponseHead(0, b"000 ", b"", 0, _NONE, None, False)


class _NoFlow:
    def pause_reading(self) -> None:
        pass

    def resume_reading(self) -> None:
        pass


_NO_FLOW = _NoFlow()
# One copy of head+body beats two writes (two syscalls) up to about this size.
_COALESCE_BYTES = 16 * 1024
# Deadlines are checked this often rather than with a timer per request: a uvloop timer costs
# a libuv handle to create and close, measurable at thousands of requests per second, while a
# 504 a tenth of a second late is not.
DEADLINE_TICK_S = 0.1


def settle_waiter(waiter: asyncio.Future[None], exc: BaseException | None) -> None:
    """An ``on_head`` for whoever awaits ``waiter`` (``partial(settle_waiter, waiter)``)."""
    if not waiter.done():
        if exc is None:
            waiter.set_result(None)
        else:
            waiter.set_exception(exc)


class UpstreamDisconnected(ConnectionError):
    """The replica closed the connection before the response was complete."""


class UpstreamResponse(BodyStream):
    """One exchange with a replica: status and headers of its answer once the head is in;
    the body streams through ``content`` (the response itself: one object per exchange)."""

    __slots__ = ("_conn", "_connecting", "_headers", "_on_head", "content_length", "head", "status")

    def __init__(self, loop: asyncio.AbstractEventLoop, on_head: OnHead) -> None:
        # BodyStream's state, set here rather than through its __init__ (one call fewer).
        self._loop = loop
        self._flow: ReadFlow = _NO_FLOW  # the connection, once the request goes out on one
        self._chunks: list[bytes] = []
        self._size = 0
        self._eof = False
        self._exc: BaseException | None = None
        self._waiter: asyncio.Future[None] | None = None
        self._paused = False
        self.status = 0
        self.head = _NO_HEAD  # as parsed: the fields stay bytes until `headers` is asked for
        self._headers: CIMultiDictProxy[str] | None = None
        # Body bytes still to come; None when only the end of the stream will tell.
        self.content_length: int | None = None
        self._conn: _Connection | None = None
        self._connecting: asyncio.Task[None] | None = None
        self._on_head: OnHead | None = on_head

    @property
    def content(self) -> BodyStream:
        return self

    @property
    def reason(self) -> str:
        return self.head.reason

    @property
    def headers(self) -> CIMultiDictProxy[str]:
        headers = self._headers
        if headers is None:
            headers = self._headers = self.head.headers
        return headers

    def release(self) -> None:
        """Done with this exchange (at any point): a connection still busy with it cannot be
        reused, and ``on_head`` is not called any more."""
        self._on_head = None
        task = self._connecting
        if task is not None:
            self._connecting = None
            task.cancel()
        conn = self._conn
        if conn is not None:
            self._conn = None
            conn.abandon()

    def _tell(self, exc: BaseException | None) -> None:
        on_head = self._on_head
        if on_head is not None:
            self._on_head = None
            on_head(exc)


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
        # What went out, for one more try on a fresh connection if this one turns out stale
        # (only when that is safe: see `_retry`).
        self._head = b""
        self._body: RequestBody = None
        self._held: bytes | None = None  # a request waiting for the batch (see batch.py)
        self._head_buf = b""
        self._in_head = False
        self._got_bytes = False
        self._framing = _NONE
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
        response = self._response
        if response is None:
            self._client.forget(self)
            return
        if self._in_head:
            if not self._got_bytes and self.served:
                self._retry(response)
            else:
                self._fail(UpstreamDisconnected("replica closed the connection before answering"))
        elif not self._response_done:
            if self._framing is _UNTIL_CLOSE:
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
            # The body bytes that came with the head go in first, so whoever is told about
            # the head mostly finds the whole (small) body there already.
            if rest:
                self._feed_body(response, rest)
            on_head = response._on_head
            if on_head is not None:
                response._on_head = None
                on_head(None)
        elif data:
            self._feed_body(response, data)

    # -- exchange --------------------------------------------------------------------------

    def send(
        self,
        response: UpstreamResponse,
        head: bytes,
        body: RequestBody,
        body_length: int | None,
        method: str,
        deadline: float,
    ) -> None:
        """Start ``response``'s exchange on this (idle) connection."""
        transport = self.transport
        assert transport is not None and self._response is None
        self._response = response
        response._conn = self
        response._flow = self
        self._method = method
        self._head = head
        self._body = body
        self._in_head = True
        self._got_bytes = False
        self._response_done = False
        self.deadline = deadline
        client = self._client
        client._active.add(self)  # its deadline is watched from now
        if client._ticker is None:
            client.start_ticker()
        if body is None:
            self._held = head
            client.batch.add(self)
            self._request_sent = True
        elif isinstance(body, bytes):
            if len(body) <= _COALESCE_BYTES:
                self._held = head + body
                client.batch.add(self)
            else:
                transport.writelines((head, body))
            self._request_sent = True
        else:
            self._request_sent = False
            transport.write(head)
            self._upload = self._client.spawn(self._send_body(body, body_length))

    def _retry(self, response: UpstreamResponse) -> None:
        """This reused connection was closed before any answer: the request goes once more on
        a fresh connection if sending it twice is safe (RFC 9110 §9.2.2), as aiohttp does."""
        body = self._body
        self._response = None
        response._conn = None
        if self._method in _IDEMPOTENT and (body is None or isinstance(body, bytes)):
            self._client.connect_and_send(
                self.key,
                response,
                self._head,
                body,
                None if body is None else len(body),
                self._method,
                self.deadline,
            )
        else:
            response._tell(
                UpstreamDisconnected(
                    "replica closed a kept-alive connection as the request was sent"
                )
            )

    def _parse_head(self, response: UpstreamResponse, data: bytes) -> bytes | None:
        """Consume head bytes; returns what follows the head, or None while it is incomplete
        (or broken: then the exchange has failed)."""
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
        response.head = head
        self._keep_alive = head.keep_alive
        self._framing = framing = head.framing
        if framing is _LENGTH:
            assert head.length is not None
            response.content_length = self._remaining = head.length
        elif framing is _CHUNKED:
            self._chunks = ChunkedDecoder()
        elif framing is _NONE:
            response.content_length = 0
        if framing is _NONE or (framing is _LENGTH and not head.length):
            if buf:
                self._keep_alive = False  # bytes where no body may be: out of sync
            self._body_done()
            return b""
        return buf

    def _feed_body(self, response: UpstreamResponse, data: bytes) -> None:
        framing = self._framing
        if framing is _LENGTH:
            remaining = self._remaining - len(data)
            if remaining > 0:
                self._remaining = remaining
                response.feed(data)
                return
            if remaining < 0:
                self._keep_alive = False  # more than it announced: out of sync
                data = data[:remaining]
            self._remaining = 0
            self._body_done(data)
        elif framing is _CHUNKED:
            assert self._chunks is not None
            try:
                pieces, extra = self._chunks.feed(data)
            except ProtocolError as exc:
                self._fail(exc)
                return
            for piece in pieces:
                response.feed(piece)
            if self._chunks.done:
                if extra:
                    self._keep_alive = False
                self._body_done()
        elif framing is _UNTIL_CLOSE:
            response.feed(data)

    def _body_done(self, last: bytes = b"") -> None:
        """The body is complete (``last`` is its final piece)."""
        response = self._response
        assert response is not None
        self._response_done = True
        self._client._active.discard(self)
        response.feed_eof(last)
        if self._request_sent:
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
        self._body = None
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
        response = self._response
        if response is not None:
            if self._in_head:
                response._tell(exc)
            else:
                response.set_exception(exc)
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

    def flush(self) -> None:
        """Write the request held for the batch (see batch.py)."""
        data = self._held
        if data is not None:
            self._held = None
            transport = self.transport
            if transport is not None and not transport.is_closing():
                transport.write(data)

    def close(self, *, abort: bool = False) -> None:
        self._client.untrack(self)
        self._keep_alive = False
        if abort:
            self._held = None
        else:
            self.flush()
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
        self.batch = WriteBatch.of(self.loop)

    def start(
        self,
        host: str,
        port: int,
        method: str,
        target: str,
        headers: Iterable[tuple[str, str]] | bytes,
        extra_headers: Iterable[tuple[str, str]],
        default_headers: Iterable[tuple[str, str]],
        skip_headers: frozenset[str],
        body: RequestBody,
        body_length: int | None,
        timeout_s: float,
        on_head: OnHead,
    ) -> UpstreamResponse:
        """Send one request without waiting: ``on_head(None)`` once the response head is in
        (body still streaming), ``on_head(error)`` if the exchange failed before. Either is
        called once, from the event loop's callbacks, and never after ``release()``.

        ``headers`` lose names in ``skip_headers`` (lower case) and framing/hop-by-hop ones;
        ``extra_headers`` are added, ``default_headers`` unless ``headers`` has the name.
        ``body_length`` is the byte count of an iterable body when known (None: chunked).
        The caller must ``release()`` the response. Connection problems are OSError
        subclasses; the deadline (``timeout_s``, covering the whole body) is TimeoutError.
        A head that cannot be sent (a line break in a value) raises ValueError right here.
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
        response = UpstreamResponse(self.loop, on_head)
        key = (host, port)
        conn = None
        idle = self._idle.get(key)
        while idle:  # the newest first
            conn = idle.pop()
            if not conn.lost:
                break
            conn = None
        if conn is None:
            self.connect_and_send(key, response, head, body, body_length, method, deadline)
        else:
            conn.send(response, head, body, body_length, method, deadline)
        return response

    async def request(
        self,
        host: str,
        port: int,
        method: str,
        target: str,
        headers: Iterable[tuple[str, str]] | bytes,
        *,
        extra_headers: Iterable[tuple[str, str]] = (),
        default_headers: Iterable[tuple[str, str]] = (),
        skip_headers: frozenset[str] = frozenset(),
        body: RequestBody = None,
        body_length: int | None = None,
        timeout_s: float,
    ) -> UpstreamResponse:
        """`start`, waiting for the head: returns the response then, raises the error."""
        waiter: asyncio.Future[None] = self.loop.create_future()
        response = self.start(
            host,
            port,
            method,
            target,
            headers,
            extra_headers,
            default_headers,
            skip_headers,
            body,
            body_length,
            timeout_s,
            partial(settle_waiter, waiter),
        )
        try:
            await waiter
        except BaseException:
            response.release()
            raise
        return response

    def connect_and_send(
        self,
        key: tuple[str, int],
        response: UpstreamResponse,
        head: bytes,
        body: RequestBody,
        body_length: int | None,
        method: str,
        deadline: float,
    ) -> None:
        """Start ``response``'s exchange on a new connection (in a task of its own)."""
        response._connecting = self.spawn(
            self._connect_and_send(key, response, head, body, body_length, method, deadline)
        )

    async def _connect_and_send(
        self,
        key: tuple[str, int],
        response: UpstreamResponse,
        head: bytes,
        body: RequestBody,
        body_length: int | None,
        method: str,
        deadline: float,
    ) -> None:
        try:
            conn = await self._connect(key, deadline)
        except asyncio.CancelledError:
            # Released (nobody listens any more), or the client is closing.
            response._connecting = None
            response._tell(UpstreamDisconnected("the upstream client is closed"))
            raise
        except Exception as exc:
            response._connecting = None
            response._tell(exc)
            return
        response._connecting = None
        if response._on_head is None:  # released meanwhile
            conn.close()
            return
        conn.send(response, head, body, body_length, method, deadline)

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
        idle = self._idle.get(conn.key)
        if idle is None:
            idle = self._idle[conn.key] = []
        idle.append(conn)
        if self._sweeper is None:
            self._sweeper = self.loop.call_later(self._idle_timeout_s / 2, self._sweep)

    def start_ticker(self) -> None:
        """Check the deadlines of connections in `_active` from now on (while there are)."""
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
