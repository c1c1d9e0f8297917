"""Async invocations through the real gateway: `/async-function/...` and `/system/async/...`
around the FakeProvider, with a real embedded nats-server behind the queue (and, for the
outage tests, a separate nats-server this file starts and stops itself)."""

from __future__ import annotations

import asyncio
import json
import re
import socket
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from multidict import CIMultiDict

from runtime.queue import service
from runtime.queue.connection import connect
from runtime.queue.enqueue import Enqueuer
from runtime.queue.message import Envelope, new_call_id
from runtime.queue.nats_server import EmbeddedNats
from runtime.queue.retry import ATTEMPTS, CODES, MAX_WAIT, MIN_WAIT
from runtime.queue.service import CONCURRENCY_ANNOTATION
from runtime.queue.streams import WORK_STREAM, QueueLimits, consumer_config, ensure_layout
from runtime.queue.worker import WorkerOptions
from tests.component.gateway.conftest import AUTH, Gateway, GatewayFactory

pytestmark = pytest.mark.nats

NS = "openfaas-fn"
UUID4 = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}")
WAIT_S = 10.0
FINAL = {"succeeded", "failed", "dead-lettered", "cancelled"}
# Fast retries for the functions that fail on purpose.
QUICK_RETRY = {ATTEMPTS: "2", CODES: "500", MIN_WAIT: "100ms", MAX_WAIT: "200ms"}
WORKERS = WorkerOptions(pull_expires_s=1.0, drain_timeout_s=1.0)


# -- helpers --------------------------------------------------------------------------------


async def eventually(
    check: Callable[[], Awaitable[Any]] | Callable[[], Any],
    timeout_s: float = WAIT_S,
    what: str | Callable[[], str] = "condition",
) -> Any:
    """Poll ``check`` until it returns something truthy (returned), failing at the deadline."""
    deadline = time.monotonic() + timeout_s
    while True:
        result = check()
        if asyncio.iscoroutine(result):
            result = await result
        if result:
            return result
        if time.monotonic() > deadline:
            shown = what() if callable(what) else what
            raise AssertionError(f"{shown} not reached within {timeout_s}s")
        await asyncio.sleep(0.02)


async def post_async(
    gw: Gateway, target: str, body: bytes = b"", headers: dict[str, str] | None = None
) -> aiohttp.ClientResponse:
    resp = await gw.client.post(f"/async-function/{target}", data=body, headers=headers or {})
    await resp.read()
    return resp


async def enqueue(gw: Gateway, target: str, body: bytes = b"", **headers: str) -> str:
    resp = await post_async(gw, target, body, {k.replace("_", "-"): v for k, v in headers.items()})
    assert resp.status == 202, await resp.text()
    return resp.headers["X-Call-Id"]


async def status_of(gw: Gateway, call_id: str) -> dict[str, Any]:
    resp = await gw.client.get(f"/system/async/calls/{call_id}", headers=AUTH)
    assert resp.status == 200, await resp.text()
    found: dict[str, Any] = await resp.json()
    return found


async def wait_state(
    gw: Gateway, call_id: str, state: str, timeout_s: float = WAIT_S, **expect: Any
) -> dict[str, Any]:
    """Wait until the call is in ``state`` (and its fields match ``expect``); a different final
    state fails at once."""
    last: dict[str, Any] = {}

    async def reached() -> bool:
        nonlocal last
        last = await status_of(gw, call_id)
        if last["state"] in FINAL and last["state"] != state and not expect:
            raise AssertionError(f"call {call_id} ended {last['state']}, not {state}: {last}")
        return last["state"] == state and all(last[k] == v for k, v in expect.items())

    await eventually(reached, timeout_s, lambda: f"call {call_id} {state} {expect} (last {last})")
    return last


async def invocations(gw: Gateway, name: str, code: int) -> float:
    """`gateway_function_invocation_total` of ``name.openfaas-fn`` with ``code`` in /metrics."""
    text = await (await gw.client.get("/metrics")).text()
    pattern = (
        rf'gateway_function_invocation_total\{{code="{code}",function_name="{name}\.{NS}"\}} '
        r"([0-9.e+]+)"
    )
    found = re.search(pattern, text)
    return float(found.group(1)) if found else 0.0


async def queues(gw: Gateway, query: str = "") -> dict[str, dict[str, Any]]:
    resp = await gw.client.get(f"/system/async/queues{query}", headers=AUTH)
    assert resp.status == 200, await resp.text()
    return {item["name"]: item for item in await resp.json()}


