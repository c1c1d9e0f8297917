"""The gateway's front door: plain `/function/` requests are served right on the connection's
asyncio Protocol; every other request hands the connection to aiohttp.

Why: on a 2-core host the gateway's CPU per proxied request comes straight out of the
function's throughput, and aiohttp's server side (request and response objects, the writer,
the per-connection task dance) cost as much as the rest of the proxy path together. The front
serves a strict, plain subset (see wire.py): HTTP/1.1, no body or a Content-Length body of at
most INLINE_BYTES. Anything else — chunked or large uploads, `Expect`, HTTP/1.0, upgrades,
/system, /healthz, malformed input — goes to aiohttp on the same connection
(`transport.set_protocol`), with the bytes read so far, and aiohttp serves or rejects it as
it always did. After a hand-over the connection stays with aiohttp.

Both ways in use the same proxy rules (proxy.py) and the one Invoker.
"""

from __future__ import annotations

import asyncio
import enum
import logging
import socket
from http import HTTPStatus
from typing import cast

from aiohttp import web

from runtime.errors import LocalFaasError
from runtime.gateway import proxy
from runtime.gateway.middleware import status_for
from runtime.gateway.state import Services
from runtime.gateway.wire import (
    MAX_HEAD_BYTES,
    FunctionRequest,
    HttpDate,
    parse_function_request,
    response_head,
)
from runtime.upstream import UpstreamResponse

log = logging.getLogger("localfaas.gateway")

KEEPALIVE_S = 75.0  # idle connections (and ones stuck before a full request) close after this
SWEEP_S = 5.0
# Bytes a client may pipeline while its current request is served; more pauses reading.
MAX_PIPELINED_BYTES = 256 * 1024
_COALESCE_BYTES = 16 * 1024


class Outcome(enum.Enum):
    """How a connection goes on after a response."""

    KEEP = "keep"  # ready for the next request
    CLOSE = "close"  # close once written (the caller asked, or the front is shutting down)
    ABORT = "abort"  # the response broke off: cut the connection


class _State(enum.Enum):
    IDLE = "idle"  # waiting for (the rest of) a request head
    BODY = "body"  # head parsed, waiting for the rest of its Content-Length body
    BUSY = "busy"  # request being served
    GONE = "gone"  # closed, or handed to aiohttp


class FunctionFront:
    """Owns the front's connections; one per daemon, shared by every listening address."""

    def __init__(self, services: Services, server: web.Server) -> None:
        self.services = services
        # Bodies the front reads itself; larger ones (and any over the gateway's limit, which
        # then get their 413 from the routed handler) go through aiohttp.
        self.inline_limit = min(proxy.INLINE_BYTES, services.settings.max_body_bytes)
        self.loop = asyncio.get_running_loop()
        self.date = HttpDate()
        self.closing = False
        self._server = server  # aiohttp's low-level server: makes a protocol for hand-overs
        self._conns: set[FrontConnection] = set()
        self._sweeper: asyncio.TimerHandle | None = None

    def protocol(self) -> FrontConnection:
        """Protocol factory for `loop.create_server`."""
        return FrontConnection(self)

    def aiohttp_protocol(self) -> asyncio.Protocol:
        return cast(asyncio.Protocol, self._server())

    def add(self, conn: FrontConnection) -> None:
        self._conns.add(conn)
        if self._sweeper is None:
            self._sweeper = self.loop.call_later(SWEEP_S, self._sweep)

    def discard(self, conn: FrontConnection) -> None:
        self._conns.discard(conn)

    def _sweep(self) -> None:
        self._sweeper = None
        cutoff = self.loop.time() - KEEPALIVE_S
        for conn in [c for c in self._conns if c.waiting_since_before(cutoff)]:
            conn.close()
        if self._conns:
            self._sweeper = self.loop.call_later(SWEEP_S, self._sweep)

    async def shutdown(self, timeout_s: float) -> None:
        """Close idle connections, let requests in progress finish (up to ``timeout_s``),
        then cut what is left. Call after the listening sockets are closed."""
        self.closing = True
        if self._sweeper is not None:
            self._sweeper.cancel()
            self._sweeper = None
        for conn in list(self._conns):
            if conn.task is None:
                conn.close()
        tasks = [conn.task for conn in self._conns if conn.task is not None]
        if tasks:
            _, pending = await asyncio.wait(tasks, timeout=timeout_s)
            for task in pending:
                task.cancel()
            await asyncio.gather(*pending, return_exceptions=True)
        for conn in list(self._conns):
            conn.close(abort=True)


