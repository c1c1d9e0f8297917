"""`POST /async-function/` on the gateway's front and on the aiohttp route: the same answers
(status, reason, body, Retry-After) and the same stored envelope, whichever way a request
came in. Raw sockets, so what is compared is what a caller receives."""

from __future__ import annotations

import asyncio
import re

import nats
import pytest

from runtime.queue.message import Envelope, decode
from runtime.queue.service import CONCURRENCY_ANNOTATION
from runtime.queue.streams import WORK_STREAM, work_subject
from tests.component.gateway.conftest import Gateway, GatewayFactory
from tests.component.gateway.test_async_api import WORKERS, deploy, wait_state
from tests.component.gateway.test_proxy import raw_exchange

pytestmark = pytest.mark.nats

NS = "openfaas-fn"
WAYS = pytest.mark.parametrize("front", [True, False], ids=["front", "aiohttp"])


def post(target: bytes, extra: bytes = b"", body: bytes = b"", *, length: bool = True) -> bytes:
    head = b"POST " + target + b" HTTP/1.1\r\nHost: gw\r\n" + extra
    if length:
        head += b"Content-Length: %d\r\n" % len(body)
    return head + b"\r\n" + body


def answer(raw: bytes) -> tuple[int, dict[str, str], bytes]:
    """Status, fields (lower-case names; Date and aiohttp's Server left out) and body."""
    head, _, body = raw.partition(b"\r\n\r\n")
    lines = head.decode().split("\r\n")
    fields = {}
    for line in lines[1:]:
        name, _, value = line.partition(":")
        if name.lower() not in ("date", "server"):
            fields[name.lower()] = value.strip()
    return int(lines[0].split()[1]), fields, body


async def gateway(make_gateway: GatewayFactory, front: bool, **extra: object) -> Gateway:
    gw = await make_gateway(
        front=front, with_async=True, async_max_body_bytes=1024, worker_options=WORKERS, **extra
    )
    # One call at a time and a sleeping first call: what is enqueued stays queued a while.
    await deploy(gw, "hello", {CONCURRENCY_ANNOTATION: "1"})
    return gw


@WAYS
async def test_202_head_and_keep_alive(make_gateway: GatewayFactory, front: bool) -> None:
    gw = await gateway(make_gateway, front)
    raw = await raw_exchange(
        gw,
        post(b"/async-function/hello", b"X-Call-Id: one\r\n", b"{}")
        + post(b"/async-function/hello.openfaas-fn/x?y=1", b"Connection: close\r\n"),
        answers=2,
    )
    first, second = raw.split(b"HTTP/1.1 ")[1:]
    assert first.startswith(b"202 Accepted\r\n") and second.startswith(b"202 Accepted\r\n")
    status, fields, body = answer(b"HTTP/1.1 " + first)
    assert (status, body) == (202, b"")
    assert fields == {"x-call-id": "one", "content-length": "0"}
    assert b"\r\nDate: " in first
    # The front writes no Server field: this is how the test knows which way was taken.
    assert (b"\r\nServer: " not in first) is front
    status, fields, _ = answer(b"HTTP/1.1 " + second)
    assert status == 202 and fields["connection"] == "close"
    assert re.fullmatch(r"[0-9a-f-]{36}", fields["x-call-id"])
    await wait_state(gw, "one", "succeeded")


# (request, status, body) for both ways in: two gateways cannot share a test's state dir, so
# each way is held to this table rather than to the other.
BAD_INPUT: list[tuple[bytes, int, bytes]] = [
    (post(b"/async-function/ghost"), 404, b"function 'ghost' not found"),
    (post(b"/async-function/hello.nope"), 404, b"not found"),
    (post(b"/async-function/Hello"), 400, b"invalid"),
    (post(b"/async-function/hello/x", body=b"x" * 1025), 413, b"async limit of 1024 bytes"),
    (post(b"/async-function/hello", b"X-Call-Id: not ok!\r\n"), 400, b"X-Call-Id 'not ok!'"),
    (post(b"/async-function/hello", b"X-Call-Id: " + b"x" * 129 + b"\r\n"), 400, b"X-Call-Id"),
    (post(b"/async-function/hello", b"X-Call-Id:\r\n"), 400, b"X-Call-Id is required\n"),
    (post(b"/async-function/hello", b"X-Callback-Url: ftp://example.com/cb\r\n"), 400,
     b"only http and https"),
    (post(b"/async-function/hello", b"X-Callback-Url: http://169.254.169.254/x\r\n"), 400,
     b"denied range"),
    (post(b"/async-function/hello", b"X-Callback-Url: \r\n"), 202, b""),  # empty: none
    (post(b"/async-function/hello", b"X-Call-Id: taken\r\n"), 202, b""),
    (post(b"/async-function/other", b"X-Call-Id: taken\r\n"), 409,
     b"already used by a call to hello.openfaas-fn"),
    (post(b"/async-function/hello", b"X-Call-Id: taken\r\n"), 202, b""),  # a duplicate
    (b"GET /async-function/hello HTTP/1.1\r\nHost: gw\r\n\r\n", 405, b""),
    (b"PUT /async-function/hello/x HTTP/1.1\r\nHost: gw\r\nContent-Length: 0\r\n\r\n", 405, b""),
    (post(b"/async-function/"), 404, b""),
    (post(b"/async-function/hello", b"Transfer-Encoding: chunked\r\n", b"0\r\n\r\n",
          length=False), 202, b""),
]  # fmt: skip


