"""The activator: requests to a function with no ready replica wait in a bounded queue while
exactly one replica starts; a start that fails answers them 503 with the reason at once."""

from __future__ import annotations

import asyncio
import dataclasses
import socket
import time

from multidict import CIMultiDictProxy

from runtime.models import Replica
from runtime.provider.docker import ReplicaStartFailed
from runtime.provider.fake import FakeProvider
from runtime.router import ReplicaState
from runtime.scaling.config import (
    SCALE_PAUSE_AFTER,
    SCALE_QUEUE_DEPTH,
    SCALE_ZERO,
    SCALE_ZERO_DURATION,
)
from tests.component.scaling.conftest import (
    AUTH,
    NAMESPACE,
    CountingProvider,
    Gateway,
    GatewayFactory,
    Ticks,
    deploy_ready,
    until,
)

# Idle replicas are removed, not paused: a function at zero has no container at all.
AT_ZERO = {SCALE_ZERO: "true", SCALE_ZERO_DURATION: "1m", SCALE_PAUSE_AFTER: "0"}

Answer = tuple[int, str, CIMultiDictProxy[str]]


async def get(gw: Gateway, path: str) -> Answer:
    async with gw.client.get(path) as resp:
        return resp.status, await resp.text(), resp.headers


def running(provider: FakeProvider) -> list[str]:
    """Containers started and not removed (a standby, created only, is not one)."""
    return [c.container_id for c in provider.engine.containers.values() if c.state != "created"]


async def scale_to_zero_by_api(gw: Gateway, name: str) -> None:
    resp = await gw.client.post(
        f"/system/scale-function/{name}", json={"serviceName": name, "replicas": 0}, headers=AUTH
    )
    assert resp.status == 202, await resp.text()
    fn = gw.functions.get(name, NAMESPACE)
    await until(lambda: len(fn.pool) == 0 and not running(gw.provider), f"{name} at zero")


async def test_burst_at_zero_starts_exactly_one_replica_and_serves_all(
    make_gateway: GatewayFactory, counting: CountingProvider
) -> None:
    gw = await make_gateway(provider=counting)
    fn = await deploy_ready(gw, "burst", AT_ZERO)
    # The autoscaler idles it: zero-duration (1m) passed with nothing started or in flight.
    changes = Ticks(gw).at(61)
    assert [(f.spec.name, d.replicas, d.reason) for f, d in changes] == [("burst", 0, "zero")]
    await until(lambda: len(fn.pool) == 0 and not counting.running(), "burst at zero")

    counting.creates = 0
    counting.create_delay_s = 0.8  # the burst really waits: well inside ready_wait_s (2s)
    tasks = [asyncio.create_task(get(gw, f"/function/burst?i={i}")) for i in range(100)]
    await until(lambda: fn.waiting == 100, "all 100 requests waiting for the replica")
    answers = await asyncio.gather(*tasks)

    assert [status for status, _, _ in answers] == [200] * 100
    assert counting.creates == 1
    replicas = {headers["X-Replica"] for _, _, headers in answers}
    assert len(replicas) == 1
    assert fn.waiting == 0
    assert fn.desired_replicas == 1 and len(fn.pool) == 1


async def test_full_queue_answers_503_with_retry_after_the_rest_are_served(
    make_gateway: GatewayFactory, counting: CountingProvider
) -> None:
    gw = await make_gateway(provider=counting)
    fn = await deploy_ready(gw, "q", {**AT_ZERO, SCALE_QUEUE_DEPTH: "3"})
    await scale_to_zero_by_api(gw, "q")
    counting.create_delay_s = 1.0

    waiting = [asyncio.create_task(get(gw, f"/function/q?i={i}")) for i in range(3)]
    await until(lambda: fn.waiting == 3, "three requests waiting")
    began = time.monotonic()
    turned_away = await asyncio.gather(*(get(gw, "/function/q?late=1") for _ in range(2)))
    assert time.monotonic() - began < 0.5  # at once, not after the wait
    for status, text, headers in turned_away:
        assert status == 503, text
        assert headers["Retry-After"] == "1"
        assert "q.openfaas-fn" in text and "queue is full" in text, text
    assert fn.waiting == 3  # the ones turned away never joined the queue

    served = await asyncio.gather(*waiting)
    assert [status for status, _, _ in served] == [200, 200, 200]
    assert counting.creates == 2  # the deploy's replica, then one scale from zero


