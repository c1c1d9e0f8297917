"""The /function proxy path, through both ways in: the gateway's front (the default) and plain
aiohttp (what connections handed over by the front get)."""

from __future__ import annotations

import asyncio
import re

import aiohttp
import pytest

from runtime.provider.docker import ReplicaStartFailed
from tests.component.gateway.conftest import AUTH, Gateway, GatewayFactory

NS = "openfaas-fn"
UUID4 = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}")


@pytest.fixture(params=[True, False], ids=["front", "aiohttp"])
async def gw(request: pytest.FixtureRequest, make_gateway: GatewayFactory) -> Gateway:
    gateway = await make_gateway(front=request.param, invoke_timeout_s=1.0)
    assert (await gateway.deploy("hello")).status == 202
    await gateway.wait_available("hello")
    return gateway


async def raw_exchange(gw: Gateway, data: bytes, *, answers: int = 1) -> bytes:
    """Send ``data`` as is; read until ``answers`` complete responses came (or the server
    closed). Responses must carry Content-Length."""
    host, port = gw.url.removeprefix("http://").split(":")
    reader, writer = await asyncio.open_connection(host, int(port))
    try:
        writer.write(data)
        received = b""
        while received.count(b"HTTP/1.") < answers or not _complete(received, answers):
            chunk = await asyncio.wait_for(reader.read(65536), 5)
            if not chunk:
                break
            received += chunk
        return received
    finally:
        writer.close()


def _complete(received: bytes, answers: int) -> bool:
    rest = received
    for _ in range(answers):
        head, sep, rest = rest.partition(b"\r\n\r\n")
        if not sep:
            return False
        match = re.search(rb"(?i)\r\ncontent-length: *([0-9]+)", head)
        length = int(match.group(1)) if match else 0
        if len(rest) < length:
            return False
        rest = rest[length:]
    return True


async def eventually(condition: object, timeout_s: float = 2.0) -> None:
    deadline = asyncio.get_running_loop().time() + timeout_s
    while not callable(condition) or not condition():
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError("condition not met in time")
        await asyncio.sleep(0.01)


async def test_chunks_arrive_before_the_function_finishes(gw: Gateway) -> None:
    loop = asyncio.get_running_loop()
    started = loop.time()
    async with gw.client.get("/function/hello/_fake/stream?n=3&delay_ms=300") as resp:
        assert resp.status == 200
        assert resp.headers["Transfer-Encoding"] == "chunked"
        assert "Content-Length" not in resp.headers
        first = await resp.content.readline()
        first_at = loop.time() - started
        rest = await resp.content.read()
        last_at = loop.time() - started
    assert first == b"chunk 0\n" and rest == b"chunk 1\nchunk 2\n"
    assert first_at < 0.25, f"first chunk only after {first_at:.3f}s: buffered"
    assert last_at >= 0.55


async def test_replica_stays_in_flight_until_the_body_is_sent(gw: Gateway) -> None:
    (handle,) = list(gw.functions.get("hello", NS).pool)
    counters = gw.metrics.function(f"hello.{NS}")
    async with gw.client.get("/function/hello/_fake/stream?n=2&delay_ms=300") as resp:
        await resp.content.readline()
        assert handle.in_flight == 1 and counters.in_flight == 1
        await resp.read()
    await eventually(lambda: handle.in_flight == 0 and counters.in_flight == 0)
    text = await (await gw.client.get("/metrics")).text()
    assert f'gateway_function_invocation_inflight{{function_name="hello.{NS}"}} 0.0' in text
    assert f'gateway_function_invocation_total{{code="200",function_name="hello.{NS}"}} 1.0' in text
    assert f'gateway_functions_seconds_count{{code="200",function_name="hello.{NS}"}} 1.0' in text


async def test_body_arriving_after_the_head_is_waited_for(gw: Gateway) -> None:
    (handle,) = list(gw.functions.get("hello", NS).pool)
    pending = asyncio.ensure_future(gw.client.get("/function/hello/_fake/slowbody?delay_ms=300"))
    await eventually(lambda: handle.in_flight == 1)
    await asyncio.sleep(0.1)  # the head is in by now, the body is not
    assert not pending.done() and handle.in_flight == 1
    resp = await pending
    assert resp.status == 200 and resp.headers["Content-Length"] == "12"
    assert await resp.read() == b"first second"
    await eventually(lambda: handle.in_flight == 0)


