"""Idle tiers driven by autoscaler ticks: warm → paused (frozen, resumed by the next request) →
removed; and a request in flight keeps its replica warm whatever the idle clock says."""

from __future__ import annotations

import asyncio
import json
import time

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

# Paused after 10 s idle; gone after 12 s idle, so a paused replica is kept for 2 s (real time:
# the supervisor expires paused replicas on its own clock, not the ticks').
TIERS = {SCALE_ZERO: "true", SCALE_PAUSE_AFTER: "10s", SCALE_ZERO_DURATION: "12s"}


async def invoke(gw: Gateway, path: str) -> tuple[int, str]:
    async with gw.client.get(path) as resp:
        return resp.status, await resp.text()


async def test_idle_replica_is_paused_resumed_by_a_request_then_removed(
    make_gateway: GatewayFactory, counting: CountingProvider
) -> None:
    gw = await make_gateway(provider=counting)
    fn = await deploy_ready(gw, "tiers", TIERS)
    (handle,) = list(fn.pool)
    container = counting.container(handle.container_id)
    ticks = Ticks(gw)

    assert ticks.at(9) == []  # not idle long enough yet
    assert handle.state is ReplicaState.READY

    # Past pause-after: paused, not removed.
    ((_, decision),) = ticks.at(11)
    assert (decision.replicas, decision.reason) == (0, "idle")
    await until(lambda: handle.state is ReplicaState.PAUSED, "replica paused in the pool")
    assert container.state == "paused"
    assert fn.pool.ready() == []
    # A reconcile while paused makes no standby container: the paused replica is what resumes.
    await gw.functions._reconcile(fn)
    assert fn.standby is None and len(counting.engine.containers) == 1

    # A request resumes that same replica (no new container) and is served.
    status, text = await invoke(gw, "/function/tiers/first")
    assert status == 200, text
    assert json.loads(text)["replica"] == container.name
    assert handle.state is ReplicaState.READY and container.state == "running"
    assert counting.creates == 1
    assert fn.desired_replicas == 1

    # Idle again, past pause-after then past zero-duration: paused, then removed for good.
    start = ticks.elapsed() + 1
    ticks.at(start)  # sees the request start: active now
    assert fn.desired_replicas == 1
    ((_, decision),) = ticks.at(start + 11)
    assert (decision.replicas, decision.reason) == (0, "idle")
    await until(lambda: handle.state is ReplicaState.PAUSED, "replica paused again")
    assert ticks.at(start + 13) == []  # zero-duration passed: already at 0, the pause expires
    # Kept zero-duration - pause-after = 2 s after it was paused: gone then, not at the
    # supervisor's next 5 s resync.
    paused_at = time.monotonic()
    await until(
        lambda: container.container_id not in counting.engine.containers,
        "paused replica removed 2 s after it was paused",
        timeout_s=3.5,
    )
    assert time.monotonic() - paused_at > 1.5  # not before its time
    assert len(fn.pool) == 0 and fn.desired_replicas == 0

    # And from zero a request is still served (a fresh replica).
    status, _ = await invoke(gw, "/function/tiers/again")
    assert status == 200
    assert counting.creates == 2


async def test_zero_duration_below_pause_after_removes_without_pausing(
    make_gateway: GatewayFactory, counting: CountingProvider
) -> None:
    """zero-duration 5s with the default pause-after (30s): the replica is idle long enough to
    go before it would ever be paused, so it is removed, not frozen first."""
    gw = await make_gateway(provider=counting)
    fn = await deploy_ready(gw, "short", {SCALE_ZERO: "true", SCALE_ZERO_DURATION: "5s"})
    (handle,) = list(fn.pool)
    ticks = Ticks(gw)
    ((_, decision),) = ticks.at(6)
    assert (decision.replicas, decision.reason) == (0, "zero")
    await until(
        lambda: handle.container_id not in counting.engine.containers,
        "replica removed at zero-duration",
    )
    assert counting.pauses == 0
    assert len(fn.pool) == 0


