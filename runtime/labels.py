"""The one parser of whole-number annotations (scaling labels: runtime.scaling.config)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import overload

from runtime.errors import InvalidSpec


@overload
def int_annotation(
    annotations: Mapping[str, str],
    key: str,
    default: int,
    low: int,
    high: int,
    *,
    kind: str = "annotation",
) -> int: ...


@overload
def int_annotation(
    annotations: Mapping[str, str],
    key: str,
    default: None,
    low: int,
    high: int,
    *,
    kind: str = "annotation",
) -> int | None: ...


def int_annotation(
    annotations: Mapping[str, str],
    key: str,
    default: int | None,
    low: int,
    high: int,
    *,
    kind: str = "annotation",
) -> int | None:
    """``annotations[key]`` as a whole number in [low, high]; ``default`` when absent or blank.
    InvalidSpec (400 at deploy) names the annotation (or label: ``kind``) otherwise."""
    raw = annotations.get(key, "").strip()
    if raw == "":
        return default
    try:
        value = int(raw)
    except ValueError:
        raise InvalidSpec(f"{kind} {key}: {raw!r} is not a whole number") from None
    if not low <= value <= high:
        raise InvalidSpec(f"{kind} {key}: {value} is outside {low}-{high}")
    return value
