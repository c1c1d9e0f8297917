"""Cron timing, decided purely: annotation parsing, next and latest fire times, catch-up and
lateness decisions, firing ids. The connector's loop (connectors/cron.py) only sleeps, claims and
calls.

Schedules are standard 5-field crontab expressions (minute hour day-of-month month day-of-week),
as OpenFaaS's cron-connector takes them, or the descriptors ``@yearly`` ``@annually``
``@monthly`` ``@weekly`` ``@daily`` ``@midnight`` ``@hourly``. Several schedules go in one
annotation, separated by ``;``. Crontab semantics are kept where APScheduler 3 differs: day of
week 0 and 7 are Sunday (APScheduler counts 0 as Monday), a step on day of week counts from
Sunday, and when both day of month and day of week are restricted a day matching *either* fires
(Vixie cron, robfig/cron). Every field is expanded here into an explicit list, so APScheduler's
`CronTrigger` only does the calendar arithmetic (months, leap years, DST) in the given zone.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from apscheduler.triggers.cron import CronTrigger

from runtime.errors import InvalidSpec
from watchdog.durations import parse_duration

TOPIC = "topic"
CRON_TOPIC = "cron-function"
SCHEDULE = "schedule"
TIMEZONE = "com.localfaas.cron.timezone"
ASYNC = "com.localfaas.cron.async"
CATCHUP = "com.localfaas.cron.catchup"
CATCHUP_GRACE = "com.localfaas.cron.catchup-grace"

CATCHUP_POLICIES = ("none", "latest")
DEFAULT_TIMEZONE = "UTC"
DEFAULT_GRACE_S = 3600.0
MAX_GRACE_S = 7 * 24 * 3600.0
MAX_SCHEDULES = 32

DESCRIPTORS = {
    "@yearly": "0 0 1 1 *",
    "@annually": "0 0 1 1 *",
    "@monthly": "0 0 1 * *",
    "@weekly": "0 0 * * 0",
    "@daily": "0 0 * * *",
    "@midnight": "0 0 * * *",
    "@hourly": "0 * * * *",
}

_MONTHS = {m: i for i, m in enumerate("jan feb mar apr may jun jul aug sep oct nov dec".split(), 1)}
_WEEKDAYS = {d: i for i, d in enumerate("sun mon tue wed thu fri sat".split())}
# APScheduler's own weekday names, indexed by crontab's numbers (0 = Sunday).
_APS_WEEKDAYS = ("sun", "mon", "tue", "wed", "thu", "fri", "sat")
_ITEM = re.compile(r"(\*|\?|[0-9a-z]+)(?:-([0-9a-z]+))?(?:/([0-9]+))?")
_ONE_US = timedelta(microseconds=1)


@dataclass(frozen=True)
class _Field:
    name: str
    low: int
    high: int
    names: Mapping[str, int] | None = None
    star_high: int | None = None  # day of week: '*' means 0-6 although 7 (Sunday) is accepted


_SECOND = _Field("second", 0, 59)
_MINUTE = _Field("minute", 0, 59)
_HOUR = _Field("hour", 0, 23)
_DOM = _Field("day of month", 1, 31)
_MONTH = _Field("month", 1, 12, _MONTHS)
_DOW = _Field("day of week", 0, 7, _WEEKDAYS, star_high=6)


def _value(text: str, spec: _Field) -> int:
    if text.isdigit():
        number = int(text)
    elif spec.names is not None and text in spec.names:
        number = spec.names[text]
    else:
        raise ValueError(f"{spec.name} {text!r} is not a number")
    if not spec.low <= number <= spec.high:
        raise ValueError(f"{spec.name} {number} is outside {spec.low}-{spec.high}")
    return number


def _expand(text: str, spec: _Field) -> tuple[bool, list[int]]:
    """(restricted, sorted values) of one crontab field."""
    values: set[int] = set()
    for item in text.lower().split(","):
        match = _ITEM.fullmatch(item)
        if match is None:
            raise ValueError(f"{spec.name} {item!r} is not a value, range or step")
        first, last, step_s = match.groups()
        if first in ("*", "?"):
            if last is not None:
                raise ValueError(f"{spec.name} {item!r}: '*' cannot start a range")
            start = spec.low
            end = spec.star_high if spec.star_high is not None else spec.high
        else:
            start = _value(first, spec)
            # "5/15" means 5-max/15, as in Vixie cron and robfig/cron.
            end = _value(last, spec) if last is not None else (spec.high if step_s else start)
        step = int(step_s) if step_s is not None else 1
        if step < 1:
            raise ValueError(f"{spec.name} {item!r}: the step must be at least 1")
        if start > end:
            raise ValueError(f"{spec.name} {item!r} is an empty range")
        values.update(range(start, end + 1, step))
    restricted = not text.startswith(("*", "?"))
    return restricted, sorted(values)


def _join(values: list[int]) -> str:
    return ",".join(str(v) for v in values)


@dataclass(frozen=True)
class Schedule:
    """One schedule of one function, in one time zone."""

    expr: str  # as written (whitespace collapsed): "*/5 * * * *", "@daily"
    timezone: str  # IANA name
    # OR-ed triggers: two when both day fields are restricted (crontab's "either day matches").
    triggers: tuple[CronTrigger, ...] = field(compare=False, repr=False)

    @classmethod
    def parse(
        cls, expr: str, timezone: str = DEFAULT_TIMEZONE, *, seconds: bool = False
    ) -> Schedule:
        """ValueError with a reason when ``expr`` or ``timezone`` is unusable. ``seconds``
        (tests only) takes a 6-field form whose first field is the second."""
        zone = parse_timezone(timezone)
        text = " ".join(expr.split())
        lowered = text.lower()
        if lowered.startswith("@"):
            if lowered not in DESCRIPTORS:
                raise ValueError(
                    f"unknown descriptor {text!r} (use one of {', '.join(DESCRIPTORS)})"
                )
            body = ("0 " if seconds else "") + DESCRIPTORS[lowered]
        else:
            body = text
        parts = body.split()
        wanted = 6 if seconds else 5
        if len(parts) != wanted:
            raise ValueError(
                f"{text!r} has {len(parts)} fields; a schedule has {wanted} "
                "(minute hour day-of-month month day-of-week) or is a descriptor like @daily"
            )
        second = parts.pop(0) if seconds else "0"
        _, seconds_v = _expand(second, _SECOND)
        _, minutes = _expand(parts[0], _MINUTE)
        _, hours = _expand(parts[1], _HOUR)
        dom_restricted, days = _expand(parts[2], _DOM)
        _, months = _expand(parts[3], _MONTH)
        dow_restricted, weekdays = _expand(parts[4], _DOW)
        dow = ",".join(dict.fromkeys(_APS_WEEKDAYS[d % 7] for d in weekdays))
        common = {
            "second": _join(seconds_v),
            "minute": _join(minutes),
            "hour": _join(hours),
            "month": _join(months),
            "timezone": zone,
        }
        triggers: tuple[CronTrigger, ...]
        if dom_restricted and dow_restricted:
            triggers = (
                CronTrigger(day=_join(days), day_of_week="*", **common),
                CronTrigger(day="*", day_of_week=dow, **common),
            )
        else:
            triggers = (CronTrigger(day=_join(days), day_of_week=dow, **common),)
        schedule = cls(text, timezone, triggers)
        # Refuse what can never fire ("0 0 30 2 *"): a binding that silently never runs.
        probe = datetime(2000, 1, 1, tzinfo=UTC)
        if schedule.next_after(probe) is None:
            raise ValueError(f"{text!r} never fires")
        return schedule

    @property
    def zone(self) -> ZoneInfo:
        return ZoneInfo(self.timezone)

    def next_after(self, moment: datetime) -> datetime | None:
        """The first fire time strictly after ``moment``, in the schedule's zone."""
        found = [t for trigger in self.triggers if (t := _next(trigger, moment)) is not None]
        # Normalised into the zone (through UTC: astimezone to the same zone is a no-op): a
        # wall time in a DST gap comes back as 02:00+01:00 (the right instant), shown as
        # 03:00+02:00.
        return min(found).astimezone(UTC).astimezone(self.zone) if found else None

    def latest_between(self, after: datetime, until: datetime) -> datetime | None:
        """The latest fire time f with ``after < f <= until``, or None.

        Cron triggers only go forward: look back over windows doubling from 1 s until one holds
        a firing, then walk forward from there. Cheap for sparse and dense schedules alike."""
        if until <= after:
            return None
        window = timedelta(seconds=1)
        while True:
            start = max(after, until - window)
            first = self.next_after(start)
            if first is not None and first <= until:
                break
            if start == after:
                return None
            window *= 2
        latest = first
        while (following := self.next_after(latest)) is not None and following <= until:
            latest = following
        return latest