async def dead_letters(gw: Gateway, query: str = "") -> list[dict[str, Any]]:
    resp = await gw.client.get(f"/system/async/dead-letters{query}", headers=AUTH)
    assert resp.status == 200, await resp.text()
    letters: list[dict[str, Any]] = await resp.json()
    return letters


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@dataclass
class Received:
    method: str
    path: str
    headers: CIMultiDict[str]
    body: bytes


@dataclass
class Receiver:
    """A callback receiver on 127.0.0.1 (ephemeral port) recording what it was sent."""

    url: str
    received: list[Received] = field(default_factory=list)


@pytest.fixture
async def receiver() -> AsyncIterator[Receiver]:
    got: list[Received] = []

    async def handle(request: web.Request) -> web.Response:
        got.append(
            Received(
                request.method, request.path, CIMultiDict(request.headers), await request.read()
            )
        )
        return web.Response(text="thanks")

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", handle)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    host, port = runner.addresses[0][:2]
    yield Receiver(f"http://{host}:{port}/cb", got)
    await runner.cleanup()


@pytest.fixture
async def gw(make_gateway: GatewayFactory) -> Gateway:
    """An async-enabled gateway with `hello` deployed; one async call of it at a time, so a
    sleeping call holds the worker and the next ones stay queued."""
    gateway = await make_gateway(with_async=True, worker_options=WORKERS)
    resp = await gateway.deploy("hello", annotations={CONCURRENCY_ANNOTATION: "1"})
    assert resp.status == 202, await resp.text()
    await gateway.wait_available("hello")
    return gateway


async def deploy(gw: Gateway, name: str, annotations: dict[str, str] | None = None) -> None:
    resp = await gw.deploy(name, annotations=annotations or {})
    assert resp.status == 202, await resp.text()
    await gw.wait_available(name)


# -- 1, 2: accepted, run once ----------------------------------------------------------------


async def test_accepted_queued_then_run_once_through_the_sync_path(
    gw: Gateway, receiver: Receiver
) -> None:
    # A sleeping call holds hello's only worker slot, so the next one is seen queued.
    blocker = await enqueue(gw, "hello/_fake/sleep?ms=800")
    assert UUID4.fullmatch(blocker)
    resp = await post_async(
        gw,
        "hello.openfaas-fn/a/b?x=1&y=%20",
        b'{"n": 1}',
        {"X-Custom": "yes", "Content-Type": "application/json", "X-Callback-Url": receiver.url},
    )
    assert resp.status == 202, await resp.text()
    call_id = resp.headers["X-Call-Id"]
    assert UUID4.fullmatch(call_id) and call_id != blocker
    queued = await status_of(gw, call_id)
    assert queued["state"] == "queued", queued
    assert queued["attempts"] == 0 and queued["function"] == "hello" and queued["namespace"] == NS

    await wait_state(gw, blocker, "succeeded")
    done = await wait_state(gw, call_id, "succeeded")
    assert done["attempts"] == 1 and done["lastStatus"] == 200 and done["lastError"] is None
    assert [h["status"] for h in done["history"]] == [200]

    # What the replica saw (its echo comes back as the callback body).
    (got,) = await eventually(lambda: receiver.received, what="the callback")
    echo = json.loads(got.body)
    assert echo["method"] == "POST"
    assert echo["raw_path"] == "/a/b?x=1&y=%20"
    assert echo["body"] == '{"n": 1}'
    seen = echo["headers"]
    assert seen["X-Custom"] == "yes"
    assert seen["Content-Type"] == "application/json"
    assert seen["X-Call-Id"] == call_id
    assert int(seen["X-Start-Time"]) > 0
    # One invoke path: both async calls are counted by the sync gateway metrics.
    assert await invocations(gw, "hello", 200) == 2.0


