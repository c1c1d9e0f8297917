"""The pure scaling policy, driven tick by tick with made-up times and loads."""

from __future__ import annotations

import math
from dataclasses import replace

import pytest

from runtime.scaling.config import ScalingConfig
from runtime.scaling.policy import (
    PANIC_WINDOW_S,
    Decision,
    Observation,
    PolicyState,
    decide,
    recommend,
)

# target 10 at proportion 1: one replica per 10 load units, so the numbers read easily.
TENS = ScalingConfig(min=1, max=20, target=10.0, proportion=1.0, pause_after_s=0.0)
LONG_AGO = -1000.0  # no outside change within any down window


def fresh() -> PolicyState:
    return PolicyState(since=LONG_AGO)


def obs(
    now: float,
    replicas: int,
    stable: float = 0.0,
    panic: float = 0.0,
    *,
    idle_s: float = 0.0,
    in_flight: int = 0,
    busy: bool = False,
) -> Observation:
    return Observation(
        now=now,
        replicas=replicas,
        stable_load=stable,
        panic_load=panic,
        idle_s=idle_s,
        in_flight=in_flight,
        busy=busy,
    )


@pytest.mark.parametrize(
    ("load", "target", "proportion", "replicas"),
    [
        (0.0, 50.0, 0.9, 0),
        (-3.0, 50.0, 0.9, 0),
        (0.001, 50.0, 0.9, 1),
        (45.0, 50.0, 0.9, 1),
        (45.01, 50.0, 0.9, 2),
        (90.0, 50.0, 0.9, 2),
        (90.0, 100.0, 0.9, 1),  # 90 / (100 * 0.9): exactly one, not two
        (90.5, 100.0, 0.9, 2),
        (100.0, 50.0, 1.0, 2),
        (101.0, 50.0, 1.0, 3),
        # Quotients that come out a hair above a whole number in floats:
        (2.1, 1.0, 0.3, 7),  # 7.000000000000001
        (2.7, 1.0, 0.3, 9),  # 9.000000000000002
        (4.9, 1.0, 0.7, 7),  # 7.000000000000001
        (13.8, 1.0, 0.6, 23),  # 23.000000000000004
        (1000.0, 1.0, 0.5, 2000),
    ],
)
def test_recommend(load: float, target: float, proportion: float, replicas: int) -> None:
    config = ScalingConfig(target=target, proportion=proportion)
    assert recommend(load, config) == replicas


@pytest.mark.parametrize(
    ("low", "high", "load", "replicas"),
    [
        (1, 20, 0.0, 1),  # no load: the min
        (1, 20, 10.0, 1),
        (1, 20, 10.5, 2),
        (1, 20, 75.0, 8),
        (1, 20, 5000.0, 20),  # clamped to max
        (3, 20, 10.0, 3),  # clamped to min
        (0, 20, 0.0, 0),
        (2, 5, 1000.0, 5),
        (4, 4, 0.0, 4),
        (4, 4, 1000.0, 4),
    ],
)
def test_formula_clamped_to_min_and_max(low: int, high: int, load: float, replicas: int) -> None:
    config = replace(TENS, min=low, max=high)
    decision = decide(config, fresh(), obs(0.0, 0, stable=load))
    assert decision == Decision(replicas, load, False, "rps")


def test_reason_is_the_scale_type() -> None:
    config = replace(TENS, type="cpu", target=500.0)
    assert decide(config, fresh(), obs(0.0, 1, stable=1200.0)) == Decision(3, 1200.0, False, "cpu")


@pytest.mark.parametrize(
    ("replicas", "panic_load", "panic", "decided"),
    [
        (2, 40.0, True, 4),  # demand 4 = 2 * 2 running: panic
        (2, 31.0, True, 4),
        (2, 30.0, False, 2),  # demand 3 < 4: not yet
        (1, 20.0, True, 2),
        (1, 10.0, False, 1),
        (0, 10.0, False, 1),  # one replica from zero is no burst (the floor gives it anyway)
        (0, 11.0, True, 2),
        (4, 200.0, True, 20),  # at once to max
        (5, 50.0, False, 5),  # demand equals replicas
    ],
)
def test_panic_entry(replicas: int, panic_load: float, panic: bool, decided: int) -> None:
    state = fresh()
    stable = replicas * 10.0  # what the running replicas handle: no reason to change alone
    decision = decide(TENS, state, obs(0.0, replicas, stable=stable, panic=panic_load))
    assert decision.panic is panic
    assert decision.replicas == decided
    assert state.panic_until == (PANIC_WINDOW_S if panic else -math.inf)
    # Panicking, the decision reports the burst load; otherwise the stable load.
    assert decision.load == (panic_load if panic else stable)