class FrontConnection(asyncio.Protocol):
    """One client connection, serving its requests in order (pipelining included)."""

    def __init__(self, front: FunctionFront) -> None:
        self.front = front
        self.transport: asyncio.Transport | None = None
        self.peer = ""
        self.task: asyncio.Task[None] | None = None
        self.sent = False  # bytes of the current response are out
        self.waiting_since = front.loop.time()
        self._state = _State.IDLE
        self._buf = b""
        self._request: FunctionRequest | None = None
        self._head_end = 0
        self._need = 0  # bytes of head + body the current request needs in _buf
        self._eof = False
        self._read_paused = False
        self._write_paused = False
        self._drain_waiter: asyncio.Future[None] | None = None

    # -- asyncio.Protocol ------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)
        peer = transport.get_extra_info("peername")
        self.peer = peer[0] if isinstance(peer, tuple) else ""
        sock = transport.get_extra_info("socket")
        if sock is not None and sock.family in (socket.AF_INET, socket.AF_INET6):
            # Responses are single writes that must not wait for the client's ACK (Nagle).
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.front.add(self)

    def data_received(self, data: bytes) -> None:
        buf = self._buf + data if self._buf else data
        self._buf = buf
        state = self._state
        if state is _State.IDLE:
            self._advance()
        elif state is _State.BODY:
            if len(buf) >= self._need:
                self._start()
        elif state is _State.BUSY and len(buf) > MAX_PIPELINED_BYTES and not self._read_paused:
            self._read_paused = True
            assert self.transport is not None
            self.transport.pause_reading()

    def eof_received(self) -> bool:
        self._eof = True
        # Half-closed while a request is served: answer it, then close. Anything else
        # (idle, or a request that can no longer be complete) closes now.
        return self._state is _State.BUSY

    def connection_lost(self, exc: Exception | None) -> None:
        if self._state is not _State.GONE:
            self._state = _State.GONE
            self.front.discard(self)
        self._wake_drain()

    def pause_writing(self) -> None:
        self._write_paused = True

    def resume_writing(self) -> None:
        self._write_paused = False
        self._wake_drain()

    # -- request flow ----------------------------------------------------------------------

    def _advance(self) -> None:
        """Look at the next request in the buffer: serve it, wait for more, or hand over."""
        buf = self._buf
        if not buf:
            if self._eof:
                self.close()
            return
        end = buf.find(b"\r\n\r\n", 0, MAX_HEAD_BYTES + 4)
        if end < 0:
            if len(buf) > MAX_HEAD_BYTES:
                self._hand_over()
            elif self._eof:
                self.close()
            return
        request = parse_function_request(buf[:end])
        if request is None or request.content_length > self.front.inline_limit:
            self._hand_over()
            return
        if self.front.closing:
            self.close()
            return
        self._request = request
        self._head_end = end
        self._need = end + 4 + request.content_length
        if len(buf) >= self._need:
            self._start()
        else:
            self._state = _State.BODY
            if self._eof:
                self.close()  # the body can never arrive

    def _start(self) -> None:
        request = self._request
        assert request is not None
        buf, need = self._buf, self._need
        body = buf[self._head_end + 4 : need] if request.content_length else None
        self._buf = buf[need:]
        self._state = _State.BUSY
        self.sent = False
        self.task = self.front.loop.create_task(serve(self, request, body))

    def finished(self, outcome: Outcome) -> None:
        """The response to the current request is out (or given up on)."""
        self.task = None
        self._request = None
        if self._state is _State.GONE:
            return
        if outcome is not Outcome.KEEP or self.front.closing:
            self.close(abort=outcome is Outcome.ABORT)
            return
        self._state = _State.IDLE
        self.waiting_since = self.front.loop.time()
        if self._read_paused:
            self._read_paused = False
            assert self.transport is not None
            self.transport.resume_reading()
        self._advance()

    def _hand_over(self) -> None:
        """Give this connection, and the bytes read so far, to aiohttp for good."""
        transport = self.transport
        assert transport is not None and self._state is _State.IDLE
        self._state = _State.GONE
        self.front.discard(self)
        protocol = self.front.aiohttp_protocol()
        transport.set_protocol(protocol)
        protocol.connection_made(transport)
        buf, self._buf = self._buf, b""
        if buf:
            protocol.data_received(buf)
        if self._eof:
            protocol.eof_received()

    # -- writing ---------------------------------------------------------------------------

    @property
    def closed(self) -> bool:
        return self._state is _State.GONE

    def waiting_since_before(self, cutoff: float) -> bool:
        """Idle, or stuck before a complete request, since before ``cutoff``."""
        return self._state in (_State.IDLE, _State.BODY) and self.waiting_since < cutoff

    def write(self, data: bytes) -> None:
        self.sent = True
        if self._state is not _State.GONE and self.transport is not None:
            self.transport.write(data)

    def write_chunk(self, data: bytes) -> None:
        self.sent = True
        if self._state is _State.GONE or self.transport is None:
            return
        size = b"%x\r\n" % len(data)
        if len(data) <= _COALESCE_BYTES:
            self.transport.write(size + data + b"\r\n")
        else:
            self.transport.writelines((size, data, b"\r\n"))

    async def drain(self) -> None:
        if not self._write_paused or self._state is _State.GONE:
            return
        waiter = self._drain_waiter = self.front.loop.create_future()
        try:
            await waiter
        finally:
            self._drain_waiter = None

    def _wake_drain(self) -> None:
        waiter = self._drain_waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    def close(self, *, abort: bool = False) -> None:
        if self._state is not _State.GONE:
            self._state = _State.GONE
            self.front.discard(self)
        transport = self.transport
        if transport is not None and not transport.is_closing():
            if abort:
                transport.abort()
            else:
                transport.close()