def _next(trigger: CronTrigger, moment: datetime) -> datetime | None:
    """APScheduler 3 can answer a time at or before ``moment`` right at a DST fall-back
    boundary (it computes on wall times); probing again from the next whole second is exact,
    as fire times are whole seconds."""
    moment = moment.astimezone(UTC)  # a zoned wall time would lose its DST fold in there
    found: datetime | None = trigger.get_next_fire_time(None, moment + _ONE_US)
    if found is not None and found <= moment:
        probe = moment.replace(microsecond=0) + timedelta(seconds=1)
        found = trigger.get_next_fire_time(None, probe)
        if found is not None and found <= moment:
            raise RuntimeError(f"cron trigger went backwards at {moment.isoformat()}")
    return found


def parse_timezone(name: str) -> ZoneInfo:
    text = name.strip()
    if not text:
        raise ValueError("the time zone is empty")
    try:
        return ZoneInfo(text)
    except (ZoneInfoNotFoundError, ValueError, OSError):
        raise ValueError(f"{text!r} is not an IANA time zone (e.g. Europe/Paris, UTC)") from None


@dataclass(frozen=True)
class CronConfig:
    """What a function's annotations ask of the cron connector."""

    schedules: tuple[Schedule, ...]
    timezone: str = DEFAULT_TIMEZONE
    use_async: bool = False
    catchup: str = "none"
    catchup_grace_s: float = DEFAULT_GRACE_S


