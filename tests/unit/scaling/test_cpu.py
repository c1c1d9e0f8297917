"""Milli-CPU per replica from two cumulative CPU-time readings."""

from __future__ import annotations

from datetime import UTC, datetime
from types import SimpleNamespace

import pytest

from runtime.errors import BackendUnavailable
from runtime.models import FunctionSpec, Replica
from runtime.provider.base import ReplicaRequest
from runtime.provider.fake import FakeProvider
from runtime.router import ReplicaHandle, ReplicaState
from runtime.scaling import cpu
from runtime.scaling.cpu import CpuSampler

S = 1_000_000_000  # ns in a second


class StubProvider:
    """Only what CpuSampler calls: each container's CPU time so far (or None, or an error)."""

    def __init__(self) -> None:
        self.cpu_ns: dict[str, int | Exception | None] = {}
        self.asked: list[str] = []

    async def replica_cpu_ns(self, container_id: str) -> int | None:
        self.asked.append(container_id)
        reading = self.cpu_ns[container_id]
        if isinstance(reading, Exception):
            raise reading
        return reading


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def monotonic(self) -> float:
        return self.now


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> Clock:
    clock = Clock()
    # Only the sampler's view of time: the event loop keeps the real clock.
    monkeypatch.setattr(cpu, "time", SimpleNamespace(monotonic=clock.monotonic))
    return clock


def handle(cid: str, state: ReplicaState = ReplicaState.READY) -> ReplicaHandle:
    replica = Replica(
        container_id=cid,
        container_name=f"hello-{cid}",
        function="hello",
        namespace="openfaas-fn",
        generation=1,
        host_port=None,
        state="running",
        created_at=datetime.now(UTC),
    )
    return ReplicaHandle(replica, state=state)