async def test_same_call_id_twice_runs_once(gw: Gateway) -> None:
    call_id = "order-42_retry"
    first, second = await asyncio.gather(
        post_async(gw, "hello", b"a", {"X-Call-Id": call_id}),
        post_async(gw, "hello", b"a", {"X-Call-Id": call_id}),
    )
    assert (first.status, second.status) == (202, 202)
    assert first.headers["X-Call-Id"] == second.headers["X-Call-Id"] == call_id
    await wait_state(gw, call_id, "succeeded")
    # Again after it finished: still accepted under the caller's id, still not run again.
    assert await enqueue(gw, "hello", b"a", X_Call_Id=call_id) == call_id
    # A later call through the same one-slot worker: anything queued before it ran before it.
    barrier = await enqueue(gw, "hello", b"b")
    await wait_state(gw, barrier, "succeeded")
    status = await status_of(gw, call_id)
    assert status["state"] == "succeeded" and status["attempts"] == 1
    assert len(status["history"]) == 1
    assert await invocations(gw, "hello", 200) == 2.0


# -- 3: bad input ------------------------------------------------------------------------


async def test_bad_input_is_refused_and_nothing_is_queued(make_gateway: GatewayFactory) -> None:
    gw = await make_gateway(with_async=True, async_max_body_bytes=1024, worker_options=WORKERS)
    await deploy(gw, "hello")
    unknown = "9b2f7c1e-5d2a-4a63-9d8e-0c1b2a3d4e5f"
    cases: list[tuple[str, str, dict[str, str], bytes, int, str]] = [
        ("POST", "/async-function/ghost", {}, b"", 404, "not found"),
        ("POST", "/async-function/hello.nope", {}, b"", 404, "not found"),
        ("POST", "/async-function/Hello", {}, b"", 400, "invalid"),
        ("POST", "/async-function/hello", {}, b"x" * 1025, 413, "async limit of 1024 bytes"),
        ("POST", "/async-function/hello", {"X-Callback-Url": "ftp://example.com/cb"}, b"", 400,
         "only http and https"),
        ("POST", "/async-function/hello", {"X-Callback-Url": "http://nowhere.invalid/cb"}, b"",
         400, "does not resolve"),
        ("POST", "/async-function/hello",
         {"X-Callback-Url": "http://169.254.169.254/latest/meta-data"}, b"", 400, "denied range"),
        ("POST", "/async-function/hello", {"X-Call-Id": "not ok!"}, b"", 400, "X-Call-Id"),
        ("POST", "/async-function/hello", {"X-Call-Id": "x" * 129}, b"", 400, "X-Call-Id"),
        ("GET", "/async-function/hello", {}, b"", 405, ""),
        ("PUT", "/async-function/hello/x", {}, b"", 405, ""),
        ("GET", "/system/async/calls/bad!id", AUTH, b"", 400, "call id"),
        ("GET", f"/system/async/calls/{'x' * 129}", AUTH, b"", 400, "call id"),
        ("GET", f"/system/async/calls/{unknown}", AUTH, b"", 404, "no async call"),
        ("DELETE", f"/system/async/calls/{unknown}", AUTH, b"", 404, "no queued async call"),
        ("DELETE", "/system/async/calls/bad!id", AUTH, b"", 400, "call id"),
        ("POST", f"/system/async/dead-letters/{unknown}/replay", AUTH, b"", 404,
         "no dead letter"),
        ("POST", "/system/async/dead-letters/bad!id/replay", AUTH, b"", 400, "call id"),
        ("GET", "/system/async/dead-letters?limit=0", AUTH, b"", 400, "limit"),
        ("GET", "/system/async/dead-letters?limit=1001", AUTH, b"", 400, "limit"),
        ("GET", "/system/async/dead-letters?limit=ten", AUTH, b"", 400, "limit"),
        ("GET", "/system/async/dead-letters?after=-1", AUTH, b"", 400, "after"),
        ("GET", "/system/async/dead-letters?after=x", AUTH, b"", 400, "after"),
        ("GET", "/system/async/dead-letters?namespace=Bad_NS", AUTH, b"", 400, "namespace"),
        ("GET", "/system/async/dead-letters?name=..%2Fx", AUTH, b"", 400, "function name"),
        ("GET", "/system/async/queues?namespace=Bad_NS", AUTH, b"", 400, "namespace"),
    ]  # fmt: skip
    for method, path, headers, body, status, message in cases:
        resp = await gw.client.request(method, path, headers=headers, data=body)
        text = await resp.text()
        assert resp.status == status, (method, path, headers, resp.status, text)
        assert message in text, (method, path, text)

    # Over the limit without a Content-Length: the chunked upload is cut off at the limit.
    async def chunks() -> AsyncIterator[bytes]:
        for _ in range(4):
            yield b"y" * 512

    resp = await gw.client.post("/async-function/hello", data=chunks())
    assert resp.status == 413, await resp.text()
    assert "Content-Length" not in resp.request_info.headers  # it really was chunked

    # Management without credentials: 401 with a challenge, whatever the path.
    for method, path in [
        ("GET", f"/system/async/calls/{unknown}"),
        ("DELETE", f"/system/async/calls/{unknown}"),
        ("GET", "/system/async/dead-letters"),
        ("POST", f"/system/async/dead-letters/{unknown}/replay"),
        ("GET", "/system/async/queues"),
    ]:
        resp = await gw.client.request(method, path)
        assert resp.status == 401, (method, path)
        assert resp.headers["WWW-Authenticate"].startswith("Basic")

    # None of it reached the queue or the function; a good call still goes through.
    assert await dead_letters(gw) == []
    depth = (await queues(gw))["hello"]
    assert (depth["pending"], depth["inFlight"]) == (0, 0)
    assert await invocations(gw, "hello", 200) == 0.0
    ok = await enqueue(gw, "hello", b"z" * 1024)  # exactly the limit
    await wait_state(gw, ok, "succeeded")
    assert await invocations(gw, "hello", 200) == 1.0


