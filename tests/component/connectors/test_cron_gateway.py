"""The cron connector inside a real gateway (FakeProvider replicas are real HTTP servers that
echo requests): deploy-time validation through the API (400 naming the annotation), firings
reaching the replica through the Invoker with the cron headers, `GET /system/connectors`,
redeploy with a changed schedule rebinds, delete unbinds. Schedules use the test-only
seconds field."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import time
from collections.abc import Callable
from typing import Any

import pytest

from connectors.base import Connector
from connectors.cron import CronConnector
from connectors.registry import ConnectorContext
from runtime.invoker import BufferedResult, Invocation
from runtime.queue.enqueue import Enqueued
from runtime.queue.message import Envelope
from tests.component.gateway.conftest import AUTH, GatewayFactory, make_gateway  # noqa: F401

CRON = {"topic": "cron-function"}


class Tap:
    """The real Dispatch, with every sync result kept (the fake replica echoes the request)."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner
        self.echoes: list[dict[str, Any]] = []

    @property
    def invoke_timeout_s(self) -> float:
        return float(self.inner.invoke_timeout_s)

    async def invoke(self, inv: Invocation) -> BufferedResult:
        result = await self.inner.invoke(inv)
        assert result.status == 200, result.body
        self.echoes.append(json.loads(result.body))
        return result

    async def enqueue(self, env: Envelope) -> Enqueued:
        return await self.inner.enqueue(env)  # type: ignore[no-any-return]


def seconds_cron(taps: list[Tap]) -> Callable[[ConnectorContext], list[Connector]]:
    def make(ctx: ConnectorContext) -> list[Connector]:
        tap = Tap(ctx.dispatch)
        taps.append(tap)
        return [CronConnector(dataclasses.replace(ctx, dispatch=tap), seconds_field=True)]

    return make


