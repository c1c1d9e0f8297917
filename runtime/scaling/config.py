"""A function's scaling settings, read once from its labels and checked at deploy.

OpenFaaS Pro's labels and defaults (min 1, max 20, type rps, target 50, proportion 0.90, zero
false, zero-duration 15m) plus our own idle tiers and activator queue. Every bad value is an
InvalidSpec (400 at deploy) naming the label, before anything changes.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from dataclasses import dataclass

from runtime.errors import InvalidSpec
from runtime.labels import int_annotation
from runtime.models import FunctionSpec

SCALE_MIN = "com.openfaas.scale.min"
SCALE_MAX = "com.openfaas.scale.max"
SCALE_TYPE = "com.openfaas.scale.type"
SCALE_TARGET = "com.openfaas.scale.target"
SCALE_PROPORTION = "com.openfaas.scale.target-proportion"
SCALE_ZERO = "com.openfaas.scale.zero"
SCALE_ZERO_DURATION = "com.openfaas.scale.zero-duration"
SCALE_DOWN_WINDOW = "com.localfaas.scale.down-window"
SCALE_PAUSE_AFTER = "com.localfaas.scale.pause-after"
SCALE_QUEUE_DEPTH = "com.localfaas.scale.queue-depth"

SCALE_TYPES = ("rps", "capacity", "cpu")
MAX_REPLICAS_LIMIT = 1000
MAX_QUEUE_DEPTH = 1_000_000

DEFAULT_MIN = 1
DEFAULT_MAX = 20
DEFAULT_TYPE = "rps"
DEFAULT_TARGET = 50.0
DEFAULT_PROPORTION = 0.90
DEFAULT_ZERO_DURATION_S = 15 * 60.0
DEFAULT_DOWN_WINDOW_S = 30.0
DEFAULT_PAUSE_AFTER_S = 30.0
DEFAULT_QUEUE_DEPTH = 1000


@dataclass(frozen=True, slots=True)
class ScalingConfig:
    min: int = DEFAULT_MIN
    max: int = DEFAULT_MAX
    type: str = DEFAULT_TYPE
    target: float = DEFAULT_TARGET  # per replica: requests/s, requests in flight or milli-CPU
    proportion: float = DEFAULT_PROPORTION
    zero: bool = False
    zero_duration_s: float = DEFAULT_ZERO_DURATION_S
    down_window_s: float = DEFAULT_DOWN_WINDOW_S
    pause_after_s: float = DEFAULT_PAUSE_AFTER_S  # 0: idle replicas are removed, never paused
    queue_depth: int = DEFAULT_QUEUE_DEPTH  # requests that may wait for a replica

    @property
    def fixed(self) -> bool:
        """min == max (and no scale to zero): the autoscaler leaves the function alone."""
        return self.min == self.max and not self.zero

    @property
    def active_floor(self) -> int:
        """Replicas kept while the function is in use: scale to zero happens only when idle."""
        return max(self.min, 1) if self.zero else self.min

    @property
    def idle_floor(self) -> int:
        return 0 if self.zero else self.min

    @property
    def paused_keep_s(self) -> float:
        """How long a paused replica stays before it is removed: it was idle for
        ``pause_after_s`` before it was paused, and leaves once idle for ``zero_duration_s``."""
        return max(self.zero_duration_s - self.pause_after_s, 0.0)


def scaling_config(spec: FunctionSpec) -> ScalingConfig:
    """The scaling settings of ``spec``; InvalidSpec naming the label if one is bad."""
    return scaling_from_labels(spec.labels)


def scaling_from_labels(labels: Mapping[str, str]) -> ScalingConfig:
    low = _int(labels, SCALE_MIN, DEFAULT_MIN, 0, MAX_REPLICAS_LIMIT)
    high = _int(labels, SCALE_MAX, DEFAULT_MAX, 1, MAX_REPLICAS_LIMIT)
    if high < low:
        raise InvalidSpec(f"label {SCALE_MAX}: {high} is below {SCALE_MIN} {low}")
    kind = labels.get(SCALE_TYPE, "").strip().lower() or DEFAULT_TYPE
    if kind not in SCALE_TYPES:
        raise InvalidSpec(
            f"label {SCALE_TYPE}: {labels[SCALE_TYPE]!r} is not one of {', '.join(SCALE_TYPES)}"
        )
    target = _number(labels, SCALE_TARGET, DEFAULT_TARGET)
    if target <= 0:
        raise InvalidSpec(f"label {SCALE_TARGET}: {target:g} must be above 0")
    proportion = _number(labels, SCALE_PROPORTION, DEFAULT_PROPORTION)
    if not 0 < proportion <= 1:
        raise InvalidSpec(f"label {SCALE_PROPORTION}: {proportion:g} must be above 0 and at most 1")
    zero = _switch(labels, SCALE_ZERO, False)
    zero_duration_s = _duration(labels, SCALE_ZERO_DURATION, DEFAULT_ZERO_DURATION_S)
    if zero_duration_s <= 0:
        raise InvalidSpec(f"label {SCALE_ZERO_DURATION}: must be above 0")
    return ScalingConfig(
        min=low,
        max=high,
        type=kind,
        target=target,
        proportion=proportion,
        zero=zero,
        zero_duration_s=zero_duration_s,
        down_window_s=_duration(labels, SCALE_DOWN_WINDOW, DEFAULT_DOWN_WINDOW_S),
        pause_after_s=_duration(labels, SCALE_PAUSE_AFTER, DEFAULT_PAUSE_AFTER_S),
        queue_depth=_int(labels, SCALE_QUEUE_DEPTH, DEFAULT_QUEUE_DEPTH, 1, MAX_QUEUE_DEPTH),
    )


def _raw(labels: Mapping[str, str], key: str) -> str:
    return labels.get(key, "").strip()


def _int(labels: Mapping[str, str], key: str, default: int, low: int, high: int) -> int:
    return int_annotation(labels, key, default, low, high, kind="label")


def _number(labels: Mapping[str, str], key: str, default: float) -> float:
    raw = _raw(labels, key)
    if raw == "":
        return default
    try:
        value = float(raw)
    except ValueError:
        raise InvalidSpec(f"label {key}: {raw!r} is not a number") from None
    if not math.isfinite(value):
        raise InvalidSpec(f"label {key}: {raw!r} is not a finite number")
    return value


def _switch(labels: Mapping[str, str], key: str, default: bool) -> bool:
    raw = _raw(labels, key).lower()
    if raw == "":
        return default
    if raw in ("true", "1", "yes"):
        return True
    if raw in ("false", "0", "no"):
        return False
    raise InvalidSpec(f"label {key}: {labels[key]!r} is not true or false")


# Go's time.ParseDuration units (what OpenFaaS labels use: "15m", "1h30m", "90s", "500ms").
_DURATION_PART = re.compile(r"(\d+(?:\.\d*)?|\.\d+)(ns|us|µs|ms|s|m|h)")
_UNIT_S = {"ns": 1e-9, "us": 1e-6, "µs": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0, "h": 3600.0}
MAX_DURATION_S = 30 * 24 * 3600.0


def parse_duration(raw: str) -> float:
    """Seconds in a Go duration ("15m", "1h30m", "2.5s") or a plain number of seconds.
    ValueError naming what is wrong otherwise."""
    text = raw.strip()
    if not text:
        raise ValueError("is empty")
    try:
        seconds = float(text)
    except ValueError:
        pos = 0
        seconds = 0.0
        while pos < len(text):
            match = _DURATION_PART.match(text, pos)
            if match is None:
                raise ValueError(
                    f"{raw!r} is not a duration (e.g. 30s, 15m, 1h30m, or seconds)"
                ) from None
            seconds += float(match.group(1)) * _UNIT_S[match.group(2)]
            pos = match.end()
    if not math.isfinite(seconds) or seconds < 0:
        raise ValueError(f"{raw!r} is not a duration of 0 or more")
    if seconds > MAX_DURATION_S:
        raise ValueError(f"{raw!r} is longer than 30 days")
    return seconds


def _duration(labels: Mapping[str, str], key: str, default: float) -> float:
    raw = _raw(labels, key)
    if raw == "":
        return default
    try:
        return parse_duration(raw)
    except ValueError as exc:
        raise InvalidSpec(f"label {key}: {exc}") from None