# -- 4: retries and dead letters -------------------------------------------------------------


async def test_retries_dead_letter_and_replay(gw: Gateway) -> None:
    await deploy(gw, "flaky", QUICK_RETRY)
    call_id = await enqueue(gw, "flaky/_fake/status?code=500", b"payload")
    dead = await wait_state(gw, call_id, "dead-lettered")
    assert dead["attempts"] == 2 and dead["lastStatus"] == 500 and dead["replays"] == 0
    assert [h["status"] for h in dead["history"]] == [500, 500]

    (letter,) = await dead_letters(gw, f"?namespace={NS}&name=flaky")
    assert letter["callId"] == call_id
    assert (letter["function"], letter["namespace"]) == ("flaky", NS)
    assert (letter["attempts"], letter["lastStatus"], letter["replays"]) == (2, 500, 0)
    assert (letter["path"], letter["query"], letter["bodyBytes"]) == (
        "/_fake/status",
        "code=500",
        7,
    )
    assert "headers" not in letter  # request headers may carry credentials
    assert await dead_letters(gw, f"?after={letter['seq']}") == []
    assert await dead_letters(gw, f"?namespace={NS}&name=hello") == []

    resp = await gw.client.post(f"/system/async/dead-letters/{call_id}/replay", headers=AUTH)
    assert resp.status == 202, await resp.text()
    assert resp.headers["X-Call-Id"] == call_id
    replayed = await resp.json()
    assert replayed["state"] == "queued" and replayed["replays"] == 1
    # It still fails: dead-lettered again after a fresh set of attempts, the replay counted.
    again = await wait_state(gw, call_id, "dead-lettered", replays=1)
    assert again["attempts"] == 2 and again["lastStatus"] == 500
    (letter,) = await dead_letters(gw)
    assert (letter["callId"], letter["replays"], letter["attempts"]) == (call_id, 1, 2)
    assert await invocations(gw, "flaky", 500) == 4.0

    # 503 is not in this function's retry codes: final after one attempt, no dead letter.
    failed_id = await enqueue(gw, "flaky/_fake/status?code=503")
    failed = await wait_state(gw, failed_id, "failed")
    assert failed["attempts"] == 1 and failed["lastStatus"] == 503
    assert [item["callId"] for item in await dead_letters(gw)] == [call_id]
    resp = await gw.client.post(f"/system/async/dead-letters/{failed_id}/replay", headers=AUTH)
    assert resp.status == 404, await resp.text()


# -- 5: cancel ---------------------------------------------------------------------------


