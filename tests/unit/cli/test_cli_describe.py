"""`localfaas describe`: the Replicas and Scaling lines, from a function's status and labels."""

from __future__ import annotations

import pytest

from runtime.cli import _duration, _replicas_line, _scaling_line


@pytest.mark.parametrize(
    ("status", "line"),
    [
        ({"availableReplicas": 2, "replicas": 3}, "2/3"),
        ({"availableReplicas": 0, "replicas": 0, "pausedReplicas": 1}, "0/0 (1 paused)"),
        ({}, "0/0"),
    ],
)
def test_replicas_line(status: dict[str, int], line: str) -> None:
    assert _replicas_line(status) == line


@pytest.mark.parametrize(
    ("labels", "line"),
    [
        (
            {},
            "rps, target 50 requests/s per replica (90%), 1-20 replicas;"
            " replicas beyond the minimum paused after 30s idle",
        ),
        (
            {
                "com.openfaas.scale.zero": "true",
                "com.openfaas.scale.type": "capacity",
                "com.openfaas.scale.target": "5",
                "com.openfaas.scale.zero-duration": "1h30m",
            },
            "capacity, target 5 in flight per replica (90%), 1-20 replicas;"
            " replicas paused after 30s idle, to zero after 1h30m idle",
        ),
        (
            {"com.openfaas.scale.type": "cpu", "com.localfaas.scale.pause-after": "0"},
            "cpu, target 50 milli-CPU per replica (90%), 1-20 replicas",
        ),
        ({"com.openfaas.scale.min": "2", "com.openfaas.scale.max": "2"}, "fixed at 2 replicas"),
        (
            {"com.openfaas.scale.min": "x"},
            "invalid (label com.openfaas.scale.min: 'x' is not a whole number)",
        ),
    ],
)
def test_scaling_line(labels: dict[str, str], line: str) -> None:
    assert _scaling_line(labels) == line


@pytest.mark.parametrize(
    ("seconds", "text"),
    [(30, "30s"), (2.5, "2.5s"), (900, "15m"), (5400, "1h30m"), (3661, "1h1m1s")],
)
def test_duration(seconds: float, text: str) -> None:
    assert _duration(seconds) == text