async def test_start_failure_answers_waiters_503_with_the_reason_fast(
    make_gateway: GatewayFactory, counting: CountingProvider
) -> None:
    gw = await make_gateway(provider=counting)
    fn = await deploy_ready(gw, "sf", AT_ZERO)
    await scale_to_zero_by_api(gw, "sf")
    counting.create_delay_s = 0.2
    counting.create_error = ReplicaStartFailed("exec: no such file: /usr/bin/fwatchdog")

    began = time.monotonic()
    answers = await asyncio.gather(*(get(gw, "/function/sf") for _ in range(5)))
    elapsed = time.monotonic() - began
    for status, text, headers in answers:
        assert status == 503, text
        assert "cannot start a replica of sf.openfaas-fn" in text, text
        assert "no such file: /usr/bin/fwatchdog" in text, text
        assert "Retry-After" in headers
    # A hang would end at ready_wait_s (2s) with "no ready replica after 2s".
    assert elapsed < 1.2, elapsed
    assert fn.waiting == 0

    # Fixed: the next request starts a replica and is served.
    counting.create_error = None
    status, text, _ = await get(gw, "/function/sf")
    assert status == 200, text


async def test_replica_dying_while_starting_answers_503_with_the_reason(
    make_gateway: GatewayFactory, counting: CountingProvider
) -> None:
    gw = await make_gateway(provider=counting)
    fn = await deploy_ready(gw, "dies", AT_ZERO)
    await scale_to_zero_by_api(gw, "dies")

    # The next replica's watchdog never answers /_/ready (nothing listens where it is probed):
    # it stays STARTING until it dies.
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        dead_port = sock.getsockname()[1]

    async def unready_once(replica: Replica) -> Replica:
        counting.after_create = None
        return dataclasses.replace(replica, host_port=dead_port)

    counting.after_create = unready_once

    tasks = [asyncio.create_task(get(gw, "/function/dies")) for _ in range(3)]
    await until(
        lambda: fn.waiting == 3 and any(h.state is ReplicaState.STARTING for h in fn.pool),
        "requests waiting on a starting replica",
    )
    (starting,) = fn.pool.in_state(ReplicaState.STARTING)
    killed_at = time.monotonic()
    await counting.kill(starting.container_id)
    answers = await asyncio.gather(*tasks)
    elapsed = time.monotonic() - killed_at
    for status, text, _ in answers:
        assert status == 503, text
        assert "exited while starting" in text and starting.replica.container_name in text, text
    assert elapsed < 1.0, elapsed  # told by the die event, not by the 2s wait running out

    # The supervisor replaces it; the function serves again.
    await gw.wait_available("dies")
    status, text, _ = await get(gw, "/function/dies")
    assert status == 200, text


async def test_replica_dead_on_arrival_answers_503_with_the_reason(
    make_gateway: GatewayFactory, counting: CountingProvider
) -> None:
    """The process crashes at once (e.g. a missing binary): Docker's die event comes while
    create_replica is still inspecting the container, and the inspection says exited."""
    gw = await make_gateway(provider=counting)
    fn = await deploy_ready(gw, "doa", AT_ZERO)
    await scale_to_zero_by_api(gw, "doa")

    async def crash_once(replica: Replica) -> Replica:
        counting.after_create = None
        await counting.kill(replica.container_id)
        await asyncio.sleep(0.05)  # the inspect round trip: the die event is handled meanwhile
        return counting.container(replica.container_id).replica()  # as inspected: exited

    counting.after_create = crash_once
    began = time.monotonic()
    answers = await asyncio.gather(*(get(gw, "/function/doa") for _ in range(3)))
    elapsed = time.monotonic() - began
    for status, text, _ in answers:
        assert status == 503, text
        assert "exited while starting" in text, text
    assert elapsed < 1.0, elapsed
    assert fn.waiting == 0
