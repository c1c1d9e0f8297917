"""Workers against real JetStream: success and callbacks, retries with their delays, dead
letters and replay, lease kept by in_progress, cancel, duplicates, concurrency, isolation
between functions, and kill -9 of nats-server with nothing accepted lost."""

from __future__ import annotations

import asyncio
import itertools
import os
import signal
import time

import pytest

from runtime.errors import FunctionNotFound, NoReadyReplica
from runtime.queue.errors import CallConflict, CallNotFound, QueueUnavailable
from runtime.queue.message import MSG_ID_HEADER, Envelope, encode
from runtime.queue.retry import RetryPolicy
from runtime.queue.status import CallState
from runtime.queue.streams import WORK_STREAM, work_subject

from .conftest import FakeFunction, Queue, QueueFactory, Receiver, eventually

pytestmark = pytest.mark.nats


async def test_success_with_callback(queue: Queue, receiver: Receiver) -> None:
    fn = FakeFunction(default=(201, {"Content-Type": "application/json", "X-Fn": "1"}, b'{"a":1}'))
    workers = await queue.workers(fn)
    await workers.ensure("openfaas-fn", "hello")
    call_id = await queue.enqueue(
        body=b"\x00in", headers=[("X-In", "v")], callback_url=receiver.url
    )
    status = await queue.wait_state(call_id, CallState.SUCCEEDED)
    await eventually(lambda: len(receiver.received) == 1, what="callback")
    await eventually(lambda: queue.calls.status(call_id), what="status")  # readable at any time
    assert fn.count(call_id) == 1
    env = fn.envelopes[0]
    assert env.body == b"\x00in" and env.header("X-In") == "v"
    headers, body, _ = receiver.received[0]
    assert body == b'{"a":1}'
    assert headers["X-Call-Id"] == call_id
    assert headers["X-Function-Name"] == "hello.openfaas-fn"
    assert headers["X-Function-Status"] == "201"
    assert headers["X-Call-Attempt"] == "1"
    assert float(headers["X-Duration-Seconds"]) >= 0
    assert headers["X-Fn"] == "1" and headers["Content-Type"] == "application/json"
    assert (status.attempts, status.last_status) == (1, 201)
    await eventually(lambda: _callback_state(queue, call_id, "delivered"), what="callback recorded")
    await eventually(lambda: _stream_empty(queue), what="acked message removed")


async def _callback_state(queue: Queue, call_id: str, state: str) -> bool:
    return (await queue.calls.status(call_id)).callback_state == state


async def _stream_empty(queue: Queue) -> bool:
    return (await queue.js.stream_info(WORK_STREAM)).state.messages == 0


async def test_retries_503_503_200_with_backoff_delays(queue: Queue) -> None:
    call_id = "retry-me"
    fn = FakeFunction(
        script={call_id: [(503, {}, b"busy"), (503, {}, b"busy"), (200, {}, b"done")]}
    )
    # rand → 1.0: each delay is its ceiling, min_wait·2^(n-1): 0.2 s, then 0.4 s.
    policy = RetryPolicy(attempts=3, min_wait_s=0.2, max_wait_s=5.0)
    workers = await queue.workers(fn, policy=policy, rand=lambda: 1.0)
    await workers.ensure("openfaas-fn", "hello")
    await queue.enqueue(call_id=call_id)
    status = await queue.wait_state(call_id, CallState.SUCCEEDED)
    times = fn.times(call_id)
    assert len(times) == 3
    gaps = [b - a for a, b in itertools.pairwise(times)]
    assert 0.2 <= gaps[0] < 0.2 + 0.25, gaps
    assert 0.4 <= gaps[1] < 0.4 + 0.25, gaps
    assert [h.status for h in status.history] == [503, 503, 200]
    assert status.attempts == 3 and status.last_status == 200


async def test_retry_after_is_honoured(queue: Queue) -> None:
    call_id = "slow-down"
    fn = FakeFunction(script={call_id: [(429, {"Retry-After": "1"}, b""), (200, {}, b"")]})
    workers = await queue.workers(fn, policy=RetryPolicy(attempts=2, min_wait_s=0.05, max_wait_s=5))
    await workers.ensure("openfaas-fn", "hello")
    await queue.enqueue(call_id=call_id)
    await queue.wait_state(call_id, CallState.SUCCEEDED)
    first, second = fn.times(call_id)
    assert 1.0 <= second - first < 1.3


