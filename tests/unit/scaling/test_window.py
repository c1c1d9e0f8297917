"""1-second samples from cumulative counters, and the (stable, panic) loads built on them."""

from __future__ import annotations

import pytest

from runtime.metrics import FunctionMetrics
from runtime.scaling.window import LoadWindow, Sample


def finish(stats: FunctionMetrics, status: int, count: int) -> None:
    for _ in range(count):
        stats.finished(status, 0.01)


def test_first_observe_only_primes() -> None:
    stats = FunctionMetrics()
    stats.started = 120
    finish(stats, 200, 100)
    finish(stats, 500, 15)
    stats.in_flight, stats.peak_in_flight = 5, 9
    window = LoadWindow()
    sample = window.observe(stats, millicpu=250.0)
    # What happened before the first look is not this second's load.
    assert sample == Sample(started=0, completed=0, errors=0, peak_in_flight=9, millicpu=250.0)
    assert len(window) == 1
    assert window.latest == sample


# Per second: (requests started, {status: finished}, expected sample).
TICKS: list[tuple[int, dict[int, int], Sample]] = [
    (0, {}, Sample()),
    (10, {200: 8}, Sample(started=10, completed=8)),
    (3, {200: 2, 404: 1, 500: 2}, Sample(started=3, completed=5, errors=2)),
    (0, {503: 1, 429: 4}, Sample(completed=5, errors=1)),
    (0, {}, Sample()),
    (7, {504: 1, 502: 1, 200: 5}, Sample(started=7, completed=7, errors=2)),
]


def test_samples_are_deltas_of_the_counters() -> None:
    stats = FunctionMetrics()
    stats.started = 50
    finish(stats, 200, 40)
    window = LoadWindow()
    window.observe(stats)  # primes at 50 started, 40 completed
    samples = []
    for started, finished, _ in TICKS:
        stats.started += started
        for status, count in finished.items():
            finish(stats, status, count)
        samples.append(window.observe(stats))
    assert samples == [expected for *_, expected in TICKS]
    assert len(window) == len(TICKS) + 1


@pytest.mark.parametrize(
    ("status", "errors"),
    [
        (200, 0),
        (202, 0),
        (301, 0),
        (400, 0),
        (404, 0),
        (429, 0),
        (499, 0),
        (500, 1),
        (502, 1),
        (503, 1),
        (504, 1),
        (599, 1),
    ],
)
def test_errors_are_5xx(status: int, errors: int) -> None:
    stats = FunctionMetrics()
    window = LoadWindow()
    window.observe(stats)
    finish(stats, status, 1)
    sample = window.observe(stats)
    assert (sample.completed, sample.errors) == (1, errors)


def test_in_flight_peak_restarts_from_the_current_count() -> None:
    stats = FunctionMetrics()
    window = LoadWindow()
    stats.in_flight, stats.peak_in_flight = 2, 12
    assert window.observe(stats).peak_in_flight == 12
    assert stats.peak_in_flight == 2  # reset to what is in flight now
    stats.in_flight = 1  # requests finished, none started: the peak stays 2
    assert window.observe(stats).peak_in_flight == 2
    assert stats.peak_in_flight == 1
    stats.in_flight = 4  # in flight above the recorded peak still counts
    assert window.observe(stats).peak_in_flight == 4
    stats.in_flight = 0
    assert window.observe(stats).peak_in_flight == 4
    assert window.observe(stats).peak_in_flight == 0


def test_counters_that_go_back_give_zero_not_negative() -> None:
    stats = FunctionMetrics()
    stats.started = 10
    finish(stats, 500, 10)
    window = LoadWindow()
    window.observe(stats)
    fresh = FunctionMetrics()  # e.g. the function's metrics were recreated
    fresh.started = 3
    finish(fresh, 200, 1)
    assert window.observe(fresh) == Sample()
    fresh.started += 2
    finish(fresh, 500, 2)
    assert window.observe(fresh) == Sample(started=2, completed=2, errors=2)


def test_keeps_a_bounded_number_of_samples() -> None:
    window = LoadWindow(keep=5)
    for i in range(8):
        window.add(Sample(completed=i))
    assert len(window) == 5
    assert window.completed_per_s(100) == (3 + 4 + 5 + 6 + 7) / 5


def filled(samples: list[Sample]) -> LoadWindow:
    window = LoadWindow()
    for sample in samples:
        window.add(sample)
    return window


@pytest.mark.parametrize(
    ("kind", "samples", "load"),
    [
        ("rps", [], (0.0, 0.0)),
        ("capacity", [], (0.0, 0.0)),
        ("cpu", [], (0.0, 0.0)),
        # Fewer samples than either window: averaged over those seen.
        ("rps", [Sample(started=4, completed=10), Sample(started=8, completed=20)], (15.0, 6.0)),
        ("rps", [Sample(started=9, completed=9)], (9.0, 9.0)),
        ("capacity", [Sample(peak_in_flight=2), Sample(peak_in_flight=6)], (4.0, 6.0)),
        ("cpu", [Sample(millicpu=100.0), Sample(millicpu=300.0)], (200.0, 300.0)),
        # More than the stable window: only its last 30 samples; panic: the last 6.
        (
            "rps",
            [Sample(completed=1000)] * 10 + [Sample(completed=30, started=i) for i in range(30)],
            (30.0, (24 + 25 + 26 + 27 + 28 + 29) / 6),
        ),
        (
            "capacity",
            [Sample(peak_in_flight=50)] * 24 + [Sample(peak_in_flight=1)] * 6,
            ((50 * 24 + 6) / 30, 1.0),
        ),
        (
            "capacity",
            [Sample(peak_in_flight=50)] * 25 + [Sample(peak_in_flight=1)] * 5,
            ((50 * 25 + 5) / 30, 50.0),
        ),
        (
            "cpu",
            [Sample(millicpu=900.0)] * 30 + [Sample(millicpu=0.0)] * 10,
            (900.0 * 20 / 30, 0.0),
        ),
    ],
)
def test_load(kind: str, samples: list[Sample], load: tuple[float, float]) -> None:
    stable, panic = filled(samples).load(kind)
    assert (stable, panic) == pytest.approx(load)


def test_observed_samples_feed_the_load() -> None:
    stats = FunctionMetrics()
    window = LoadWindow()
    window.observe(stats)
    for second in range(1, 4):
        stats.started += 10 * second
        finish(stats, 200, 10 * second)
        window.observe(stats, millicpu=100.0 * second)
    # Four samples: the priming one (zeros) and 10, 20, 30.
    assert window.load("rps") == pytest.approx((15.0, 15.0))
    assert window.load("cpu") == pytest.approx((150.0, 300.0))
