"""Scaling labels: defaults, every field parsed, every bad value an InvalidSpec naming the label,
Go durations."""

from __future__ import annotations

import pytest

from runtime.errors import InvalidSpec
from runtime.models import FunctionSpec
from runtime.scaling.config import (
    SCALE_DOWN_WINDOW,
    SCALE_MAX,
    SCALE_MIN,
    SCALE_PAUSE_AFTER,
    SCALE_PROPORTION,
    SCALE_QUEUE_DEPTH,
    SCALE_TARGET,
    SCALE_TYPE,
    SCALE_ZERO,
    SCALE_ZERO_DURATION,
    ScalingConfig,
    parse_duration,
    scaling_config,
)


def config_of(labels: dict[str, str]) -> ScalingConfig:
    return scaling_config(FunctionSpec(name="hello", image="hello:latest", labels=labels))


def test_no_labels_gives_the_openfaas_defaults() -> None:
    config = config_of({})
    assert (config.min, config.max, config.type) == (1, 20, "rps")
    assert (config.target, config.proportion) == (50.0, 0.90)
    assert (config.zero, config.zero_duration_s) == (False, 900.0)
    assert (config.down_window_s, config.pause_after_s, config.queue_depth) == (30.0, 30.0, 1000)


@pytest.mark.parametrize(
    ("labels", "field", "expected"),
    [
        ({SCALE_MIN: "0"}, "min", 0),
        ({SCALE_MIN: " 3 "}, "min", 3),
        ({SCALE_MAX: "1"}, "max", 1),
        ({SCALE_MAX: "1000"}, "max", 1000),
        ({SCALE_MIN: "5", SCALE_MAX: "5"}, "max", 5),
        ({SCALE_TYPE: "capacity"}, "type", "capacity"),
        ({SCALE_TYPE: " CPU "}, "type", "cpu"),
        ({SCALE_TYPE: "   "}, "type", "rps"),
        ({SCALE_TARGET: "1000"}, "target", 1000.0),
        ({SCALE_TARGET: "0.5"}, "target", 0.5),
        ({SCALE_PROPORTION: "1"}, "proportion", 1.0),
        ({SCALE_PROPORTION: "0.7"}, "proportion", 0.7),
        ({SCALE_ZERO: "true"}, "zero", True),
        ({SCALE_ZERO: "TRUE"}, "zero", True),
        ({SCALE_ZERO: "1"}, "zero", True),
        ({SCALE_ZERO: "yes"}, "zero", True),
        ({SCALE_ZERO: "false"}, "zero", False),
        ({SCALE_ZERO: "0"}, "zero", False),
        ({SCALE_ZERO: "no"}, "zero", False),
        ({SCALE_ZERO: ""}, "zero", False),
        ({SCALE_ZERO_DURATION: "1h30m"}, "zero_duration_s", 5400.0),
        ({SCALE_ZERO_DURATION: "90"}, "zero_duration_s", 90.0),
        ({SCALE_DOWN_WINDOW: "2m"}, "down_window_s", 120.0),
        ({SCALE_DOWN_WINDOW: "0"}, "down_window_s", 0.0),
        ({SCALE_PAUSE_AFTER: "0s"}, "pause_after_s", 0.0),
        ({SCALE_PAUSE_AFTER: "45s"}, "pause_after_s", 45.0),
        ({SCALE_QUEUE_DEPTH: "1"}, "queue_depth", 1),
        ({SCALE_QUEUE_DEPTH: "1000000"}, "queue_depth", 1_000_000),
    ],
)
def test_each_label_sets_its_field(labels: dict[str, str], field: str, expected: object) -> None:
    assert getattr(config_of(labels), field) == expected


def test_scale_to_zero_without_a_duration_waits_15_minutes() -> None:
    config = config_of({SCALE_ZERO: "true"})
    assert config.zero is True
    assert config.zero_duration_s == 15 * 60.0
    assert config.idle_floor == 0


