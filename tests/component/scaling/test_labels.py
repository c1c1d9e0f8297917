"""Scaling labels through the deploy API: a bad one is a 400 naming it (and nothing is deployed);
min == max is fixed, whatever the ticks see; zero without a duration means 15 minutes."""

from __future__ import annotations

import asyncio

import pytest

from runtime.router import ReplicaState
from runtime.scaling.config import (
    SCALE_MAX,
    SCALE_MIN,
    SCALE_PAUSE_AFTER,
    SCALE_PROPORTION,
    SCALE_QUEUE_DEPTH,
    SCALE_TARGET,
    SCALE_TYPE,
    SCALE_ZERO,
    SCALE_ZERO_DURATION,
)
from tests.component.scaling.conftest import (
    AUTH,
    NAMESPACE,
    GatewayFactory,
    Ticks,
    deploy_ready,
    until,
)


@pytest.mark.parametrize(
    ("labels", "named", "says"),
    [
        ({SCALE_MIN: "-1"}, SCALE_MIN, "outside 0-1000"),
        ({SCALE_MIN: "two"}, SCALE_MIN, "not a whole number"),
        ({SCALE_MAX: "1.5"}, SCALE_MAX, "not a whole number"),
        ({SCALE_MIN: "3", SCALE_MAX: "2"}, SCALE_MAX, "below"),
        ({SCALE_TYPE: "memory"}, SCALE_TYPE, "not one of rps, capacity, cpu"),
        ({SCALE_TARGET: "0"}, SCALE_TARGET, "above 0"),
        ({SCALE_PROPORTION: "1.5"}, SCALE_PROPORTION, "at most 1"),
        ({SCALE_ZERO: "maybe"}, SCALE_ZERO, "not true or false"),
        ({SCALE_ZERO: "true", SCALE_ZERO_DURATION: "soon"}, SCALE_ZERO_DURATION, "not a duration"),
        ({SCALE_ZERO: "true", SCALE_ZERO_DURATION: "0s"}, SCALE_ZERO_DURATION, "above 0"),
        ({SCALE_PAUSE_AFTER: "-5s"}, SCALE_PAUSE_AFTER, "not a duration"),
        ({SCALE_QUEUE_DEPTH: "0"}, SCALE_QUEUE_DEPTH, "outside 1-1000000"),
    ],
)
async def test_bad_scaling_label_is_400_naming_it(
    make_gateway: GatewayFactory, labels: dict[str, str], named: str, says: str
) -> None:
    gw = await make_gateway()
    resp = await gw.deploy("bad", labels=labels)
    text = await resp.text()
    assert resp.status == 400, text
    assert named in text and says in text, text
    resp = await gw.client.get(f"/system/function/bad?namespace={NAMESPACE}", headers=AUTH)
    assert resp.status == 404
    assert gw.provider.engine.containers == {}


async def test_bad_label_on_update_leaves_the_function_as_it_was(
    make_gateway: GatewayFactory,
) -> None:
    gw = await make_gateway()
    fn = await deploy_ready(gw, "upd", {SCALE_MAX: "3"})
    body = {"service": "upd", "image": "fake/hello:2", "labels": {SCALE_MAX: "none"}}
    resp = await gw.client.put("/system/functions", json=body, headers=AUTH)
    text = await resp.text()
    assert resp.status == 400 and SCALE_MAX in text, text
    assert fn.spec.image == "fake/hello:1" and fn.scaling.max == 3


async def test_min_equal_max_is_fixed_whatever_the_ticks_see(
    make_gateway: GatewayFactory,
) -> None:
    gw = await make_gateway()
    labels = {SCALE_MIN: "2", SCALE_MAX: "2", SCALE_TYPE: "capacity", SCALE_TARGET: "1"}
    fn = await deploy_ready(gw, "fixed", labels, replicas=2)
    assert fn.scaling.fixed
    ticks = Ticks(gw)
    stats = gw.metrics.function("fixed.openfaas-fn")

    # Load that would want 6 replicas (panic), then hours of idleness (pause, zero): no change.
    slow = [
        asyncio.create_task(gw.client.get("/function/fixed/_fake/sleep?ms=800")) for _ in range(6)
    ]
    await until(lambda: stats.in_flight == 6, "6 requests in flight")
    assert ticks.at(1) == []
    assert [r.status for r in await asyncio.gather(*slow)] == [200] * 6
    for offset in (2, 60, 3600, 86400):
        assert ticks.at(offset) == []
    assert fn.desired_replicas == 2
    await asyncio.sleep(0)
    assert [h.state for h in fn.pool] == [ReplicaState.READY] * 2


async def test_zero_without_duration_is_accepted_with_15_minutes(
    make_gateway: GatewayFactory,
) -> None:
    gw = await make_gateway()
    fn = await deploy_ready(gw, "lazy", {SCALE_ZERO: "true", SCALE_PAUSE_AFTER: "0"})
    assert fn.scaling.zero and fn.scaling.zero_duration_s == 15 * 60
    ticks = Ticks(gw)
    assert ticks.at(15 * 60 - 1) == []
    ((_, decision),) = ticks.at(15 * 60 + 1)
    assert (decision.replicas, decision.reason) == (0, "zero")
    await until(lambda: len(fn.pool) == 0, "lazy scaled to zero")