@pytest.mark.parametrize(
    ("now", "panic", "replicas"),
    [
        (1.0, True, 8),
        (5.99, True, 8),  # six seconds after entering: still holding all 8
        (6.0, False, 4),  # over: down (window 0), at most halving
    ],
)
def test_panic_holds_six_seconds_without_scaling_down(
    now: float, panic: bool, replicas: int
) -> None:
    config = replace(TENS, down_window_s=0.0)
    state = fresh()
    entered = decide(config, state, obs(0.0, 2, stable=0.0, panic=80.0))
    assert (entered.panic, entered.replicas) == (True, 8)
    decision = decide(config, state, obs(now, 8, stable=0.0, panic=0.0))
    assert (decision.panic, decision.replicas) == (panic, replicas)


def test_a_new_burst_extends_the_panic() -> None:
    config = replace(TENS, down_window_s=0.0)
    state = fresh()
    assert decide(config, state, obs(0.0, 1, panic=40.0)).panic
    assert decide(config, state, obs(4.0, 4, panic=80.0)).replicas == 8  # 8 >= 2 * 4 again
    assert state.panic_until == 4.0 + PANIC_WINDOW_S
    assert decide(config, state, obs(9.0, 8)).panic  # past the first window's end
    assert decide(config, state, obs(10.0, 8)) == Decision(4, 0.0, False, "rps")


# (time, stable load, replicas running, replicas decided): target 10, down window 30 s.
DOWN_WINDOW_TICKS = [
    (0.0, 80.0, 8, 8),
    (10.0, 50.0, 8, 8),  # wants 5, but 8 was recommended within the window
    (20.0, 30.0, 8, 8),
    (29.9, 30.0, 8, 8),
    (30.0, 30.0, 8, 5),  # t=0 left the window: highest left is 5 (t=10); halving allows 4
    (40.0, 30.0, 5, 3),  # highest is 3 now; halving allows ceil(5/2) = 3
    (50.0, 0.0, 3, 3),
    (70.0, 0.0, 3, 2),  # 3 (t=40) left; halving from 3 stops at 2
    (71.0, 0.0, 2, 1),
    (72.0, 0.0, 1, 1),  # never below min
]


def test_down_window_holds_the_highest_recommendation() -> None:
    config = replace(TENS, down_window_s=30.0)
    state = fresh()
    decided = [
        decide(config, state, obs(now, running, stable=load)).replicas
        for now, load, running, _ in DOWN_WINDOW_TICKS
    ]
    assert decided == [expected for *_, expected in DOWN_WINDOW_TICKS]


@pytest.mark.parametrize(
    ("low", "running", "load", "replicas"),
    [
        (1, 10, 0.0, 5),
        (1, 9, 0.0, 5),
        (1, 3, 0.0, 2),
        (1, 2, 0.0, 1),
        (1, 20, 120.0, 12),  # the halving limit does not bind
        (4, 20, 0.0, 10),
        (6, 10, 0.0, 6),  # the min binds before the halving limit
    ],
)
def test_scale_down_at_most_halves(low: int, running: int, load: float, replicas: int) -> None:
    config = replace(TENS, min=low, down_window_s=30.0)
    decision = decide(config, fresh(), obs(0.0, running, stable=load))
    assert decision.replicas == replicas


def test_down_window_of_zero_scales_down_on_the_first_tick() -> None:
    config = replace(TENS, down_window_s=0.0)
    state = fresh()
    decide(config, state, obs(0.0, 8, stable=80.0))
    assert decide(config, state, obs(1.0, 8, stable=20.0)).replicas == 4
    assert decide(config, state, obs(2.0, 4, stable=20.0)).replicas == 2


@pytest.mark.parametrize(
    ("now", "replicas"),
    [(100.0, 8), (115.0, 8), (129.9, 8), (130.0, 4)],
)
def test_no_scale_down_within_a_down_window_of_an_outside_change(now: float, replicas: int) -> None:
    config = replace(TENS, down_window_s=30.0)
    state = fresh()
    decide(config, state, obs(10.0, 2, stable=200.0))  # recommends 20, before the change
    state.reset(100.0)  # e.g. the API set 8
    assert state.since == 100.0
    assert not state.history
    decision = decide(config, state, obs(now, 8, stable=0.0))
    assert decision.replicas == replicas


