"""The gateway's front door: plain `/function/` requests and `POST /async-function/` are served
right on the connection's asyncio Protocol; every other request hands the connection to aiohttp.

Why: on a 2-core host the gateway's CPU per proxied request comes straight out of the
function's throughput, and aiohttp's server side (request and response objects, the writer,
the per-connection task dance) cost as much as the rest of the proxy path together. The front
serves a strict, plain subset (see wire.py): HTTP/1.1, no body or a Content-Length body of at
most INLINE_BYTES. Anything else — chunked or large uploads, `Expect`, HTTP/1.0, upgrades,
/system, /healthz, malformed input — goes to aiohttp on the same connection
(`transport.set_protocol`), with the bytes read so far, and aiohttp serves or rejects it as
it always did. After a hand-over the connection stays with aiohttp.

Both ways in use the same proxy rules (proxy.py) and the one Invoker. The front uses its
calls without a task: a request is sent to the replica from `data_received` (`Call.start`)
and answered from the callback that the replica's head is in, so the usual small request and
answer cost no task, future or coroutine. Waiting for a ready replica, a body still coming or
streaming, and a caller slow to read take a task.

An async call is checked (`async_api.async_target`: 404, 400, 413) right on the protocol and
stored by a task (`async_api.accept`: call id, callback URL, the durable publish): the same
two functions as the aiohttp route, so both ways answer alike.
"""

from __future__ import annotations

import asyncio
import enum
import logging
import socket
import time
from http import HTTPStatus
from typing import cast

from aiohttp import web

from runtime.errors import LocalFaasError
from runtime.gateway import async_api, proxy
from runtime.gateway.middleware import status_for
from runtime.gateway.state import Services
from runtime.gateway.wire import (
    MAX_HEAD_BYTES,
    FunctionRequest,
    HttpDate,
    parse_function_request,
    response_head,
)
from runtime.invoker import Call, new_call_id
from runtime.upstream import UpstreamResponse
from runtime.upstream.batch import WriteBatch
from runtime.upstream.http1 import (
    F_CALL_ID,
    F_CONTENT_LENGTH,
    F_CONTENT_TYPE,
    F_DATE,
    F_HOP_BY_HOP,
    F_START_TIME,
)

log = logging.getLogger("localfaas.gateway")

KEEPALIVE_S = 75.0  # idle connections (and ones stuck before a full request) close after this
SWEEP_S = 5.0
# Bytes a client may pipeline while its current request is served; more pauses reading.
MAX_PIPELINED_BYTES = 256 * 1024
_COALESCE_BYTES = 16 * 1024
_ROUTES_MAX = 4096


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


# Members as plain names: looking one up on its Enum class goes through EnumType.__getattr__,
# which is measurable on the per-request path.
_IDLE, _BODY, _BUSY, _GONE = _State.IDLE, _State.BODY, _State.BUSY, _State.GONE
_KEEP, _CLOSE, _ABORT = Outcome.KEEP, Outcome.CLOSE, Outcome.ABORT


class FunctionFront:
    """Owns the front's connections; one per daemon, shared by every listening address."""

    def __init__(self, services: Services, server: web.Server) -> None:
        self.services = services
        # Bodies the front reads itself; larger ones (and any over the gateway's limit, which
        # then get their 413 from the routed handler) go through aiohttp.
        self.inline_limit = min(proxy.INLINE_BYTES, services.settings.max_body_bytes)
        self.timeout_s = services.settings.invoke_timeout_s
        # `/function/...` target → `route(target)`: the same few targets come in on every
        # request. Bounded: cleared when full.
        self.routes: dict[str, tuple[str, str, str]] = {}
        self.invoker = services.invoker
        self.loop = asyncio.get_running_loop()
        self.date = HttpDate()
        self.batch = WriteBatch.of(self.loop)
        self.closing = False
        self._server = server  # aiohttp's low-level server: makes a protocol for hand-overs
        self._conns: set[FrontConnection] = set()
        # Connections serving a request (also those whose caller has left meanwhile).
        self.busy: set[FrontConnection] = set()
        self._drained: asyncio.Future[None] | None = None
        self._sweeper: asyncio.TimerHandle | None = None

    def route(self, target: str) -> tuple[str, str, str]:
        """Where ``target`` goes: function name, namespace and the target for the function;
        InvalidSpec (400) for a bad function name."""
        name, path, query = proxy.split_target(target)
        route = (*proxy.function_of(name), path + "?" + query if query else path)
        if len(self.routes) >= _ROUTES_MAX:
            self.routes.clear()
        self.routes[target] = route
        return route

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
            if conn not in self.busy:
                conn.close()
        if self.busy:
            self._drained = self.loop.create_future()
            try:
                async with asyncio.timeout(timeout_s):
                    await self._drained
            except TimeoutError:
                pass
        tasks = [task for conn in list(self.busy) if (task := conn.cancel()) is not None]
        await asyncio.gather(*tasks, return_exceptions=True)
        for conn in list(self._conns):
            conn.close(abort=True)

    def check_drained(self) -> None:
        """(Closing) Tell `shutdown` once no connection is busy any more."""
        if not self.busy and self._drained is not None and not self._drained.done():
            self._drained.set_result(None)


