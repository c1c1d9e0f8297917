"""Retry policy: annotation parsing and the pure decision (delays, Retry-After, last attempt)."""

from __future__ import annotations

import pytest

from runtime.errors import InvalidSpec
from runtime.queue.retry import (
    ATTEMPTS,
    CODES,
    DEFAULT_CODES,
    MAX_WAIT,
    MIN_WAIT,
    Decision,
    Outcome,
    RetryPolicy,
    decide,
    parse_codes,
    parse_duration_s,
    parse_retry_after_s,
)

NOW = 1_700_000_000.0


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("10", 10.0),
        ("1.5", 1.5),
        ("500ms", 0.5),
        ("10s", 10.0),
        ("2m", 120.0),
        ("1m30s", 90.0),
        ("1h", 3600.0),
        ("250us", 0.00025),
        (" 3s ", 3.0),
        ("0s", 0.0),
    ],
)
def test_durations(text: str, seconds: float) -> None:
    assert parse_duration_s(text) == pytest.approx(seconds)


@pytest.mark.parametrize("text", ["", "s", "10x", "-1s", "1e3", "inf", "1 s", "1.2.3s"])
def test_bad_durations(text: str) -> None:
    with pytest.raises(ValueError):
        parse_duration_s(text)


@pytest.mark.parametrize(
    ("text", "codes"),
    [
        ("429,502,503,504", {429, 502, 503, 504}),
        ("500-504", {500, 501, 502, 503, 504}),
        (" 429 , 500-502 ,", {429, 500, 501, 502}),
        ("503", {503}),
    ],
)
def test_codes(text: str, codes: set[int]) -> None:
    assert parse_codes(text) == codes


@pytest.mark.parametrize("text", ["", ",", "abc", "99", "600", "504-500", "5xx", "500-"])
def test_bad_codes(text: str) -> None:
    with pytest.raises(ValueError):
        parse_codes(text)


def test_defaults_follow_openfaas_pro_plus_503() -> None:
    policy = RetryPolicy.from_annotations({})
    assert policy == RetryPolicy(10, DEFAULT_CODES, 10.0, 120.0)
    assert DEFAULT_CODES == {408, 429, 500, 502, 503, 504}


def test_annotations_override_defaults() -> None:
    base = RetryPolicy(attempts=3, min_wait_s=1, max_wait_s=5)
    policy = RetryPolicy.from_annotations(
        {ATTEMPTS: "5", CODES: "429,503", MIN_WAIT: "500ms", MAX_WAIT: "1m"}, base
    )
    assert policy == RetryPolicy(5, frozenset({429, 503}), 0.5, 60.0)
    assert RetryPolicy.from_annotations({ATTEMPTS: ""}, base) == base


@pytest.mark.parametrize(
    ("annotations", "named"),
    [
        ({ATTEMPTS: "three"}, ATTEMPTS),
        ({ATTEMPTS: "0"}, ATTEMPTS),
        ({ATTEMPTS: "1001"}, ATTEMPTS),
        ({CODES: "5xx"}, CODES),
        ({CODES: "700"}, CODES),
        ({MIN_WAIT: "soon"}, MIN_WAIT),
        ({MAX_WAIT: "25h"}, MAX_WAIT),
        ({MIN_WAIT: "3m"}, MIN_WAIT),  # above the default max_wait of 2m
        ({MAX_WAIT: "1s"}, MAX_WAIT),  # below the default min_wait of 10s
    ],
)
def test_bad_annotations_name_the_annotation(annotations: dict[str, str], named: str) -> None:
    with pytest.raises(InvalidSpec, match=named.replace(".", r"\.")):
        RetryPolicy.from_annotations(annotations)


def test_policy_itself_validates() -> None:
    with pytest.raises(InvalidSpec):
        RetryPolicy(attempts=0)
    with pytest.raises(InvalidSpec):
        RetryPolicy(min_wait_s=5, max_wait_s=1)


