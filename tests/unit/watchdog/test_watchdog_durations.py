"""Durations as of-watchdog's users write them: plain seconds or Go-style."""

from __future__ import annotations

import pytest

from watchdog.durations import parse_duration


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("0", 0.0),
        ("10", 10.0),
        ("1.5", 1.5),
        (".5", 0.5),
        ("30s", 30.0),
        ("1m", 60.0),
        ("500ms", 0.5),
        ("1m30s", 90.0),
        ("1h", 3600.0),
        ("2h45m", 9900.0),
        ("1.5h", 5400.0),
        ("0s", 0.0),
        ("250us", 0.00025),
        ("250µs", 0.00025),
        ("100ns", 1e-7),
        (" 5s ", 5.0),
    ],
)
def test_valid(text: str, seconds: float) -> None:
    assert parse_duration(text) == pytest.approx(seconds)


@pytest.mark.parametrize(
    "text",
    ["", "abc", "-1", "-5s", "10x", "s", "1m 30s", "inf", "nan", "1e3", "5 s", "1s2", "0x10"],
)
def test_invalid(text: str) -> None:
    with pytest.raises(ValueError):
        parse_duration(text)