class FrontConnection(asyncio.Protocol):
    """One client connection, serving its requests in order (pipelining included)."""

    def __init__(self, front: FunctionFront) -> None:
        self.front = front
        self.transport: asyncio.Transport | None = None
        self.peer_bytes = b""  # the caller's address, for X-Forwarded-For
        self.task: asyncio.Task[None] | None = None  # when serving takes a task
        self.sent = False  # bytes of the current response are out
        # The call of the request being served, and its X-Call-Id and X-Start-Time.
        self._call: Call | None = None
        self._held: list[bytes] | None = None  # writes waiting for the batch (see batch.py)
        self._call_id = b""
        self._start_ns = b""
        self.waiting_since = front.loop.time()
        self._state = _IDLE
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
        self.peer_bytes = peer[0].encode("ascii") if isinstance(peer, tuple) else b""
        sock = transport.get_extra_info("socket")
        if sock is not None and sock.family in (socket.AF_INET, socket.AF_INET6):
            # Responses are single writes that must not wait for the client's ACK (Nagle).
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.front.add(self)

    def data_received(self, data: bytes) -> None:
        buf = self._buf + data if self._buf else data
        self._buf = buf
        state = self._state
        if state is _IDLE:
            self._advance()
        elif state is _BODY:
            if len(buf) >= self._need:
                self._start()
        elif state is _BUSY and len(buf) > MAX_PIPELINED_BYTES and not self._read_paused:
            self._read_paused = True
            assert self.transport is not None
            self.transport.pause_reading()

    def eof_received(self) -> bool:
        self._eof = True
        # Half-closed while a request is served: answer it, then close. Anything else
        # (idle, or a request that can no longer be complete) closes now.
        return self._state is _BUSY

    def connection_lost(self, exc: Exception | None) -> None:
        self._held = None
        if self._state is not _GONE:
            self._state = _GONE
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
            self._state = _BODY
            if self._eof:
                self.close()  # the body can never arrive

    def _start(self) -> None:
        """Serve the request: sent right here to a replica that can take it now, and answered
        from `_on_head` when the replica's head is in; no task, future or coroutine for the
        usual small request and answer. Waiting for a replica, streaming and slow callers take
        a task (`serve`, `_finish`)."""
        request = self._request
        assert request is not None
        buf, need = self._buf, self._need
        body = buf[self._head_end + 4 : need] if request.content_length else None
        self._buf = buf[need:]
        self._state = _BUSY
        self.sent = False
        front = self.front
        front.busy.add(self)
        if request.is_async:
            self._start_async(request, body)
            return
        try:
            call = self._call = _call_for(self, request, body)
            if call.start(self._on_head):
                return
        except Exception as exc:
            self._call = None
            self.finished(self._error_answer(request, exc))
            return
        self._call = None  # no replica ready yet: wait for one
        self.task = front.loop.create_task(serve(self, request, call))

    def _start_async(self, request: FunctionRequest, body: bytes | None) -> None:
        """`POST /async-function/`: the checks that need no waiting answer right here; the
        rest (callback URL, the durable publish) takes a task (`serve_async`)."""
        try:
            target = async_api.async_target(
                self.front.services, request.target, request.content_length
            )
        except Exception as exc:
            self.finished(self._error_answer(request, exc))
            return
        self.task = self.front.loop.create_task(serve_async(self, request, target, body or b""))

    def _on_head(self, exc: BaseException | None) -> None:
        """The replica's head is in, or the call failed before (`Call.start`)."""
        call, request = self._call, self._request
        assert call is not None and request is not None
        if exc is not None:
            self._call = None
            self.finished(self._error_answer(request, exc))
            return
        after = _CLOSE if request.close else _KEEP
        try:
            upstream = call.response
            assert upstream is not None
            # All of a body of known length in (so `proxy.inline_size` holds): one write.
            data = upstream.take_all() if upstream.content_length is not None else None
            if data is None:  # the body is still coming, or streams
                self.task = self.front.loop.create_task(_finish(self, request, call, after))
                return
            head = _response_head(
                self.front, upstream, request, True, self._call_id, self._start_ns
            )
            if len(data) <= _COALESCE_BYTES:
                self.hold(head + data)
            else:
                self.write(head)
                self.write(data)
            if self._write_paused:
                # The replica stays leased until the caller has it all.
                self.task = self.front.loop.create_task(_drained(self, call, after))
                return
        except Exception as error:
            self._call = None
            call.close()
            self.finished(self._error_answer(request, error))
            return
        self._call = None
        call.close()
        self.finished(after)

    def _error_answer(self, request: FunctionRequest, exc: BaseException) -> Outcome:
        """Answer ``exc`` as `errors_middleware` would; once bytes of the response are out,
        an error can only cut the connection."""
        if isinstance(exc, LocalFaasError):
            if self.sent:
                return _ABORT
            retry_after = getattr(exc, "retry_after_s", None)
            self.write(_error(self, status_for(exc), str(exc), retry_after))
        else:
            log.error(
                "unhandled error on %s %s",
                request.method,
                request.target.partition("?")[0],
                exc_info=exc,
            )
            if self.sent:
                return _ABORT
            self.write(_error(self, 500, "internal error; see the daemon log", None))
        return _CLOSE if request.close else _KEEP

    def cancel(self) -> asyncio.Task[None] | None:
        """Stop serving the current request (the front is shutting down); returns the task
        to wait for, if serving took one."""
        task = self.task
        if task is not None:
            task.cancel()
            return task
        call = self._call
        if call is not None:
            self._call = None
            call.abort()
            self.finished(_ABORT)
        return None

    def finished(self, outcome: Outcome) -> None:
        """The response to the current request is out (or given up on)."""
        self.task = None
        self._request = None
        front = self.front
        front.busy.discard(self)
        if front.closing:
            front.check_drained()
        if self._state is _GONE:
            return
        if outcome is not _KEEP or self.front.closing:
            self.close(abort=outcome is _ABORT)
            return
        self._state = _IDLE
        self.waiting_since = self.front.loop.time()
        if self._read_paused:
            self._read_paused = False
            assert self.transport is not None
            self.transport.resume_reading()
        self._advance()

    def _hand_over(self) -> None:
        """Give this connection, and the bytes read so far, to aiohttp for good."""
        transport = self.transport
        assert transport is not None and self._state is _IDLE
        self.flush()  # the answers to earlier requests go out first
        self._state = _GONE
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
        return self._state is _GONE

    def waiting_since_before(self, cutoff: float) -> bool:
        """Idle, or stuck before a complete request, since before ``cutoff``."""
        return self._state in (_IDLE, _BODY) and self.waiting_since < cutoff

    def write(self, data: bytes) -> None:
        self.sent = True
        if self._state is not _GONE and self.transport is not None:
            if self._held is not None:
                self._held.append(data)  # after what is held, in order
            else:
                self.transport.write(data)

    def hold(self, data: bytes) -> None:
        """`write` at the end of the event loop's round, with other writes (see batch.py)."""
        self.sent = True
        if self._state is not _GONE and self.transport is not None:
            if self._held is None:
                self._held = [data]
                self.front.batch.add(self)
            else:
                self._held.append(data)

    def flush(self) -> None:
        """Write what is held."""
        held = self._held
        if held is not None:
            self._held = None
            transport = self.transport
            if transport is not None and not transport.is_closing():
                transport.write(held[0] if len(held) == 1 else b"".join(held))

    def write_chunk(self, data: bytes) -> None:
        if len(data) <= _COALESCE_BYTES:
            self.write(b"%x\r\n%b\r\n" % (len(data), data))
        else:
            self.write(b"%x\r\n" % len(data))
            self.write(data)
            self.write(b"\r\n")

    async def drain(self) -> None:
        if not self._write_paused or self._state is _GONE:
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
        if abort:
            self._held = None
        else:
            self.flush()
        if self._state is not _GONE:
            self._state = _GONE
            self.front.discard(self)
        transport = self.transport
        if transport is not None and not transport.is_closing():
            if abort:
                transport.abort()
            else:
                transport.close()


