"""The watchdog's HTTP/1.1 server: one asyncio Protocol per connection, no framework.

Each connection runs one task that reads a request head, calls the handler, writes the
response and loops: keep-alive, and pipelined requests are served one after another in
order. The handler (``async (Request) -> Response | StreamResponse``) reads the body through
the request when it wants it: whole (``request.read``, with a size limit and a timeout) or
streamed (``request.stream()``). Parsing rules are in ``watchdog.http11``.

Timeouts: an idle keep-alive connection is closed after ``KEEPALIVE_IDLE_S``; once the first
byte of a request has arrived, its head must be complete within ``read_timeout`` (else 408);
``request.read`` bounds the body by its own timeout (408). One timer per connection, moved
lazily: keeping a connection alive costs no timer per request.

Errors in a request (malformed head, bad framing, bad chunk) are answered with a short
status (400, 408, 413, 431, 501, 505) and the connection closes; the server and every other
connection carry on. A connection closed with request bytes unread is closed gracefully
(``lingering close``): we stop writing, then read and drop what the client still sends for
up to ``LINGER_S``, so the client sees our answer instead of a reset.
"""

from __future__ import annotations

import asyncio
import logging
import socket
from collections.abc import AsyncIterator, Awaitable, Callable

from watchdog.body import BodyError, too_large
from watchdog.http11 import (
    FRAMING_CHUNKED,
    FRAMING_FIXED,
    FRAMING_NONE,
    FRAMING_UNTIL_CLOSE,
    MAX_HEAD_BYTES,
    TOKEN_START,
    ChunkedDecoder,
    HttpError,
    Request,
    Response,
    StreamResponse,
    http_date,
    parse_request,
    status_line,
)
from watchdog.responses import ORIGIN_HEADER, ORIGIN_VALUE

log = logging.getLogger("watchdog")

# Longer than any reverse proxy's idle timeout (the gateway's pool keeps idle connections
# 30 s): the client, not us, should end an idle connection, or a request it sends just as we
# close would fail. The value aiohttp used before.
KEEPALIVE_IDLE_S = 3630.0
LINGER_S = 2.0
_CLOSE_TIMEOUT_S = 1.0  # connections still busy when the server closes get this long
_BACKLOG = 1024  # bursts from the gateway's activator should queue, not be refused
_READ_HIGH = 256 * 1024  # stop reading from a client that sends faster than we consume
_READ_LOW = 64 * 1024
_LARGE_BODY = 16 * 1024  # above this, head and body go out in two writes instead of a copy

Handler = Callable[[Request], Awaitable["Response | StreamResponse"]]


class HttpServer:
    """Serves one port with ``handler``; ``start``, then ``stop_accepting`` and ``close``."""

    def __init__(self, handler: Handler, read_timeout_s: float, name: str = "http") -> None:
        self.handler = handler
        self.read_timeout_s = read_timeout_s
        self.name = name
        self.connections: set[_Connection] = set()
        self.loop: asyncio.AbstractEventLoop | None = None
        self._server: asyncio.AbstractServer | None = None

    async def start(self, port: int, host: str = "0.0.0.0") -> int:
        """Listen; return the bound port (useful when asked for port 0). Raises OSError."""
        self.loop = asyncio.get_running_loop()
        # Our own socket: create_server(host=...) would resolve the host through getaddrinfo,
        # which imports the idna codec on every start.
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.bind((host, port))
            sock.setblocking(False)
            self._server = await self.loop.create_server(
                lambda: _Connection(self), sock=sock, backlog=_BACKLOG
            )
        except BaseException:
            sock.close()
            raise
        return int(sock.getsockname()[1])

    async def stop_accepting(self) -> None:
        """Close the listener and idle keep-alive connections; busy ones close after their reply."""
        if self._server is not None:
            self._server.close()
            self._server = None
        for conn in list(self.connections):
            conn.shutdown()

    async def close(self) -> None:
        """Stop accepting, give busy connections ``_CLOSE_TIMEOUT_S``, then cut them."""
        await self.stop_accepting()
        tasks = {conn.task for conn in self.connections if conn.task is not None}
        if tasks:
            _, pending = await asyncio.wait(tasks, timeout=_CLOSE_TIMEOUT_S)
            for conn in list(self.connections):
                conn.abort()
            if pending:
                await asyncio.wait(pending, timeout=_CLOSE_TIMEOUT_S)


