"""The autoscaler on real load through the gateway: requests in flight (capacity type) scale a
function up at once in panic mode; once the load is gone it comes back to min only after the
down window, at most halving per step."""

from __future__ import annotations

import asyncio
import itertools
import logging
import math

import pytest

from runtime.scaling.config import (
    SCALE_DOWN_WINDOW,
    SCALE_MAX,
    SCALE_MIN,
    SCALE_PAUSE_AFTER,
    SCALE_PROPORTION,
    SCALE_TARGET,
    SCALE_TYPE,
)
from tests.component.scaling.conftest import (
    AUTH,
    Gateway,
    GatewayFactory,
    Ticks,
    converged,
    deploy_ready,
    until,
)

DOWN_WINDOW_S = 10
CAPACITY = {
    SCALE_TYPE: "capacity",
    SCALE_TARGET: "1",  # one request in flight per replica
    SCALE_PROPORTION: "1",
    SCALE_MIN: "1",
    SCALE_MAX: "10",
    SCALE_DOWN_WINDOW: f"{DOWN_WINDOW_S}s",
    SCALE_PAUSE_AFTER: "10m",  # keep the idle tier out of this test
}


async def invoke(gw: Gateway, path: str) -> int:
    async with gw.client.get(path) as resp:
        await resp.read()
        return resp.status


async def test_load_scales_up_in_panic_then_down_after_the_window_halving(
    make_gateway: GatewayFactory, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="localfaas.functions")
    gw = await make_gateway()
    fn = await deploy_ready(gw, "load", CAPACITY)
    stats = gw.metrics.function("load.openfaas-fn")
    ticks = Ticks(gw)

    slow = [asyncio.create_task(invoke(gw, "/function/load/_fake/sleep?ms=1500")) for _ in range(8)]
    await until(lambda: stats.in_flight == 8, "8 requests in flight")
    ((_, decision),) = ticks.at(1)
    assert (decision.replicas, decision.panic) == (8, True)
    assert fn.desired_replicas == 8
    assert "scaled load.openfaas-fn 1→8 type=capacity load=8.0 panic=yes" in caplog.messages
    await converged(fn)
    assert await asyncio.gather(*slow) == [200] * 8
    assert stats.in_flight == 0

    # No load from here on: one tick a second until it is back at min.
    history = [(1, 8)]
    offset = 1
    while fn.desired_replicas > 1:
        offset += 1
        assert offset < 120, f"still at {fn.desired_replicas} replicas: {history}"
        before = fn.desired_replicas
        ticks.at(offset)
        if fn.desired_replicas != before:
            history.append((offset, fn.desired_replicas))
            await converged(fn)

    steps = list(itertools.pairwise(history))
    # Down only a full window after the load was last seen (at 1 s and its carry-over at 2 s).
    first_down = history[1][0]
    assert first_down >= 2 + DOWN_WINDOW_S, history
    for (_, high), (_, low) in steps:
        assert low < high and low >= math.ceil(high / 2), history
    assert len(steps) >= 3, history  # 8 → 4 → 2 → 1 at the fastest
    for (_, high), (_, low) in steps:
        assert any(
            m.startswith(f"scaled load.openfaas-fn {high}→{low} type=capacity")
            and m.endswith("panic=no")
            for m in caplog.messages
        ), caplog.messages
    assert len(fn.current()) == 1


async def test_api_scale_up_is_held_for_a_down_window_without_load(
    make_gateway: GatewayFactory,
) -> None:
    gw = await make_gateway()
    fn = await deploy_ready(gw, "manual", CAPACITY)
    ticks = Ticks(gw)
    resp = await gw.client.post(
        "/system/scale-function/manual",
        json={"serviceName": "manual", "replicas": 4},
        headers=AUTH,
    )
    assert resp.status == 202
    await converged(fn)
    scaled_at = ticks.elapsed()
    # No load at all: still 4 until a down window after the API set it, then down by halves.
    offset = int(scaled_at) + 1
    while offset < scaled_at + DOWN_WINDOW_S:
        assert ticks.at(offset) == [], offset
        offset += 1
    downs = []
    while fn.desired_replicas > 1 and offset < scaled_at + 60:
        for _, decision in ticks.at(offset):
            downs.append(decision.replicas)
            await converged(fn)
        offset += 1
    assert downs == [2, 1]