async def serve(conn: FrontConnection, request: FunctionRequest, body: bytes | None) -> None:
    """One request on the front: proxy it, or answer the error as `errors_middleware` would.
    Once bytes of the response are out, an error can only cut the connection."""
    outcome = Outcome.ABORT
    after = Outcome.CLOSE if request.close else Outcome.KEEP
    try:
        outcome = await _proxy(conn, request, body, after)
    except LocalFaasError as exc:
        if not conn.sent:
            retry_after = getattr(exc, "retry_after_s", None)
            conn.write(_error(conn, status_for(exc), str(exc), retry_after))
            outcome = after
    except Exception:
        log.exception("unhandled error on %s %s", request.method, request.target.partition("?")[0])
        if not conn.sent:
            conn.write(_error(conn, 500, "internal error; see the daemon log", None))
            outcome = after
    finally:
        conn.finished(outcome)


async def _proxy(
    conn: FrontConnection, request: FunctionRequest, body: bytes | None, after: Outcome
) -> Outcome:
    services = conn.front.services
    inv, start_ns = proxy.invocation(
        services,
        request.method,
        request.target,
        request.caller,
        peer=conn.peer,
        host=request.host,
        body=body,
        body_length=request.content_length or None,
    )
    async with services.invoker.call(inv) as upstream:
        headers = proxy.response_headers(upstream, inv.call_id, start_ns)
        status = upstream.status
        inline = proxy.inline_size(upstream)
        data = await proxy.read_inline(upstream, inv.function_name) if inline else b""
        _complete_headers(conn, headers, upstream, inline, request)
        head = response_head(status, upstream.reason, headers)
        if inline:
            conn.write(head + data if len(data) <= _COALESCE_BYTES else head)
            if len(data) > _COALESCE_BYTES:
                conn.write(data)
            # Inside the block: the replica stays leased until the caller has it all.
            await conn.drain()
            return after
        chunked = upstream.content_length is None
        conn.write(head)
        content = upstream.content
        while True:
            try:
                chunk = await content.readany()
            except OSError:
                # The status is gone already: all that is left is to cut the caller off.
                log.warning("function %s broke off its answer mid-body", inv.function_name)
                return Outcome.ABORT
            if not chunk:
                break
            if conn.closed:
                return Outcome.ABORT  # the caller left; leaving the block drops the upstream
            if chunked:
                conn.write_chunk(chunk)
            else:
                conn.write(chunk)
            await conn.drain()
        if chunked:
            conn.write(b"0\r\n\r\n")
        await conn.drain()
        return after


def _complete_headers(
    conn: FrontConnection,
    headers: list[tuple[str, str]],
    upstream: UpstreamResponse,
    inline: bool,
    request: FunctionRequest,
) -> None:
    """What aiohttp's response writer added before: Date, a default Content-Type for a body,
    the transfer coding, `Connection: close` when closing."""
    given = upstream.headers
    status = upstream.status
    content_length = upstream.content_length
    if "Date" not in given:
        headers.append(("Date", conn.front.date.now()))
    empty = request.method == "HEAD" or status in (204, 304) or content_length == 0
    if not empty and "Content-Type" not in given:
        headers.append(("Content-Type", "application/octet-stream"))
    if status == 204 and "Content-Length" in given:
        headers[:] = [(n, v) for n, v in headers if n.lower() != "content-length"]
    if not inline and content_length is None:
        headers.append(("Transfer-Encoding", "chunked"))
    if request.close:
        headers.append(("Connection", "close"))


def _error(conn: FrontConnection, status: int, message: str, retry_after_s: object) -> bytes:
    """The gateway's plain-text error answer (as `middleware.error_response`)."""
    body = (message + "\n").encode()
    headers = [
        ("Content-Type", "text/plain; charset=utf-8"),
        ("Content-Length", str(len(body))),
        ("Date", conn.front.date.now()),
    ]
    if status == 503 and retry_after_s is None:
        retry_after_s = 5
    if retry_after_s is not None:
        headers.append(("Retry-After", str(retry_after_s)))
    return response_head(status, HTTPStatus(status).phrase, headers) + body


class FrontSite(web.BaseSite):
    """A listening address whose connections start on the front (like aiohttp's TCPSite)."""

    __slots__ = ("_front", "_host", "_port")

    def __init__(self, runner: web.BaseRunner, front: FunctionFront, host: str, port: int) -> None:
        super().__init__(runner)
        self._front = front
        self._host = host
        self._port = port

    @property
    def name(self) -> str:
        return f"http://{self._host}:{self._port}"

    async def start(self) -> None:
        await super().start()
        self._server = await self._front.loop.create_server(
            self._front.protocol, self._host, self._port, reuse_address=True
        )

    @property
    def port(self) -> int:
        """The bound port (useful with port 0)."""
        server = self._server
        assert server is not None
        return int(server.sockets[0].getsockname()[1])  # type: ignore[attr-defined]