def is_cron_topic(topic: str | None) -> bool:
    """OpenFaaS CE wants ``topic: cron-function`` alone; Pro also accepts it in a comma list next
    to other connectors' topics. Both bind here."""
    return topic is not None and CRON_TOPIC in (item.strip() for item in topic.split(","))


def parse_config(annotations: Mapping[str, str], *, seconds: bool = False) -> CronConfig | None:
    """The function's cron config, None when its topic does not name ``cron-function``.
    InvalidSpec (→ 400) names the annotation at fault."""
    if not is_cron_topic(annotations.get(TOPIC)):
        return None
    timezone = annotations.get(TIMEZONE, DEFAULT_TIMEZONE).strip()
    try:
        parse_timezone(timezone)
    except ValueError as exc:
        raise InvalidSpec(f"annotation {TIMEZONE}: {exc}") from None
    raw = annotations.get(SCHEDULE)
    if raw is None or not raw.strip():
        raise InvalidSpec(f"annotation {SCHEDULE} is required with {TOPIC}: {CRON_TOPIC}")
    exprs = list(dict.fromkeys(" ".join(p.split()) for p in raw.split(";") if p.strip()))
    if not exprs:
        raise InvalidSpec(f"annotation {SCHEDULE} is required with {TOPIC}: {CRON_TOPIC}")
    if len(exprs) > MAX_SCHEDULES:
        raise InvalidSpec(f"annotation {SCHEDULE}: at most {MAX_SCHEDULES} schedules")
    schedules = []
    for expr in exprs:
        try:
            schedules.append(Schedule.parse(expr, timezone, seconds=seconds))
        except ValueError as exc:
            raise InvalidSpec(f"annotation {SCHEDULE}: {exc}") from None
    use_async = annotations.get(ASYNC, "false").strip().lower()
    if use_async not in ("true", "false"):
        raise InvalidSpec(f"annotation {ASYNC}: {use_async!r} is not true or false")
    catchup = annotations.get(CATCHUP, "none").strip().lower()
    if catchup not in CATCHUP_POLICIES:
        raise InvalidSpec(f"annotation {CATCHUP}: {catchup!r} is not one of none, latest")
    grace_raw = annotations.get(CATCHUP_GRACE)
    grace_s = DEFAULT_GRACE_S
    if grace_raw is not None:
        try:
            grace_s = parse_duration(grace_raw)
        except ValueError:
            raise InvalidSpec(
                f"annotation {CATCHUP_GRACE}: {grace_raw!r} is not a duration like 30m or 2h"
            ) from None
        if not 0 < grace_s <= MAX_GRACE_S:
            raise InvalidSpec(
                f"annotation {CATCHUP_GRACE}: {grace_raw!r} is outside 1s-{MAX_GRACE_S / 3600:g}h"
            )
    return CronConfig(tuple(schedules), timezone, use_async == "true", catchup, grace_s)