class _Connection(asyncio.Protocol):
    """One client connection and the task that serves its requests in order."""

    def __init__(self, server: HttpServer) -> None:
        assert server.loop is not None
        self._server = server
        self._loop = server.loop
        self._handler = server.handler
        self._read_timeout_s = server.read_timeout_s
        self._buf = bytearray()
        self._transport: asyncio.Transport = None  # type: ignore[assignment]
        self._waiter: asyncio.Future[None] | None = None
        self._drain_waiter: asyncio.Future[None] | None = None
        self._write_paused = False
        self._read_paused = False
        self._eof = False
        self._lost = False
        self._discard = False  # lingering close: input is dropped
        self._idle = False  # waiting for a request, nothing of it received yet
        self._closing = False  # server draining: close after the current response
        self._abort = False  # the handler asked for the connection to be cut
        self._deadline: float | None = None
        self._expired = False
        self._timer: asyncio.TimerHandle | None = None
        self._timer_at = 0.0
        self.task: asyncio.Task[None] | None = None

    # asyncio.Protocol

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = transport  # type: ignore[assignment]
        sock = transport.get_extra_info("socket")
        if sock is not None:
            try:  # notice peers that vanished without a FIN (as aiohttp did)
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
            except OSError:
                pass
        self._server.connections.add(self)
        self.task = self._loop.create_task(self._run())

    def data_received(self, data: bytes) -> None:
        if self._discard:
            return
        buf = self._buf
        buf += data
        waiter = self._waiter
        if waiter is not None:
            self._waiter = None
            if not waiter.done():
                waiter.set_result(None)
        if len(buf) > _READ_HIGH and not self._read_paused:
            self._read_paused = True
            self._transport.pause_reading()

    def eof_received(self) -> bool:
        self._eof = True
        self._wake()
        return True  # keep our side open: the response may still be on its way

    def connection_lost(self, exc: Exception | None) -> None:
        self._lost = True
        self._eof = True
        self._wake()
        drain = self._drain_waiter
        if drain is not None:
            self._drain_waiter = None
            if not drain.done():
                drain.set_result(None)
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self._server.connections.discard(self)

    def pause_writing(self) -> None:
        self._write_paused = True

    def resume_writing(self) -> None:
        self._write_paused = False
        drain = self._drain_waiter
        if drain is not None:
            self._drain_waiter = None
            if not drain.done():
                drain.set_result(None)

    # Server-side control

    def shutdown(self) -> None:
        """Drain: close now if idle, else after the response in progress."""
        self._closing = True
        if self._idle:
            self._wake()

    def abort(self) -> None:
        """Cut the connection now, whatever it is doing."""
        if self.task is not None and not self.task.done():
            self.task.cancel()
        if self._transport is not None:
            self._transport.abort()

    def abort_after_response(self) -> None:
        self._abort = True

    # Waiting for input, with the connection's single lazy timer

    def _wake(self) -> None:
        waiter = self._waiter
        if waiter is not None:
            self._waiter = None
            if not waiter.done():
                waiter.set_result(None)

    async def _wait(self) -> None:
        waiter = self._loop.create_future()
        self._waiter = waiter
        try:
            await waiter
        finally:
            self._waiter = None

    def _set_deadline(self, when: float) -> None:
        self._deadline = when
        self._expired = False
        timer = self._timer
        if timer is None or self._timer_at > when:
            if timer is not None:
                timer.cancel()
            self._timer = self._loop.call_at(when, self._on_timer)
            self._timer_at = when

    def _clear_deadline(self) -> None:
        self._deadline = None
        self._expired = False

    def _on_timer(self) -> None:
        self._timer = None
        deadline = self._deadline
        if deadline is None or self._lost:
            return
        if self._loop.time() + 0.001 < deadline:  # the deadline moved on since we armed
            self._timer = self._loop.call_at(deadline, self._on_timer)
            self._timer_at = deadline
            return
        self._expired = True
        self._wake()

    def _consumed(self) -> None:
        if self._read_paused and len(self._buf) <= _READ_LOW:
            self._read_paused = False
            if not self._lost:
                self._transport.resume_reading()

    # The request loop

    async def _run(self) -> None:
        buf = self._buf
        loop = self._loop
        read_timeout_s = self._read_timeout_s
        request: Request | None = None
        linger = False
        try:
            while True:
                # 1. A complete request head.
                scan = 0
                first_byte_at: float | None = None
                while True:
                    if buf.startswith(b"\r\n"):  # empty lines before a request line are ignored
                        while buf.startswith(b"\r\n"):
                            del buf[:2]
                        scan = 0
                    end = buf.find(b"\r\n\r\n", scan)
                    if end >= 0:
                        break
                    if buf:
                        _check_partial_head(buf, scan)
                        if first_byte_at is None:
                            first_byte_at = loop.time()
                            if read_timeout_s:
                                self._set_deadline(first_byte_at + read_timeout_s)
                        scan = max(0, len(buf) - 3)
                    else:
                        if self._closing:
                            return
                        self._set_deadline(loop.time() + KEEPALIVE_IDLE_S)
                    if self._eof:
                        return  # the client is done (maybe mid-head): nothing to answer
                    self._idle = not buf
                    await self._wait()
                    self._idle = False
                    if self._expired:
                        if buf and first_byte_at is not None:
                            linger = True
                            raise HttpError(408, "request head not received within read_timeout")
                        return  # idle keep-alive connection
                self._clear_deadline()
                if end > MAX_HEAD_BYTES:
                    raise HttpError(431, "request head too large")
                head = bytes(buf[:end])
                del buf[: end + 4]
                if self._read_paused:
                    self._consumed()
                request = parse_request(head)
                request._conn = self
                if self._closing:
                    request.close = True

                # 2. The handler, then its response.
                response = await self._handler(request)
                if self._abort:
                    self._transport.abort()
                    return
                if response.prepared:
                    if not response.finished:  # type: ignore[union-attr]
                        self._transport.abort()  # a truncated body must look broken
                        return
                else:
                    self._write_response(request, response)  # type: ignore[arg-type]
                if request.close or self._lost:
                    linger = not request.body_done or bool(buf)
                    return
                request = None
                if self._write_paused:
                    await self.drain()  # a client that does not read gets no more answers
        except HttpError as exc:
            linger = True
            self._write_error(request, exc)
        except asyncio.CancelledError:
            self._transport.abort()
            raise
        except ConnectionError:
            pass  # the client went away while we were writing to it
        except Exception as exc:
            log.error("HTTP connection failed: %r", exc, exc_info=exc)
            linger = True
            if request is None or not request.started:
                self._write_error(request, HttpError(500, "watchdog internal error"))
        finally:
            if not self._lost and not self._transport.is_closing():
                if linger:
                    await self._linger()
                self._transport.close()

    async def _linger(self) -> None:
        """Stop sending, then drop what the client still sends until it closes or LINGER_S."""
        self._discard = True
        self._buf.clear()
        if self._read_paused:
            self._read_paused = False
            self._transport.resume_reading()
        try:
            if self._transport.can_write_eof():
                self._transport.write_eof()
            self._set_deadline(self._loop.time() + LINGER_S)
            while not self._eof and not self._expired:
                await self._wait()
        except (OSError, RuntimeError):
            pass

    # Writing

    def _skip_buffered_body(self, request: Request) -> None:
        """Drop a body the handler did not read if all of it is here (else we must close)."""
        buf = self._buf
        length = request.content_length
        if length is not None:
            if len(buf) >= length:
                del buf[:length]
                request.body_done = True
        else:
            decoder = ChunkedDecoder()
            scratch = bytearray(buf)
            try:
                if decoder.decode(scratch, []):
                    buf[:] = scratch
                    request.body_done = True
            except HttpError:
                pass
        if request.body_done and self._read_paused:
            self._consumed()

    def _write_response(self, request: Request, response: Response) -> None:
        transport = self._transport
        if self._lost or transport.is_closing():
            request.close = True
            return
        if not request.body_done and not request.close and not self._closing:
            self._skip_buffered_body(request)
        status = response.status
        body = response.body
        headers = response.headers
        close = request.close or not request.body_done or self._closing
        parts = [status_line(status, response.reason)]
        for name, value in headers._items:
            parts.append(f"{name}: {value}\r\n")
        if status >= 200 and status != 204 and status != 304:
            parts.append(f"Content-Length: {len(body)}\r\n")
        else:
            body = b""
        if "date" not in headers._first:
            parts.append(f"Date: {http_date()}\r\n")
        if close:
            parts.append("Connection: close\r\n\r\n")
        elif request.version == (1, 0):
            parts.append("Connection: keep-alive\r\n\r\n")
        else:
            parts.append("\r\n")
        head = "".join(parts).encode("utf-8", "surrogateescape")
        request.close = close
        request.started = True
        if not body or request.method == "HEAD":
            transport.write(head)
        elif len(body) <= _LARGE_BODY:
            transport.write(head + body)
        else:
            transport.write(head)
            transport.write(body)

    def _write_error(self, request: Request | None, exc: HttpError) -> None:
        if self._lost or self._transport.is_closing():
            return
        body = (exc.message + "\n").encode()
        head = (
            f"{status_line(exc.status)}"
            f"Content-Type: text/plain; charset=utf-8\r\n"
            f"{ORIGIN_HEADER}: {ORIGIN_VALUE}\r\n"
            f"Content-Length: {len(body)}\r\n"
            f"Date: {http_date()}\r\n"
            "Connection: close\r\n\r\n"
        ).encode()
        self._transport.write(head + body)

    async def drain(self) -> None:
        if self._lost:
            raise ConnectionResetError("the client closed the connection")
        if self._write_paused:
            waiter = self._loop.create_future()
            self._drain_waiter = waiter
            await waiter
            if self._lost:
                raise ConnectionResetError("the client closed the connection")

    def start_stream(self, request: Request, response: StreamResponse) -> None:
        if self._lost or self._transport.is_closing():
            raise ConnectionResetError("the client closed the connection")
        status = response.status
        headers = response.headers
        close = request.close or not request.body_done or self._closing
        if request.method == "HEAD" or status < 200 or status in (204, 304):
            framing = FRAMING_NONE
        elif "content-length" in headers:
            framing = FRAMING_FIXED
        elif request.version >= (1, 1):
            framing = FRAMING_CHUNKED
        else:
            framing = FRAMING_UNTIL_CLOSE
            close = True
        parts = [status_line(status, response.reason)]
        for name, value in headers._items:
            parts.append(f"{name}: {value}\r\n")
        if framing == FRAMING_CHUNKED:
            parts.append("Transfer-Encoding: chunked\r\n")
        if "date" not in headers._first:
            parts.append(f"Date: {http_date()}\r\n")
        if close:
            parts.append("Connection: close\r\n")
        elif request.version == (1, 0):
            parts.append("Connection: keep-alive\r\n")
        parts.append("\r\n")
        request.close = close
        request.started = True
        response._framing = framing
        self._transport.write("".join(parts).encode("utf-8", "surrogateescape"))

    async def write_stream(self, response: StreamResponse, data: bytes) -> None:
        if self._lost or self._transport.is_closing():
            raise ConnectionResetError("the client closed the connection")
        if response.finished:
            raise RuntimeError("the response is finished")
        framing = response._framing
        if not data or framing == FRAMING_NONE:
            return
        if framing == FRAMING_CHUNKED:
            self._transport.writelines((b"%x\r\n" % len(data), data, b"\r\n"))
        else:
            self._transport.write(data)
        if self._write_paused:
            await self.drain()

    def end_stream(self, response: StreamResponse) -> None:
        if response.finished:
            return
        response.finished = True
        if (
            response._framing == FRAMING_CHUNKED
            and not self._lost
            and not self._transport.is_closing()
        ):
            self._transport.write(b"0\r\n\r\n")

    # Request bodies

    async def send_continue(self, request: Request) -> None:
        if request.expect_continue:
            request.expect_continue = False
            # A client that already started sending did not wait for us.
            if not request.body_done and not self._buf and not self._transport.is_closing():
                self._transport.write(b"HTTP/1.1 100 Continue\r\n\r\n")

    async def _wait_body(self, deadline: float | None, timeout_s: float) -> None:
        if self._eof:
            raise BodyError(400, "the client closed the connection before the body ended")
        if deadline is not None:
            self._set_deadline(deadline)
        await self._wait()
        if self._expired and deadline is not None:
            raise BodyError(408, f"request body not received within read_timeout ({timeout_s:g}s)")

    async def read_body(self, request: Request, limit: int, timeout_s: float) -> bytes:
        if request.body_done:
            return b""
        buf = self._buf
        length = request.content_length
        if length is not None:
            if length > limit:
                raise too_large(limit)
            if len(buf) >= length:  # small bodies usually arrive with the head
                if len(buf) == length:
                    data = bytes(buf)
                    buf.clear()
                else:
                    data = bytes(buf[:length])
                    del buf[:length]
                request.body_done = True
                if self._read_paused:
                    self._consumed()
                return data
        if request.expect_continue:
            await self.send_continue(request)
        deadline = self._loop.time() + timeout_s if timeout_s else None
        parts: list[bytes] = []
        try:
            if length is not None:
                remaining = length
                while True:
                    if buf:
                        if len(buf) <= remaining:
                            parts.append(bytes(buf))
                            remaining -= len(buf)
                            buf.clear()
                        else:
                            parts.append(bytes(buf[:remaining]))
                            del buf[:remaining]
                            remaining = 0
                        self._consumed()
                        if not remaining:
                            break
                    await self._wait_body(deadline, timeout_s)
            else:
                decoder = ChunkedDecoder()
                while True:
                    try:
                        complete = decoder.decode(buf, parts)
                    except HttpError as exc:
                        raise BodyError(400, exc.message) from None
                    self._consumed()
                    if decoder.announced > limit:
                        raise too_large(limit)
                    if complete:
                        break
                    await self._wait_body(deadline, timeout_s)
        finally:
            self._clear_deadline()
        request.body_done = True
        return parts[0] if len(parts) == 1 else b"".join(parts)

    async def stream_body(self, request: Request) -> AsyncIterator[bytes]:
        """The body piece by piece as it arrives; BodyError(400) if the client gives up."""
        if request.body_done:
            return
        if request.expect_continue:
            await self.send_continue(request)
        buf = self._buf
        length = request.content_length
        if length is not None:
            remaining = length
            while remaining:
                if not buf:
                    await self._wait_body(None, 0)
                    continue
                if len(buf) <= remaining:
                    piece = bytes(buf)
                    buf.clear()
                else:
                    piece = bytes(buf[:remaining])
                    del buf[:remaining]
                remaining -= len(piece)
                if not remaining:
                    request.body_done = True
                self._consumed()
                yield piece
            return
        decoder = ChunkedDecoder()
        while True:
            parts: list[bytes] = []
            try:
                complete = decoder.decode(buf, parts)
            except HttpError as exc:
                raise BodyError(400, exc.message) from None
            self._consumed()
            if complete:
                request.body_done = True
            if parts:
                yield b"".join(parts)
            if complete:
                return
            await self._wait_body(None, 0)


def _check_partial_head(buf: bytearray, scan: int) -> None:
    """Refuse an incomplete head early when it can never become a valid one."""
    if len(buf) > MAX_HEAD_BYTES + 4:
        raise HttpError(431, "request head too large")
    if buf[0] not in TOKEN_START and buf != b"\r":
        raise HttpError(400, "not an HTTP request")
    newline = buf.find(b"\n", max(scan - 1, 0))
    while newline >= 0:
        if newline == 0 or buf[newline - 1] != 0x0D:
            raise HttpError(400, "bare LF in the request head")
        newline = buf.find(b"\n", newline + 1)