@pytest.mark.parametrize(
    ("labels", "label"),
    [
        ({SCALE_MIN: "-1"}, SCALE_MIN),
        ({SCALE_MIN: "one"}, SCALE_MIN),
        ({SCALE_MIN: "1.5"}, SCALE_MIN),
        ({SCALE_MIN: "1001"}, SCALE_MIN),
        ({SCALE_MAX: "0"}, SCALE_MAX),
        ({SCALE_MAX: "-3"}, SCALE_MAX),
        ({SCALE_MAX: "lots"}, SCALE_MAX),
        ({SCALE_MAX: "1001"}, SCALE_MAX),
        ({SCALE_MIN: "5", SCALE_MAX: "3"}, SCALE_MAX),
        ({SCALE_MIN: "25"}, SCALE_MAX),  # above the default max of 20
        ({SCALE_TYPE: "memory"}, SCALE_TYPE),
        ({SCALE_TYPE: "rps,cpu"}, SCALE_TYPE),
        ({SCALE_TARGET: "0"}, SCALE_TARGET),
        ({SCALE_TARGET: "-5"}, SCALE_TARGET),
        ({SCALE_TARGET: "fifty"}, SCALE_TARGET),
        ({SCALE_TARGET: "nan"}, SCALE_TARGET),
        ({SCALE_TARGET: "inf"}, SCALE_TARGET),
        ({SCALE_PROPORTION: "0"}, SCALE_PROPORTION),
        ({SCALE_PROPORTION: "-0.5"}, SCALE_PROPORTION),
        ({SCALE_PROPORTION: "1.01"}, SCALE_PROPORTION),
        ({SCALE_PROPORTION: "90%"}, SCALE_PROPORTION),
        ({SCALE_ZERO: "maybe"}, SCALE_ZERO),
        ({SCALE_ZERO: "2"}, SCALE_ZERO),
        ({SCALE_ZERO: "on"}, SCALE_ZERO),
        ({SCALE_ZERO_DURATION: "0"}, SCALE_ZERO_DURATION),
        ({SCALE_ZERO_DURATION: "0s"}, SCALE_ZERO_DURATION),
        ({SCALE_ZERO_DURATION: "-5m"}, SCALE_ZERO_DURATION),
        ({SCALE_ZERO_DURATION: "15x"}, SCALE_ZERO_DURATION),
        ({SCALE_ZERO_DURATION: "1d"}, SCALE_ZERO_DURATION),
        ({SCALE_ZERO_DURATION: "721h"}, SCALE_ZERO_DURATION),
        ({SCALE_DOWN_WINDOW: "soon"}, SCALE_DOWN_WINDOW),
        ({SCALE_DOWN_WINDOW: "-1"}, SCALE_DOWN_WINDOW),
        ({SCALE_DOWN_WINDOW: "1h 30m"}, SCALE_DOWN_WINDOW),
        ({SCALE_PAUSE_AFTER: "-30s"}, SCALE_PAUSE_AFTER),
        ({SCALE_PAUSE_AFTER: "30 seconds"}, SCALE_PAUSE_AFTER),
        ({SCALE_PAUSE_AFTER: "inf"}, SCALE_PAUSE_AFTER),
        ({SCALE_QUEUE_DEPTH: "0"}, SCALE_QUEUE_DEPTH),
        ({SCALE_QUEUE_DEPTH: "-1"}, SCALE_QUEUE_DEPTH),
        ({SCALE_QUEUE_DEPTH: "many"}, SCALE_QUEUE_DEPTH),
        ({SCALE_QUEUE_DEPTH: "1000001"}, SCALE_QUEUE_DEPTH),
    ],
)
def test_bad_values_name_the_label(labels: dict[str, str], label: str) -> None:
    with pytest.raises(InvalidSpec) as err:
        config_of(labels)
    assert f"label {label}:" in str(err.value)


def test_max_below_min_names_both_labels_and_values() -> None:
    with pytest.raises(InvalidSpec) as err:
        config_of({SCALE_MIN: "5", SCALE_MAX: "3"})
    message = str(err.value)
    assert SCALE_MIN in message and SCALE_MAX in message
    assert "3" in message and "5" in message


@pytest.mark.parametrize(
    ("labels", "fixed"),
    [
        ({SCALE_MIN: "3", SCALE_MAX: "3"}, True),
        ({SCALE_MIN: "1", SCALE_MAX: "1"}, True),
        ({SCALE_MIN: "1", SCALE_MAX: "2"}, False),
        ({}, False),
        ({SCALE_MIN: "1", SCALE_MAX: "1", SCALE_ZERO: "true"}, False),  # still scales to 0
    ],
)
def test_fixed_when_min_equals_max_without_zero(labels: dict[str, str], fixed: bool) -> None:
    assert config_of(labels).fixed is fixed


@pytest.mark.parametrize(
    ("config", "active_floor", "idle_floor"),
    [
        (ScalingConfig(min=1), 1, 1),
        (ScalingConfig(min=3), 3, 3),
        (ScalingConfig(min=0), 0, 0),
        (ScalingConfig(min=0, zero=True), 1, 0),
        (ScalingConfig(min=1, zero=True), 1, 0),
        (ScalingConfig(min=3, zero=True), 3, 0),
    ],
)
def test_floors(config: ScalingConfig, active_floor: int, idle_floor: int) -> None:
    assert (config.active_floor, config.idle_floor) == (active_floor, idle_floor)


@pytest.mark.parametrize(
    ("zero_duration_s", "pause_after_s", "keep_s"),
    [(900.0, 30.0, 870.0), (60.0, 60.0, 0.0), (10.0, 30.0, 0.0), (60.0, 0.0, 60.0)],
)
def test_paused_keep(zero_duration_s: float, pause_after_s: float, keep_s: float) -> None:
    config = ScalingConfig(zero_duration_s=zero_duration_s, pause_after_s=pause_after_s)
    assert config.paused_keep_s == keep_s


@pytest.mark.parametrize(
    ("raw", "seconds"),
    [
        ("15m", 900.0),
        ("1h30m", 5400.0),
        ("1h30m15s", 5415.0),
        ("90s", 90.0),
        ("2.5s", 2.5),
        ("1.5h", 5400.0),
        (".5s", 0.5),
        ("500ms", 0.5),
        ("1m30s500ms", 90.5),
        ("250us", 250e-6),
        ("250µs", 250e-6),
        ("1500ns", 1500e-9),
        ("0s", 0.0),
        ("720h", 30 * 24 * 3600.0),
        ("30", 30.0),
        ("0.25", 0.25),
        ("0", 0.0),
        ("  15m  ", 900.0),
    ],
)
def test_parse_duration(raw: str, seconds: float) -> None:
    assert parse_duration(raw) == pytest.approx(seconds, rel=1e-12)


@pytest.mark.parametrize(
    "raw",
    [
        "",
        "   ",
        "15x",
        "m",
        "h1",
        "15M",
        "1d",
        "1h 30m",
        "15m junk",
        "-5s",
        "-1",
        "inf",
        "nan",
        "721h",
        "2592001",
    ],
)
def test_parse_duration_rejects(raw: str) -> None:
    with pytest.raises(ValueError) as err:
        parse_duration(raw)
    if raw.strip():
        assert repr(raw) in str(err.value)