@pytest.mark.parametrize(
    ("first_ns", "second_ns", "elapsed_s", "millicpu"),
    [
        (0, S, 1.0, 1000.0),  # one core busy
        (0, S // 2, 1.0, 500.0),
        (S, 4 * S, 3.0, 1000.0),
        (5 * S, 11 * S, 3.0, 2000.0),  # two cores
        (0, 2 * S, 0.5, 4000.0),
        (7 * S, 7 * S, 3.0, 0.0),  # idle
        (3 * S, S, 3.0, 0.0),  # counter went back (container restarted): not negative
        (0, 30_000_000, 3.0, 10.0),
    ],
)
async def test_millicpu_from_two_readings(
    clock: Clock, first_ns: int, second_ns: int, elapsed_s: float, millicpu: float
) -> None:
    provider = StubProvider()
    sampler = CpuSampler(provider)  # type: ignore[arg-type]
    replica = handle("a")
    provider.cpu_ns["a"] = first_ns
    await sampler.sample([replica])
    assert sampler.millicpu == {}  # one reading is no rate yet
    clock.now += elapsed_s
    provider.cpu_ns["a"] = second_ns
    await sampler.sample([replica])
    assert sampler.millicpu["a"] == pytest.approx(millicpu)
    assert sampler.total([replica]) == pytest.approx(millicpu)


async def test_each_interval_uses_the_previous_reading(clock: Clock) -> None:
    provider = StubProvider()
    sampler = CpuSampler(provider)  # type: ignore[arg-type]
    replica = handle("a")
    readings = [(0.0, 0), (3.0, 3 * S), (6.0, 4 * S), (9.0, 4 * S)]
    seen = []
    for at, ns in readings:
        clock.now = 100.0 + at
        provider.cpu_ns["a"] = ns
        await sampler.sample([replica])
        seen.append(sampler.millicpu.get("a"))
    assert seen == [None, pytest.approx(1000.0), pytest.approx(1000.0 / 3), 0.0]


async def test_only_ready_replicas_are_read_and_others_start_afresh(clock: Clock) -> None:
    provider = StubProvider()
    sampler = CpuSampler(provider)  # type: ignore[arg-type]
    a, b = handle("a"), handle("b")
    provider.cpu_ns.update(a=0, b=0)
    await sampler.sample([a, b])
    clock.now += 1.0
    provider.cpu_ns.update(a=S, b=S // 4)
    await sampler.sample([a, b])
    assert sampler.millicpu == {"a": pytest.approx(1000.0), "b": pytest.approx(250.0)}
    assert sampler.total([a, b]) == pytest.approx(1250.0)

    b.state = ReplicaState.PAUSED
    provider.asked.clear()
    clock.now += 1.0
    provider.cpu_ns.update(a=2 * S, b=9 * S)
    await sampler.sample([a, b])
    assert provider.asked == ["a"]
    assert sampler.millicpu == {"a": pytest.approx(1000.0)}  # b's reading is dropped
    assert sampler.total([a, b]) == pytest.approx(1000.0)

    b.state = ReplicaState.READY  # resumed: needs two fresh readings, no rate across the pause
    clock.now += 1.0
    provider.cpu_ns.update(a=3 * S, b=10 * S)
    await sampler.sample([a, b])
    assert "b" not in sampler.millicpu
    clock.now += 1.0
    provider.cpu_ns.update(a=3 * S, b=10 * S + S // 2)
    await sampler.sample([a, b])
    assert sampler.millicpu == {"a": 0.0, "b": pytest.approx(500.0)}


@pytest.mark.parametrize(
    "reading",
    [None, BackendUnavailable("docker is down")],
    ids=["gone", "backend-error"],
)
async def test_no_reading_drops_the_replica(clock: Clock, reading: Exception | None) -> None:
    provider = StubProvider()
    sampler = CpuSampler(provider)  # type: ignore[arg-type]
    a, b = handle("a"), handle("b")
    provider.cpu_ns.update(a=0, b=0)
    await sampler.sample([a, b])
    clock.now += 1.0
    provider.cpu_ns.update(a=S, b=S)
    await sampler.sample([a, b])
    clock.now += 1.0
    provider.cpu_ns.update(a=2 * S, b=reading)
    await sampler.sample([a, b])  # does not raise
    assert sampler.millicpu == {"a": pytest.approx(1000.0)}
    assert sampler.total([a, b]) == pytest.approx(1000.0)


async def test_an_unexpected_error_is_raised(clock: Clock) -> None:
    provider = StubProvider()
    sampler = CpuSampler(provider)  # type: ignore[arg-type]
    provider.cpu_ns["a"] = RuntimeError("bug")
    with pytest.raises(RuntimeError, match="bug"):
        await sampler.sample([handle("a")])


@pytest.mark.parametrize(
    ("states", "total"),
    [
        ({"a": ReplicaState.READY, "b": ReplicaState.READY, "x": ReplicaState.READY}, 350.0),
        ({"a": ReplicaState.READY, "b": ReplicaState.PAUSED}, 100.0),
        ({"a": ReplicaState.DRAINING, "b": ReplicaState.STARTING}, 0.0),
        ({"c": ReplicaState.READY, "b": ReplicaState.GONE}, 4000.0),
        ({}, 0.0),
    ],
)
def test_total_counts_ready_replicas_with_a_reading(
    states: dict[str, ReplicaState], total: float
) -> None:
    sampler = CpuSampler(StubProvider())  # type: ignore[arg-type]
    sampler.millicpu.update(a=100.0, b=250.0, c=4000.0)
    assert sampler.total([handle(cid, state) for cid, state in states.items()]) == total


async def test_a_partial_round_keeps_what_is_known_of_the_others(clock: Clock) -> None:
    provider = StubProvider()
    sampler = CpuSampler(provider)  # type: ignore[arg-type]
    a, b = handle("a"), handle("b")
    provider.cpu_ns.update(a=0, b=0)
    await sampler.sample([a, b])
    clock.now += 3.0
    provider.cpu_ns.update(a=3 * S, b=6 * S)
    await sampler.sample([a, b])
    clock.now += 3.0
    provider.cpu_ns.update(a=6 * S)
    await sampler.sample([a], forget_others=False)  # e.g. only the functions scaling on CPU
    assert sampler.millicpu == {"a": pytest.approx(1000.0), "b": pytest.approx(2000.0)}
    clock.now += 3.0
    provider.cpu_ns.update(b=12 * S)
    await sampler.sample([b], forget_others=False)  # b's rate is over the 6 s since its last read
    assert sampler.millicpu["b"] == pytest.approx(1000.0)
    await sampler.sample([b])  # a full round: a is gone
    assert set(sampler.millicpu) == {"b"}


async def test_with_the_fake_provider(clock: Clock) -> None:
    provider = FakeProvider("cpu-unit")
    try:
        replica = await provider.create_replica(
            ReplicaRequest(FunctionSpec(name="hello", image="img:1"), generation=1)
        )
        cid = replica.container_id
        ready = ReplicaHandle(replica, state=ReplicaState.READY)
        sampler = CpuSampler(provider)
        container = provider.container(cid)
        container.cpu_ns = 2 * S
        await sampler.sample([ready])
        clock.now += 3.0
        container.cpu_ns = 2 * S + 3 * S // 4
        await sampler.sample([ready])
        assert sampler.millicpu == {cid: pytest.approx(250.0)}
        provider.engine.disconnect()  # Docker away: a BackendUnavailable, skipped
        clock.now += 3.0
        await sampler.sample([ready])
        assert sampler.millicpu == {}
        provider.engine.reconnect()
        await provider.remove_replica(cid, stop_timeout_s=0)  # gone: None, skipped
        await sampler.sample([ready])
        assert sampler.millicpu == {}
    finally:
        await provider.close()