async def until(check: Callable[[], bool], what: str, timeout_s: float = 6.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not check():
        assert time.monotonic() < deadline, f"{what} not reached in {timeout_s}s"
        await asyncio.sleep(0.01)


async def cron_bindings(gw: Any, name: str | None = None) -> list[dict[str, Any]]:
    query = f"?name={name}" if name else ""
    resp = await gw.client.get(f"/system/connectors{query}", headers=AUTH)
    assert resp.status == 200
    return [b for b in (await resp.json())["bindings"] if b["connector"] == "cron"]


async def test_firing_reaches_the_replica_with_cron_headers(make_gateway: GatewayFactory) -> None:
    taps: list[Tap] = []
    gw = await make_gateway(with_connectors=seconds_cron(taps))
    annotations = {**CRON, "schedule": "* * * * * *", "com.localfaas.cron.timezone": "Asia/Tokyo"}
    assert (await gw.deploy("tick", annotations=annotations)).status == 202
    await gw.wait_available("tick")
    (tap,) = taps
    await until(lambda: len(tap.echoes) >= 2, "two firings at the replica")
    echo = tap.echoes[0]
    assert (echo["method"], echo["path"], echo["body"]) == ("POST", "/", "")
    headers = echo["headers"]
    assert headers["X-Topic"] == "cron-function"
    assert headers["X-Connector"] == "cron"
    assert headers["X-Schedule"] == "* * * * * *"
    assert headers["X-Fire-Time"].endswith("+09:00")
    assert headers["X-Call-Id"].startswith("cron-")
    assert tap.echoes[1]["headers"]["X-Call-Id"] != headers["X-Call-Id"]

    (binding,) = await cron_bindings(gw, "tick")
    assert binding["trigger"] == "* * * * * * (Asia/Tokyo)"
    assert binding["details"]["nextFire"].endswith("+09:00")
    metrics = await (await gw.client.get("/metrics")).text()
    assert (
        'localfaas_connector_invocations_total{connector="cron",function_name="tick.openfaas-fn"}'
        in metrics
    )


@pytest.mark.parametrize(
    ("annotations", "named"),
    [
        ({**CRON}, "schedule"),
        ({**CRON, "schedule": "*/5 * * *"}, "schedule"),
        ({**CRON, "schedule": "61 * * * *"}, "schedule"),
        ({**CRON, "schedule": "@every 5m"}, "schedule"),
        ({**CRON, "schedule": "0 0 30 2 *"}, "schedule"),
        (
            {**CRON, "schedule": "* * * * *", "com.localfaas.cron.timezone": "Moon/Base"},
            "com.localfaas.cron.timezone",
        ),
        (
            {**CRON, "schedule": "* * * * *", "com.localfaas.cron.async": "maybe"},
            "com.localfaas.cron.async",
        ),
        (
            {**CRON, "schedule": "* * * * *", "com.localfaas.cron.catchup": "all"},
            "com.localfaas.cron.catchup",
        ),
        (
            {**CRON, "schedule": "* * * * *", "com.localfaas.cron.catchup-grace": "forever"},
            "com.localfaas.cron.catchup-grace",
        ),
    ],
)
async def test_bad_annotations_are_refused_at_deploy(
    make_gateway: GatewayFactory, annotations: dict[str, str], named: str
) -> None:
    # The daemon's own connectors (5-field schedules).
    gw = await make_gateway(with_connectors=True)
    resp = await gw.deploy("bad", annotations=annotations)
    text = await resp.text()
    assert resp.status == 400, text
    assert f"annotation {named}" in text
    assert (await gw.client.get("/system/function/bad", headers=AUTH)).status == 404
    # An update to a broken trigger is refused too, and the function keeps its old one.
    good = {**CRON, "schedule": "@daily"}
    assert (await gw.deploy("ok", annotations=good)).status == 202
    body = {"service": "ok", "image": "fake/hello:1", "annotations": annotations}
    resp = await gw.client.put("/system/functions", json=body, headers=AUTH)
    assert resp.status == 400 and f"annotation {named}" in await resp.text()
    await until(lambda: bool(gw.connectors and gw.connectors.bindings(name="ok")), "ok bound")
    (binding,) = await cron_bindings(gw, "ok")
    assert binding["trigger"] == "@daily (UTC)"


async def test_default_connectors_include_cron(make_gateway: GatewayFactory) -> None:
    gw = await make_gateway(with_connectors=True)
    listed = await (await gw.client.get("/system/connectors", headers=AUTH)).json()
    assert "cron" in listed["connectors"]
    # A schedule without topic cron-function is not bound (the NATS connector may own topic).
    assert (await gw.deploy("plain", annotations={"schedule": "* * * * *"})).status == 202
    assert (await gw.deploy("cron", annotations={**CRON, "schedule": "*/5 * * * *"})).status == 202
    await until(lambda: bool(gw.connectors and gw.connectors.bindings(name="cron")), "bound")
    assert await cron_bindings(gw, "plain") == []


async def test_redeploy_rebinds_and_delete_unbinds(make_gateway: GatewayFactory) -> None:
    taps: list[Tap] = []
    gw = await make_gateway(with_connectors=seconds_cron(taps))
    first = {**CRON, "schedule": "*/30 * * * * *"}
    assert (await gw.deploy("tick", annotations=first)).status == 202
    await until(lambda: bool(gw.connectors and gw.connectors.bindings(name="tick")), "bound")
    assert [b["trigger"] for b in await cron_bindings(gw, "tick")] == ["*/30 * * * * * (UTC)"]

    # Changed schedule (and two of them): rebinds without restart, and fires on the new one.
    changed = {**CRON, "schedule": "* * * * * *; 0 0 0 1 1 *"}
    body = {"service": "tick", "image": "fake/hello:1", "annotations": changed}
    assert (await gw.client.put("/system/functions", json=body, headers=AUTH)).status == 202
    await gw.wait_available("tick")

    async def triggers() -> list[str]:
        return sorted(b["trigger"] for b in await cron_bindings(gw, "tick"))

    deadline = time.monotonic() + 5
    while await triggers() != ["* * * * * * (UTC)", "0 0 0 1 1 * (UTC)"]:
        assert time.monotonic() < deadline, await triggers()
        await asyncio.sleep(0.02)
    (tap,) = taps
    await until(lambda: len(tap.echoes) >= 1, "a firing on the new schedule")
    assert tap.echoes[0]["headers"]["X-Schedule"] == "* * * * * *"

    # Delete: unbound, no more firings.
    resp = await gw.client.delete("/system/functions", json={"functionName": "tick"}, headers=AUTH)
    assert resp.status == 202
    deadline = time.monotonic() + 5
    while await cron_bindings(gw, "tick"):
        assert time.monotonic() < deadline, "still bound after delete"
        await asyncio.sleep(0.02)
    count = len(tap.echoes)
    assert gw.connectors is not None
    (cron,) = gw.connectors.connectors.values()
    assert cron.bindings() == []
    # Over the next full second boundary nothing fires.
    start = time.time()
    await until(lambda: time.time() > int(start) + 1.3, "the next second", 3)
    assert len(tap.echoes) == count