async def serve(conn: FrontConnection, request: FunctionRequest, call: Call) -> None:
    """One request on the front that waits for a ready replica."""
    outcome = _ABORT
    try:
        async with call as upstream:
            outcome = await _relay(conn, request, upstream, call.function_name)
    except Exception as exc:
        outcome = conn._error_answer(request, exc)
    finally:
        conn.finished(outcome)


async def serve_async(
    conn: FrontConnection, request: FunctionRequest, target: async_api.AsyncTarget, body: bytes
) -> None:
    """An async call on the front: stored durably, then 202 with its X-Call-Id."""
    outcome = _ABORT
    try:
        call_id = await async_api.accept(target, request.method, _caller_pairs(request), body)
        conn.hold(_accepted(conn, call_id, request.close))
        outcome = _CLOSE if request.close else _KEEP
    except Exception as exc:
        outcome = conn._error_answer(request, exc)
    finally:
        conn.finished(outcome)


def _caller_pairs(request: FunctionRequest) -> list[tuple[str, str]]:
    """The caller's header fields as aiohttp's request would list them (names as sent,
    values without surrounding blanks, decoded as aiohttp decodes them)."""
    pairs = []
    for line in request.forward.split(b"\r\n"):
        if line:
            name, _, value = line.partition(b":")
            pairs.append(
                (name.decode("ascii"), value.strip(b" \t").decode("utf-8", "surrogateescape"))
            )
    return pairs