async def test_replica_killed_mid_request_is_502(gw: Gateway) -> None:
    (replica,) = await gw.provider.list_replicas("hello", NS)
    pending = asyncio.ensure_future(gw.client.get("/function/hello/_fake/sleep?ms=5000"))
    await eventually(lambda: gw.provider.container(replica.container_id).requests_seen >= 1)
    await gw.provider.kill(replica.container_id)
    resp = await pending
    assert resp.status == 502, await resp.text()
    assert "could not be reached" in await resp.text()
    text = await (await gw.client.get("/metrics")).text()
    assert f'gateway_function_invocation_total{{code="502",function_name="hello.{NS}"}}' in text


async def test_refused_connection_is_502(gw: Gateway) -> None:
    # The server goes away without Docker saying so (yet): the replica still looks ready.
    (replica,) = await gw.provider.list_replicas("hello", NS)
    await gw.provider.engine.stop_server(gw.provider.container(replica.container_id))
    resp = await gw.client.post("/function/hello", data=b"x")
    assert resp.status == 502
    assert resp.headers["Content-Type"].startswith("text/plain")


async def test_slow_function_is_504(gw: Gateway) -> None:
    loop = asyncio.get_running_loop()
    started = loop.time()
    resp = await gw.client.get("/function/hello/_fake/sleep?ms=3000")
    assert resp.status == 504
    assert "did not answer within 1s" in await resp.text()
    assert 0.9 < loop.time() - started < 2.0
    # The replica is free again and the next call works.
    assert (await gw.client.get("/function/hello")).status == 200


async def test_redirects_and_headers_pass_through_unfollowed(gw: Gateway) -> None:
    query = (
        "code=302&h=Location:/elsewhere&h=Connection:X-Secret&h=X-Secret:1"
        "&h=Keep-Alive:timeout=5&h=Proxy-Authenticate:Basic&h=X-Kept:yes"
        "&h=Content-Encoding:gzip&h=X-Call-Id:from-function"
    )
    resp = await gw.client.get(
        f"/function/hello/_fake/status?{query}",
        allow_redirects=False,
        auto_decompress=False,
        headers={"X-Call-Id": "mine"},
    )
    assert resp.status == 302
    assert resp.headers["Location"] == "/elsewhere"
    assert resp.headers["X-Kept"] == "yes"
    for hop in ("X-Secret", "Keep-Alive", "Proxy-Authenticate"):
        assert hop not in resp.headers
    # Not decompressed (the body is not even gzip), X-Call-Id is the caller's.
    assert resp.headers["Content-Encoding"] == "gzip"
    assert await resp.read() == b"status"
    assert resp.headers.getall("X-Call-Id") == ["mine"]
    assert int(resp.headers["X-Start-Time"]) > 0


async def test_request_headers_call_id_and_start_time(gw: Gateway) -> None:
    resp = await gw.client.post(
        "/function/hello",
        data=b"{}",
        headers={
            "X-Forwarded-For": "10.1.2.3",
            "Connection": "keep-alive, X-Drop",
            "X-Drop": "1",
            "Proxy-Authorization": "Basic x",
            "TE": "trailers",
            "X-Start-Time": "1",
        },
    )
    assert resp.status == 200
    echo = await resp.json()
    seen = echo["headers"]
    assert seen["X-Forwarded-For"] == "10.1.2.3, 127.0.0.1"
    assert seen["X-Forwarded-Host"] == gw.url.removeprefix("http://")
    for hop in ("X-Drop", "Proxy-Authorization", "Te", "TE", "Connection"):
        assert hop not in seen
    # Generated call id (uuid4), the same one both ways; the gateway's own start time.
    assert UUID4.fullmatch(resp.headers["X-Call-Id"])
    assert seen["X-Call-Id"] == resp.headers["X-Call-Id"]
    assert seen["X-Start-Time"] == resp.headers["X-Start-Time"] != "1"