async def test_status_while_waiting_for_a_retry(queue: Queue) -> None:
    call_id = "waiting"
    fn = FakeFunction(script={call_id: [(502, {}, b"")]})
    workers = await queue.workers(fn, policy=RetryPolicy(attempts=2, min_wait_s=1, max_wait_s=1))
    await workers.ensure("openfaas-fn", "hello")
    await queue.enqueue(call_id=call_id)
    await eventually(lambda: fn.count(call_id) == 1, what="first attempt")
    status = await queue.wait_state(call_id, CallState.QUEUED)
    assert status.attempts == 1 and status.last_status == 502
    assert status.next_attempt_at is not None and status.next_attempt_at > time.time()
    await queue.wait_state(call_id, CallState.SUCCEEDED)


async def test_always_failing_goes_to_dlq_and_replay_succeeds(
    queue: Queue, receiver: Receiver
) -> None:
    call_id = "doomed"
    fn = FakeFunction(default=(500, {"X-Why": "broken"}, b"boom"))
    workers = await queue.workers(
        fn, policy=RetryPolicy(attempts=3, min_wait_s=0.05, max_wait_s=0.1)
    )
    await workers.ensure("openfaas-fn", "hello")
    await queue.enqueue(call_id=call_id, body=b"keep me", callback_url=receiver.url)
    status = await queue.wait_state(call_id, CallState.DEAD_LETTERED)
    assert fn.count(call_id) == 3
    assert status.attempts == 3 and status.last_status == 500
    assert [h.attempt for h in status.history] == [1, 2, 3]
    # The callback receives the final result.
    await eventually(lambda: len(receiver.received) == 1, what="final callback")
    headers, body, _ = receiver.received[0]
    assert headers["X-Function-Status"] == "500" and body == b"boom"
    assert headers["X-Call-Attempt"] == "3" and headers["X-Why"] == "broken"

    letters = await queue.calls.dead_letters()
    assert [letter.envelope.call_id for letter in letters] == [call_id]
    letter = letters[0]
    assert letter.envelope.body == b"keep me"
    assert letter.attempts == 3 and letter.last_status == 500
    assert letter.last_error == "function answered 500"
    assert letter.first_attempt_at is not None and letter.dead_at >= letter.first_attempt_at
    assert len(letter.history) == 3
    api = letter.to_json()
    assert api["callId"] == call_id and api["bodyBytes"] == 7 and api["lastStatus"] == 500
    assert [h["status"] for h in api["history"]] == [500, 500, 500] and "headers" not in api
    assert "headers" in letter.to_json(with_headers=True)
    assert await queue.calls.dead_letters(namespace="openfaas-fn", function="other") == []
    await eventually(lambda: _stream_empty(queue), what="original acked")

    fn.default = (200, {}, b"fixed")
    replayed = await queue.calls.replay(call_id)
    assert replayed.state is CallState.QUEUED and replayed.replays == 1
    status = await queue.wait_state(call_id, CallState.SUCCEEDED)
    assert fn.count(call_id) == 4
    assert status.replays == 1 and status.last_status == 200
    assert await queue.calls.dead_letters() == []
    with pytest.raises(CallNotFound):
        await queue.calls.replay(call_id)


async def test_dead_letter_visible_without_status_record(queue: Queue) -> None:
    call_id = "orphan-letter"
    fn = FakeFunction(default=(503, {}, b""))
    workers = await queue.workers(fn, policy=RetryPolicy(attempts=1))
    await workers.ensure("openfaas-fn", "hello")
    await queue.enqueue(call_id=call_id)
    await queue.wait_state(call_id, CallState.DEAD_LETTERED)
    # The status record aged out before the dead letter did.
    queue.store._db.execute("DELETE FROM call_status WHERE call_id = ?", (call_id,))  # type: ignore[attr-defined]
    status = await queue.calls.status(call_id)
    assert status.state is CallState.DEAD_LETTERED and status.attempts == 1
    # and replay still works from the letter alone
    fn.default = (200, {}, b"")
    await queue.calls.replay(call_id)
    await queue.wait_state(call_id, CallState.SUCCEEDED)