@pytest.mark.parametrize(
    ("retry", "rand", "delay"),
    [
        (1, 0.0, 1.0),  # first retry: exactly min_wait
        (1, 0.99, 1.0),
        (2, 0.0, 1.0),
        (2, 0.5, 1.5),  # between 1 and 2
        (3, 1.0, 4.0),  # ceiling 4
        (4, 0.5, 4.5),  # ceiling 8
        (6, 1.0, 30.0),  # 32 clamped to max_wait
        (60, 1.0, 30.0),  # no overflow
    ],
)
def test_backoff_full_jitter_between_min_and_capped_ceiling(
    retry: int, rand: float, delay: float
) -> None:
    policy = RetryPolicy(attempts=100, min_wait_s=1.0, max_wait_s=30.0)
    assert policy.backoff_s(retry, lambda: rand) == pytest.approx(delay)


def test_zero_min_wait_gives_zero_delay() -> None:
    policy = RetryPolicy(min_wait_s=0, max_wait_s=10)
    assert policy.backoff_s(5, lambda: 0.9) == 0.0


POLICY = RetryPolicy(attempts=3, codes=frozenset({429, 503}), min_wait_s=2.0, max_wait_s=60.0)


@pytest.mark.parametrize(
    ("attempt", "status", "retry_after", "expected"),
    [
        (1, 200, None, Decision(Outcome.SUCCEEDED)),
        (1, 302, None, Decision(Outcome.SUCCEEDED)),
        (1, 400, None, Decision(Outcome.FAILED)),
        (1, 500, None, Decision(Outcome.FAILED)),  # not in this policy's codes
        (1, 503, None, Decision(Outcome.RETRY, 2.0)),
        (2, 429, None, Decision(Outcome.RETRY, 3.0)),  # rand 0.5 in [2, 4]
        (3, 503, None, Decision(Outcome.DEAD_LETTER)),  # last attempt
        (5, 503, None, Decision(Outcome.DEAD_LETTER)),  # redelivered beyond the limit
        (3, 200, None, Decision(Outcome.SUCCEEDED)),
        (1, None, None, Decision(Outcome.RETRY, 2.0)),  # connection error
        (3, None, None, Decision(Outcome.DEAD_LETTER)),
        (1, 429, "7", Decision(Outcome.RETRY, 7.0)),  # Retry-After replaces the back-off
        (1, 429, "0", Decision(Outcome.RETRY, 2.0)),  # but not below min_wait
        (1, 429, "3600", Decision(Outcome.RETRY, 60.0)),  # nor above max_wait
        (1, 429, "Tue, 14 Nov 2023 22:13:50 GMT", Decision(Outcome.RETRY, 30.0)),  # NOW + 30 s
        (1, 429, "soon", Decision(Outcome.RETRY, 2.0)),  # unparseable: ignored
        (3, 429, "5", Decision(Outcome.DEAD_LETTER)),
    ],
)
def test_decide(
    attempt: int, status: int | None, retry_after: str | None, expected: Decision
) -> None:
    got = decide(POLICY, attempt, status, retry_after=retry_after, now=NOW, rand=lambda: 0.5)
    assert got.outcome is expected.outcome
    assert got.delay_s == pytest.approx(expected.delay_s)


def test_connection_errors_can_be_excluded() -> None:
    policy = RetryPolicy(retry_connection_errors=False)
    assert decide(policy, 1, None, rand=lambda: 0).outcome is Outcome.FAILED


@pytest.mark.parametrize(
    ("value", "seconds"),
    [
        (None, None),
        ("12", 12.0),
        (" 3 ", 3.0),
        ("-1", None),
        ("1.5", None),
        ("Tue, 14 Nov 2023 22:13:50 GMT", 30.0),
        ("Tue, 14 Nov 2023 22:12:00 GMT", 0.0),  # in the past
        ("yesterday", None),
    ],
)
def test_retry_after(value: str | None, seconds: float | None) -> None:
    got = parse_retry_after_s(value, NOW)
    assert got == (pytest.approx(seconds) if seconds is not None else None)