@WAYS
async def test_bad_input_is_answered_alike_both_ways(
    make_gateway: GatewayFactory, front: bool
) -> None:
    gw = await gateway(make_gateway, front)
    await deploy(gw, "other")
    for request, status, text in BAD_INPUT:
        got_status, fields, body = answer(await raw_exchange(gw, request))
        assert (got_status, text in body) == (status, True), (request, got_status, body)
        if status >= 400:
            assert fields["content-type"] == "text/plain; charset=utf-8", (request, fields)
        if status == 202:
            assert fields["content-length"] == "0" and fields["x-call-id"], fields
    # Only the accepted calls (empty callback, `taken` once, chunked) reached the queue.
    enqueued = gw.metrics.registry.get_sample_value(
        "localfaas_async_enqueued_total", {"function_name": "hello.openfaas-fn"}
    )
    assert enqueued == 3.0


@WAYS
async def test_async_disabled_is_503_with_retry_after(
    make_gateway: GatewayFactory, front: bool
) -> None:
    gw = await make_gateway(front=front)
    await deploy(gw, "hello")
    status, fields, body = answer(await raw_exchange(gw, post(b"/async-function/hello")))
    assert (status, fields["retry-after"]) == (503, "5")
    assert body == b"async invocations are not enabled in this gateway\n"


async def _stored(gw: Gateway, call_id: str) -> Envelope:
    assert gw.queue is not None and gw.queue.nats_url is not None
    nc = await nats.connect(gw.queue.nats_url)
    try:
        msg = await nc.jetstream().get_last_msg(WORK_STREAM, work_subject(NS, "hello", call_id))
    finally:
        await nc.close()
    return decode(call_id, msg.headers, msg.data)


@WAYS
async def test_the_stored_envelope_is_the_same_both_ways(
    make_gateway: GatewayFactory, front: bool
) -> None:
    fields = (
        b"Content-Type: application/json\r\nX-Rep: 1\r\nx-rep: 2\r\nX-Spaced:  a b \t\r\n"
        b"Connection: keep-alive, X-Hop\r\nX-Hop: gone\r\nKeep-Alive: timeout=5\r\n"
        b"X-Forwarded-For: 10.0.0.1\r\nX-Start-Time: 7\r\nTE: trailers\r\n"
        b"X-Callback-Url: http://127.0.0.1:9/cb\r\nX-Utf8: caf\xc3\xa9\r\nX-Call-Id: c1\r\n"
    )
    gw = await gateway(make_gateway, front)
    # The first call sleeps, holding the one worker slot: the next stays in the stream.
    raw = await raw_exchange(gw, post(b"/async-function/hello/_fake/sleep?ms=3000"))
    assert raw.startswith(b"HTTP/1.1 202 ")
    request = post(b"/async-function/hello/a/%2e%2e/b?q=%20", fields, b'{"n": 1}')
    assert (await raw_exchange(gw, request)).startswith(b"HTTP/1.1 202 ")
    env = await _stored(gw, "c1")
    assert (env.method, env.path, env.query, env.body) == ("POST", "/b", "q=%20", b'{"n": 1}')
    assert env.callback_url == "http://127.0.0.1:9/cb"
    assert env.headers == (
        ("Content-Type", "application/json"),
        ("X-Rep", "1"),
        ("x-rep", "2"),
        ("X-Spaced", "a b"),
        ("X-Forwarded-For", "10.0.0.1"),
        ("X-Start-Time", "7"),
        ("X-Callback-Url", "http://127.0.0.1:9/cb"),
        ("X-Utf8", "café"),
        ("X-Call-Id", "c1"),
    )


async def test_concurrent_calls_on_one_front_connection_each_get_their_answer(
    make_gateway: GatewayFactory,
) -> None:
    gw = await gateway(make_gateway, True)
    pipelined = b"".join(
        post(b"/async-function/hello", b"X-Call-Id: p%d\r\n" % i) for i in range(20)
    )
    raw = await raw_exchange(gw, pipelined, answers=20)
    ids = re.findall(rb"X-Call-Id: (p[0-9]+)", raw)
    assert ids == [b"p%d" % i for i in range(20)]  # in order, one answer each
    await asyncio.gather(*(wait_state(gw, f"p{i}", "succeeded") for i in range(20)))
