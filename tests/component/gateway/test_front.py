"""The gateway's front: what it serves itself, what it hands to aiohttp, and how connections
live and end. Requests go over raw sockets, so framing is exactly what is tested."""

from __future__ import annotations

import asyncio
import base64

import pytest

from runtime.gateway import front as front_module
from tests.component.gateway.conftest import PASSWORD, Gateway, GatewayFactory
from tests.component.gateway.test_proxy import raw_exchange

AUTH_LINE = b"Authorization: Basic " + base64.b64encode(f"admin:{PASSWORD}".encode()) + b"\r\n"


@pytest.fixture
async def gw(make_gateway: GatewayFactory) -> Gateway:
    gateway = await make_gateway(invoke_timeout_s=2.0)
    await gateway.deploy("hello")
    await gateway.wait_available("hello")
    return gateway


def get(path: bytes, extra: bytes = b"") -> bytes:
    return b"GET " + path + b" HTTP/1.1\r\nHost: gw\r\n" + extra + b"\r\n"


async def test_one_connection_mixes_front_and_aiohttp_requests(gw: Gateway) -> None:
    # Pipelined: function (front), function, /system (hand-over), function (now aiohttp's).
    data = (
        get(b"/function/hello/one")
        + get(b"/function/hello/two")
        + get(b"/system/functions", AUTH_LINE)
        + get(b"/function/hello/three")
    )
    answer = await raw_exchange(gw, data, answers=4)
    assert answer.count(b"HTTP/1.1 200 OK\r\n") == 4
    one, two, three = (answer.index(p) for p in (b'"/one"', b'"/two"', b'"/three"'))
    assert one < two < answer.index(b'"name": "hello"') < three


async def test_requests_the_front_leaves_to_aiohttp(gw: Gateway) -> None:
    http10 = await raw_exchange(gw, b"GET /function/hello HTTP/1.0\r\n\r\n")
    assert http10.startswith(b"HTTP/1.0 200 ") or http10.startswith(b"HTTP/1.1 200 ")
    expect = await raw_exchange(
        gw,
        b"POST /function/hello HTTP/1.1\r\nHost: gw\r\nExpect: 100-continue\r\n"
        b"Content-Length: 2\r\n\r\nhi",
        answers=2,
    )
    assert expect.startswith(b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 ")
    assert b'"body": "hi"' in expect
    chunked = await raw_exchange(
        gw,
        b"POST /function/hello HTTP/1.1\r\nHost: gw\r\nTransfer-Encoding: chunked\r\n\r\n"
        b"2\r\nhi\r\n0\r\n\r\n",
    )
    assert chunked.startswith(b"HTTP/1.1 200 ") and b'"body": "hi"' in chunked
    absolute = await raw_exchange(
        gw, b"GET http://gw/function/hello/abs HTTP/1.1\r\nHost: gw\r\n\r\n"
    )
    assert absolute.startswith(b"HTTP/1.1 200 ") and b'"raw_path": "/abs"' in absolute
    no_host = await raw_exchange(gw, b"GET /function/hello HTTP/1.1\r\n\r\n")
    assert no_host.startswith(b"HTTP/1.0 400 ")  # aiohttp's answer, as before the front
    encoded_name = await raw_exchange(gw, get(b"/function/hell%6F"))
    assert encoded_name.startswith(b"HTTP/1.1 200 ")


@pytest.mark.parametrize(
    "request_bytes",
    [
        b"GET /function/hello HTTP/1.1\r\nHost: gw\r\nBad Header: x\r\n\r\n",
        b"GET /function/hello HTTP/1.1\r\nHost: gw\r\n folded\r\n\r\n",
        b"GET /function/hello HTTP/1.1\r\nHost: gw\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\nx",
        b"GET /function/he llo HTTP/1.1\r\nHost: gw\r\n\r\n",
        b"GET /function/hello HTTP/1.1\r\nHost: gw\r\nContent-Length: -1\r\n\r\n",
    ],
)
async def test_malformed_requests_get_aiohttps_400(gw: Gateway, request_bytes: bytes) -> None:
    answer = await raw_exchange(gw, request_bytes)
    assert answer.startswith(b"HTTP/1.0 400 Bad Request\r\n"), answer[:200]


async def test_connection_close_and_half_close(gw: Gateway) -> None:
    host, port = gw.url.removeprefix("http://").split(":")
    reader, writer = await asyncio.open_connection(host, int(port))
    writer.write(get(b"/function/hello", b"Connection: close\r\n"))
    answer = await asyncio.wait_for(reader.read(), 5)  # to EOF: the gateway closed
    assert answer.startswith(b"HTTP/1.1 200 ") and b"\r\nConnection: close\r\n" in answer
    writer.close()

    reader, writer = await asyncio.open_connection(host, int(port))
    writer.write(get(b"/function/hello/_fake/sleep?ms=100"))
    writer.write_eof()  # half-close: the answer still comes, then the connection ends
    answer = await asyncio.wait_for(reader.read(), 5)
    assert answer.startswith(b"HTTP/1.1 200 ") and answer.endswith(b"slept")
    writer.close()


async def test_small_bodies_are_read_by_the_front(gw: Gateway) -> None:
    body = b"x" * 5000
    head = b"POST /function/hello HTTP/1.1\r\nHost: gw\r\nContent-Length: 5000\r\n\r\n"
    host, port = gw.url.removeprefix("http://").split(":")
    reader, writer = await asyncio.open_connection(host, int(port))
    writer.write(head + body[:100])
    await asyncio.sleep(0.05)  # the rest arrives later: the front waits for all of it
    writer.write(body[100:])
    answer = await asyncio.wait_for(reader.readuntil(b'"replica"'), 5)
    assert b'"body": "' + b"x" * 5000 + b'"' in answer
    writer.close()


async def test_shutdown_lets_requests_in_progress_finish(make_gateway: GatewayFactory) -> None:
    gw = await make_gateway(invoke_timeout_s=5.0)
    await gw.deploy("hello")
    await gw.wait_available("hello")
    pending = asyncio.ensure_future(raw_exchange(gw, get(b"/function/hello/_fake/sleep?ms=300")))
    await asyncio.sleep(0.1)
    idle_reader, idle_writer = await asyncio.open_connection(*gw.url[7:].split(":"))
    assert gw.front is not None
    await gw.front.shutdown(2.0)
    assert (await pending).startswith(b"HTTP/1.1 200 ")
    assert await asyncio.wait_for(idle_reader.read(), 2) == b""  # idle ones are closed
    idle_writer.close()


async def test_idle_connections_time_out(
    make_gateway: GatewayFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(front_module, "KEEPALIVE_S", 0.2)
    monkeypatch.setattr(front_module, "SWEEP_S", 0.05)
    gw = await make_gateway()
    host, port = gw.url.removeprefix("http://").split(":")
    reader, writer = await asyncio.open_connection(host, int(port))
    writer.write(b"GET /function/hel")  # a head that never completes
    assert await asyncio.wait_for(reader.read(), 2) == b""
    writer.close()