def _accepted(conn: FrontConnection, call_id: str, close: bool) -> bytes:
    """The 202 head, as the aiohttp route answers it (less aiohttp's Server field)."""
    return b"".join(
        (
            b"HTTP/1.1 202 Accepted\r\nX-Call-Id: ",
            call_id.encode("ascii"),
            b"\r\nContent-Length: 0\r\nDate: ",
            conn.front.date.now_bytes(),
            b"\r\nConnection: close\r\n\r\n" if close else b"\r\n\r\n",
        )
    )


async def _finish(
    conn: FrontConnection, request: FunctionRequest, call: Call, after: Outcome
) -> None:
    """The rest of a request whose answer takes waiting (a body still coming, or streaming)."""
    outcome = _ABORT
    upstream = call.response
    assert upstream is not None
    try:
        outcome = await _relay(conn, request, upstream, call.function_name)
    except Exception as exc:
        outcome = conn._error_answer(request, exc)
    finally:
        conn._call = None
        call.close()
        conn.finished(outcome)


async def _drained(conn: FrontConnection, call: Call, after: Outcome) -> None:
    """The answer is written; the replica stays leased until the caller has it all."""
    try:
        await conn.drain()
    finally:
        conn._call = None
        call.close()
        conn.finished(after)


async def _relay(
    conn: FrontConnection, request: FunctionRequest, upstream: UpstreamResponse, function: str
) -> Outcome:
    """Pass the replica's answer on; the call stays open (the replica leased) meanwhile."""
    after = _CLOSE if request.close else _KEEP
    front = conn.front
    if proxy.inline_size(upstream):
        data = upstream.take_all()
        if data is None:
            data = await proxy.read_inline(upstream, function)
        head = _response_head(front, upstream, request, True, conn._call_id, conn._start_ns)
        if len(data) <= _COALESCE_BYTES:
            conn.write(head + data)
        else:
            conn.write(head)
            conn.write(data)
        await conn.drain()
        return after
    chunked = upstream.content_length is None
    conn.write(_response_head(front, upstream, request, False, conn._call_id, conn._start_ns))
    content = upstream.content
    while True:
        try:
            chunk = await content.readany()
        except OSError:
            # The status is gone already: all that is left is to cut the caller off.
            log.warning("function %s broke off its answer mid-body", function)
            return _ABORT
        if not chunk:
            break
        if conn.closed:
            return _ABORT  # the caller left; closing the call drops the upstream
        if chunked:
            conn.write_chunk(chunk)
        else:
            conn.write(chunk)
        await conn.drain()
    if chunked:
        conn.write(b"0\r\n\r\n")
    await conn.drain()
    return after


