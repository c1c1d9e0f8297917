"""NATS subjects connector in a real gateway (FakeProvider replicas, real Invoker) against the
embedded nats-server the gateway's AsyncQueue runs."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import time
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field, replace
from typing import Any

import nats
import pytest
from nats.aio.client import Client as NATS
from nats.errors import Error as NatsError
from nats.errors import NoRespondersError
from nats.js.api import StreamConfig

from connectors.base import Connector
from connectors.nats_subjects import DURABLE, NatsSubjects
from connectors.registry import ConnectorContext
from runtime.invoker import BufferedResult, Invocation
from runtime.queue.enqueue import Enqueued
from runtime.queue.message import Envelope
from tests.component.gateway.conftest import AUTH, Gateway, GatewayFactory
from tests.component.gateway.conftest import make_gateway as make_gateway  # the fixture

WAIT_S = 10.0


async def eventually(
    check: Callable[[], bool] | Callable[[], Awaitable[bool]], what: str, timeout_s: float = WAIT_S
) -> None:
    deadline = time.monotonic() + timeout_s
    while True:
        result = check()
        if asyncio.iscoroutine(result):
            result = await result
        if result:
            return
        assert time.monotonic() < deadline, f"{what} not reached in {timeout_s}s"
        await asyncio.sleep(0.01)


@dataclass
class Recorder:
    """Dispatch that records every invocation; a message header `X-Test-Path` sends it to a
    fake path (`/_fake/status?code=500`), only on the first delivery with `X-Test-Once`."""

    inner: Any
    seen: list[tuple[dict[str, str], dict[str, Any] | None]] = field(default_factory=list)

    @property
    def invoke_timeout_s(self) -> float:
        return float(self.inner.invoke_timeout_s)

    async def invoke(self, inv: Invocation) -> BufferedResult:
        headers = dict(inv.headers)  # type: ignore[arg-type]
        target = headers.get("X-Test-Path")
        if target and not (headers.get("X-Test-Once") and headers.get("X-Delivery-Attempt") != "1"):
            path, _, query = target.partition("?")
            inv = replace(inv, path=path, query_string=query)
        headers["X-Call-Id"] = inv.call_id
        try:
            result: BufferedResult = await self.inner.invoke(inv)
        except Exception:
            self.seen.append((headers, None))
            raise
        echo = json.loads(result.body) if result.body.startswith(b"{") else None
        self.seen.append((headers, echo))
        return result

    async def enqueue(self, env: Envelope) -> Enqueued:
        return await self.inner.enqueue(env)  # type: ignore[no-any-return]

    def with_header(self, name: str, value: str) -> list[dict[str, Any] | None]:
        return [echo for headers, echo in self.seen if headers.get(name) == value]


@dataclass
class Env:
    gw: Gateway
    recorder: Recorder
    connector: NatsSubjects
    ctx: ConnectorContext
    nc: NATS

    def binding(self, name: str) -> list[dict[str, Any]]:
        return [b.to_json() for b in self.connector.bindings() if b.function == name]

    async def wait_bound(self, name: str, subjects: set[str], state: str = "subscribed") -> None:
        def bound() -> bool:
            found = self.binding(name)
            return {b["trigger"] for b in found} == subjects and all(
                b["details"]["state"] == state for b in found
            )

        await eventually(bound, f"{name} bound to {subjects} ({state})")


@pytest.fixture
async def env(make_gateway: GatewayFactory) -> AsyncIterator[Env]:
    made: list[tuple[NatsSubjects, Recorder, ConnectorContext]] = []

    def make(ctx: ConnectorContext) -> list[Connector]:
        recorder = Recorder(ctx.dispatch)
        connector = NatsSubjects(replace(ctx, dispatch=recorder))
        made.append((connector, recorder, ctx))  # ctx without the recorder, for more connectors
        return [connector]

    gw = await make_gateway(with_async=True, with_connectors=make, invoke_timeout_s=1.0)
    connector, recorder, ctx = made[0]
    await asyncio.wait_for(connector.connected.wait(), WAIT_S)
    assert gw.queue is not None and gw.queue.nats_url is not None
    nc = await nats.connect(gw.queue.nats_url)
    yield Env(gw, recorder, connector, ctx, nc)
    await nc.close()


async def test_publish_triggers_wildcard_binding(env: Env) -> None:
    resp = await env.gw.deploy("orders", annotations={"topic": "orders.*"})
    assert resp.status == 202
    await env.gw.wait_available("orders")
    await env.wait_bound("orders", {"orders.*"})
    listed = await (await env.gw.client.get("/system/connectors", headers=AUTH)).json()
    (binding,) = [b for b in listed["bindings"] if b["connector"] == "nats"]
    assert binding["trigger"] == "orders.*"
    assert binding["details"]["queue_group"] == "localfaas.fn.openfaas-fn.orders"

    await env.nc.publish("orders.eu.extra", b"not mine", headers={"X-Msg": "0"})
    await env.nc.publish("invoices.eu", b"not mine", headers={"X-Msg": "0"})
    await env.nc.publish("orders.eu", b"hello", headers={"X-Msg": "1", "X-Order": "42"})
    await eventually(lambda: bool(env.recorder.with_header("X-Msg", "1")), "invocation")
    (echo,) = env.recorder.with_header("X-Msg", "1")
    assert echo is not None
    assert echo["method"] == "POST" and echo["path"] == "/" and echo["body"] == "hello"
    assert echo["headers"]["X-Topic"] == "orders.eu"
    assert echo["headers"]["X-Connector"] == "nats"
    assert echo["headers"]["X-Order"] == "42"
    assert env.recorder.with_header("X-Msg", "0") == []

    metrics = await (await env.gw.client.get("/metrics")).text()
    assert (
        'localfaas_connector_events_total{connector="nats",function_name="orders.openfaas-fn"}'
        in metrics
    )


async def test_hundred_messages_three_replicas_two_subscribers(env: Env) -> None:
    """100 messages → 100 invocations, none twice, though a second connector (another daemon
    on the same server) is subscribed too: the queue group splits the messages."""
    resp = await env.gw.deploy(
        "orders", annotations={"topic": "orders.>"}, labels={"com.openfaas.scale.min": "3"}
    )
    assert resp.status == 202
    await env.gw.wait_available("orders", 3)
    await env.wait_bound("orders", {"orders.>"})
    other_recorder = Recorder(env.ctx.dispatch)
    other = NatsSubjects(replace(env.ctx, dispatch=other_recorder))
    await other.start()
    try:
        await other.bind(env.gw.functions.get("orders", "openfaas-fn").spec)
        await eventually(
            lambda: [b.details["state"] for b in other.bindings()] == ["subscribed"], "2nd bound"
        )
        for i in range(100):
            await env.nc.publish(f"orders.eu.{i % 7}", str(i).encode(), headers={"X-Msg": str(i)})

        def total() -> int:
            return len(env.recorder.seen) + len(other_recorder.seen)

        await eventually(lambda: total() >= 100, "100 invocations")
        await env.nc.flush()
        await asyncio.sleep(0.2)  # room for a duplicate to show up (not a condition)
        ids = Counter(h["X-Msg"] for h, _ in env.recorder.seen + other_recorder.seen)
        assert sorted(ids) == sorted(str(i) for i in range(100))
        assert set(ids.values()) == {1}
        assert env.recorder.seen and other_recorder.seen  # both subscribers took a share
        replicas = {echo["replica"] for _, echo in env.recorder.seen + other_recorder.seen if echo}
        assert len(replicas) == 3
    finally:
        await other.close()


async def test_request_reply_returns_output_and_errors(env: Env) -> None:
    assert (await env.gw.deploy("api", annotations={"topic": "api.orders"})).status == 202
    await env.gw.wait_available("api")
    await env.wait_bound("api", {"api.orders"})

    reply = await env.nc.request("api.orders", b"ping", timeout=5, headers={"X-Msg": "1"})
    assert reply.headers is not None
    assert reply.headers["X-Function-Status"] == "200"
    assert "Nats-Service-Error" not in reply.headers
    assert reply.headers["Content-Type"].startswith("application/json")
    echo = json.loads(reply.data)
    assert echo["body"] == "ping" and echo["headers"]["X-Topic"] == "api.orders"

    failed = await env.nc.request(
        "api.orders", b"", timeout=5, headers={"X-Test-Path": "/_fake/status?code=500"}
    )
    assert failed.headers is not None
    assert failed.headers["X-Function-Status"] == "500"
    assert failed.headers["Nats-Service-Error-Code"] == "500"
    assert failed.data == b"status"

    # The gateway's invoke timeout is 1 s: a 3 s call ends as 504 with the reason.
    slow = await env.nc.request(
        "api.orders", b"", timeout=5, headers={"X-Test-Path": "/_fake/sleep?ms=3000"}
    )
    assert slow.headers is not None
    assert slow.headers["X-Function-Status"] == "504"
    assert slow.headers["Nats-Service-Error-Code"] == "504"
    assert b"did not answer" in slow.data


async def test_redeploy_rebinds_and_delete_unbinds(env: Env) -> None:
    assert (await env.gw.deploy("fn", annotations={"topic": "a.x"})).status == 202
    await env.gw.wait_available("fn")
    await env.wait_bound("fn", {"a.x"})
    assert (await env.nc.request("a.x", b"", timeout=5)).headers["X-Function-Status"] == "200"  # type: ignore[index]

    body = {"service": "fn", "image": "fake/hello:1", "annotations": {"topic": "b.x, c.*"}}
    assert (await env.gw.client.put("/system/functions", json=body, headers=AUTH)).status == 202
    await env.wait_bound("fn", {"b.x", "c.*"})
    with pytest.raises(NoRespondersError):
        await env.nc.request("a.x", b"", timeout=2)
    assert (await env.nc.request("c.y", b"", timeout=5)).headers["X-Function-Status"] == "200"  # type: ignore[index]

    # An update without `topic` unbinds too.
    body = {"service": "fn", "image": "fake/hello:1", "annotations": {"topic": "b.x"}}
    assert (await env.gw.client.put("/system/functions", json=body, headers=AUTH)).status == 202
    await env.wait_bound("fn", {"b.x"})
    resp = await env.gw.client.delete(
        "/system/functions", json={"functionName": "fn"}, headers=AUTH
    )
    assert resp.status == 202
    await eventually(lambda: env.binding("fn") == [], "fn unbound")
    with pytest.raises(NoRespondersError):
        await env.nc.request("b.x", b"", timeout=2)


BAD_TOPICS = [
    ("orders..eu", "empty token"),
    ("orders.>.eu", "'>' may only be the last token"),
    ("orders eu", "printable ASCII"),
    ("orders.eu*", "whole tokens"),
    (">", "literal token"),
    ("$JS.API.>", "internal"),
    ("$SYS.ACCOUNT.>", "internal"),
    ("_INBOX.x", "internal"),
    ("localfaas.async.openfaas-fn.x.y", "internal"),
    ("orders.*,orders.eu", "overlap"),
    ("a,", "empty subject"),
]


async def test_bad_subjects_refused_at_deploy(env: Env) -> None:
    for topic, reason in BAD_TOPICS:
        resp = await env.gw.deploy("bad", annotations={"topic": topic})
        text = await resp.text()
        assert resp.status == 400, (topic, text)
        assert "topic" in text and reason in text, (topic, text)
    resp = await env.gw.deploy("bad", annotations={"topic": "a.b", DURABLE: "perhaps"})
    assert resp.status == 400 and DURABLE in await resp.text()
    assert (await env.gw.client.get("/system/function/bad", headers=AUTH)).status == 404
    # An update to a bad topic changes nothing.
    assert (await env.gw.deploy("good", annotations={"topic": "ok.x"})).status == 202
    body = {"service": "good", "image": "fake/hello:1", "annotations": {"topic": "$SYS.>"}}
    resp = await env.gw.client.put("/system/functions", json=body, headers=AUTH)
    assert resp.status == 400 and "internal" in await resp.text()
    await env.wait_bound("good", {"ok.x"})


async def test_durable_needs_a_stream(env: Env) -> None:
    resp = await env.gw.deploy("d", annotations={"topic": "jobs.*", DURABLE: "true"})
    text = await resp.text()
    assert resp.status == 400 and "topic" in text and "no JetStream stream" in text
    js = env.nc.jetstream()
    await js.add_stream(StreamConfig(name="JOBS", subjects=["jobs.>"]))

    async def accepted() -> bool:
        resp = await env.gw.deploy("d", annotations={"topic": "jobs.*", DURABLE: "true"})
        return resp.status == 202  # the stream list follows the server's advisory

    await eventually(accepted, "deploy accepted once the stream exists")
    await env.wait_bound("d", {"jobs.*"}, state="consuming")
    (binding,) = env.binding("d")
    assert binding["details"]["stream"] == "JOBS"
    assert binding["details"]["consumer"].startswith("lf_openfaas-fn_d_")


async def test_durable_binding_survives_a_restart(env: Env) -> None:
    js = env.nc.jetstream()
    await js.add_stream(StreamConfig(name="ORDERS", subjects=["orders.>"]))
    await eventually(
        lambda: "ORDERS" in env.connector.streams,
        "stream seen",
    )
    annotations = {
        "topic": "orders.*",
        DURABLE: "true",
        "com.openfaas.retry.min_wait": "50ms",
        "com.openfaas.retry.max_wait": "100ms",
    }
    assert (await env.gw.deploy("orders", annotations=annotations)).status == 202
    await env.gw.wait_available("orders")
    await env.wait_bound("orders", {"orders.*"}, state="consuming")
    (binding,) = env.binding("orders")
    stream, consumer = binding["details"]["stream"], binding["details"]["consumer"]

    # A failing first delivery is nak'ed and retried, then acked.
    await js.publish(
        "orders.eu",
        b"flaky",
        headers={"X-Msg": "flaky", "X-Test-Path": "/_fake/status?code=503", "X-Test-Once": "1"},
    )
    await eventually(lambda: len(env.recorder.with_header("X-Msg", "flaky")) == 2, "retried")
    attempts = [h for h, _ in env.recorder.seen if h.get("X-Msg") == "flaky"]
    assert [h["X-Delivery-Attempt"] for h in attempts] == ["1", "2"]
    assert attempts[0]["X-Call-Id"] == attempts[1]["X-Call-Id"]

    async def all_acked() -> bool:
        info = await js.consumer_info(stream, consumer)
        return info.num_pending == 0 and info.num_ack_pending == 0

    # The recorder sees the second attempt before its ack goes out; a restart in between would
    # (rightly) run it again, so wait for the ack first.
    await eventually(all_acked, "the retried message acked")

    # "Restart": the connector goes away, messages arrive meanwhile, a new one resumes.
    await env.connector.close()
    for i in range(20):
        await js.publish(f"orders.{i % 3}", str(i).encode(), headers={"X-Msg": f"m{i}"})
    recorder = Recorder(env.ctx.dispatch)
    again = NatsSubjects(replace(env.ctx, dispatch=recorder))
    await again.start()
    try:
        await again.bind(env.gw.functions.get("orders", "openfaas-fn").spec)

        def ids() -> Counter[str]:
            return Counter(h["X-Msg"] for h, _ in recorder.seen)

        await eventually(lambda: len(ids()) == 20, "the 20 messages after the restart")
        assert set(ids().values()) == {1}
        assert all(
            echo and echo["headers"]["X-Topic"].startswith("orders.") for _, echo in recorder.seen
        )

        await eventually(all_acked, "every message acked")
        assert "flaky" not in ids()  # acked before the restart: not run again

        # Delete removes the durable consumer.
        resp = await env.gw.client.delete(
            "/system/functions", json={"functionName": "orders"}, headers=AUTH
        )
        assert resp.status == 202
        await env.gw.connectors.settle()  # type: ignore[union-attr]
        await again.unbind("openfaas-fn", "orders")
        names = [c.name for c in await js.consumers_info(stream)]
        assert consumer not in names
    finally:
        await again.close()


async def test_nats_server_crash_reconnects_and_resubscribes(env: Env) -> None:
    """The embedded server is killed (its supervisor starts it again on the same port): the
    connector's connection comes back by itself and the subscription answers again."""
    assert (await env.gw.deploy("api", annotations={"topic": "api.x"})).status == 202
    await env.gw.wait_available("api")
    await env.wait_bound("api", {"api.x"})
    assert env.gw.queue is not None and env.gw.queue.server is not None
    server = env.gw.queue.server
    pid = server.pid
    assert pid is not None
    os.kill(pid, signal.SIGKILL)

    async def answers_again() -> bool:
        if server.pid in (None, pid):
            return False
        try:
            reply = await env.nc.request("api.x", b"", timeout=1)
        except (NatsError, TimeoutError):
            return False
        return reply.headers is not None and reply.headers.get("X-Function-Status") == "200"

    await eventually(answers_again, "a reply after the server restarted", timeout_s=20)
    assert env.connector.is_connected