async def test_cancel_queued_call_only(gw: Gateway) -> None:
    running = await enqueue(gw, "hello/_fake/sleep?ms=1500")
    await wait_state(gw, running, "running")
    queued = await enqueue(gw, "hello", b"never")
    assert (await status_of(gw, queued))["state"] == "queued"

    resp = await gw.client.delete(f"/system/async/calls/{queued}", headers=AUTH)
    assert resp.status == 200, await resp.text()
    assert (await resp.json())["state"] == "cancelled"
    again = await gw.client.delete(f"/system/async/calls/{queued}", headers=AUTH)
    assert again.status == 200 and (await again.json())["state"] == "cancelled"

    resp = await gw.client.delete(f"/system/async/calls/{running}", headers=AUTH)
    assert resp.status == 409, await resp.text()
    assert "running" in await resp.text()
    await wait_state(gw, running, "succeeded")
    resp = await gw.client.delete(f"/system/async/calls/{running}", headers=AUTH)
    assert resp.status == 409 and "succeeded" in await resp.text()

    # The slot is free again; a call behind the cancelled one runs, the cancelled one never.
    barrier = await enqueue(gw, "hello", b"after")
    await wait_state(gw, barrier, "succeeded")
    cancelled = await status_of(gw, queued)
    assert cancelled["state"] == "cancelled" and cancelled["attempts"] == 0
    assert await invocations(gw, "hello", 200) == 2.0
    depth = (await queues(gw))["hello"]
    assert (depth["pending"], depth["inFlight"]) == (0, 0)


# -- 6: callbacks ------------------------------------------------------------------------


async def test_callback_gets_result_and_call_headers(gw: Gateway, receiver: Receiver) -> None:
    ok = await enqueue(gw, "hello/cb", b"hello callback", X_Callback_Url=receiver.url)
    await wait_state(gw, ok, "succeeded", callbackState="delivered")
    assert (await status_of(gw, ok))["callbackStatus"] == 200
    failed = await enqueue(
        gw, "hello/_fake/status?code=400&h=X-From-Fn:yes", X_Callback_Url=receiver.url + "?x=1"
    )
    await wait_state(gw, failed, "failed", callbackState="delivered")

    first, second = receiver.received
    assert (first.method, first.path) == ("POST", "/cb")
    assert first.headers["X-Call-Id"] == ok
    assert first.headers["X-Function-Name"] == f"hello.{NS}"
    assert first.headers["X-Function-Status"] == "200"
    assert float(first.headers["X-Duration-Seconds"]) >= 0
    assert first.headers["Content-Type"].startswith("application/json")  # the function's
    assert json.loads(first.body)["body"] == "hello callback"

    assert second.headers["X-Call-Id"] == failed
    assert second.headers["X-Function-Status"] == "400"
    assert second.headers["X-From-Fn"] == "yes"
    assert second.body == b"status"


# -- 7: queues -----------------------------------------------------------------------------


async def test_queues_depth_and_concurrency(gw: Gateway) -> None:
    await deploy(gw, "wide", {CONCURRENCY_ANNOTATION: "3"})
    await deploy(gw, "plain")

    async def concurrency_is(expected: dict[str, int]) -> dict[str, dict[str, Any]]:
        found = await queues(gw)
        got = {name: item["concurrency"] for name, item in found.items()}
        return found if got == expected else {}

    listed = await eventually(
        lambda: concurrency_is({"hello": 1, "wide": 3, "plain": 1}), what="worker concurrency"
    )
    for item in listed.values():
        assert set(item) == {"name", "namespace", "pending", "inFlight", "running", "concurrency"}
        assert item["namespace"] == NS
    assert set(await queues(gw, f"?namespace={NS}")) == {"hello", "wide", "plain"}

    # Without the annotation, concurrency follows the replicas (and stays 1 at zero).
    for replicas, expected in [(2, 2), (0, 1)]:
        resp = await gw.client.post(
            "/system/scale-function/plain",
            json={"serviceName": "plain", "replicas": replicas},
            headers=AUTH,
        )
        assert resp.status == 202, await resp.text()
        await eventually(
            lambda e=expected: concurrency_is({"hello": 1, "wide": 3, "plain": e}),
            what=f"plain's concurrency {expected}",
        )

    # Depth: one running call holds hello's single slot, two wait behind it.
    held = await enqueue(gw, "hello/_fake/sleep?ms=1000")
    for _ in range(2):
        await enqueue(gw, "hello")

    async def depth_is() -> bool:
        item = (await queues(gw))["hello"]
        return (item["running"], item["inFlight"], item["pending"]) == (1, 1, 2)

    await eventually(depth_is, what="hello running 1, inFlight 1, pending 2")
    await wait_state(gw, held, "succeeded")

    async def drained() -> bool:
        item = (await queues(gw))["hello"]
        return (item["running"], item["inFlight"], item["pending"]) == (0, 0, 0)

    await eventually(drained, what="hello's queue drained")


