"""Pure rules of the NATS subjects connector: subjects, overlaps, annotations, headers."""

from __future__ import annotations

import pytest
from multidict import CIMultiDict

from connectors.nats_subjects import (
    CONCURRENCY,
    DEFAULT_CONCURRENCY,
    DURABLE,
    check_subject,
    collide,
    consumer_name,
    covers,
    durable_call_id,
    error_status,
    invocation_headers,
    plan_for,
    queue_group,
    reply_headers,
    stream_for,
)
from runtime.errors import (
    FunctionNotFound,
    InvalidSpec,
    LocalFaasError,
    NoReadyReplica,
    UpstreamFailed,
    UpstreamTimeout,
)
from runtime.models import FunctionSpec


def spec(**annotations: str) -> FunctionSpec:
    return FunctionSpec(name="fn", image="img", annotations=annotations)


@pytest.mark.parametrize(
    "subject", ["orders", "orders.eu", "orders.*", "orders.>", "a.*.c.>", "a-b_c.D9", "x.$y"]
)
def test_good_subjects(subject: str) -> None:
    assert check_subject(subject) == subject


@pytest.mark.parametrize(
    ("subject", "reason"),
    [
        ("", "empty subject"),
        ("orders..eu", "empty token"),
        (".orders", "empty token"),
        ("orders.", "empty token"),
        ("orders eu", "printable ASCII"),
        ("orders.\teu", "printable ASCII"),
        ("orders.é", "printable ASCII"),
        ("orders.>.eu", "'>' may only be the last token"),
        ("orders.eu*", "whole tokens"),
        ("orders.>x", "whole tokens"),
        (">", "literal token"),
        ("*.eu", "literal token"),
        ("$JS.API.STREAM.LIST", "internal"),
        ("$SYS.>", "internal"),
        ("$KV.bucket.key", "internal"),
        ("_INBOX.abc", "internal"),
        ("localfaas.async.>", "internal"),
        ("LocalFaas.x", "internal"),
        ("a." * 200 + "b", "longer than 255"),
    ],
)
def test_bad_subjects(subject: str, reason: str) -> None:
    with pytest.raises(InvalidSpec) as err:
        check_subject(subject)
    assert reason in str(err.value) and "topic" in str(err.value)


@pytest.mark.parametrize(
    ("pattern", "subject", "expected"),
    [
        ("orders.*", "orders.eu", True),
        ("orders.*", "orders.*", True),
        ("orders.*", "orders.eu.x", False),
        ("orders.*", "orders.>", False),
        ("orders.>", "orders.eu.x", True),
        ("orders.>", "orders.*", True),
        ("orders.>", "orders.>", True),
        ("orders.>", "orders", False),
        ("orders", "orders", True),
        ("orders", "orders.eu", False),
        ("orders.eu", "orders.*", False),
        (">", "anything.at.all", True),
        ("*.eu", "orders.eu", True),
    ],
)
def test_covers(pattern: str, subject: str, expected: bool) -> None:
    assert covers(pattern, subject) is expected


@pytest.mark.parametrize(
    ("a", "b", "expected"),
    [
        ("orders.*", "orders.eu", True),
        ("orders.*.x", "orders.eu.*", True),
        ("orders.>", "orders.eu.x", True),
        ("orders.>", "orders", False),
        ("orders.eu", "orders.us", False),
        ("orders.*", "orders.eu.x", False),
        ("orders", "invoices", False),
        ("a.b", "a.b", True),
    ],
)
def test_collide(a: str, b: str, expected: bool) -> None:
    assert collide(a, b) is expected
    assert collide(b, a) is expected


def test_plan_from_annotations() -> None:
    plan = plan_for(spec(topic=" orders.* , invoices.>,orders.*"))
    assert plan.subjects == ("orders.*", "invoices.>")
    assert not plan.durable and plan.concurrency == DEFAULT_CONCURRENCY
    assert plan_for(spec()).subjects == ()
    # `cron-function` belongs to the cron connector.
    assert plan_for(spec(topic="cron-function", schedule="* * * * *")).subjects == ()
    assert plan_for(spec(topic="cron-function,jobs.done")).subjects == ("jobs.done",)
    durable = plan_for(spec(topic="orders.eu", **{DURABLE: "True", CONCURRENCY: "3"}))
    assert durable.durable and durable.concurrency == 3
    retry = plan_for(
        spec(topic="a.b", **{DURABLE: "true", "com.openfaas.retry.min_wait": "100ms"})
    ).retry
    assert retry.min_wait_s == 0.1


