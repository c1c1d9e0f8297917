"""The scaling policy: pure functions of a function's settings, its recent load and the time.

OpenFaaS's formula, ``desired = ceil(load / (target * proportion))`` clamped to [min, max], plus:
- a panic mode for bursts (Knative's idea): when the demand over the short window needs twice
  the replicas running (or more), scale up at once and do not scale down while it lasts;
- a scale-down window: go down only to the highest recommendation of the last window, never
  sooner than a window after the replica count was last set by someone else, at most halving
  per step;
- idle tiers: nothing started and nothing in flight for ``pause-after`` → down to the idle floor
  (min, or 0 with scale to zero; the replicas beyond it are paused by the manager), and with
  scale to zero, for ``zero-duration`` → 0.
No clock, no I/O: the autoscaler loop passes the time in, so table tests drive every rule.
"""

from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass, field

from runtime.scaling.config import ScalingConfig

PANIC_WINDOW_S = 6.0
PANIC_THRESHOLD = 2.0  # demand ≥ this * the replicas running → panic


@dataclass(frozen=True, slots=True)
class Observation:
    now: float  # seconds, monotonic
    replicas: int  # active replicas: ready or starting (not paused, not draining)
    stable_load: float  # in the scale type's unit, over the stable window
    panic_load: float  # the same over the panic window (demand)
    idle_s: float  # since the last request started, or the function last became active
    in_flight: int = 0
    busy: bool = False  # other work pending for it (e.g. queued async calls)


@dataclass
class PolicyState:
    """What the policy remembers about one function between ticks."""

    since: float  # when the replica count was last set from outside (deploy, API, activator)
    panic_until: float = -math.inf
    history: deque[tuple[float, int]] = field(default_factory=deque)

    def reset(self, now: float) -> None:
        """The replica count was set from outside: hold it for a down window from now."""
        self.since = now
        self.history.clear()


@dataclass(frozen=True, slots=True)
class Decision:
    replicas: int
    load: float
    panic: bool
    reason: str  # the scale type, "idle" or "zero"


def recommend(load: float, config: ScalingConfig) -> int:
    """Replicas needed for ``load``: ceil(load / (target * proportion)); 0 for no load."""
    if load <= 0:
        return 0
    # Round away float noise (e.g. 90.00000000000001 / 90) before the ceiling.
    return math.ceil(round(load / (config.target * config.proportion), 9))


def decide(config: ScalingConfig, state: PolicyState, obs: Observation) -> Decision:
    now = obs.now
    idle = obs.in_flight == 0 and not obs.busy
    if idle and config.zero and obs.idle_s >= config.zero_duration_s:
        return Decision(0, 0.0, False, "zero")
    if idle and config.pause_after_s > 0 and obs.idle_s >= config.pause_after_s:
        state.panic_until = -math.inf
        return Decision(config.idle_floor, 0.0, False, "idle")

    stable = recommend(obs.stable_load, config)
    burst = recommend(obs.panic_load, config)
    if burst > obs.replicas and burst >= PANIC_THRESHOLD * max(obs.replicas, 1):
        state.panic_until = now + PANIC_WINDOW_S
    panic = now < state.panic_until
    want = max(stable, burst) if panic else stable
    if obs.in_flight > 0 or obs.busy:
        want = max(want, 1)  # never away from a function at work
    want = min(max(want, config.active_floor), config.max)
    load = max(obs.stable_load, obs.panic_load) if panic else obs.stable_load

    history = state.history
    while history and history[0][0] <= now - config.down_window_s:
        history.popleft()
    history.append((now, want))  # after the pruning: a down window of 0 keeps this one
    if want >= obs.replicas or panic or now - state.since < config.down_window_s:
        return Decision(max(want, obs.replicas), load, panic, config.type)  # up at once
    target = max(w for _, w in history)
    target = max(target, math.ceil(obs.replicas / 2), config.active_floor)
    return Decision(min(target, obs.replicas), load, panic, config.type)