# -- 8: deploy-time validation ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("annotations", "named"),
    [
        ({CONCURRENCY_ANNOTATION: "many"}, CONCURRENCY_ANNOTATION),
        ({CONCURRENCY_ANNOTATION: "0"}, CONCURRENCY_ANNOTATION),
        ({CONCURRENCY_ANNOTATION: "1001"}, CONCURRENCY_ANNOTATION),
        ({ATTEMPTS: "0"}, ATTEMPTS),
        ({ATTEMPTS: "two"}, ATTEMPTS),
        ({CODES: "5xx"}, CODES),
        ({CODES: "700"}, CODES),
        ({MIN_WAIT: "soon"}, MIN_WAIT),
        ({MAX_WAIT: "25h"}, MAX_WAIT),
        ({MIN_WAIT: "2s", MAX_WAIT: "1s"}, MIN_WAIT),
    ],
)
async def test_bad_async_annotations_refuse_the_deploy(
    make_gateway: GatewayFactory, annotations: dict[str, str], named: str
) -> None:
    gw = await make_gateway()  # the validator is the FunctionManager's, queue or not
    resp = await gw.deploy("bad", annotations=annotations)
    assert resp.status == 400, await resp.text()
    assert named in await resp.text()
    resp = await gw.client.get(f"/system/function/bad?namespace={NS}", headers=AUTH)
    assert resp.status == 404
    # An update with the bad value is refused too and leaves the function as it was.
    await deploy(gw, "good", {CONCURRENCY_ANNOTATION: "2"})
    body = {"service": "good", "image": "fake/hello:2", "annotations": annotations}
    resp = await gw.client.put("/system/functions", json=body, headers=AUTH)
    assert resp.status == 400 and named in await resp.text()
    status = await (
        await gw.client.get(f"/system/function/good?namespace={NS}", headers=AUTH)
    ).json()
    assert status["image"] == "fake/hello:1"
    assert status["annotations"] == {CONCURRENCY_ANNOTATION: "2"}


# -- 9: NATS away --------------------------------------------------------------------------


async def test_nats_outage_is_503_and_recovers(
    make_gateway: GatewayFactory, tmp_path: Path
) -> None:
    server = EmbeddedNats(tmp_path / "external", backoff_min_s=0.05, backoff_max_s=0.5)
    await server.start()
    try:
        gw = await make_gateway(with_async=True, nats_url=server.url, worker_options=WORKERS)
        assert gw.queue is not None and gw.queue.server is None  # not embedded
        await deploy(gw, "hello")
        before = await enqueue(gw, "hello", b"before")
        await wait_state(gw, before, "succeeded")
        port = server.port

        await server.stop()
        for _ in range(3):
            resp = await post_async(gw, "hello", b"during")
            assert resp.status == 503, (resp.status, await resp.text())
            assert int(resp.headers["Retry-After"]) > 0
            assert "NATS" in await resp.text() or "nats" in await resp.text()
            sync = await gw.client.post("/function/hello", data=b"sync")
            assert sync.status == 200
            assert json.loads(await sync.read())["body"] == "sync"
        resp = await gw.client.get("/system/async/queues", headers=AUTH)
        assert resp.status == 503 and "Retry-After" in resp.headers

        await server.start()  # the same store and, kept from the first start, the same port
        assert server.port == port

        async def accepted() -> str | None:
            resp = await post_async(gw, "hello", b"after")
            assert resp.status in (202, 503), (resp.status, await resp.text())
            return resp.headers["X-Call-Id"] if resp.status == 202 else None

        after = await eventually(accepted, what="enqueue after NATS came back")
        await wait_state(gw, after, "succeeded")
        assert (await status_of(gw, before))["state"] == "succeeded"  # the store survived
        # Nothing answered 503 was stored behind the caller's back: 3 sync + 2 async calls.
        assert await invocations(gw, "hello", 200) == 5.0
    finally:
        await server.stop()