async def test_dead_letter_listing_pages(queue: Queue) -> None:
    fn = FakeFunction(default=(400, {}, b""))  # not retryable: failed, not dead-lettered
    fn2 = FakeFunction(default=(503, {}, b""))
    workers = await queue.workers(fn2, policy=RetryPolicy(attempts=1))
    await workers.ensure("openfaas-fn", "hello")
    ids = [await queue.enqueue() for _ in range(5)]
    for call_id in ids:
        await queue.wait_state(call_id, CallState.DEAD_LETTERED)
    first = await queue.calls.dead_letters(limit=2)
    rest = await queue.calls.dead_letters(after_seq=first[-1].seq, limit=10)
    assert len(first) == 2 and len(rest) == 3
    assert {x.envelope.call_id for x in first + rest} == set(ids)
    assert fn.calls == []


async def test_non_retryable_status_fails_at_once(queue: Queue) -> None:
    fn = FakeFunction(default=(400, {}, b"bad input"))
    workers = await queue.workers(fn)
    await workers.ensure("openfaas-fn", "hello")
    call_id = await queue.enqueue()
    status = await queue.wait_state(call_id, CallState.FAILED)
    assert status.attempts == 1 and status.last_status == 400
    assert await queue.calls.dead_letters() == []


async def test_connection_errors_and_no_replica_are_retried(queue: Queue) -> None:
    call_id = "flaky"
    fn = FakeFunction(
        script={
            call_id: [
                ConnectionResetError("reset by peer"),
                NoReadyReplica("no ready replica", retry_after_s=0),
                (200, {}, b""),
            ]
        }
    )
    workers = await queue.workers(fn)
    await workers.ensure("openfaas-fn", "hello")
    await queue.enqueue(call_id=call_id)
    status = await queue.wait_state(call_id, CallState.SUCCEEDED)
    assert [h.status for h in status.history] == [None, 503, 200]
    assert status.history[0].error == "ConnectionResetError: reset by peer"


async def test_function_gone_is_dead_lettered_at_once(queue: Queue) -> None:
    fn = FakeFunction(default=FunctionNotFound("function hello.openfaas-fn not found"))
    workers = await queue.workers(fn, policy=RetryPolicy(attempts=5))
    await workers.ensure("openfaas-fn", "hello")
    call_id = await queue.enqueue()
    status = await queue.wait_state(call_id, CallState.DEAD_LETTERED)
    assert status.attempts == 1 and fn.count(call_id) == 1


async def test_in_progress_keeps_a_long_call_from_redelivery(make_queue: QueueFactory) -> None:
    queue = await make_queue(ack_wait_s=0.6)
    fn = FakeFunction(delay_s=2.0)
    workers = await queue.workers(fn, heartbeat_s=0.15)
    await workers.ensure("openfaas-fn", "hello", concurrency=2)
    call_id = await queue.enqueue()
    await queue.wait_state(call_id, CallState.SUCCEEDED)
    await asyncio.sleep(0.7)  # a redelivery would have shown up by now
    assert fn.count(call_id) == 1


async def test_without_heartbeats_ack_wait_would_redeliver(make_queue: QueueFactory) -> None:
    """The control for the test above: the lease really is ack_wait long."""
    queue = await make_queue(ack_wait_s=0.6)
    fn = FakeFunction(delay_s=2.0)
    workers = await queue.workers(fn, heartbeat_s=100)
    await workers.ensure("openfaas-fn", "hello", concurrency=2)
    call_id = await queue.enqueue()
    await eventually(lambda: fn.count(call_id) >= 2, timeout_s=3, what="redelivery")


async def test_cancel_queued_call(queue: Queue) -> None:
    call_id = await queue.enqueue()
    cancelled = await queue.calls.cancel(call_id)
    assert cancelled.state is CallState.CANCELLED
    assert (await queue.calls.cancel(call_id)).state is CallState.CANCELLED  # idempotent
    assert await _stream_empty(queue)
    fn = FakeFunction()
    workers = await queue.workers(fn)
    await workers.ensure("openfaas-fn", "hello")
    marker = await queue.enqueue()
    await queue.wait_state(marker, CallState.SUCCEEDED)
    assert fn.count(call_id) == 0
    assert await queue.state(call_id) is CallState.CANCELLED
    with pytest.raises(CallNotFound):
        await queue.calls.cancel("never-enqueued")