@pytest.mark.parametrize(
    ("annotations", "words"),
    [
        ({"topic": "orders.*,orders.eu"}, ["topic", "overlap"]),
        ({"topic": "orders.eu,"}, ["topic", "empty subject"]),
        ({"topic": ""}, ["topic", "empty subject"]),
        ({"topic": "a b"}, ["topic", "printable"]),
        ({"topic": ",".join(f"s{i}" for i in range(65))}, ["topic", "more than 64"]),
        ({"topic": "a.b", DURABLE: "maybe"}, [DURABLE, "true or false"]),
        ({DURABLE: "true"}, [DURABLE, "topic"]),
        ({"topic": "cron-function", DURABLE: "true"}, [DURABLE, "topic"]),
        ({"topic": "a.b", CONCURRENCY: "x"}, [CONCURRENCY, "whole number"]),
        ({"topic": "a.b", CONCURRENCY: "0"}, [CONCURRENCY, "1-1000"]),
        ({"topic": "a.b", CONCURRENCY: "1001"}, [CONCURRENCY, "1-1000"]),
        (
            {"topic": "a.b", DURABLE: "true", "com.openfaas.retry.attempts": "x"},
            ["com.openfaas.retry.attempts"],
        ),
    ],
)
def test_bad_annotations(annotations: dict[str, str], words: list[str]) -> None:
    with pytest.raises(InvalidSpec) as err:
        plan_for(spec(**annotations))
    for word in words:
        assert word in str(err.value)


def test_names() -> None:
    assert queue_group("openfaas-fn", "hello") == "localfaas.fn.openfaas-fn.hello"
    a = consumer_name("openfaas-fn", "hello", "orders.*")
    assert a == consumer_name("openfaas-fn", "hello", "orders.*")
    assert a != consumer_name("openfaas-fn", "hello", "orders.>")
    assert not set(a) & set(">*. /\\\t\r\n")
    assert durable_call_id("S", 7) == durable_call_id("S", 7) != durable_call_id("S", 8)


def test_stream_for() -> None:
    streams = {"ORDERS": ("orders.>",), "JOBS": ("jobs.eu", "jobs.us")}
    assert stream_for("orders.eu", streams) == "ORDERS"
    assert stream_for("orders.*", streams) == "ORDERS"
    assert stream_for("jobs.eu", streams) == "JOBS"
    assert stream_for("jobs.*", streams) is None  # partly captured: not enough
    assert stream_for("other", streams) is None


def test_invocation_headers() -> None:
    pairs = invocation_headers(
        "orders.eu",
        {
            "X-Order": "42",
            "Connection": "close",
            "Content-Length": "9",
            "X-Topic": "spoofed",
            "Bad Name": "x",
            "X-Split": "a\r\nInjected: 1",
        },
        [("X-Delivery-Attempt", "2")],
    )
    assert pairs == [
        ("X-Order", "42"),
        ("X-Delivery-Attempt", "2"),
        ("X-Topic", "orders.eu"),
        ("X-Connector", "nats"),
    ]
    assert invocation_headers("a", None)[-2:] == [("X-Topic", "a"), ("X-Connector", "nats")]


def test_reply_headers() -> None:
    ok = reply_headers(
        200,
        CIMultiDict(
            {"Content-Type": "text/plain", "Content-Length": "2", "X-Call-Id": "c"}
        ).items(),
    )
    assert ok == {"Content-Type": "text/plain", "X-Call-Id": "c", "X-Function-Status": "200"}
    failed = reply_headers(502, (), "cannot reach\nthe function")
    assert failed == {
        "X-Function-Status": "502",
        "Nats-Service-Error-Code": "502",
        "Nats-Service-Error": "cannot reach",
    }
    assert reply_headers(500)["Nats-Service-Error"] == "function answered 500"
    assert "Status" not in failed  # nats-py reads Status: 503 as "no responders"


@pytest.mark.parametrize(
    ("exc", "status"),
    [
        (FunctionNotFound("x"), 404),
        (NoReadyReplica("x"), 503),
        (UpstreamFailed("x"), 502),
        (ConnectionResetError(), 502),
        (UpstreamTimeout("x"), 504),
        (TimeoutError(), 504),
        (LocalFaasError("x"), 500),
    ],
)
def test_error_status(exc: BaseException, status: int) -> None:
    assert error_status(exc) == status
