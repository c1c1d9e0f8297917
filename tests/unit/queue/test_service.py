"""The async service's pure decisions: per-function concurrency, deploy-time annotation checks,
and the callback policy the service builds for the daemon's own /system API."""

from __future__ import annotations

import pytest

from runtime.errors import InvalidSpec
from runtime.models import FunctionSpec
from runtime.queue.callbacks import CallbackPolicy
from runtime.queue.retry import ATTEMPTS, CODES, MAX_WAIT, MIN_WAIT
from runtime.queue.service import (
    CONCURRENCY_ANNOTATION,
    MAX_CONCURRENCY,
    async_concurrency,
    validate_async_annotations,
)


def spec(**annotations: str) -> FunctionSpec:
    return FunctionSpec(name="fn", image="img", annotations=annotations)


def concurrency(value: str) -> dict[str, str]:
    return {CONCURRENCY_ANNOTATION: value}


@pytest.mark.parametrize(
    ("annotations", "replicas", "expected"),
    [
        ({}, 1, 1),
        ({}, 4, 4),  # one per replica of capacity
        ({}, 0, 1),  # scaled to zero still drains its queue
        (concurrency(""), 3, 3),  # empty means unset
        (concurrency("  "), 3, 3),
        (concurrency("5"), 1, 5),  # the annotation wins over the replicas
        (concurrency(" 2 "), 7, 2),
        (concurrency("1"), 0, 1),
        (concurrency(str(MAX_CONCURRENCY)), 1, MAX_CONCURRENCY),
    ],
)
def test_async_concurrency(annotations: dict[str, str], replicas: int, expected: int) -> None:
    assert async_concurrency(spec(**annotations), replicas) == expected


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("many", "is not a whole number"),
        ("1.5", "is not a whole number"),
        ("0", "is outside 1-1000"),
        ("-1", "is outside 1-1000"),
        (str(MAX_CONCURRENCY + 1), "is outside 1-1000"),
    ],
)
def test_async_concurrency_refuses_bad_values(value: str, message: str) -> None:
    with pytest.raises(InvalidSpec, match=message) as caught:
        async_concurrency(spec(**concurrency(value)), 3)
    assert CONCURRENCY_ANNOTATION in str(caught.value)


@pytest.mark.parametrize(
    "annotations",
    [
        {},
        {"com.openfaas.scale.min": "2", "topic": "orders"},  # others are not ours to judge
        concurrency("3"),
        {ATTEMPTS: "1"},
        {ATTEMPTS: "1000"},
        {CODES: "429,500-504"},
        {CODES: " 502 , 503 "},
        {MIN_WAIT: "100ms", MAX_WAIT: "200ms"},
        {MIN_WAIT: "0", MAX_WAIT: "0"},
        {MIN_WAIT: "1.5", MAX_WAIT: "2m"},
        {MIN_WAIT: "30s"},  # under the default max_wait
        {MAX_WAIT: "24h"},
        {ATTEMPTS: "", CODES: "", MIN_WAIT: "", MAX_WAIT: ""},  # empty means default
    ],
)
def test_valid_annotations_pass(annotations: dict[str, str]) -> None:
    validate_async_annotations(spec(**annotations))


@pytest.mark.parametrize(
    ("annotations", "named"),
    [
        (concurrency("x"), CONCURRENCY_ANNOTATION),
        (concurrency("0"), CONCURRENCY_ANNOTATION),
        ({ATTEMPTS: "0"}, ATTEMPTS),
        ({ATTEMPTS: "1001"}, ATTEMPTS),
        ({ATTEMPTS: "three"}, ATTEMPTS),
        ({CODES: "5xx"}, CODES),
        ({CODES: "99"}, CODES),
        ({CODES: "600"}, CODES),
        ({CODES: "504-500"}, CODES),
        ({CODES: ","}, CODES),
        ({MIN_WAIT: "soon"}, MIN_WAIT),
        ({MIN_WAIT: "-1s"}, MIN_WAIT),
        ({MAX_WAIT: "25h"}, MAX_WAIT),
        ({MIN_WAIT: "2s", MAX_WAIT: "1s"}, MIN_WAIT),  # the min given: it is the culprit
        ({MAX_WAIT: "1s"}, MAX_WAIT),  # below the default min_wait of 10s
        ({MIN_WAIT: "3m"}, MIN_WAIT),  # above the default max_wait of 2m
    ],
)
def test_bad_annotations_are_named(annotations: dict[str, str], named: str) -> None:
    with pytest.raises(InvalidSpec) as caught:
        validate_async_annotations(spec(**annotations))
    assert str(caught.value).startswith(f"annotation {named}:"), caught.value


# The component gateway fixture builds its queue without `system_api`; what the daemon passes
# (its listen address, plus the Docker bridge address) is checked here on the policy itself.
DAEMON = CallbackPolicy.build(system_api=[("127.0.0.1", 8080), ("172.17.0.1", 8080)])


@pytest.mark.parametrize(
    ("address", "port", "path", "refused"),
    [
        ("127.0.0.1", 8080, "/system/functions", "/system API"),
        ("127.0.0.1", 8080, "/SYSTEM/async/calls/x", "/system API"),
        ("127.0.0.1", 8080, "/function/../system/secrets", "/system API"),
        ("127.0.0.1", 8080, "/%73ystem/info", "/system API"),
        ("127.0.0.5", 8080, "/system/info", "/system API"),  # any loopback address
        ("::1", 8080, "/system/info", "/system API"),
        ("::ffff:127.0.0.1", 8080, "/system/info", "/system API"),
        ("172.17.0.1", 8080, "/system/functions", "/system API"),
        ("169.254.169.254", 80, "/latest/meta-data", "denied range"),
        ("127.0.0.1", 8080, "/function/next", None),  # chaining functions is fine
        ("127.0.0.1", 8080, "/async-function/next", None),
        ("127.0.0.1", 8081, "/system/functions", None),  # someone else's /system
        ("172.17.0.2", 8080, "/system/functions", None),
        ("203.0.113.7", 8080, "/system/functions", None),
    ],
)
def test_callback_policy_guards_the_daemons_system_api(
    address: str, port: int, path: str, refused: str | None
) -> None:
    reason = DAEMON.refusal(address, port, path)
    if refused is None:
        assert reason is None
    else:
        assert reason is not None and refused in reason


def test_consumer_names_round_trip_and_others_are_ignored() -> None:
    from runtime.queue.streams import consumer_name, parse_consumer_name

    assert parse_consumer_name(consumer_name("openfaas-fn", "a-b")) == ("openfaas-fn", "a-b")
    for other in ("", "fn_", "fn_ns", "dlq_openfaas-fn_x", "fn_Bad_x", "fn_ns_x_y"):
        assert parse_consumer_name(other) is None, other
