"""Enqueue against real JetStream: durable publish, dedupe by call id, full stream and NATS
down → QueueUnavailable (503), back up → works; status lookups of queued/unknown/malformed ids."""

from __future__ import annotations

import os
import signal
import time

import pytest

from runtime.errors import InvalidSpec, PayloadTooLarge
from runtime.queue.calls import find_queued
from runtime.queue.errors import CallNotFound, QueueUnavailable
from runtime.queue.message import Envelope, decode
from runtime.queue.status import CallState
from runtime.queue.streams import WORK_STREAM, work_subject

from .conftest import Queue, QueueFactory, eventually

pytestmark = pytest.mark.nats


async def test_enqueue_stores_the_envelope(queue: Queue) -> None:
    body = bytes(range(256)) * 10
    call_id = await queue.enqueue(
        "hello", body, headers=[("X-A", "1"), ("X-A", "2")], callback_url="http://127.0.0.1:1/cb"
    )
    msg = await queue.js.get_msg(WORK_STREAM, subject=work_subject("openfaas-fn", "hello", call_id))
    env = decode(call_id, msg.headers, msg.data)
    assert env.body == body
    assert env.headers == (("X-A", "1"), ("X-A", "2"))
    assert env.callback_url == "http://127.0.0.1:1/cb"
    assert msg.headers is not None and msg.headers["Nats-Msg-Id"] == call_id


async def test_same_call_id_is_stored_once(queue: Queue) -> None:
    env = Envelope(call_id="same-id", function="hello", namespace="openfaas-fn", body=b"1")
    first = await queue.enqueuer.enqueue(env)
    second = await queue.enqueuer.enqueue(env)
    assert not first.duplicate and second.duplicate
    assert (first.call_id, first.seq) == (second.call_id, second.seq)
    info = await queue.js.stream_info(WORK_STREAM)
    assert info.state.messages == 1


async def test_status_of_queued_unknown_and_malformed_ids(queue: Queue) -> None:
    call_id = await queue.enqueue("hello")
    status = await queue.calls.status(call_id)
    assert status.state is CallState.QUEUED
    assert (status.function, status.namespace, status.attempts) == ("hello", "openfaas-fn", 0)
    assert abs(status.enqueued_at - time.time()) < 5
    with pytest.raises(CallNotFound):
        await queue.calls.status("no-such-call")
    with pytest.raises(InvalidSpec):
        await queue.calls.status("bad.id*")
    found = await find_queued(queue.js, call_id)
    assert found is not None and found.function == "hello"


async def test_full_stream_is_unavailable_not_accepted(make_queue: QueueFactory) -> None:
    queue = await make_queue(max_msgs=2)
    await queue.enqueue()
    await queue.enqueue()
    with pytest.raises(QueueUnavailable, match="full") as caught:
        await queue.enqueue()
    assert caught.value.retry_after_s > 0


async def test_body_limits(make_queue: QueueFactory) -> None:
    queue = await make_queue()
    queue.enqueuer.max_body_bytes = 1024
    with pytest.raises(PayloadTooLarge):
        await queue.enqueue(body=b"x" * 1025)
    queue.enqueuer.max_body_bytes = 64 * 1024 * 1024
    with pytest.raises(PayloadTooLarge, match="max_payload"):
        await queue.enqueue(body=b"x" * (9 * 1024 * 1024))
    await queue.enqueue(body=b"x" * (1024 * 1024))  # the default 1 MiB limit fits


async def test_nats_down_then_back(queue: Queue) -> None:
    accepted = await queue.enqueue()
    server = queue.server
    await server.stop()
    await eventually(lambda: not queue.nc.is_connected, what="client notices")
    started = time.monotonic()
    with pytest.raises(QueueUnavailable) as caught:
        await queue.enqueue()
    assert time.monotonic() - started < 1.0  # fails fast, no publish timeout
    assert caught.value.retry_after_s > 0
    with pytest.raises(QueueUnavailable):
        await queue.calls.status(accepted)
    await server.start()  # same port: the client reconnects by itself
    await eventually(lambda: queue.nc.is_connected, what="client reconnects")
    call_id = await queue.enqueue()
    assert await queue.state(call_id) is CallState.QUEUED
    assert await queue.state(accepted) is CallState.QUEUED  # fsynced before it was acked


async def test_kill_9_loses_no_acknowledged_message(queue: Queue) -> None:
    accepted = [await queue.enqueue(body=str(i).encode()) for i in range(50)]
    os.kill(queue.server.pid or 0, signal.SIGKILL)
    await eventually(lambda: queue.server.restarts == 1 and queue.nc.is_connected, what="back")
    info = await queue.js.stream_info(WORK_STREAM)
    assert info.state.messages == 50
    for call_id in accepted[::7]:
        assert await queue.state(call_id) is CallState.QUEUED


async def test_depth_of_a_function_without_worker(queue: Queue) -> None:
    for _ in range(3):
        await queue.enqueue("gone")
    other = await queue.enqueue("kept")
    depth = await queue.calls.depth("openfaas-fn", "gone")
    assert (depth.pending, depth.in_flight, depth.total) == (3, 0, 3)
    assert (await queue.calls.depth("openfaas-fn", "kept")).total == 1
    assert await queue.state(other) is CallState.QUEUED
