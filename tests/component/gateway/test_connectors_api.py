"""ConnectorHost and `GET /system/connectors` with a recording connector: deploy-time
validation, bind on deploy/update/scale, unbind on delete, bindings listed per function."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

from connectors.base import Binding, Connector
from connectors.registry import ConnectorContext
from runtime.errors import InvalidSpec
from runtime.models import FunctionSpec
from tests.component.gateway.conftest import AUTH, GatewayFactory

TOPIC = "com.localfaas.test.topic"


class Recording:
    name = "test"

    def __init__(self, ctx: ConnectorContext) -> None:
        self.ctx = ctx
        self.bound: dict[tuple[str, str], str] = {}
        self.events: list[str] = []
        self.started = self.closed = False

    def validate(self, spec: FunctionSpec) -> None:
        if spec.annotations.get(TOPIC) == "bad":
            raise InvalidSpec(f"annotation {TOPIC}: 'bad' is not a topic")

    async def start(self) -> None:
        self.started = True

    async def bind(self, spec: FunctionSpec) -> None:
        topic = spec.annotations.get(TOPIC)
        self.events.append(f"bind {spec.name} {topic}")
        if topic is None:
            self.bound.pop((spec.namespace, spec.name), None)
        else:
            self.bound[(spec.namespace, spec.name)] = topic

    async def unbind(self, namespace: str, name: str) -> None:
        self.events.append(f"unbind {name}")
        self.bound.pop((namespace, name), None)

    def bindings(self) -> list[Binding]:
        return [Binding("test", n, ns, t) for (ns, n), t in self.bound.items()]

    async def close(self) -> None:
        self.closed = True


def recording() -> tuple[list[Recording], Callable[[ConnectorContext], list[Connector]]]:
    made: list[Recording] = []

    def make(ctx: ConnectorContext) -> list[Connector]:
        made.append(Recording(ctx))
        return list(made)

    return made, make


async def eventually(check: Callable[[], bool], what: str, timeout_s: float = 5.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not check():
        assert time.monotonic() < deadline, f"{what} not reached in {timeout_s}s"
        await asyncio.sleep(0.01)


async def test_bindings_follow_deploy_update_and_delete(make_gateway: GatewayFactory) -> None:
    made, make = recording()
    gw = await make_gateway(with_connectors=make)
    (conn,) = made
    assert conn.started

    assert (await gw.deploy("a", annotations={TOPIC: "orders"})).status == 202
    assert (await gw.deploy("b")).status == 202
    await eventually(lambda: conn.bound == {("openfaas-fn", "a"): "orders"}, "a bound")

    listed = await (await gw.client.get("/system/connectors", headers=AUTH)).json()
    assert listed["connectors"] == ["test"]
    assert listed["bindings"] == [
        {
            "connector": "test",
            "function": "a",
            "namespace": "openfaas-fn",
            "trigger": "orders",
            "details": {},
        }
    ]
    only_b = await (await gw.client.get("/system/connectors?name=b", headers=AUTH)).json()
    assert only_b["bindings"] == []

    # An update with new annotations rebinds; a refused one changes nothing.
    body = {"service": "a", "image": "fake/hello:1", "annotations": {TOPIC: "invoices"}}
    assert (await gw.client.put("/system/functions", json=body, headers=AUTH)).status == 202
    await eventually(lambda: conn.bound.get(("openfaas-fn", "a")) == "invoices", "rebound")
    bad = {"service": "a", "image": "fake/hello:1", "annotations": {TOPIC: "bad"}}
    resp = await gw.client.put("/system/functions", json=bad, headers=AUTH)
    assert resp.status == 400 and TOPIC in await resp.text()
    resp = await gw.deploy("c", annotations={TOPIC: "bad"})
    assert resp.status == 400 and TOPIC in await resp.text()
    assert (await gw.client.get("/system/function/c", headers=AUTH)).status == 404

    resp = await gw.client.delete("/system/functions", json={"functionName": "a"}, headers=AUTH)
    assert resp.status == 202
    await eventually(lambda: "unbind a" in conn.events and not conn.bound, "a unbound")
    assert conn.bound.get(("openfaas-fn", "a")) is None


async def test_connectors_endpoint_bad_input_and_auth(make_gateway: GatewayFactory) -> None:
    gw = await make_gateway(with_connectors=True)
    assert (await gw.client.get("/system/connectors")).status == 401
    for query, word in (("?name=Bad_Name", "function name"), ("?namespace=..", "namespace")):
        resp = await gw.client.get(f"/system/connectors{query}", headers=AUTH)
        assert resp.status == 400 and word in await resp.text()
    ok = await (await gw.client.get("/system/connectors", headers=AUTH)).json()
    assert ok["bindings"] == []