async def test_cancel_while_waiting_for_retry_and_not_while_running(queue: Queue) -> None:
    retrying, running = "retrying", "running"
    fn = FakeFunction(script={retrying: [(503, {}, b"")]})
    workers = await queue.workers(fn, policy=RetryPolicy(attempts=3, min_wait_s=1, max_wait_s=1))
    await workers.ensure("openfaas-fn", "hello")
    await queue.enqueue(call_id=retrying)
    await eventually(lambda: fn.count(retrying) == 1, what="first attempt")
    await queue.wait_state(retrying, CallState.QUEUED)
    assert (await queue.calls.cancel(retrying)).state is CallState.CANCELLED
    await asyncio.sleep(1.3)
    assert fn.count(retrying) == 1

    fn.delay_s = 1.0
    await queue.enqueue(call_id=running)
    await queue.wait_state(running, CallState.RUNNING)
    with pytest.raises(CallConflict):
        await queue.calls.cancel(running)
    await queue.wait_state(running, CallState.SUCCEEDED)


async def test_same_call_id_twice_runs_once(queue: Queue) -> None:
    fn = FakeFunction()
    workers = await queue.workers(fn)
    await workers.ensure("openfaas-fn", "hello")
    env = Envelope(call_id="twice", function="hello", namespace="openfaas-fn")
    await queue.enqueuer.enqueue(env)
    dup = await queue.enqueuer.enqueue(env)
    assert dup.duplicate
    await queue.wait_state("twice", CallState.SUCCEEDED)
    # Beyond the dedupe window (simulated: another Msg-Id), the status still stops a rerun.
    headers, payload = encode(env, extra={MSG_ID_HEADER: "twice-late"})
    await queue.js.publish(work_subject("openfaas-fn", "hello", "twice"), payload, headers=headers)
    await eventually(lambda: _stream_empty(queue), what="late twin acked")
    assert fn.count("twice") == 1


async def test_concurrency_limit_per_function(queue: Queue) -> None:
    fn = FakeFunction(delay_s=0.2)
    workers = await queue.workers(fn)
    await workers.ensure("openfaas-fn", "hello", concurrency=3)
    ids = [await queue.enqueue() for _ in range(12)]
    for call_id in ids:
        await queue.wait_state(call_id, CallState.SUCCEEDED)
    assert fn.max_in_flight == 3


async def test_slow_function_does_not_block_another(queue: Queue) -> None:
    slow = FakeFunction(delay_s=3.0)
    fast = FakeFunction()

    async def route(env: Envelope) -> tuple[int, dict[str, str], bytes]:
        target = slow if env.function == "slow" else fast
        status, headers, body = await target(env)
        return status, dict(headers), body

    workers = await queue.workers(route)
    await workers.ensure("openfaas-fn", "slow")
    await workers.ensure("openfaas-fn", "fast")
    for _ in range(3):
        await queue.enqueue("slow")
    started = time.monotonic()
    fast_ids = [await queue.enqueue("fast") for _ in range(5)]
    for call_id in fast_ids:
        await queue.wait_state(call_id, CallState.SUCCEEDED, timeout_s=2.0)
    assert time.monotonic() - started < 2.0
    depth = await queue.calls.depth("openfaas-fn", "slow")
    assert (depth.pending, depth.in_flight) == (2, 1)


async def test_set_concurrency_applies_live(queue: Queue) -> None:
    fn = FakeFunction(delay_s=0.3)
    workers = await queue.workers(fn)
    await workers.ensure("openfaas-fn", "hello", concurrency=1)
    ids = [await queue.enqueue() for _ in range(8)]
    await workers.ensure("openfaas-fn", "hello", concurrency=4)
    for call_id in ids:
        await queue.wait_state(call_id, CallState.SUCCEEDED)
    assert fn.max_in_flight == 4


async def test_stop_returns_unfinished_calls_to_the_queue(queue: Queue) -> None:
    fn = FakeFunction(delay_s=5.0)
    workers = await queue.workers(fn)
    await workers.ensure("openfaas-fn", "hello")
    call_id = await queue.enqueue()
    await queue.wait_state(call_id, CallState.RUNNING)
    await workers.close(drain_timeout_s=0.1)
    fn.delay_s = 0
    again = await queue.workers(fn)
    await again.ensure("openfaas-fn", "hello")
    await queue.wait_state(call_id, CallState.SUCCEEDED, timeout_s=5)
    assert fn.count(call_id) == 2