async def test_request_in_flight_keeps_its_replica_through_idle_ticks(
    make_gateway: GatewayFactory, counting: CountingProvider
) -> None:
    gw = await make_gateway(provider=counting)
    fn = await deploy_ready(gw, "busy", TIERS)
    (handle,) = list(fn.pool)
    container = counting.container(handle.container_id)
    ticks = Ticks(gw)

    slow = asyncio.create_task(invoke(gw, "/function/busy/_fake/sleep?ms=1500"))
    stats = gw.metrics.function("busy.openfaas-fn")
    await until(lambda: stats.in_flight == 1 and handle.in_flight == 1, "slow request in flight")
    # Past pause-after and past zero-duration, several times, while it runs.
    for offset in (11, 13, 30, 60):
        assert ticks.at(offset) == []
        await asyncio.sleep(0)  # let a woken supervisor act, were it told anything
        assert handle.state is ReplicaState.READY and container.state == "running"
    assert fn.desired_replicas == 1 and not slow.done()

    assert await slow == (200, "slept")
    assert handle.state is ReplicaState.READY and container.state == "running"
    # Once it is over the same idle clock does apply (the ticks above were held off by it).
    ((_, decision),) = ticks.at(60 + 13)
    assert decision.replicas == 0
    await until(lambda: handle.state is not ReplicaState.READY, "replica leaves once idle")


async def test_replica_draining_to_pause_is_frozen_only_after_its_request_completes(
    make_gateway: GatewayFactory, counting: CountingProvider
) -> None:
    gw = await make_gateway(provider=counting)
    fn = await deploy_ready(gw, "drain", TIERS)
    (handle,) = list(fn.pool)
    container = counting.container(handle.container_id)

    slow = asyncio.create_task(invoke(gw, "/function/drain/_fake/sleep?ms=800"))
    await until(lambda: handle.in_flight == 1, "slow request in flight")
    # Told to go down to zero regardless (as the idle tier would): drained first, then paused.
    gw.functions.set_replicas(fn, 0, "reason=test")
    await until(lambda: handle.state is ReplicaState.DRAINING, "replica draining")
    assert container.state == "running" and counting.pauses == 0
    assert await slow == (200, "slept")
    await until(lambda: handle.state is ReplicaState.PAUSED, "replica paused after the drain")
    assert container.state == "paused"


async def test_queued_async_calls_keep_a_function_from_idling(
    make_gateway: GatewayFactory, counting: CountingProvider
) -> None:
    """Work waiting in the function's async queue (the autoscaler's busy check) counts as
    activity: no pause, no zero while it is there; once it is gone the function idles."""
    gw = await make_gateway(provider=counting)
    fn = await deploy_ready(gw, "queued", {SCALE_ZERO: "true", SCALE_ZERO_DURATION: "5s"})
    queued = {("openfaas-fn", "queued")}
    ticks = Ticks(gw)
    ticks.autoscaler.busy = lambda namespace, name: (namespace, name) in queued
    assert ticks.at(40) == []
    assert fn.desired_replicas == 1 and counting.pauses == 0
    queued.clear()
    assert ticks.at(44) == []  # idle counts from the last tick with work queued (40)
    ((_, decision),) = ticks.at(46)
    assert (decision.replicas, decision.reason) == (0, "zero")


async def test_function_at_zero_keeps_a_standby_container_for_its_next_cold_start(
    make_gateway: GatewayFactory, counting: CountingProvider
) -> None:
    """At zero, one created (never started) container waits; the next cold start starts it
    instead of creating one, and a new one is made when the function is at zero again. An
    update replaces a standby of the old generation."""
    gw = await make_gateway(provider=counting)
    fn = await deploy_ready(gw, "standby", {SCALE_ZERO: "true", SCALE_ZERO_DURATION: "5s"})
    ticks = Ticks(gw)
    ticks.at(6)

    def standby() -> list[str]:
        return [c.container_id for c in counting.engine.containers.values() if c.state == "created"]

    await until(lambda: len(fn.pool) == 0 and len(standby()) == 1, "one standby at zero")
    (waiting,) = standby()
    assert fn.standby == (waiting, fn.generation)

    assert (await invoke(gw, "/function/standby"))[0] == 200
    assert counting.created[-1] == waiting  # the standby was started, not a new container
    assert counting.engine.containers[waiting].state == "running"
    assert standby() == [] and fn.standby is None

    ticks.at(20)  # sees the activator's scale-up (an outside change: activity from here)
    ticks.at(30)  # idle again: back to zero, and a fresh standby
    await until(lambda: len(fn.pool) == 0 and len(standby()) == 1, "a new standby")
    (old,) = standby()
    assert old != waiting
    resp = await gw.client.put(
        "/system/functions",
        json={"service": "standby", "image": "img:2", "labels": fn.spec.labels},
        headers=AUTH,
    )
    assert resp.status == 202, await resp.text()
    await until(
        lambda: old not in counting.engine.containers and len(standby()) == 1,
        "the old generation's standby replaced",
    )
    assert counting.engine.containers[standby()[0]].generation == fn.generation
