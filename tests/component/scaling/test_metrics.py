"""/metrics with the autoscaler's collector registered: replicas by state, desired replicas and
requests waiting for a replica, per function."""

from __future__ import annotations

import asyncio

from prometheus_client.parser import text_string_to_metric_families

from runtime.router import ReplicaState
from runtime.scaling.config import SCALE_PAUSE_AFTER, SCALE_ZERO, SCALE_ZERO_DURATION
from tests.component.scaling.conftest import (
    AUTH,
    CountingProvider,
    Gateway,
    GatewayFactory,
    Ticks,
    deploy_ready,
    until,
)

TIERS = {SCALE_ZERO: "true", SCALE_PAUSE_AFTER: "10s", SCALE_ZERO_DURATION: "1h"}


async def scrape(gw: Gateway, function: str) -> dict[str, float]:
    """The localfaas_function_* samples of ``function``: ``replicas{state}``, ``desired``,
    ``waiting``."""
    resp = await gw.client.get("/metrics")
    assert resp.status == 200
    found: dict[str, float] = {}
    for family in text_string_to_metric_families(await resp.text()):
        for sample in family.samples:
            if sample.labels.get("function_name") != function:
                continue
            if sample.name == "localfaas_function_replicas":
                found[f"replicas{{{sample.labels['state']}}}"] = sample.value
            elif sample.name == "localfaas_function_desired_replicas":
                found["desired"] = sample.value
            elif sample.name == "localfaas_function_waiting_requests":
                found["waiting"] = sample.value
    return found


def replicas(
    starting: int = 0, ready: int = 0, draining: int = 0, paused: int = 0
) -> dict[str, float]:
    return {
        "replicas{starting}": starting,
        "replicas{ready}": ready,
        "replicas{draining}": draining,
        "replicas{paused}": paused,
    }


async def test_replica_gauges_follow_the_idle_tiers(
    make_gateway: GatewayFactory, counting: CountingProvider
) -> None:
    gw = await make_gateway(provider=counting)
    fn = await deploy_ready(gw, "m", TIERS)
    ticks = Ticks(gw, register=True)
    assert await scrape(gw, "m.openfaas-fn") == {**replicas(ready=1), "desired": 1, "waiting": 0}

    ticks.at(11)
    await until(lambda: fn.pool.in_state(ReplicaState.PAUSED) != [], "replica paused")
    assert await scrape(gw, "m.openfaas-fn") == {**replicas(paused=1), "desired": 0, "waiting": 0}

    assert (await gw.client.get("/function/m")).status == 200  # resumes it
    assert await scrape(gw, "m.openfaas-fn") == {**replicas(ready=1), "desired": 1, "waiting": 0}


async def test_waiting_requests_gauge_counts_the_activator_queue(
    make_gateway: GatewayFactory, counting: CountingProvider
) -> None:
    gw = await make_gateway(provider=counting)
    fn = await deploy_ready(gw, "w", {**TIERS, SCALE_PAUSE_AFTER: "0"})
    Ticks(gw, register=True)
    resp = await gw.client.post(
        "/system/scale-function/w", json={"serviceName": "w", "replicas": 0}, headers=AUTH
    )
    assert resp.status == 202
    await until(lambda: len(fn.pool) == 0, "w at zero")
    assert await scrape(gw, "w.openfaas-fn") == {**replicas(), "desired": 0, "waiting": 0}

    counting.create_delay_s = 1.0
    calls = [asyncio.create_task(gw.client.get("/function/w")) for _ in range(2)]
    await until(lambda: fn.waiting == 2, "two requests waiting")
    assert await scrape(gw, "w.openfaas-fn") == {**replicas(), "desired": 1, "waiting": 2}
    assert [r.status for r in await asyncio.gather(*calls)] == [200, 200]
    assert await scrape(gw, "w.openfaas-fn") == {**replicas(ready=1), "desired": 1, "waiting": 0}