def _call_for(conn: FrontConnection, request: FunctionRequest, body: bytes | None) -> Call:
    """The call for a request: what `proxy.invocation` makes for aiohttp's requests, built
    from the caller's bytes. Its X-Call-Id and X-Start-Time (unix ns) go on ``conn``."""
    front = conn.front
    route = front.routes.get(request.target) or front.route(request.target)
    conn._start_ns = start = b"%d" % time.time_ns()
    prior = request.forwarded_for
    headers = b"".join(
        (
            request.forward,
            b"X-Forwarded-For: ",
            prior + b", " + conn.peer_bytes if prior else conn.peer_bytes,
            b"\r\nX-Forwarded-Host: ",
            request.forwarded_host or request.host,
            b"\r\nX-Start-Time: ",
            start,
            b"\r\n",
        )
    )
    call_id = request.call_id
    if call_id is None:
        call_id_text = new_call_id()
        conn._call_id = call_id_text.encode("ascii")
    else:
        call_id_text = call_id.decode("utf-8", "surrogateescape")
        conn._call_id = call_id
    name, namespace, target = route
    return Call(
        front.invoker,
        name,
        namespace,
        request.method,
        target,
        headers,
        body,
        None,
        call_id_text,
        front.timeout_s,
    )


# Response fields the front cannot pass on as they came.
_NOT_AS_IS = F_HOP_BY_HOP | F_CALL_ID | F_START_TIME


def _response_head(
    front: FunctionFront,
    upstream: UpstreamResponse,
    request: FunctionRequest,
    inline: bool,
    call_id: bytes,
    start: bytes,
) -> bytes:
    """The response head for the caller: the function's fields (as received when none must
    go), the gateway's own, and what aiohttp's response writer added before: Date, a default
    Content-Type for a body, the transfer coding, `Connection: close` when closing."""
    given = upstream.head
    present = given.present
    status = given.status
    content_length = upstream.content_length
    if present & _NOT_AS_IS or (
        present & F_CONTENT_LENGTH and (content_length is None or status == 204)
    ):
        drop = proxy.RESPONSE_DROP
        if content_length is None or status == 204:
            drop = drop | {"content-length"}
        fields = "".join(
            [
                f"\r\n{name}: {value}"
                for name, value in proxy.forwarded_pairs(upstream.headers, drop)
            ]
        ).encode("utf-8", "surrogateescape")
    else:
        fields = given.fields
    parts = [
        b"HTTP/1.1 ",
        given.status_text,
        fields,
        b"\r\nX-Call-Id: ",
        call_id,
        b"\r\nX-Start-Time: ",
        start,
    ]
    if not present & F_DATE:
        parts.append(b"\r\nDate: ")
        parts.append(front.date.now_bytes())
    if not present & F_CONTENT_TYPE and not (
        request.method == "HEAD" or status in (204, 304) or content_length == 0
    ):
        parts.append(b"\r\nContent-Type: application/octet-stream")
    if not inline and content_length is None:
        parts.append(b"\r\nTransfer-Encoding: chunked")
    if request.close:
        parts.append(b"\r\nConnection: close")
    parts.append(b"\r\n\r\n")
    return b"".join(parts)


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