async def test_methods_path_and_query_pass_through(gw: Gateway) -> None:
    for method in ("GET", "PUT", "PATCH", "DELETE", "OPTIONS", "PROPFIND"):
        resp = await gw.client.request(method, "/function/hello.openfaas-fn/a%2Fb/c?x=1&y=%20")
        assert resp.status == 200, method
        echo = await resp.json()
        assert echo["method"] == method
        assert echo["raw_path"] == "/a%2Fb/c?x=1&y=%20"
    # Dot segments never climb out of the function (sent raw: a client would resolve them).
    answer = await raw_exchange(
        gw, b"GET /function/hello/x/../../y/./z HTTP/1.1\r\nHost: h\r\n\r\n"
    )
    assert answer.startswith(b"HTTP/1.1 200 ")
    assert b'"raw_path": "/y/z"' in answer
    head = await gw.client.head("/function/hello/_fake/status")
    assert head.status == 200
    assert head.headers["Content-Length"] == str(len("status"))  # the function's, no body
    assert await head.read() == b""


async def test_large_bodies_both_ways(gw: Gateway) -> None:
    body = bytes(range(256)) * 1024  # 256 KiB: streamed, not inlined
    resp = await gw.client.post("/function/hello", data=body)
    assert resp.status == 200
    echo = await resp.json()
    assert len(echo["body"]) > 200_000  # decoded with replacement chars, but all there
    big = int(resp.headers["Content-Length"])
    assert big == len(await resp.read()) or big > 64 * 1024


async def test_bodies_over_the_limit_are_413(make_gateway: GatewayFactory) -> None:
    for front in (True, False):
        gw = await make_gateway(front=front, max_body_bytes=1000)
        await gw.deploy("a")
        await gw.wait_available("a")
        assert (await gw.client.post("/function/a", data=b"x" * 2000)).status == 413

        async def chunks():  # no Content-Length: the limit is enforced while streaming
            for _ in range(4):
                yield b"y" * 400

        assert (await gw.client.post("/function/a", data=chunks())).status == 413
        assert (await gw.client.post("/function/a", data=b"x" * 1000)).status == 200


async def test_caller_leaving_mid_stream_frees_the_replica(gw: Gateway) -> None:
    (handle,) = list(gw.functions.get("hello", NS).pool)
    async with aiohttp.ClientSession() as session:
        resp = await session.get(f"{gw.url}/function/hello/_fake/stream?n=20&delay_ms=50")
        await resp.content.readline()
        assert handle.in_flight == 1
        resp.close()  # drops the connection
    await eventually(lambda: handle.in_flight == 0, timeout_s=3.0)
    assert (await gw.client.get("/function/hello")).status == 200


async def test_errors(gw: Gateway) -> None:
    resp = await gw.client.get("/function/ghost")
    assert resp.status == 404
    assert await resp.text() == "function 'ghost' not found in namespace 'openfaas-fn'\n"
    assert (await gw.client.get("/function/Bad")).status == 400
    assert (await gw.client.get("/function/hello.Bad")).status == 400
    assert (await gw.client.get("/function/")).status == 404


async def test_function_at_zero_is_started_by_the_request(make_gateway: GatewayFactory) -> None:
    gw = await make_gateway()
    await gw.deploy("a")
    await gw.wait_available("a")
    resp = await gw.client.post(
        "/system/scale-function/a", json={"serviceName": "a", "replicas": 0}, headers=AUTH
    )
    assert resp.status == 202
    await gw.wait_available("a", 0)
    resp = await gw.client.get("/function/a")
    assert resp.status == 200
    assert gw.functions.get("a", "openfaas-fn").desired_replicas == 1


async def test_replica_that_cannot_start_is_503_with_reason(make_gateway: GatewayFactory) -> None:
    gw = await make_gateway()
    await gw.deploy("a")
    await gw.wait_available("a")
    await gw.client.post(
        "/system/scale-function/a", json={"serviceName": "a", "replicas": 0}, headers=AUTH
    )
    await gw.wait_available("a", 0)
    gw.provider.create_error = ReplicaStartFailed("port 8080 refused to bind")
    resp = await gw.client.get("/function/a")
    assert resp.status == 503
    assert resp.headers["Retry-After"] == "1"
    assert "cannot start a replica of a.openfaas-fn: port 8080 refused to bind" in await resp.text()
