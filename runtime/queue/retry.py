"""Retry policy for async calls: parsed from `com.openfaas.retry.*` annotations, decided purely.

Semantics follow the OpenFaaS Pro queue-worker: ``attempts`` is the total number of tries
(first one included), ``codes`` the HTTP statuses worth another try, ``min_wait`` the wait before
the first retry and ``max_wait`` the cap. Between those we back off exponentially with full
jitter (AWS "Exponential Backoff And Jitter"): the n-th retry waits a uniform random time in
``[min_wait, min(max_wait, min_wait·2^(n-1))]``. A ``Retry-After`` answer (seconds or an HTTP
date) replaces the computed delay, kept within ``[min_wait, max_wait]``.
"""

from __future__ import annotations

import enum
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime
from email.utils import parsedate_to_datetime

from runtime.errors import InvalidSpec
from runtime.labels import int_annotation
from watchdog.durations import parse_duration

ATTEMPTS = "com.openfaas.retry.attempts"
CODES = "com.openfaas.retry.codes"
MIN_WAIT = "com.openfaas.retry.min_wait"
MAX_WAIT = "com.openfaas.retry.max_wait"

DEFAULT_CODES = frozenset({408, 429, 500, 502, 503, 504})
MAX_ATTEMPTS = 1000
MAX_WAIT_S = 24 * 3600.0


def parse_duration_s(text: str) -> float:
    """Plain seconds (``10``, ``1.5``) or a Go duration (``500ms``, ``1m30s``) → seconds;
    ValueError otherwise. One parser for the daemon and the watchdog, so an annotation means
    the same on both sides."""
    return parse_duration(text)


def parse_codes(text: str) -> frozenset[int]:
    """``429,502,503`` or ranges ``500-504`` (mixable, spaces allowed) → status codes."""
    codes: set[int] = set()
    for raw_item in text.split(","):
        item = raw_item.strip()
        if not item:
            continue
        low_s, dash, high_s = item.partition("-")
        try:
            low = int(low_s.strip())
            high = int(high_s.strip()) if dash else low
        except ValueError:
            raise ValueError(f"{item!r} is not a status code or a range like 500-504") from None
        if not (100 <= low <= 599 and 100 <= high <= 599):
            raise ValueError(f"{item!r} is outside the HTTP status range 100-599")
        if high < low:
            raise ValueError(f"{item!r} is an empty range")
        codes.update(range(low, high + 1))
    if not codes:
        raise ValueError("no status codes given")
    return frozenset(codes)


@dataclass(frozen=True)
class RetryPolicy:
    attempts: int = 10
    codes: frozenset[int] = DEFAULT_CODES
    min_wait_s: float = 10.0
    max_wait_s: float = 120.0
    retry_connection_errors: bool = True

    def __post_init__(self) -> None:
        if not 1 <= self.attempts <= MAX_ATTEMPTS:
            raise InvalidSpec(f"retry attempts {self.attempts} is outside 1-{MAX_ATTEMPTS}")
        if not 0 <= self.min_wait_s <= self.max_wait_s <= MAX_WAIT_S:
            raise InvalidSpec(
                f"retry waits must satisfy 0 <= min_wait ({self.min_wait_s:g}s) <= max_wait "
                f"({self.max_wait_s:g}s) <= {MAX_WAIT_S:g}s"
            )

    @classmethod
    def from_annotations(
        cls, annotations: Mapping[str, str], default: RetryPolicy | None = None
    ) -> RetryPolicy:
        """``default`` (the daemon's settings) overridden by the function's annotations.

        Bad values raise InvalidSpec naming the annotation, so a deploy can be refused early."""
        base = default or cls()
        attempts, codes = base.attempts, base.codes
        min_wait_s, max_wait_s = base.min_wait_s, base.max_wait_s
        attempts = int_annotation(annotations, ATTEMPTS, attempts, 1, MAX_ATTEMPTS)
        if (raw := annotations.get(CODES, "").strip()) != "":
            try:
                codes = parse_codes(raw)
            except ValueError as exc:
                raise InvalidSpec(f"annotation {CODES}: {exc}") from None
        for key in (MIN_WAIT, MAX_WAIT):
            if (raw := annotations.get(key, "").strip()) == "":
                continue
            try:
                value = parse_duration_s(raw)
            except ValueError:
                raise InvalidSpec(
                    f"annotation {key}: {raw!r} is not a duration (use 500ms, 10s, 2m)"
                ) from None
            if value > MAX_WAIT_S:
                raise InvalidSpec(f"annotation {key}: {raw!r} is longer than 24h")
            if key == MIN_WAIT:
                min_wait_s = value
            else:
                max_wait_s = value
        if min_wait_s > max_wait_s:
            given_min = MIN_WAIT in annotations and annotations[MIN_WAIT].strip() != ""
            culprit = MIN_WAIT if given_min else MAX_WAIT
            raise InvalidSpec(
                f"annotation {culprit}: min_wait {min_wait_s:g}s is longer than max_wait "
                f"{max_wait_s:g}s"
            )
        return cls(attempts, codes, min_wait_s, max_wait_s, base.retry_connection_errors)

    def backoff_s(self, retry: int, rand: Callable[[], float]) -> float:
        """Wait before retry number ``retry`` (1 = the first retry); ``rand`` in [0, 1)."""
        exponent = min(max(retry - 1, 0), 62)
        ceiling = min(self.max_wait_s, self.min_wait_s * math.pow(2, exponent))
        return self.min_wait_s + rand() * (ceiling - self.min_wait_s)


def parse_retry_after_s(value: str | None, now: float) -> float | None:
    """``Retry-After`` as seconds from ``now`` (unix seconds): delta-seconds or an HTTP date.

    Unparseable values give None (fall back to the computed back-off), as OpenFaaS does."""
    if value is None:
        return None
    text = value.strip()
    if text.isdigit():
        return float(int(text))
    try:
        when: datetime = parsedate_to_datetime(text)
    except (TypeError, ValueError, IndexError):
        return None
    if when.tzinfo is None:
        return None
    return max(0.0, when.timestamp() - now)


class Outcome(enum.Enum):
    SUCCEEDED = "succeeded"  # a final answer the caller wanted (status < 400)
    FAILED = "failed"  # a final answer not worth retrying (e.g. 400, 404)
    RETRY = "retry"  # try again after delay_s
    DEAD_LETTER = "dead_letter"  # retryable, but this was the last attempt


@dataclass(frozen=True)
class Decision:
    outcome: Outcome
    delay_s: float = 0.0


def decide(
    policy: RetryPolicy,
    attempt: int,
    status: int | None,
    *,
    retry_after: str | None = None,
    now: float = 0.0,
    rand: Callable[[], float],
) -> Decision:
    """What to do after attempt number ``attempt`` (1-based) ended with ``status``
    (None = the function could not be reached: connection refused, reset, no replica)."""
    if status is not None and status < 400:
        return Decision(Outcome.SUCCEEDED)
    retryable = policy.retry_connection_errors if status is None else status in policy.codes
    if not retryable:
        return Decision(Outcome.FAILED)
    if attempt >= policy.attempts:
        return Decision(Outcome.DEAD_LETTER)
    delay_s = policy.backoff_s(attempt, rand)
    hinted_s = parse_retry_after_s(retry_after, now)
    if hinted_s is not None:
        delay_s = min(policy.max_wait_s, max(policy.min_wait_s, hinted_s))
    return Decision(Outcome.RETRY, delay_s)
