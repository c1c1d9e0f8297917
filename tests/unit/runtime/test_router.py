from __future__ import annotations

import asyncio
from datetime import UTC, datetime

from runtime.models import Replica
from runtime.router import ReplicaPool, ReplicaState


def replica(cid: str, port: int = 1) -> Replica:
    return Replica(cid, f"lf-{cid}", "f", "ns", 1, port, "running", datetime.now(UTC))


async def test_pick_prefers_fewest_in_flight_and_skips_unready() -> None:
    pool = ReplicaPool()
    a, b, c = pool.add(replica("a")), pool.add(replica("b")), pool.add(replica("c"))
    assert pool.pick() is None  # all starting
    for handle in (a, b, c):
        await pool.set_state(handle, ReplicaState.READY)
    await pool.set_state(c, ReplicaState.PAUSED)
    with a.lease():
        assert pool.pick() is b
        with b.lease(), b.lease():
            assert pool.pick() is a
    assert pool.available_count() == 2


async def test_ties_go_round_robin() -> None:
    pool = ReplicaPool()
    handles = [pool.add(replica(c)) for c in "abc"]
    for handle in handles:
        await pool.set_state(handle, ReplicaState.READY)
    picks = [pool.pick() for _ in range(6)]
    assert {id(p) for p in picks[:3]} == {id(h) for h in handles}
    assert picks[:3] == picks[3:]


async def test_wait_ready_wakes_when_a_replica_turns_ready() -> None:
    pool = ReplicaPool()
    handle = pool.add(replica("a"))

    async def later() -> None:
        await asyncio.sleep(0.01)
        await pool.set_state(handle, ReplicaState.READY)

    task = asyncio.create_task(later())
    assert await pool.wait_ready(5.0) is handle
    await task


async def test_wait_ready_times_out() -> None:
    pool = ReplicaPool()
    pool.add(replica("a"))
    assert await pool.wait_ready(0.02) is None


async def test_wait_idle_and_gone() -> None:
    pool = ReplicaPool()
    handle = pool.add(replica("a"))
    with handle.lease():
        assert await handle.wait_idle(0.01) is False
    assert await handle.wait_idle(0.01) is True
    await pool.set_state(handle, ReplicaState.GONE)
    assert pool.get("a") is None and len(pool) == 0
