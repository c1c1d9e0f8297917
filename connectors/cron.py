"""The cron connector: runs functions on OpenFaaS cron-connector schedules.

Annotations (OpenFaaS): ``topic: cron-function`` and ``schedule: "*/5 * * * *"`` (several
separated by ``;``). Extensions: ``com.localfaas.cron.timezone`` (IANA, default UTC),
``com.localfaas.cron.async`` ("true": queue the call), ``com.localfaas.cron.catchup`` (``none``
or ``latest``) and ``com.localfaas.cron.catchup-grace`` (default 1h). Parsing and every timing
decision live in connectors/cron_schedule.py; this module is the thin loop.

Why not APScheduler's scheduler: its ``CronTrigger`` does the calendar arithmetic here, but
``AsyncIOScheduler`` does not hand a job its scheduled fire time (the firing id and
``X-Fire-Time`` need it), reports a ``max_instances`` skip only as a log line, and would need a
persistent job store (SQLAlchemy) for catch-up. One task per (function, schedule) that sleeps
until the next fire time is shorter than adapting it, and every decision stays a pure function.

Every firing has a deterministic id (namespace, function, schedule, instant) that is claimed in
the store (``kv_add``) before anything runs and then used as the call id, so neither a restart,
a rebind nor a catch-up can run one firing twice. The last fire time handled per schedule is
persisted (``kv_put``) for catch-up after downtime. A firing while the previous one of the
same schedule still runs is skipped, counted (``reason="overlap"``) and logged.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING

from connectors.base import Binding
from connectors.cron_schedule import (
    CRON_TOPIC,
    CronConfig,
    Schedule,
    catchup_fire,
    fire_id,
    fire_time_text,
    on_wake,
    parse_config,
)
from runtime.errors import InvalidSpec, LocalFaasError
from runtime.invoker import Invocation
from runtime.models import FunctionSpec
from runtime.queue.message import Envelope

if TYPE_CHECKING:
    from connectors.registry import ConnectorContext

log = logging.getLogger("localfaas.connectors.cron")

NAME = "cron"
LAST_SCOPE = "cron.last"  # key: namespace/name/schedule → ISO fire time (or first bind time)
CLAIM_SCOPE = "cron.fired"  # key: firing id → ISO fire time, kept a day past the grace window
CLAIM_MARGIN_S = 24 * 3600.0
LATE_S = 30.0  # woke this long after a fire time: the host slept; apply the catch-up policy
MAX_SLEEP_S = 30.0  # re-read the wall clock at least this often (clock steps, suspend)
DRAIN_S = 10.0  # close(): how long running firings may finish before they are cancelled

Key = tuple[str, str, str]  # namespace, function, schedule expression


def last_key(namespace: str, name: str, expr: str) -> str:
    return f"{namespace}/{name}/{expr}"


def utc_now() -> datetime:
    return datetime.now(UTC)


@dataclass
class _Job:
    namespace: str
    name: str
    schedule: Schedule
    config: CronConfig
    task: asyncio.Task[None] | None = None
    last_fire: datetime | None = None
    next_fire: datetime | None = None

    @property
    def key(self) -> Key:
        return (self.namespace, self.name, self.schedule.expr)

    @property
    def function_name(self) -> str:
        return f"{self.name}.{self.namespace}"


class CronConnector:
    name = NAME

    def __init__(
        self,
        ctx: ConnectorContext,
        *,
        seconds_field: bool = False,
        clock: Callable[[], datetime] = utc_now,
        late_s: float = LATE_S,
        drain_s: float = DRAIN_S,
    ) -> None:
        """``seconds_field`` is a test-only hook: schedules take a 6th, leading seconds field
        so tests run in seconds, not minutes. The daemon never sets it."""
        self._ctx = ctx
        self._seconds = seconds_field
        self._clock = clock
        self._late_s = late_s
        self._drain_s = drain_s
        self._jobs: dict[Key, _Job] = {}
        self._running: dict[Key, asyncio.Task[None]] = {}  # the call in flight per schedule
        self._closed = False

    # -- Connector protocol ------------------------------------------------------------------

    def validate(self, spec: FunctionSpec) -> None:
        parse_config(spec.annotations, seconds=self._seconds)

    async def start(self) -> None:
        pass

    async def bind(self, spec: FunctionSpec) -> None:
        try:
            config = parse_config(spec.annotations, seconds=self._seconds)
        except InvalidSpec as exc:  # validated at deploy; only a stored spec from before
            log.warning("cron: not binding %s.%s: %s", spec.name, spec.namespace, exc)
            config = None
        wanted = {s.expr: s for s in config.schedules} if config is not None else {}
        for key, job in list(self._jobs.items()):
            if key[:2] != (spec.namespace, spec.name):
                continue
            schedule = wanted.get(key[2])
            if schedule is not None and config is not None and _same(job, schedule, config):
                wanted.pop(key[2])  # unchanged (a scale, or an update of something else)
                continue
            self._stop(job, "rebound" if schedule is not None else "unbound")
        for schedule in wanted.values():
            assert config is not None
            self._begin(_Job(spec.namespace, spec.name, schedule, config))

    async def unbind(self, namespace: str, name: str) -> None:
        for key, job in list(self._jobs.items()):
            if key[:2] == (namespace, name):
                self._stop(job, "unbound")

    def bindings(self) -> list[Binding]:
        return [
            Binding(
                NAME,
                job.name,
                job.namespace,
                f"{job.schedule.expr} ({job.schedule.timezone})",
                {
                    "schedule": job.schedule.expr,
                    "timezone": job.schedule.timezone,
                    "async": job.config.use_async,
                    "catchup": job.config.catchup,
                    "catchupGraceSeconds": job.config.catchup_grace_s,
                    "lastFire": _text(job.last_fire, job.schedule),
                    "nextFire": _text(job.next_fire, job.schedule),
                },
            )
            for job in self._jobs.values()
        ]

    async def close(self) -> None:
        """Stop scheduling, let running firings finish for up to ``drain_s``, cancel the rest
        (their ids stay claimed: a firing is run at most once)."""
        self._closed = True
        loops = [job.task for job in self._jobs.values() if job.task is not None]
        self._jobs.clear()
        for task in loops:
            task.cancel()
        await asyncio.gather(*loops, return_exceptions=True)
        running = list(self._running.values())
        if running:
            _, pending = await asyncio.wait(running, timeout=self._drain_s)
            for task in pending:
                log.warning("cron: %s cancelled by shutdown", task.get_name())
                task.cancel()
            await asyncio.gather(*pending, return_exceptions=True)
        self._running.clear()

    # -- the loop -----------------------------------------------------------------------------

    def _begin(self, job: _Job) -> None:
        stored = self._ctx.store.kv_get(LAST_SCOPE, last_key(*job.key))
        job.last_fire = _parse(stored)
        self._jobs[job.key] = job
        job.task = asyncio.create_task(self._run(job), name=f"cron {job.function_name}")
        log.info(
            "cron bound %s schedule=%r tz=%s async=%s catchup=%s",
            job.function_name,
            job.schedule.expr,
            job.schedule.timezone,
            str(job.config.use_async).lower(),
            job.config.catchup,
        )

    def _stop(self, job: _Job, why: str) -> None:
        if self._jobs.get(job.key) is job:
            del self._jobs[job.key]
        if job.task is not None:
            job.task.cancel()
        log.info("cron %s %s schedule=%r", why, job.function_name, job.schedule.expr)

    async def _run(self, job: _Job) -> None:
        try:
            await self._schedule(job)
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("cron loop of %s %r failed", job.function_name, job.schedule.expr)

    async def _schedule(self, job: _Job) -> None:
        config = job.config
        now = self._clock()
        if job.last_fire is None:
            self._mark(job, now)  # missed firings are counted from the first bind
        else:
            missed = catchup_fire(
                job.schedule, config.catchup, config.catchup_grace_s, job.last_fire, now
            )
            if missed is not None:
                log.info(
                    "cron catch-up %s schedule=%r fire_time=%s (down since %s)",
                    job.function_name,
                    job.schedule.expr,
                    fire_time_text(missed),
                    fire_time_text(job.last_fire),
                )
                self._fire(job, missed)
        after = now
        while True:
            scheduled = job.schedule.next_after(after)
            job.next_fire = scheduled
            if scheduled is None:
                log.warning("cron %s %r has no next fire time", job.function_name, job.schedule)
                return
            await self._sleep_until(scheduled)
            wake = on_wake(
                job.schedule,
                scheduled,
                self._clock(),
                policy=config.catchup,
                grace_s=config.catchup_grace_s,
                late_s=self._late_s,
            )
            if wake.missed:
                log.warning(
                    "cron %s schedule=%r woke late for %s; %s",
                    job.function_name,
                    job.schedule.expr,
                    fire_time_text(scheduled),
                    f"catching up {fire_time_text(wake.fire)}"
                    if wake.fire
                    else "missed firings skipped",
                )
                if wake.fire is None:
                    self._ctx.metrics.skip(NAME, job.function_name, "missed")
                    self._mark(job, wake.resume_after)
            if wake.fire is not None:
                self._fire(job, wake.fire)
            after = wake.resume_after

    async def _sleep_until(self, moment: datetime) -> None:
        # In slices, against the wall clock: the monotonic clock asyncio sleeps on does not
        # follow clock steps or time spent suspended.
        while True:
            delay_s = (moment - self._clock()).total_seconds()
            if delay_s <= 0:
                return
            await asyncio.sleep(min(delay_s, MAX_SLEEP_S))

    def _mark(self, job: _Job, moment: datetime) -> None:
        job.last_fire = moment
        self._ctx.store.kv_put(LAST_SCOPE, last_key(*job.key), moment.isoformat())

    def _fire(self, job: _Job, fire: datetime) -> None:
        """Claim and start one firing (never blocks on the call itself)."""
        metrics = self._ctx.metrics
        fn = job.function_name
        when = fire_time_text(fire)
        metrics.event(NAME, fn)
        previous = self._running.get(job.key)
        if previous is not None and not previous.done():
            metrics.skip(NAME, fn, "overlap")
            log.warning(
                "cron skipped %s schedule=%r fire_time=%s reason=overlap (previous run still going)",
                fn,
                job.schedule.expr,
                when,
            )
            self._mark(job, fire)
            return
        call_id = fire_id(job.namespace, job.name, job.schedule.expr, fire)
        ttl_s = job.config.catchup_grace_s + CLAIM_MARGIN_S
        if not self._ctx.store.kv_add(CLAIM_SCOPE, call_id, fire.isoformat(), ttl_s=ttl_s):
            metrics.skip(NAME, fn, "duplicate")
            log.info(
                "cron skipped %s schedule=%r fire_time=%s call_id=%s reason=already-fired",
                fn,
                job.schedule.expr,
                when,
                call_id,
            )
            self._mark(job, fire)
            return
        self._mark(job, fire)
        task = asyncio.create_task(self._call(job, when, call_id), name=f"cron call {call_id}")
        self._running[job.key] = task
        task.add_done_callback(lambda done: self._forget(job.key, done))

    def _forget(self, key: Key, task: asyncio.Task[None]) -> None:
        if self._running.get(key) is task:
            del self._running[key]

    async def _call(self, job: _Job, when: str, call_id: str) -> None:
        dispatch = self._ctx.dispatch
        metrics = self._ctx.metrics
        fn = job.function_name
        headers = [
            ("X-Topic", CRON_TOPIC),
            ("X-Connector", NAME),
            ("X-Schedule", job.schedule.expr),
            ("X-Fire-Time", when),
        ]
        started = time.perf_counter()
        try:
            if job.config.use_async:
                env = Envelope(
                    call_id=call_id,
                    function=job.name,
                    namespace=job.namespace,
                    headers=tuple(headers),
                )
                await dispatch.enqueue(env)
                outcome = "queued"
                ok = True
            else:
                result = await dispatch.invoke(
                    Invocation(
                        name=job.name,
                        namespace=job.namespace,
                        headers=headers,
                        body=b"",
                        body_length=0,
                        call_id=call_id,
                        timeout_s=dispatch.invoke_timeout_s,
                    )
                )
                outcome = f"status={result.status}"
                ok = result.status < 400
        except LocalFaasError as exc:
            outcome, ok = f"error={type(exc).__name__}: {exc}", False
        except Exception as exc:  # a bug or an unexpected failure: keep the loop alive
            log.exception("cron call %s of %s failed", call_id, fn)
            outcome, ok = f"error={type(exc).__name__}", False
        (metrics.invoked if ok else metrics.failed)(NAME, fn)
        log.log(
            logging.INFO if ok else logging.WARNING,
            "cron fired %s schedule=%r fire_time=%s call_id=%s %s duration=%.3fs",
            fn,
            job.schedule.expr,
            when,
            call_id,
            outcome,
            time.perf_counter() - started,
        )


def _same(job: _Job, schedule: Schedule, config: CronConfig) -> bool:
    return (
        job.schedule == schedule
        and job.config.use_async == config.use_async
        and job.config.catchup == config.catchup
        and job.config.catchup_grace_s == config.catchup_grace_s
    )


def _parse(text: str | None) -> datetime | None:
    if text is None:
        return None
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        return None
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)


def _text(moment: datetime | None, schedule: Schedule) -> str | None:
    return None if moment is None else fire_time_text(moment.astimezone(schedule.zone))
