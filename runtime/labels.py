"""Scaling labels read from a FunctionSpec (the part the daemon needs before the autoscaler),
and the one parser of whole-number annotations."""

from __future__ import annotations

from collections.abc import Mapping
from typing import overload

from runtime.errors import InvalidSpec
from runtime.models import FunctionSpec

SCALE_MIN = "com.openfaas.scale.min"
SCALE_MAX = "com.openfaas.scale.max"
DEFAULT_MIN_REPLICAS = 1
DEFAULT_MAX_REPLICAS = 20


def _int_label(spec: FunctionSpec, key: str, default: int, minimum: int) -> int:
    raw = spec.labels.get(key)
    if raw is None or raw == "":
        return default
    try:
        value = int(raw)
    except ValueError:
        raise InvalidSpec(f"label {key}: {raw!r} is not a whole number") from None
    if value < minimum:
        raise InvalidSpec(f"label {key}: {value} is below {minimum}")
    return value


def min_replicas(spec: FunctionSpec) -> int:
    return _int_label(spec, SCALE_MIN, DEFAULT_MIN_REPLICAS, 0)


def max_replicas(spec: FunctionSpec) -> int:
    return _int_label(spec, SCALE_MAX, DEFAULT_MAX_REPLICAS, 1)


def validate_scaling_labels(spec: FunctionSpec) -> None:
    low, high = min_replicas(spec), max_replicas(spec)
    if high < low:
        raise InvalidSpec(f"label {SCALE_MAX}: {high} is below {SCALE_MIN} {low}")


@overload
def int_annotation(
    annotations: Mapping[str, str], key: str, default: int, low: int, high: int
) -> int: ...


@overload
def int_annotation(
    annotations: Mapping[str, str], key: str, default: None, low: int, high: int
) -> int | None: ...


def int_annotation(
    annotations: Mapping[str, str], key: str, default: int | None, low: int, high: int
) -> int | None:
    """``annotations[key]`` as a whole number in [low, high]; ``default`` when absent or blank.
    InvalidSpec (400 at deploy) names the annotation otherwise."""
    raw = annotations.get(key, "").strip()
    if raw == "":
        return default
    try:
        value = int(raw)
    except ValueError:
        raise InvalidSpec(f"annotation {key}: {raw!r} is not a whole number") from None
    if not low <= value <= high:
        raise InvalidSpec(f"annotation {key}: {value} is outside {low}-{high}")
    return value
