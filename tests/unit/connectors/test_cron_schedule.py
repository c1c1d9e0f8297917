"""Cron timing as tables: parsing, next/latest fire times (crontab semantics, time zones, DST),
annotation validation, catch-up and lateness decisions, firing ids."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest

from connectors.cron_schedule import (
    ASYNC,
    CATCHUP,
    CATCHUP_GRACE,
    SCHEDULE,
    TIMEZONE,
    Schedule,
    catchup_fire,
    fire_id,
    fire_time_text,
    is_cron_topic,
    on_wake,
    parse_config,
)
from runtime.errors import InvalidSpec
from runtime.queue.message import is_valid_call_id


def utc(*args: int) -> datetime:
    return datetime(*args, tzinfo=UTC)  # type: ignore[misc]


def fires(expr: str, start: datetime, count: int, tz: str = "UTC", **kw: bool) -> list[str]:
    schedule = Schedule.parse(expr, tz, **kw)
    out: list[str] = []
    moment: datetime | None = start
    for _ in range(count):
        assert moment is not None
        moment = schedule.next_after(moment)
        assert moment is not None
        out.append(fire_time_text(moment))
    return out


# 2024-01-01 is a Monday.
@pytest.mark.parametrize(
    ("expr", "start", "expected"),
    [
        ("*/5 * * * *", utc(2024, 1, 1, 0, 3), ["00:05", "00:10", "00:15"]),
        ("*/5 * * * *", utc(2024, 1, 1, 0, 5), ["00:10", "00:15", "00:20"]),  # strictly after
        ("0 * * * *", utc(2024, 1, 1, 0, 0, 1), ["01:00", "02:00", "03:00"]),
        ("5/20 * * * *", utc(2024, 1, 1), ["00:05", "00:25", "00:45"]),
        ("1-3,10 * * * *", utc(2024, 1, 1), ["00:01", "00:02", "00:03"]),
        ("0 9-17/4 * * *", utc(2024, 1, 1), ["09:00", "13:00", "17:00"]),
        ("  15   10 * * *  ", utc(2024, 1, 1), ["10:15", "10:15", "10:15"]),
        ("@hourly", utc(2024, 1, 1, 0, 30), ["01:00", "02:00", "03:00"]),
        ("@HOURLY", utc(2024, 1, 1, 0, 30), ["01:00", "02:00", "03:00"]),
    ],
)
def test_next_fire_times_within_a_day(expr: str, start: datetime, expected: list[str]) -> None:
    assert [f[11:16] for f in fires(expr, start, 3)] == expected


@pytest.mark.parametrize(
    ("expr", "expected_days"),
    [
        ("@daily", ["2024-01-02", "2024-01-03", "2024-01-04"]),
        ("@midnight", ["2024-01-02", "2024-01-03", "2024-01-04"]),
        ("@weekly", ["2024-01-07", "2024-01-14", "2024-01-21"]),  # Sundays
        ("@monthly", ["2024-02-01", "2024-03-01", "2024-04-01"]),
        ("@yearly", ["2025-01-01", "2026-01-01", "2027-01-01"]),
        ("@annually", ["2025-01-01", "2026-01-01", "2027-01-01"]),
        # Day of week as crontab counts it: 0 and 7 are Sunday (APScheduler 3 says Monday).
        ("0 0 * * 0", ["2024-01-07", "2024-01-14", "2024-01-21"]),
        ("0 0 * * 7", ["2024-01-07", "2024-01-14", "2024-01-21"]),
        ("0 0 * * 1", ["2024-01-08", "2024-01-15", "2024-01-22"]),
        ("0 0 * * sun", ["2024-01-07", "2024-01-14", "2024-01-21"]),
        ("0 0 * * MON-WED", ["2024-01-02", "2024-01-03", "2024-01-08"]),
        ("0 0 * * 5-7", ["2024-01-05", "2024-01-06", "2024-01-07"]),
        # A step on day of week counts from Sunday: Sun, Tue, Thu, Sat.
        ("0 0 * * */2", ["2024-01-02", "2024-01-04", "2024-01-06"]),
        # Both day fields restricted: either matches (the 13th, or any Friday).
        ("0 0 13 * 5", ["2024-01-05", "2024-01-12", "2024-01-13"]),
        # Only one restricted: both must match ('*' day of month).
        ("0 0 * * 5", ["2024-01-05", "2024-01-12", "2024-01-19"]),
        ("0 0 29 2 *", ["2024-02-29", "2028-02-29", "2032-02-29"]),
        ("0 0 1 jan,jul *", ["2024-07-01", "2025-01-01", "2025-07-01"]),
        ("0 0 ? * 1", ["2024-01-08", "2024-01-15", "2024-01-22"]),
    ],
)
def test_next_fire_days(expr: str, expected_days: list[str]) -> None:
    assert [f[:10] for f in fires(expr, utc(2024, 1, 1, 0, 0), 3)] == expected_days


@pytest.mark.parametrize(
    ("expr", "tz", "start", "expected"),
    [
        # Time zone respected: 09:00 in Paris is 08:00 UTC in winter, 07:00 UTC in summer.
        ("0 9 * * *", "Europe/Paris", utc(2024, 1, 1), "2024-01-01T09:00:00+01:00"),
        ("0 9 * * *", "Europe/Paris", utc(2024, 7, 1), "2024-07-01T09:00:00+02:00"),
        ("0 9 * * *", "Asia/Kolkata", utc(2024, 1, 1, 4), "2024-01-02T09:00:00+05:30"),
        ("0 0 * * *", "America/New_York", utc(2024, 1, 1, 3), "2024-01-01T00:00:00-05:00"),
        # DST gap: 02:30 does not exist on 2024-03-31 in Paris; it runs at the same instant,
        # shown as the wall time that exists (03:30+02:00).
        ("30 2 * * *", "Europe/Paris", utc(2024, 3, 30, 12), "2024-03-31T03:30:00+02:00"),
        # Fall back (2024-10-27, 02:00-03:00 twice): a fixed time in the repeated hour is two
        # instants; both run (distinct ids), as APScheduler and robfig/cron do.
        ("30 2 * * *", "Europe/Paris", utc(2024, 10, 26, 12), "2024-10-27T02:30:00+02:00"),
        ("30 2 * * *", "Europe/Paris", utc(2024, 10, 27, 0, 30), "2024-10-27T02:30:00+01:00"),
        ("0 * * * *", "Europe/Paris", utc(2024, 3, 31, 0, 30), "2024-03-31T03:00:00+02:00"),
    ],
)
def test_time_zones(expr: str, tz: str, start: datetime, expected: str) -> None:
    assert fires(expr, start, 1, tz) == [expected]


def test_dst_day_hourly_runs_every_real_hour_once() -> None:
    # Fall back in Paris on 2024-10-27: 02:00-03:00 happens twice. Every fire time is distinct
    # and increasing, so their ids are distinct too.
    times = fires("0 * * * *", utc(2024, 10, 26, 22), 6, "Europe/Paris")
    instants = [datetime.fromisoformat(t).astimezone(UTC) for t in times]
    assert instants == sorted(set(instants))


def test_seconds_field_is_a_test_only_form() -> None:
    assert [f[11:19] for f in fires("*/2 * * * * *", utc(2024, 1, 1), 3, seconds=True)] == [
        "00:00:02",
        "00:00:04",
        "00:00:06",
    ]
    assert fires("@hourly", utc(2024, 1, 1), 1, seconds=True) == ["2024-01-01T01:00:00+00:00"]
    with pytest.raises(ValueError, match="6"):
        Schedule.parse("* * * * *", seconds=True)
    with pytest.raises(ValueError, match="5"):
        Schedule.parse("* * * * * *")


@pytest.mark.parametrize(
    ("expr", "reason"),
    [
        ("", "0 fields"),
        ("* * * *", "4 fields"),
        ("* * * * * *", "6 fields"),
        ("60 * * * *", "minute 60 is outside 0-59"),
        ("* 24 * * *", "hour 24 is outside 0-23"),
        ("* * 0 * *", "day of month 0 is outside 1-31"),
        ("* * 32 * *", "day of month 32"),
        ("* * * 13 *", "month 13 is outside 1-12"),
        ("* * * * 8", "day of week 8 is outside 0-7"),
        ("* * * foo *", "month 'foo' is not a number"),
        ("* * * * mon/2", "day of week"),  # a name range is fine, a step after a name too
        ("*/0 * * * *", "step must be at least 1"),
        ("5-1 * * * *", "empty range"),
        ("*-5 * * * *", "cannot start a range"),
        ("1,,2 * * * *", "is not a value"),
        ("L * * * *", "is not a number"),
        ("-1 * * * *", "is not a value"),
        ("@every 5m", "unknown descriptor"),
        ("@reboot", "unknown descriptor"),
        ("0 0 30 2 *", "never fires"),
        ("0 0 31 4,6,9,11 *", "never fires"),
    ],
)
def test_bad_schedules(expr: str, reason: str) -> None:
    if expr == "* * * * mon/2":
        # Vixie cron allows a step after a single value ("mon/2" = mon-sat/2): so do we.
        assert fires(expr, utc(2024, 1, 1), 1)[0].startswith("2024-01-01")
        return
    with pytest.raises(ValueError, match=reason):
        Schedule.parse(expr)


@pytest.mark.parametrize("tz", ["Mars/Olympus", "", "  ", "../../etc/passwd", "/etc/localtime"])
def test_bad_time_zones(tz: str) -> None:
    with pytest.raises(ValueError, match="time zone"):
        Schedule.parse("* * * * *", tz)


@pytest.mark.parametrize(
    ("topic", "bound"),
    [
        ("cron-function", True),
        (" cron-function ", True),
        ("orders.*,cron-function", True),  # OpenFaaS Pro: several connectors' topics
        ("cron-function-x", False),
        ("orders.*", False),
        ("", False),
        (None, False),
    ],
)
def test_topic(topic: str | None, bound: bool) -> None:
    assert is_cron_topic(topic) is bound


def test_config_defaults_and_extensions() -> None:
    assert parse_config({SCHEDULE: "* * * * *"}) is None  # no topic: not ours
    config = parse_config({"topic": "cron-function", SCHEDULE: "*/5 * * * *; @daily;*/5  * * * *"})
    assert config is not None
    assert [s.expr for s in config.schedules] == ["*/5 * * * *", "@daily"]  # deduplicated
    assert (config.timezone, config.use_async, config.catchup, config.catchup_grace_s) == (
        "UTC",
        False,
        "none",
        3600.0,
    )
    config = parse_config(
        {
            "topic": "cron-function",
            SCHEDULE: "0 9 * * 1-5",
            TIMEZONE: "Europe/Paris",
            ASYNC: "TRUE",
            CATCHUP: "latest",
            CATCHUP_GRACE: "90m",
        }
    )
    assert config is not None
    assert config.schedules[0].timezone == "Europe/Paris"
    assert (config.use_async, config.catchup, config.catchup_grace_s) == (True, "latest", 5400.0)


@pytest.mark.parametrize(
    ("annotations", "message"),
    [
        ({}, f"annotation {SCHEDULE} is required"),
        ({SCHEDULE: "  "}, f"annotation {SCHEDULE} is required"),
        ({SCHEDULE: " ; "}, f"annotation {SCHEDULE} is required"),
        ({SCHEDULE: "* * * *"}, f"annotation {SCHEDULE}: '\\* \\* \\* \\*' has 4 fields"),
        ({SCHEDULE: "@daily; 61 * * * *"}, f"annotation {SCHEDULE}: minute 61"),
        ({SCHEDULE: ";".join(f"{m} * * * *" for m in range(40))}, "at most 32"),
        ({SCHEDULE: "* * * * *", TIMEZONE: "Europe/Pariss"}, f"annotation {TIMEZONE}: 'Europe"),
        ({SCHEDULE: "* * * * *", ASYNC: "yes"}, f"annotation {ASYNC}: 'yes' is not true"),
        ({SCHEDULE: "* * * * *", CATCHUP: "all"}, f"annotation {CATCHUP}: 'all'"),
        ({SCHEDULE: "* * * * *", CATCHUP_GRACE: "soon"}, f"annotation {CATCHUP_GRACE}: 'soon'"),
        ({SCHEDULE: "* * * * *", CATCHUP_GRACE: "0"}, f"annotation {CATCHUP_GRACE}: '0'"),
        ({SCHEDULE: "* * * * *", CATCHUP_GRACE: "169h"}, "outside 1s-168h"),
    ],
)
def test_bad_annotations_name_the_annotation(annotations: dict[str, str], message: str) -> None:
    with pytest.raises(InvalidSpec, match=message):
        parse_config({"topic": "cron-function", **annotations})


def test_latest_between() -> None:
    every5 = Schedule.parse("*/5 * * * *")
    now = utc(2024, 1, 1, 12, 7, 30)
    cases = [
        (utc(2024, 1, 1, 11, 0), utc(2024, 1, 1, 12, 5)),
        (utc(2024, 1, 1, 12, 5), None),  # exclusive of `after`
        (utc(2024, 1, 1, 12, 4, 59), utc(2024, 1, 1, 12, 5)),
        (now, None),
    ]
    for after, expected in cases:
        assert every5.latest_between(after, now) == expected, after
    assert every5.latest_between(now, utc(2024, 1, 1, 12, 10)) == utc(2024, 1, 1, 12, 10)  # incl.
    yearly = Schedule.parse("@yearly", "Asia/Tokyo")
    found = yearly.latest_between(utc(2020, 6, 1), utc(2024, 6, 1))
    assert found is not None and fire_time_text(found) == "2024-01-01T00:00:00+09:00"
    assert yearly.latest_between(utc(2024, 2, 1), utc(2024, 6, 1)) is None


NOW = utc(2024, 1, 1, 12, 7, 30)


@pytest.mark.parametrize(
    ("policy", "grace_s", "last", "expected"),
    [
        ("latest", 3600, utc(2024, 1, 1, 11, 0), utc(2024, 1, 1, 12, 5)),  # many missed: latest
        ("latest", 3600, utc(2024, 1, 1, 12, 3), utc(2024, 1, 1, 12, 5)),  # one missed
        ("latest", 3600, utc(2024, 1, 1, 12, 5), None),  # the last one ran: nothing missed
        ("latest", 3600, None, None),  # never bound before: nothing missed
        ("latest", 60, utc(2024, 1, 1, 11, 0), None),  # latest missed is 150 s old > grace
        ("latest", 150, utc(2024, 1, 1, 11, 0), utc(2024, 1, 1, 12, 5)),  # exactly at grace
        ("latest", 149, utc(2024, 1, 1, 11, 0), None),
        ("none", 3600, utc(2024, 1, 1, 11, 0), None),
        ("latest", 3600, utc(2024, 1, 1, 13, 0), None),  # mark in the future (clock stepped back)
    ],
)
def test_catchup_decision(
    policy: str, grace_s: float, last: datetime | None, expected: datetime | None
) -> None:
    every5 = Schedule.parse("*/5 * * * *")
    assert catchup_fire(every5, policy, grace_s, last, NOW) == expected


@pytest.mark.parametrize(
    ("scheduled", "now", "policy", "fire", "resume", "missed"),
    [
        # On time, or late within late_s: run the scheduled firing.
        (utc(2024, 1, 1, 12, 5), utc(2024, 1, 1, 12, 5), "none", "sched", "sched", False),
        (utc(2024, 1, 1, 12, 5), utc(2024, 1, 1, 12, 5, 29), "none", "sched", "sched", False),
        # Far too late (host slept until 12:27): no burst of five firings.
        (utc(2024, 1, 1, 12, 5), utc(2024, 1, 1, 12, 27), "none", None, "now", True),
        (
            utc(2024, 1, 1, 12, 5),
            utc(2024, 1, 1, 12, 27),
            "latest",
            utc(2024, 1, 1, 12, 25),
            "now",
            True,
        ),
        # Latest missed beyond the grace window: skipped.
        (
            utc(2024, 1, 1, 9, 5),
            utc(2024, 1, 1, 12, 27),
            "latest",
            utc(2024, 1, 1, 12, 25),
            "now",
            True,
        ),
    ],
)
def test_on_wake(
    scheduled: datetime,
    now: datetime,
    policy: str,
    fire: datetime | str | None,
    resume: str,
    missed: bool,
) -> None:
    every5 = Schedule.parse("*/5 * * * *")
    wake = on_wake(every5, scheduled, now, policy=policy, grace_s=3600, late_s=30)
    assert wake.fire == (scheduled if fire == "sched" else fire)
    assert wake.resume_after == (scheduled if resume == "sched" else now)
    assert wake.missed is missed
    short = on_wake(
        every5,
        utc(2024, 1, 1, 9, 5),
        utc(2024, 1, 1, 12, 27),
        policy="latest",
        grace_s=60,
        late_s=30,
    )
    assert short.fire is None and short.missed


def test_fire_ids_are_deterministic_valid_call_ids() -> None:
    paris = datetime(2024, 1, 1, 13, 0, tzinfo=ZoneInfo("Europe/Paris"))
    same_instant = utc(2024, 1, 1, 12, 0)
    a = fire_id("openfaas-fn", "hello", "0 * * * *", paris)
    assert a == fire_id("openfaas-fn", "hello", "0 * * * *", same_instant)  # an instant
    assert a.startswith("cron-20240101T120000Z-") and is_valid_call_id(a) and len(a) == 42
    others = {
        fire_id("other-ns", "hello", "0 * * * *", paris),
        fire_id("openfaas-fn", "hello2", "0 * * * *", paris),
        fire_id("openfaas-fn", "hello", "@hourly", paris),
        fire_id("openfaas-fn", "hello", "0 * * * *", paris + timedelta(hours=1)),
        # No ambiguity from joining: ("a-b","c") vs ("a","b-c").
        fire_id("a-b", "c", "0 * * * *", paris),
        fire_id("a", "b-c", "0 * * * *", paris),
    }
    assert a not in others and len(others) == 6
    long_name = "x" * 63
    assert is_valid_call_id(fire_id(long_name, long_name, "@daily", paris))