def test_outside_change_still_allows_scale_up_at_once() -> None:
    config = replace(TENS, down_window_s=30.0)
    state = PolicyState(since=100.0)
    assert decide(config, state, obs(100.0, 2, stable=60.0)).replicas == 6


def test_the_hold_after_an_outside_change_keeps_later_recommendations() -> None:
    config = replace(TENS, down_window_s=30.0)
    state = PolicyState(since=0.0)
    decide(config, state, obs(20.0, 8, stable=60.0))  # held: recommends 6
    # At 30 the hold is over; 6 (t=20) is still within the window.
    assert decide(config, state, obs(30.0, 8, stable=0.0)).replicas == 6
    assert decide(config, state, obs(50.0, 6, stable=0.0)).replicas == 3


ZERO = replace(TENS, zero=True, zero_duration_s=600.0, pause_after_s=30.0)
PAUSING = replace(TENS, min=2, pause_after_s=30.0)
NO_PAUSE = replace(TENS, pause_after_s=0.0)
NO_PAUSE_ZERO = replace(ZERO, pause_after_s=0.0)


@pytest.mark.parametrize(
    ("config", "running", "idle_s", "in_flight", "busy", "replicas", "reason"),
    [
        # A non-zero function idles to its min.
        (PAUSING, 5, 29.9, 0, False, 3, "rps"),  # not idle yet: an ordinary (halving) step
        (PAUSING, 5, 30.0, 0, False, 2, "idle"),
        (PAUSING, 5, 9999.0, 0, False, 2, "idle"),
        (replace(PAUSING, min=1), 5, 30.0, 0, False, 1, "idle"),
        # Requests in flight or other work pending: never idle, and at least one replica.
        (PAUSING, 5, 9999.0, 1, False, 3, "rps"),
        (PAUSING, 5, 9999.0, 0, True, 3, "rps"),
        (ZERO, 0, 9999.0, 1, False, 1, "rps"),
        (ZERO, 0, 9999.0, 0, True, 1, "rps"),
        (ZERO, 3, 9999.0, 2, True, 2, "rps"),  # down as usual, not idle
        (replace(PAUSING, min=0), 0, 0.0, 1, False, 1, "rps"),  # min 0, yet at work
        (replace(PAUSING, min=0), 0, 0.0, 0, True, 1, "rps"),
        (replace(PAUSING, min=0), 0, 0.0, 0, False, 0, "rps"),
        # Scale to zero: idle tier at pause-after, gone at zero-duration.
        (ZERO, 1, 29.0, 0, False, 1, "rps"),
        (ZERO, 3, 30.0, 0, False, 0, "idle"),
        (ZERO, 3, 599.9, 0, False, 0, "idle"),
        (ZERO, 3, 600.0, 0, False, 0, "zero"),
        (ZERO, 0, 600.0, 0, False, 0, "zero"),
        # pause-after 0: no idle step; load 0 brings it down to min through the down window.
        (NO_PAUSE, 4, 9999.0, 0, False, 2, "rps"),
        (NO_PAUSE, 1, 9999.0, 0, False, 1, "rps"),
        (NO_PAUSE_ZERO, 1, 599.0, 0, False, 1, "rps"),
        (NO_PAUSE_ZERO, 1, 600.0, 0, False, 0, "zero"),
        # zero-duration shorter than pause-after: straight to zero.
        (replace(ZERO, zero_duration_s=10.0), 2, 10.0, 0, False, 0, "zero"),
    ],
)
def test_idle_tiers(
    config: ScalingConfig,
    running: int,
    idle_s: float,
    in_flight: int,
    busy: bool,
    replicas: int,
    reason: str,
) -> None:
    decision = decide(
        config, fresh(), obs(0.0, running, idle_s=idle_s, in_flight=in_flight, busy=busy)
    )
    assert (decision.replicas, decision.reason) == (replicas, reason)


def test_going_idle_ends_a_panic() -> None:
    state = fresh()
    assert decide(PAUSING, state, obs(0.0, 2, panic=80.0)).panic
    assert decide(PAUSING, state, obs(1.0, 8, idle_s=30.0)) == Decision(2, 0.0, False, "idle")
    assert state.panic_until == -math.inf
    assert not decide(PAUSING, state, obs(2.0, 2)).panic