async def test_callback_retried_until_receiver_answers(queue: Queue, receiver: Receiver) -> None:
    receiver.answers.extend([500, 503])
    fn = FakeFunction()
    workers = await queue.workers(fn)
    await workers.ensure("openfaas-fn", "hello")
    call_id = await queue.enqueue(callback_url=receiver.url)
    await eventually(lambda: _callback_state(queue, call_id, "delivered"), what="delivered")
    assert len(receiver.received) == 3
    assert fn.count(call_id) == 1  # a failing receiver never reruns the function


async def test_callback_refused_by_the_guard_at_send_time(queue: Queue, receiver: Receiver) -> None:
    from runtime.queue.callbacks import CallbackPolicy

    port = int(receiver.url.rsplit(":", 1)[1].split("/")[0])
    policy = CallbackPolicy.build(extra_deny=["127.0.0.0/8"])
    fn = FakeFunction()
    workers = await queue.workers(fn, callback_policy=policy)
    await workers.ensure("openfaas-fn", "hello")
    call_id = await queue.enqueue(callback_url=f"http://127.0.0.1:{port}/cb")
    await eventually(lambda: _callback_state(queue, call_id, "failed"), what="refused")
    assert receiver.received == []


async def test_kill_9_nats_mid_run_loses_no_accepted_call(queue: Queue) -> None:
    fn = FakeFunction(delay_s=0.01)
    workers = await queue.workers(fn)
    await workers.ensure("openfaas-fn", "hello", concurrency=4)
    accepted: list[str] = []
    refused = 0

    async def producer() -> None:
        nonlocal refused
        for i in range(300):
            try:
                accepted.append(await queue.enqueue(body=str(i).encode()))
            except QueueUnavailable:
                refused += 1
                await asyncio.sleep(0.01)

    task = asyncio.create_task(producer())
    await eventually(lambda: len(fn.calls) >= 30, what="work under way")
    os.kill(queue.server.pid or 0, signal.SIGKILL)
    await task
    await eventually(lambda: queue.server.restarts == 1, what="server restarted")
    done = set()

    async def all_done() -> bool:
        for call_id in accepted:
            if call_id in done:
                continue
            if (await queue.calls.status(call_id)).state is not CallState.SUCCEEDED:
                return False
            done.add(call_id)
        return True

    await eventually(all_done, timeout_s=20, what="every accepted call done")
    ran = {cid for cid, _ in fn.calls}
    assert set(accepted) <= ran
    duplicates = len(fn.calls) - len(ran)
    print(
        f"accepted={len(accepted)} refused={refused} runs={len(fn.calls)} duplicates={duplicates}"
    )
    assert len(accepted) > 30


async def test_worker_recreates_a_deleted_consumer(queue: Queue) -> None:
    from runtime.queue.streams import consumer_name

    fn = FakeFunction()
    workers = await queue.workers(fn)
    await workers.ensure("openfaas-fn", "hello")
    await asyncio.sleep(0.1)
    pulls = 0
    publish = queue.nc.publish

    async def counting(subject: str, *args: object, **kwargs: object) -> None:
        nonlocal pulls
        pulls += subject.startswith("$JS.API.CONSUMER.MSG.NEXT.")
        await publish(subject, *args, **kwargs)  # type: ignore[arg-type]

    queue.nc.publish = counting  # type: ignore[method-assign]
    await queue.js.delete_consumer(WORK_STREAM, consumer_name("openfaas-fn", "hello"))
    call_id = await queue.enqueue()
    await queue.wait_state(call_id, CallState.SUCCEEDED, timeout_s=5)
    await asyncio.sleep(1.0)
    # no busy loop of pull requests while it was gone or after (1 s pulls expire in tests)
    assert pulls < 15, pulls


async def test_callback_redirect_is_not_followed(queue: Queue, receiver: Receiver) -> None:
    receiver.answers.append(302)  # aiohttp would follow to /redirect (GET) if allowed
    fn = FakeFunction()
    workers = await queue.workers(fn)
    await workers.ensure("openfaas-fn", "hello")
    call_id = await queue.enqueue(callback_url=receiver.url)
    await eventually(lambda: _callback_state(queue, call_id, "delivered"), what="answered")
    assert len(receiver.received) == 1
    assert (await queue.calls.status(call_id)).callback_status == 302
