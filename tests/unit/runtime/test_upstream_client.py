"""The gateway's HTTP/1.1 client against scripted servers (raw sockets: every byte on the wire
is chosen by the test), on asyncio's own loop and on uvloop (see conftest.py)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable

import pytest

from runtime.upstream import (
    ProtocolError,
    UpstreamClient,
    UpstreamDisconnected,
    UpstreamResponse,
)
from runtime.upstream.body import HIGH_WATER_BYTES

Handler = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


class Server:
    """Runs ``handler`` for each connection; counts connections."""

    def __init__(self, handler: Handler) -> None:
        self.handler = handler
        self.connections = 0
        self.port = 0
        self._server: asyncio.AbstractServer | None = None
        self._tasks: set[asyncio.Task[None]] = set()

    async def start(self) -> Server:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        try:
            await self.handler(reader, writer)
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        finally:
            self._tasks.discard(task)
            writer.close()

    async def close(self) -> None:
        assert self._server is not None
        self._server.close()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)


@pytest.fixture
async def serve() -> AsyncIterator[Callable[[Handler], Awaitable[Server]]]:
    servers: list[Server] = []

    async def start(handler: Handler) -> Server:
        server = await Server(handler).start()
        servers.append(server)
        return server

    yield start
    for server in servers:
        await server.close()


@pytest.fixture
async def client() -> AsyncIterator[UpstreamClient]:
    upstream = UpstreamClient(idle_timeout_s=30.0)
    yield upstream
    await upstream.close()


async def read_head(reader: asyncio.StreamReader) -> tuple[str, dict[str, str]]:
    head = (await reader.readuntil(b"\r\n\r\n")).decode()
    line, *fields = head[:-4].split("\r\n")
    return line, {k.lower(): v.strip() for k, v in (f.split(":", 1) for f in fields)}


async def read_request(reader: asyncio.StreamReader) -> tuple[str, dict[str, str], bytes]:
    line, headers = await read_head(reader)
    body = b""
    if "content-length" in headers:
        body = await reader.readexactly(int(headers["content-length"]))
    elif headers.get("transfer-encoding") == "chunked":
        while True:
            size = int((await reader.readuntil(b"\r\n"))[:-2], 16)
            data = await reader.readexactly(size + 2)
            if size == 0:
                break
            body += data[:-2]
    return line, headers, body


def ok(body: bytes, extra: bytes = b"") -> bytes:
    return b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n%s\r\n%s" % (len(body), extra, body)


async def echo_forever(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """Answers each request with its request line and body."""
    while True:
        line, _, body = await read_request(reader)
        writer.write(ok(line.encode() + b"|" + body))


async def get(client: UpstreamClient, port: int, target: str = "/", **kwargs: object) -> bytes:
    response = await client.request(
        "127.0.0.1", port, str(kwargs.pop("method", "GET")), target, [], timeout_s=2.0, **kwargs
    )  # type: ignore[arg-type]
    try:
        return await response.read()
    finally:
        response.release()


async def test_keep_alive_reuse_and_request_head(
    serve: Callable[[Handler], Awaitable[Server]], client: UpstreamClient
) -> None:
    seen: list[dict[str, str]] = []

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while True:
            _, headers, _ = await read_request(reader)
            seen.append(headers)
            writer.write(ok(b"x"))

    server = await serve(handler)
    for _ in range(3):
        assert await get(client, server.port) == b"x"
    assert server.connections == 1
    assert client.idle_connections("127.0.0.1", server.port) == 1
    assert seen[0]["host"] == f"127.0.0.1:{server.port}"
    assert "content-length" not in seen[0]  # a GET without body says nothing about one


async def test_concurrent_requests_each_get_their_own_answer(
    serve: Callable[[Handler], Awaitable[Server]], client: UpstreamClient
) -> None:
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while True:
            line, _, _ = await read_request(reader)
            await asyncio.sleep(0.001 * (hash(line) % 5))
            writer.write(ok(line.split()[1].encode()))

    server = await serve(handler)

    async def one(i: int) -> None:
        for j in range(5):  # reused connections carry many exchanges
            assert await get(client, server.port, f"/{i}/{j}") == f"/{i}/{j}".encode()

    await asyncio.gather(*(one(i) for i in range(50)))
    assert server.connections <= 50


async def test_bodies_out_with_length_and_chunked(
    serve: Callable[[Handler], Awaitable[Server]], client: UpstreamClient
) -> None:
    server = await serve(echo_forever)

    async def pieces() -> AsyncIterator[bytes]:
        for piece in (b"ab", b"", b"cd"):
            await asyncio.sleep(0.01)
            yield piece

    assert await get(client, server.port, method="POST", body=b"hi") == b"POST / HTTP/1.1|hi"
    assert await get(client, server.port, method="POST") == b"POST / HTTP/1.1|"
    assert await get(client, server.port, method="PUT", body=pieces()) == b"PUT / HTTP/1.1|abcd"
    sized = await get(client, server.port, method="PUT", body=pieces(), body_length=4)
    assert sized == b"PUT / HTTP/1.1|abcd"
    big = bytes(range(256)) * 4096  # 1 MiB, written with flow control
    assert await get(client, server.port, method="POST", body=big) == b"POST / HTTP/1.1|" + big


async def test_body_iterator_error_is_raised_and_request_never_completes(
    serve: Callable[[Handler], Awaitable[Server]], client: UpstreamClient
) -> None:
    received: list[bytes] = []

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_head(reader)
        received.append(await reader.read())  # to EOF: the client gave up

    server = await serve(handler)

    class TooBig(Exception):
        pass

    async def pieces() -> AsyncIterator[bytes]:
        yield b"ab"
        raise TooBig

    with pytest.raises(TooBig):
        await get(client, server.port, method="POST", body=pieces())
    await asyncio.sleep(0.05)
    assert received == [b"2\r\nab\r\n"]  # no final chunk: never a complete request
    with pytest.raises(ValueError, match="shorter than its length"):
        # Fewer bytes than announced is the caller's bug: the request is cut off too.
        await get(client, server.port, method="POST", body=pieces_of(b"a"), body_length=5)


async def pieces_of(*chunks: bytes) -> AsyncIterator[bytes]:
    for chunk in chunks:
        yield chunk


async def test_early_answer_while_uploading(
    serve: Callable[[Handler], Awaitable[Server]], client: UpstreamClient
) -> None:
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_head(reader)
        writer.write(b"HTTP/1.1 413 Too Large\r\nContent-Length: 2\r\nConnection: close\r\n\r\nno")
        await writer.drain()
        await asyncio.sleep(1)

    async def endless() -> AsyncIterator[bytes]:
        while True:
            yield b"x" * 1024
            await asyncio.sleep(0.01)

    server = await serve(handler)
    response = await client.request(
        "127.0.0.1", server.port, "POST", "/", [], body=endless(), timeout_s=2.0
    )
    assert response.status == 413 and await response.read() == b"no"
    response.release()  # stops the upload
    assert client.idle_connections("127.0.0.1", server.port) == 0


async def test_streamed_chunked_answer(
    serve: Callable[[Handler], Awaitable[Server]], client: UpstreamClient
) -> None:
    release = asyncio.Event()

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        writer.write(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nfirst\r\n")
        await release.wait()
        writer.write(b"4\r\nlast\r\n0\r\nX-Trailer: 1\r\n\r\n")
        await asyncio.sleep(1)

    server = await serve(handler)
    response = await client.request("127.0.0.1", server.port, "GET", "/", [], timeout_s=2.0)
    assert response.content_length is None
    assert await response.content.readany() == b"first"  # before the function finished
    release.set()
    assert [piece async for piece in response.content.iter_any()] == [b"last"]
    response.release()
    assert client.idle_connections("127.0.0.1", server.port) == 1


async def test_answer_until_close_interim_answers_and_no_reuse(
    serve: Callable[[Handler], Awaitable[Server]], client: UpstreamClient
) -> None:
    answers = [
        b"HTTP/1.1 200 OK\r\n\r\nuntil close",
        b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 103 Early Hints\r\nLink: </a>\r\n\r\n" + ok(b"ok"),
        ok(b"bye", b"Connection: close\r\n"),
        ok(b"ab") + b"EXTRA",
    ]

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        writer.write(answers.pop(0))
        await writer.drain()
        await asyncio.sleep(0.05)

    server = await serve(handler)
    assert await get(client, server.port) == b"until close"
    assert await get(client, server.port) == b"ok"
    assert await get(client, server.port) == b"bye"
    assert await get(client, server.port) == b"ab"
    assert client.idle_connections("127.0.0.1", server.port) == 0


async def test_stale_connection_retried_only_when_safe(
    serve: Callable[[Handler], Awaitable[Server]], client: UpstreamClient
) -> None:
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        writer.write(ok(b"first"))
        await read_head(reader)  # the next request on this connection: close, no answer

    server = await serve(handler)
    assert await get(client, server.port) == b"first"
    assert await get(client, server.port) == b"first"  # GET: retried on a new connection
    assert server.connections == 2
    with pytest.raises(UpstreamDisconnected):
        await get(client, server.port, method="POST", body=b"x")  # POST: not retried
    assert server.connections == 2


async def test_failures(
    serve: Callable[[Handler], Awaitable[Server]], client: UpstreamClient
) -> None:
    async def silent(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await asyncio.sleep(10)

    async def half_body(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nabc")
        await writer.drain()
        await asyncio.sleep(10)

    async def cut_body(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nabc")

    async def garbage(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        writer.write(b"SSH-2.0-OpenSSH\r\n\r\n")
        await asyncio.sleep(1)

    loop = asyncio.get_running_loop()
    port = (await serve(silent)).port
    started = loop.time()
    with pytest.raises(TimeoutError):
        await client.request("127.0.0.1", port, "GET", "/", [], timeout_s=0.3)
    assert 0.25 < loop.time() - started < 0.8

    response = await client.request(
        "127.0.0.1", (await serve(half_body)).port, "GET", "/", [], timeout_s=0.3
    )
    assert await response.content.readany() == b"abc"
    with pytest.raises(TimeoutError):  # the deadline covers the body too
        await response.content.readany()
    response.release()

    response = await client.request(
        "127.0.0.1", (await serve(cut_body)).port, "GET", "/", [], timeout_s=2
    )
    with pytest.raises(UpstreamDisconnected):
        await response.read()
    response.release()

    with pytest.raises(ProtocolError):
        await get(client, (await serve(garbage)).port)

    closed = await serve(silent)
    await closed.close()
    with pytest.raises(OSError):
        await get(client, closed.port)


async def test_slow_reader_pauses_the_replica(
    serve: Callable[[Handler], Awaitable[Server]], client: UpstreamClient
) -> None:
    size = 8 * HIGH_WATER_BYTES
    sent = asyncio.Event()

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % size)
        writer.write(b"z" * size)
        await writer.drain()
        sent.set()
        await asyncio.sleep(5)

    server = await serve(handler)
    response = await client.request("127.0.0.1", server.port, "GET", "/", [], timeout_s=5)
    await asyncio.sleep(0.2)
    # Nobody reads: the connection stopped reading once the buffer passed the high-water
    # mark (the kernel holds the rest, then TCP pushes back on the server).
    assert response.content._paused
    assert response.content._size < 2 * HIGH_WATER_BYTES
    received = 0
    async for piece in response.content.iter_chunked(100_000):
        assert len(piece) <= 100_000
        received += len(piece)
    assert received == size and sent.is_set()
    response.release()


async def test_release_before_the_end_drops_the_connection(
    serve: Callable[[Handler], Awaitable[Server]], client: UpstreamClient
) -> None:
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        writer.write(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n1\r\na\r\n")
        await asyncio.sleep(5)

    server = await serve(handler)
    response = await client.request("127.0.0.1", server.port, "GET", "/", [], timeout_s=5)
    assert await response.content.readany() == b"a"
    response.release()
    assert client.idle_connections("127.0.0.1", server.port) == 0


async def test_idle_connections_close_after_the_timeout(
    serve: Callable[[Handler], Awaitable[Server]],
) -> None:
    closed = asyncio.Event()

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        writer.write(ok(b"x"))
        await reader.read()  # EOF when the client closes the idle connection
        closed.set()

    upstream = UpstreamClient(idle_timeout_s=0.1)
    try:
        server = await serve(handler)
        assert await get(upstream, server.port) == b"x"
        await asyncio.wait_for(closed.wait(), 2)
        assert upstream.idle_connections("127.0.0.1", server.port) == 0
    finally:
        await upstream.close()
    with pytest.raises(UpstreamDisconnected):
        await get(upstream, server.port)


async def test_start_tells_once_with_the_body_that_came_along(
    serve: Callable[[Handler], Awaitable[Server]], client: UpstreamClient
) -> None:
    later = asyncio.Event()

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        writer.write(ok(b"whole"))  # head and body in one write
        await read_request(reader)
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 4\r\n\r\nab")
        await later.wait()
        writer.write(b"cd")
        await read_request(reader)
        await asyncio.sleep(5)  # never answers

    server = await serve(handler)
    told: list[BaseException | None] = []
    heads: asyncio.Queue[None] = asyncio.Queue()

    def on_head(exc: BaseException | None) -> None:
        told.append(exc)
        heads.put_nowait(None)

    def start() -> UpstreamResponse:
        return client.start(
            "127.0.0.1", server.port, "GET", "/", [], (), (), frozenset(), None, None, 5, on_head
        )

    response = start()
    assert told == []  # never from inside `start`
    await heads.get()
    assert told == [None] and response.status == 200
    assert response.take_all() == b"whole"  # no waiting: it came with the head
    response.release()

    response = start()
    await heads.get()
    assert response.take_all() is None  # the rest is still to come
    later.set()
    assert await response.read() == b"abcd"
    response.release()

    response = start()
    await asyncio.sleep(0.1)
    response.release()  # given up on: not told any more, the connection is dropped
    await asyncio.sleep(0.1)
    assert told == [None, None]
    assert client.idle_connections("127.0.0.1", server.port) == 0