async def test_nats_unreachable_at_start(
    make_gateway: GatewayFactory, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Nothing listens there yet; don't wait the daemon's 10 s for a first connection.
    monkeypatch.setattr(service, "FIRST_CONNECT_WAIT_S", 0.3)
    port = free_port()
    gw = await make_gateway(
        with_async=True, nats_url=f"nats://127.0.0.1:{port}", worker_options=WORKERS
    )
    await deploy(gw, "hello")

    async def refused_with_reason() -> bool:
        resp = await post_async(gw, "hello", b"x")
        assert resp.status == 503, await resp.text()
        assert int(resp.headers["Retry-After"]) > 0
        assert (await gw.client.post("/function/hello", data=b"sync")).status == 200
        # "starting" at first; then why: the URL it cannot reach
        return f"cannot connect to NATS at nats://127.0.0.1:{port}" in await resp.text()

    await eventually(refused_with_reason, what="503 naming the unreachable NATS URL")

    # A server showing up there later is found, and the function deployed meanwhile gets its
    # worker.
    server = EmbeddedNats(tmp_path / "late", port=port)
    await server.start()
    try:

        async def accepted() -> str | None:
            resp = await post_async(gw, "hello", b"late")
            return resp.headers["X-Call-Id"] if resp.status == 202 else None

        call_id = await eventually(accepted, 15.0, "enqueue once NATS is up")
        await wait_state(gw, call_id, "succeeded")
    finally:
        await server.stop()


# -- 10: deleting a function with queued calls -----------------------------------------------


async def test_deleted_function_calls_end_as_dead_letters(gw: Gateway) -> None:
    await deploy(gw, "doomed", {CONCURRENCY_ANNOTATION: "1", **QUICK_RETRY})
    running = await enqueue(gw, "doomed/_fake/sleep?ms=1500")
    await wait_state(gw, running, "running")
    queued = [await enqueue(gw, "doomed", f"q{i}".encode()) for i in range(2)]
    resp = await gw.client.delete(
        "/system/functions", json={"functionName": "doomed"}, headers=AUTH
    )
    assert resp.status == 202, await resp.text()

    # The queued calls are not dropped: the worker stays until the queue is empty and each
    # call ends dead-lettered with 404 (replayable after a redeploy).
    for call_id in queued:
        dead = await wait_state(gw, call_id, "dead-lettered")
        assert dead["attempts"] == 1 and dead["lastStatus"] == 404, dead
        assert "not found" in dead["lastError"]
    # The running call lost its replica mid-request; it ends too, never silently.
    ended = await wait_state(gw, running, "dead-lettered")
    assert ended["lastStatus"] == 404, ended
    letters = {item["callId"] for item in await dead_letters(gw, f"?namespace={NS}&name=doomed")}
    assert letters == {running, *queued}

    # Redeployed, a replay runs for real.
    await deploy(gw, "doomed", {CONCURRENCY_ANNOTATION: "1", **QUICK_RETRY})
    resp = await gw.client.post(f"/system/async/dead-letters/{queued[0]}/replay", headers=AUTH)
    assert resp.status == 202, await resp.text()
    await wait_state(gw, queued[0], "succeeded", replays=1)


async def test_calls_left_for_a_function_deleted_while_down_end_as_dead_letters(
    make_gateway: GatewayFactory, tmp_path: Path
) -> None:
    """A consumer whose function no longer exists (deleted while the daemon was down) still
    holds calls: at start-up they get a worker and end dead-lettered instead of queued for ever."""
    server = EmbeddedNats(tmp_path / "external")
    await server.start()
    try:
        nc = await connect(server.url)
        js = nc.jetstream()
        await ensure_layout(js)
        await js.add_consumer(WORK_STREAM, consumer_config(NS, "ghost", QueueLimits()))
        enqueuer = Enqueuer(nc)
        ids = [
            (await enqueuer.enqueue(Envelope(new_call_id(), "ghost", NS, body=b"x"))).call_id
            for _ in range(2)
        ]
        await nc.close()

        gw = await make_gateway(with_async=True, nats_url=server.url, worker_options=WORKERS)
        for call_id in ids:
            dead = await wait_state(gw, call_id, "dead-lettered")
            assert dead["lastStatus"] == 404, dead
        assert {item["callId"] for item in await dead_letters(gw, "?name=ghost")} == set(ids)
    finally:
        await server.stop()


async def test_a_call_id_taken_by_another_function_is_a_conflict(gw: Gateway) -> None:
    await deploy(gw, "other")
    call_id = await enqueue(gw, "hello", b"first", X_Call_Id="shared-id-1")
    resp = await post_async(gw, "other", b"second", {"X-Call-Id": "shared-id-1"})
    assert resp.status == 409, await resp.text()
    assert "hello.openfaas-fn" in await resp.text()
    # The same function again is the idempotent retry it always was.
    again = await post_async(gw, "hello", b"first", {"X-Call-Id": call_id})
    assert again.status == 202 and again.headers["X-Call-Id"] == call_id
