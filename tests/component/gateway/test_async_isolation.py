"""One slow function's async backlog never holds up another function's calls."""

from __future__ import annotations

import asyncio
import time

from tests.component.gateway.conftest import AUTH, GatewayFactory

DEADLINE_S = 10.0


async def _state(gw: object, call_id: str) -> str:
    resp = await gw.client.get(f"/system/async/calls/{call_id}", headers=AUTH)  # type: ignore[attr-defined]
    assert resp.status == 200
    return str((await resp.json())["state"])


async def test_a_slow_backlog_does_not_delay_another_function(make_gateway: GatewayFactory) -> None:
    gw = await make_gateway(with_async=True)
    assert gw.queue is not None and gw.queue.problem is None, gw.queue and gw.queue.problem
    one = {"com.localfaas.async.concurrency": "1"}
    assert (await gw.deploy("slow", annotations=one)).status == 202
    assert (await gw.deploy("quick", annotations=one)).status == 202
    await gw.wait_available("slow")
    await gw.wait_available("quick")

    slow_ids = []
    for _ in range(4):  # four 1.5 s calls queued behind one another at concurrency 1
        resp = await gw.client.post("/async-function/slow/_fake/sleep?ms=1500")
        assert resp.status == 202
        slow_ids.append(resp.headers["X-Call-Id"])
    resp = await gw.client.post("/async-function/quick", data=b"hi")
    assert resp.status == 202
    quick_id = resp.headers["X-Call-Id"]

    started = time.monotonic()
    while await _state(gw, quick_id) != "succeeded":
        assert time.monotonic() - started < DEADLINE_S, "quick call never finished"
        await asyncio.sleep(0.02)
    # The quick call finished while the slow backlog was still there.
    states = [await _state(gw, call_id) for call_id in slow_ids]
    assert states.count("queued") >= 2, states