def catchup_fire(
    schedule: Schedule, policy: str, grace_s: float, last: datetime | None, now: datetime
) -> datetime | None:
    """At bind (daemon start, redeploy): the missed firing to run now, if any. ``last`` is the
    persisted mark (the last fire time handled, or when the schedule was first bound); a
    schedule never bound before has missed nothing."""
    if policy != "latest" or last is None:
        return None
    # The grace bound is inclusive (latest_between excludes its lower bound).
    oldest = now - timedelta(seconds=grace_s) - _ONE_US
    return schedule.latest_between(max(last, oldest), now)


@dataclass(frozen=True)
class Wake:
    fire: datetime | None  # the firing to run now (None: nothing)
    resume_after: datetime  # schedule the next firing strictly after this
    missed: bool  # firings were passed over (lateness beyond late_s)


def on_wake(
    schedule: Schedule,
    scheduled: datetime,
    now: datetime,
    *,
    policy: str,
    grace_s: float,
    late_s: float,
) -> Wake:
    """The loop woke for ``scheduled`` at ``now``. On time (within ``late_s``): run it. Much
    later (the host slept, the loop was blocked): don't burst through every firing missed;
    treat it as downtime and apply the catch-up policy to the latest one."""
    if (now - scheduled).total_seconds() <= late_s:
        return Wake(scheduled, scheduled, False)
    latest = schedule.latest_between(scheduled - _ONE_US, now)
    if policy == "latest" and latest is not None and (now - latest).total_seconds() <= grace_s:
        return Wake(latest, now, True)
    return Wake(None, now, True)


def fire_time_text(fire: datetime) -> str:
    """RFC 3339 with the schedule zone's offset: 2024-03-31T02:00:00+02:00."""
    return fire.isoformat(timespec="seconds")


def fire_id(namespace: str, name: str, expr: str, fire: datetime) -> str:
    """Deterministic call id of one firing: the same (namespace, function, schedule, instant)
    always gives the same id, so a claim in the store stops any second run. Call id alphabet
    only ([A-Za-z0-9_-]), 42 characters."""
    instant = fire.astimezone(UTC)
    digest = hashlib.sha256(
        "\0".join((namespace, name, expr, instant.isoformat())).encode()
    ).hexdigest()
    return f"cron-{instant:%Y%m%dT%H%M%SZ}-{digest[:20]}"
