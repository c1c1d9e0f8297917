"""The cron connector with real time and a real SQLite store, invoking through a recording
Dispatch: firing on schedule, time zones, overlap, restarts (a new connector on the same store),
catch-up after downtime, duplicates, async. Schedules use the test-only seconds field
(``seconds_field=True``: a leading 6th field) so they fire every second."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
from multidict import CIMultiDict, CIMultiDictProxy
from prometheus_client import CollectorRegistry

from connectors.cron import LAST_SCOPE, CronConnector, last_key
from connectors.cron_schedule import fire_id
from connectors.metrics import ConnectorMetrics
from connectors.registry import ConnectorContext
from runtime.config import Settings
from runtime.errors import NoReadyReplica
from runtime.invoker import BufferedResult, Invocation
from runtime.models import FunctionSpec
from runtime.queue.enqueue import Enqueued
from runtime.queue.errors import QueueUnavailable
from runtime.queue.message import Envelope
from runtime.secrets import SecretFiles
from runtime.store import Store

EVERY_SECOND = "* * * * * *"


@dataclass
class Call:
    call_id: str
    headers: dict[str, str]
    started: float  # wall clock
    finished: float | None = None
    queued: bool = False

    @property
    def fire_time(self) -> datetime:
        return datetime.fromisoformat(self.headers["X-Fire-Time"])


@dataclass
class Recorder:
    """A Dispatch that records calls; ``delay_s`` makes every call that slow."""

    delay_s: float = 0.0
    status: int = 200
    error: Exception | None = None
    calls: list[Call] = field(default_factory=list)
    invoke_timeout_s: float = 5.0

    async def invoke(self, inv: Invocation) -> BufferedResult:
        assert inv.method == "POST" and inv.path == "/" and inv.body == b""
        assert isinstance(inv.headers, list)
        call = Call(inv.call_id, dict(inv.headers), time.time())
        self.calls.append(call)
        if self.delay_s:
            await asyncio.sleep(self.delay_s)
        call.finished = time.time()
        if self.error is not None:
            raise self.error
        return BufferedResult(self.status, CIMultiDictProxy(CIMultiDict()), b"ok")

    async def enqueue(self, env: Envelope) -> Enqueued:
        if self.error is not None:
            raise self.error
        assert env.method == "POST" and env.path == "/" and env.body == b""
        call = Call(env.call_id, dict(env.headers), time.time(), time.time(), queued=True)
        self.calls.append(call)
        return Enqueued(env.call_id, len(self.calls), False)

    def fire_times(self) -> list[datetime]:
        return [c.fire_time for c in self.calls]


@dataclass
class Rig:
    store: Store
    settings: Settings
    made: list[CronConnector] = field(default_factory=list)
    registry: CollectorRegistry = field(default_factory=CollectorRegistry)

    def __post_init__(self) -> None:
        self.metrics = ConnectorMetrics(self.registry)

    def connector(
        self, recorder: Recorder, clock: Callable[[], datetime] | None = None
    ) -> CronConnector:
        ctx = ConnectorContext(
            settings=self.settings,
            dispatch=recorder,
            store=self.store,
            secrets=SecretFiles(self.settings.state_dir),
            metrics=self.metrics,
            nats_url=lambda: None,
        )
        kwargs = {} if clock is None else {"clock": clock}
        conn = CronConnector(ctx, seconds_field=True, drain_s=1.0, **kwargs)
        self.made.append(conn)
        return conn

    def metric(self, name: str, **labels: str) -> float:
        value = self.registry.get_sample_value(
            name, {"connector": "cron", "function_name": "tick.openfaas-fn", **labels}
        )
        return value or 0.0


@pytest.fixture
async def rig(tmp_path: Path) -> AsyncIterator[Rig]:
    settings = Settings(state_dir=tmp_path / "state", cache_dir=tmp_path / "cache")
    store = Store(tmp_path / "state.db")
    made = Rig(store, settings)
    yield made
    for conn in made.made:
        await conn.close()
    store.close()


def spec(schedule: str = EVERY_SECOND, **annotations: str) -> FunctionSpec:
    extra = {
        f"com.localfaas.cron.{k.rstrip('_').replace('_', '-')}": v for k, v in annotations.items()
    }
    return FunctionSpec(
        name="tick",
        image="fake/tick:1",
        annotations={"topic": "cron-function", "schedule": schedule, **extra},
    )


async def until(check: Callable[[], bool], what: str, timeout_s: float = 6.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not check():
        assert time.monotonic() < deadline, f"{what} not reached in {timeout_s}s"
        await asyncio.sleep(0.01)


async def wall_fraction_between(low: float, high: float) -> None:
    """Wait until the wall clock is ``low`` to ``high`` into a second (to keep a firing boundary
    away from a measured instant)."""
    await until(lambda: low <= time.time() % 1 < high, "a quiet part of the second", 2.0)


async def test_fires_every_second_with_the_cron_headers(rig: Rig) -> None:
    rec = Recorder()
    conn = rig.connector(rec)
    await conn.bind(spec())
    await until(lambda: len(rec.calls) >= 3, "three firings")
    first, second, third = rec.calls[:3]
    assert first.headers == {
        "X-Topic": "cron-function",
        "X-Connector": "cron",
        "X-Schedule": EVERY_SECOND,
        "X-Fire-Time": first.headers["X-Fire-Time"],
    }
    # Consecutive whole seconds, UTC by default (RFC 3339 with its offset), on time.
    assert first.headers["X-Fire-Time"].endswith("+00:00")
    assert second.fire_time - first.fire_time == timedelta(seconds=1)
    assert third.fire_time - second.fire_time == timedelta(seconds=1)
    for call in (first, second, third):
        assert call.fire_time.microsecond == 0
        assert 0 <= call.started - call.fire_time.timestamp() < 0.5, "fired late or early"
        assert call.call_id == fire_id("openfaas-fn", "tick", EVERY_SECOND, call.fire_time)
    await until(lambda: rig.metric("localfaas_connector_invocations_total") >= 3, "metrics")
    assert rig.metric("localfaas_connector_events_total") >= 3
    assert rig.metric("localfaas_connector_failures_total") == 0

    (binding,) = conn.bindings()
    assert (binding.connector, binding.function, binding.namespace) == (
        "cron",
        "tick",
        "openfaas-fn",
    )
    assert binding.trigger == f"{EVERY_SECOND} (UTC)"
    assert binding.details["timezone"] == "UTC" and binding.details["catchup"] == "none"
    assert binding.details["lastFire"] is not None and binding.details["nextFire"] is not None


async def test_time_zone_is_respected(rig: Rig) -> None:
    rec = Recorder()
    conn = rig.connector(rec)
    # Hours 0-23 in Kolkata (+05:30, no DST): fires every second, shown in that zone.
    # Every second in Kolkata (+05:30, no DST): fire times are shown in that zone.
    await conn.bind(spec("* * * * * *", timezone="Asia/Kolkata"))
    await until(lambda: len(rec.calls) >= 1, "a firing")
    fired = rec.calls[0].headers["X-Fire-Time"]
    assert fired.endswith("+05:30")
    wall = rec.calls[0].fire_time
    assert wall.utcoffset() == timedelta(hours=5, minutes=30)

    # A schedule pinned to the current hour *in New York* fires; the same hour read as UTC
    # would not (New York is never at UTC's offset).
    ny_hour = datetime.now(ZoneInfo("America/New_York")).hour
    rec_ny = Recorder()
    conn_ny = rig.connector(rec_ny)
    pinned = FunctionSpec(
        name="nyc",
        image="fake/tick:1",
        annotations={
            "topic": "cron-function",
            "schedule": f"* * {ny_hour} * * *",
            "com.localfaas.cron.timezone": "America/New_York",
        },
    )
    await wall_fraction_between(0.1, 0.5)
    if datetime.now(ZoneInfo("America/New_York")).hour != ny_hour:
        pytest.skip("the New York hour turned during the test")
    await conn_ny.bind(pinned)
    await until(lambda: len(rec_ny.calls) >= 1, "a firing in New York's hour", 3.0)
    fired_ny = rec_ny.calls[0].fire_time
    assert fired_ny.hour == ny_hour and fired_ny.utcoffset() in (
        timedelta(hours=-5),
        timedelta(hours=-4),
    )
    (binding,) = conn_ny.bindings()
    assert binding.trigger == f"* * {ny_hour} * * * (America/New_York)"


async def test_overlapping_firing_is_skipped_and_counted(
    rig: Rig, caplog: pytest.LogCaptureFixture
) -> None:
    rec = Recorder(delay_s=2.3)  # slower than the 1 s schedule
    conn = rig.connector(rec)
    await conn.bind(spec())
    await until(lambda: len(rec.calls) >= 2, "two runs", 8.0)
    await until(lambda: rec.calls[1].finished is not None, "the second run to end", 4.0)
    first, second = rec.calls[:2]
    assert first.finished is not None and first.finished <= second.started, "ran concurrently"
    # Runs take 2.3 s: between two runs, two firings were skipped.
    assert second.fire_time - first.fire_time == timedelta(seconds=3)
    assert rig.metric("localfaas_connector_skipped_total", reason="overlap") >= 2
    assert "reason=overlap" in caplog.text


async def test_restart_does_not_rerun_a_firing(rig: Rig) -> None:
    rec_a = Recorder()
    conn_a = rig.connector(rec_a)
    await conn_a.bind(spec(catchup="latest"))
    await until(lambda: len(rec_a.calls) >= 2, "two firings")
    await conn_a.close()
    last_a = rec_a.fire_times()[-1]
    stored = rig.store.kv_get(LAST_SCOPE, last_key("openfaas-fn", "tick", EVERY_SECOND))
    assert stored is not None and datetime.fromisoformat(stored) == last_a

    # The worst case for a restart: the persisted mark is older than what ran (a crash right
    # after the claim), and the new daemon starts within the same second as the last firing.
    # The claim in the store still stops a second run.
    rig.store.kv_put(
        LAST_SCOPE,
        last_key("openfaas-fn", "tick", EVERY_SECOND),
        (last_a - timedelta(seconds=5)).isoformat(),
    )
    shift = (last_a + timedelta(milliseconds=300)).timestamp() - time.time()

    def clock() -> datetime:
        return datetime.fromtimestamp(time.time() + shift, UTC)

    rec_b = Recorder()
    conn_b = rig.connector(rec_b, clock=clock)
    await conn_b.bind(spec(catchup="latest"))
    await until(
        lambda: rig.metric("localfaas_connector_skipped_total", reason="duplicate") == 1,
        "the duplicate to be refused",
    )
    await until(lambda: len(rec_b.calls) >= 2, "the next firings")
    assert rec_b.fire_times()[0] == last_a + timedelta(seconds=1)
    ids = [c.call_id for c in rec_a.calls + rec_b.calls]
    assert len(ids) == len(set(ids))
    assert last_a not in rec_b.fire_times()


async def test_two_connectors_on_one_store_run_each_firing_once(rig: Rig) -> None:
    """A duplicate (two daemons on one state dir, or a rebind race): one claim wins."""
    rec_a, rec_b = Recorder(), Recorder()
    conn_a, conn_b = rig.connector(rec_a), rig.connector(rec_b)
    await conn_a.bind(spec())
    await conn_b.bind(spec())
    await until(lambda: len(rec_a.calls) + len(rec_b.calls) >= 4, "four firings")
    await conn_a.close()
    await conn_b.close()
    times = rec_a.fire_times() + rec_b.fire_times()
    assert len(times) == len(set(times)), "a firing ran twice"
    assert rig.metric("localfaas_connector_skipped_total", reason="duplicate") >= 3
    span = (max(times) - min(times)).total_seconds()
    assert len(times) == span + 1, "a firing was lost"


@pytest.mark.parametrize("policy", ["latest", "none"])
async def test_catchup_after_downtime(rig: Rig, policy: str) -> None:
    rec_a = Recorder()
    conn_a = rig.connector(rec_a)
    await conn_a.bind(spec(catchup=policy))
    await until(lambda: len(rec_a.calls) >= 1, "a firing")
    await conn_a.close()
    last_a = rec_a.fire_times()[-1]
    # Down for more than three firings.
    await until(lambda: time.time() > last_a.timestamp() + 3.2, "downtime", 5.0)
    await wall_fraction_between(0.2, 0.6)
    restarted = datetime.now(UTC)
    rec_b = Recorder()
    conn_b = rig.connector(rec_b)
    await conn_b.bind(spec(catchup=policy))
    await until(lambda: len(rec_b.calls) >= 2, "firings after the restart")
    missed = [t for t in rec_b.fire_times() if last_a < t <= restarted]
    later = [t for t in rec_b.fire_times() if t > restarted]
    if policy == "latest":
        # Exactly one, and the latest one missed.
        assert missed == [restarted.replace(microsecond=0)]
        assert rec_b.calls[0].fire_time == missed[0]
    else:
        assert missed == []
    assert later and later[0] == restarted.replace(microsecond=0) + timedelta(seconds=1)


async def test_catchup_only_within_the_grace_window(rig: Rig) -> None:
    schedule = "0 * * * * *"  # at second 0 of every minute
    key = last_key("openfaas-fn", "tick", schedule)
    await until(lambda: 2 <= datetime.now(UTC).second < 50, "away from a minute mark", 10)
    # Down for 3 minutes; grace 1 s: the latest missed minute mark is older than that.
    rig.store.kv_put(LAST_SCOPE, key, (datetime.now(UTC) - timedelta(minutes=3)).isoformat())
    rec = Recorder()
    conn = rig.connector(rec)
    await conn.bind(spec(schedule, catchup="latest", catchup_grace="1s"))
    assert conn.bindings()[0].details["catchupGraceSeconds"] == 1.0
    # nextFire is set once the catch-up decision is made (an event would be counted first).
    await until(lambda: conn.bindings()[0].details["nextFire"] is not None, "the decision")
    assert rig.metric("localfaas_connector_events_total") == 0
    await conn.close()
    assert rec.calls == []

    # The same downtime with the default grace (1 h): the latest minute mark runs, once.
    rig.store.kv_put(LAST_SCOPE, key, (datetime.now(UTC) - timedelta(minutes=3)).isoformat())
    rec_wide = Recorder()
    conn_wide = rig.connector(rec_wide)
    await conn_wide.bind(spec(schedule, catchup="latest"))
    await until(lambda: len(rec_wide.calls) == 1, "the catch-up")
    assert rec_wide.calls[0].fire_time == datetime.now(UTC).replace(second=0, microsecond=0)
    assert rig.metric("localfaas_connector_events_total") == 1


async def test_failures_are_counted_and_the_schedule_goes_on(rig: Rig) -> None:
    rec = Recorder(error=NoReadyReplica("tick.openfaas-fn has no ready replica"))
    conn = rig.connector(rec)
    await conn.bind(spec())
    await until(lambda: len(rec.calls) >= 2, "two attempts")
    await until(lambda: rig.metric("localfaas_connector_failures_total") >= 2, "failures")
    assert rig.metric("localfaas_connector_invocations_total") == 0
    rec.error, rec.status = None, 500
    await until(lambda: rig.metric("localfaas_connector_failures_total") >= 3, "a 500")
    rec.status = 204
    await until(lambda: rig.metric("localfaas_connector_invocations_total") >= 1, "a success")


async def test_async_annotation_queues_with_the_firing_id(rig: Rig) -> None:
    rec = Recorder()
    conn = rig.connector(rec)
    await conn.bind(spec(async_="true"))
    await until(lambda: len(rec.calls) >= 2, "two queued firings")
    call = rec.calls[0]
    assert call.queued
    assert call.call_id == fire_id("openfaas-fn", "tick", EVERY_SECOND, call.fire_time)
    assert call.headers["X-Connector"] == "cron" and call.headers["X-Topic"] == "cron-function"
    assert (conn.bindings()[0].details["async"]) is True
    rec.error = QueueUnavailable("NATS is away")
    failed = rig.metric("localfaas_connector_failures_total")
    await until(lambda: rig.metric("localfaas_connector_failures_total") > failed, "a failure")


async def test_rebind_keeps_unchanged_schedules_and_unbind_stops(rig: Rig) -> None:
    rec = Recorder()
    conn = rig.connector(rec)
    await conn.bind(spec("*/2 * * * * *;* * * * * *"))
    assert sorted(b.details["schedule"] for b in conn.bindings()) == [
        "* * * * * *",
        "*/2 * * * * *",
    ]
    tasks = {
        b.details["schedule"]: conn._jobs[("openfaas-fn", "tick", b.details["schedule"])].task
        for b in conn.bindings()
    }
    # A scale or an update that keeps the annotations: the same loops go on.
    await conn.bind(spec("*/2 * * * * *;* * * * * *"))
    assert conn._jobs[("openfaas-fn", "tick", "* * * * * *")].task is tasks["* * * * * *"]
    # One schedule dropped, one added.
    await conn.bind(spec("* * * * * *;*/3 * * * * *"))
    assert sorted(b.details["schedule"] for b in conn.bindings()) == [
        "* * * * * *",
        "*/3 * * * * *",
    ]
    assert conn._jobs[("openfaas-fn", "tick", "* * * * * *")].task is tasks["* * * * * *"]
    await until(lambda: len(rec.calls) >= 1, "a firing")
    # Annotations gone (topic removed): unbound.
    await conn.bind(FunctionSpec(name="tick", image="fake/tick:1"))
    assert conn.bindings() == []
    await conn.bind(spec())
    assert len(conn.bindings()) == 1
    await conn.unbind("openfaas-fn", "tick")
    assert conn.bindings() == []
    await asyncio.sleep(0)
    count = len(rec.calls)
    await until(lambda: time.time() % 1 > 0.5, "half a second")
    await until(lambda: time.time() % 1 < 0.3, "the next second", 2.0)
    await until(lambda: time.time() % 1 > 0.3, "past it", 2.0)
    assert len(rec.calls) == count, "fired after unbind"
