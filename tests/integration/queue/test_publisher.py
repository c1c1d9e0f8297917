"""Group commit against real JetStream (publisher.py): a lone publish goes out on its own, the
ones that wait behind ``direct_limit`` in-flight publishes go out as one atomic batch; a refused
batch (call id already stored, stream full) stores nothing and is republished call by call; a
stream without ``allow_atomic`` turns batching off. Plus ``parse_ack`` / ``batch_seqs`` on
hand-written replies (no server).

Wire checks use a plain core-NATS subscription on the work subjects: it sees every message the
publisher sends, batch headers included, so "a batch was sent" / "nothing was batched" is
observed, not inferred from counters alone.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field

import pytest
from nats.aio.msg import Msg
from nats.js.errors import APIError, NotFoundError

from runtime.queue.enqueue import Enqueued
from runtime.queue.errors import QueueUnavailable
from runtime.queue.message import Envelope, new_call_id
from runtime.queue.publisher import (
    BATCH_COMMIT,
    BATCH_ID,
    BATCH_SEQUENCE,
    GroupPublisher,
    Stored,
    batch_seqs,
    parse_ack,
)
from runtime.queue.streams import WORK_PREFIX, WORK_STREAM, ensure_layout, work_subject

from .conftest import Queue, QueueFactory, eventually

# Only the tests that need a server carry the marker: the parse_ack / batch_seqs tests at the
# end run without one.
nats = pytest.mark.nats


def envelope(call_id: str | None = None, body: bytes | None = None) -> Envelope:
    call_id = call_id or new_call_id()
    return Envelope(
        call_id=call_id,
        function="hello",
        namespace="openfaas-fn",
        body=body if body is not None else f"body of {call_id}".encode(),
    )


def subject_of(env: Envelope) -> str:
    return work_subject(env.namespace, env.function, env.call_id)


def batching(queue: Queue, *, atomic: bool = True) -> GroupPublisher:
    """A publisher that batches as soon as one publish is in flight."""
    publisher = GroupPublisher(queue.nc, atomic=atomic, timeout_s=2.0, direct_limit=1, min_batch=2)
    queue.enqueuer.publisher = publisher
    return publisher


async def stream_count(queue: Queue) -> int:
    info = await queue.js.stream_info(WORK_STREAM)
    return info.state.messages


async def enqueue_all(queue: Queue, envs: Sequence[Envelope]) -> list[Enqueued]:
    """All at once, in one round of the event loop."""
    return list(await asyncio.gather(*(queue.enqueuer.enqueue(env) for env in envs)))


async def assert_stored_once(
    queue: Queue, envs: Sequence[Envelope], results: Sequence[Enqueued]
) -> None:
    """Each envelope is in the stream at the seq its enqueue returned, with its own body."""
    assert [r.call_id for r in results] == [env.call_id for env in envs]
    seqs = [r.seq for r in results]
    assert len(set(seqs)) == len(seqs), "two calls were given the same seq"
    for env, result in zip(envs, results, strict=True):
        msg = await queue.js.get_msg(WORK_STREAM, subject=subject_of(env))
        assert msg.seq == result.seq, env.call_id
        assert msg.data == env.body
        assert msg.headers is not None and msg.headers["Nats-Msg-Id"] == env.call_id


@dataclass
class Wire:
    """Every message published on the work subjects, as the server forwards them."""

    messages: list[Msg] = field(default_factory=list)

    def batched(self) -> list[Msg]:
        return [m for m in self.messages if m.headers and BATCH_ID in m.headers]

    def commits(self) -> list[Msg]:
        return [m for m in self.messages if m.headers and m.headers.get(BATCH_COMMIT) == "1"]

    async def at_least(self, count: int) -> None:
        await eventually(
            lambda: len(self.messages) >= count, what=f"{count} messages seen on the wire"
        )


@asynccontextmanager
async def wire(queue: Queue) -> AsyncIterator[Wire]:
    seen = Wire()

    async def record(msg: Msg) -> None:
        seen.messages.append(msg)

    sub = await queue.nc.subscribe(f"{WORK_PREFIX}.>", cb=record)
    await queue.nc.flush()
    try:
        yield seen
    finally:
        await sub.unsubscribe()


# -- batches committed -----------------------------------------------------------------------


@nats
async def test_concurrent_publishes_are_stored_once_each_through_batches(queue: Queue) -> None:
    publisher = batching(queue)
    envs = [envelope() for _ in range(200)]
    async with wire(queue) as seen:
        results = await enqueue_all(queue, envs)
        await seen.at_least(200)
    assert not any(r.duplicate for r in results)
    assert await stream_count(queue) == 200
    await assert_stored_once(queue, envs, results)
    assert publisher.batches_committed >= 1
    assert publisher.messages_batched > 0
    assert publisher.atomic is True
    # On the wire: real batches, each numbered 1..n with one commit, none split across ids.
    batched = seen.batched()
    assert len(batched) >= publisher.messages_batched
    by_id: dict[str, list[int]] = {}
    for msg in batched:
        assert msg.headers is not None
        by_id.setdefault(msg.headers[BATCH_ID], []).append(int(msg.headers[BATCH_SEQUENCE]))
    for numbers in by_id.values():
        assert numbers == list(range(1, len(numbers) + 1))
    assert len(seen.commits()) == len(by_id)
    # A committed batch is stored contiguously: its calls got consecutive seqs.
    seq_of = {r.call_id: r.seq for r in results}
    batch_of: dict[str, list[int]] = {}
    for msg in batched:
        assert msg.headers is not None
        batch_of.setdefault(msg.headers[BATCH_ID], []).append(seq_of[msg.subject.rsplit(".")[-1]])
    for seqs in batch_of.values():
        assert seqs == list(range(seqs[0], seqs[0] + len(seqs)))


@nats
async def test_lone_publish_goes_out_on_its_own(queue: Queue) -> None:
    publisher = batching(queue)
    envs = [envelope() for _ in range(5)]
    async with wire(queue) as seen:
        # One after the other: nothing is ever in flight when the next one starts.
        results = [await queue.enqueuer.enqueue(env) for env in envs]
        await seen.at_least(5)
    await assert_stored_once(queue, envs, results)
    assert publisher.batches_committed == 0
    assert publisher.messages_batched == 0
    assert seen.batched() == []
    assert len(seen.messages) == 5  # each sent exactly once


@nats
async def test_default_enqueuer_batches_on_an_atomic_stream(queue: Queue) -> None:
    # The fixture's Enqueuer as the daemon builds it (layout.atomic, default limits).
    publisher = queue.enqueuer.publisher
    assert publisher.atomic is True
    envs = [envelope() for _ in range(100)]
    results = await enqueue_all(queue, envs)
    assert await stream_count(queue) == 100
    await assert_stored_once(queue, envs, results)
    assert publisher.batches_committed >= 1


# -- batches refused ---------------------------------------------------------------------------


@nats
async def test_batch_with_a_stored_call_id_is_republished_call_by_call(queue: Queue) -> None:
    publisher = batching(queue)
    known = envelope()
    first = await queue.enqueuer.enqueue(known)
    assert not first.duplicate
    # The first of the group takes the one direct slot; the rest, the known call among them,
    # wait and go out as one batch, which the server refuses for the stored Nats-Msg-Id.
    fresh = [envelope() for _ in range(9)]
    group = [fresh[0], envelope(known.call_id, known.body), *fresh[1:]]
    async with wire(queue) as seen:
        results = await enqueue_all(queue, group)
        await seen.at_least(len(group))
    again = results[1]
    assert again.duplicate
    assert (again.call_id, again.seq) == (known.call_id, first.seq)
    fresh_results = [r for r in results if r.call_id != known.call_id]
    assert not any(r.duplicate for r in fresh_results)
    await assert_stored_once(queue, fresh, fresh_results)
    assert await stream_count(queue) == 1 + len(fresh)
    # The batch was sent, refused whole, and its calls were then sent alone.
    assert seen.commits(), "no batch was sent: the test did not exercise the refusal"
    assert publisher.batches_committed == 0
    assert publisher.messages_batched == 0
    assert len(seen.messages) > len(group)
    # A refused batch is about its messages, not the server: batching stays on.
    assert publisher.atomic is True
    more = [envelope() for _ in range(20)]
    more_results = await enqueue_all(queue, more)
    await assert_stored_once(queue, more, more_results)
    assert publisher.batches_committed >= 1


@nats
async def test_same_call_id_twice_in_one_batch_is_stored_once(queue: Queue) -> None:
    publisher = batching(queue)
    twin = envelope()
    others = [envelope() for _ in range(4)]
    group = [others[0], twin, others[1], envelope(twin.call_id, twin.body), *others[2:]]
    results = await enqueue_all(queue, group)
    first, second = results[1], results[3]
    assert {first.duplicate, second.duplicate} == {False, True}
    assert first.seq == second.seq
    kept = second if first.duplicate else first
    await assert_stored_once(queue, [twin, *others], [kept, results[0], results[2], *results[4:]])
    assert await stream_count(queue) == 1 + len(others)
    assert publisher.atomic is True


@nats
async def test_full_stream_stores_what_fits_and_refuses_the_rest(
    make_queue: QueueFactory,
) -> None:
    queue = await make_queue(max_msgs=5)
    publisher = batching(queue)
    before = [envelope(), envelope()]
    for env in before:
        await queue.enqueuer.enqueue(env)
    room = 5 - len(before)
    group = [envelope() for _ in range(8)]
    async with wire(queue) as seen:
        outcomes = await asyncio.gather(
            *(queue.enqueuer.enqueue(env) for env in group), return_exceptions=True
        )
        await seen.at_least(len(group))
    accepted = [
        (env, out) for env, out in zip(group, outcomes, strict=True) if isinstance(out, Enqueued)
    ]
    refused = [
        (env, out)
        for env, out in zip(group, outcomes, strict=True)
        if not isinstance(out, Enqueued)
    ]
    assert len(accepted) == room
    for _, error in refused:
        assert isinstance(error, QueueUnavailable), repr(error)
        assert "full" in str(error)
        assert error.retry_after_s > 0
    assert not any(out.duplicate for _, out in accepted)
    await assert_stored_once(queue, [e for e, _ in accepted], [o for _, o in accepted])
    for env, _ in refused:
        with pytest.raises(NotFoundError):
            await queue.js.get_msg(WORK_STREAM, subject=subject_of(env))
    assert await stream_count(queue) == 5
    assert seen.commits(), "no batch was sent: the test did not exercise the refusal"
    assert publisher.batches_committed == 0
    # A full stream is not a server that cannot batch.
    assert publisher.atomic is True


# -- batching off ------------------------------------------------------------------------------


@nats
async def test_without_atomic_nothing_is_batched(queue: Queue) -> None:
    publisher = batching(queue, atomic=False)
    envs = [envelope() for _ in range(100)]
    async with wire(queue) as seen:
        results = await enqueue_all(queue, envs)
        await seen.at_least(100)
    assert not any(r.duplicate for r in results)
    assert await stream_count(queue) == 100
    await assert_stored_once(queue, envs, results)
    assert publisher.batches_committed == 0
    assert publisher.messages_batched == 0
    assert seen.batched() == []
    assert len(seen.messages) == 100


@nats
async def test_stream_without_allow_atomic_turns_batching_off(queue: Queue) -> None:
    await queue.js.delete_stream(WORK_STREAM)
    layout = await ensure_layout(queue.js, queue.limits, atomic=False)
    assert layout.atomic is False
    publisher = batching(queue, atomic=True)  # as if the publisher were told the wrong thing
    envs = [envelope() for _ in range(50)]
    async with wire(queue) as seen:
        results = await enqueue_all(queue, envs)
        await seen.at_least(50)
    assert not any(r.duplicate for r in results)
    assert await stream_count(queue) == 50
    await assert_stored_once(queue, envs, results)
    assert seen.commits(), "no batch was sent: the test did not exercise the refusal"
    assert publisher.atomic is False
    assert publisher.batches_committed == 0
    # From now on every call goes out alone, and still is stored once.
    later = [envelope() for _ in range(20)]
    async with wire(queue) as seen_later:
        later_results = await enqueue_all(queue, later)
        await seen_later.at_least(20)
    await assert_stored_once(queue, later, later_results)
    assert seen_later.batched() == []
    assert await stream_count(queue) == 70


@nats
async def test_a_stream_made_without_allow_atomic_gets_it_at_the_next_start(queue: Queue) -> None:
    """A work stream made by an older daemon (no atomic batches) is updated in place, and the
    calls queued in it stay."""
    await queue.js.delete_stream(WORK_STREAM)
    old = await ensure_layout(queue.js, queue.limits, atomic=False)
    assert old.atomic is False
    queued = await queue.enqueue()
    new = await ensure_layout(queue.js, queue.limits, atomic=True)
    assert new.atomic is True
    assert (await queue.js.stream_info(WORK_STREAM)).config.allow_atomic is True
    assert await stream_count(queue) == 1
    found = await queue.js.get_msg(
        WORK_STREAM, subject=work_subject("openfaas-fn", "hello", queued)
    )
    assert found.headers is not None and found.headers["Nats-Msg-Id"] == queued


# -- replies, without a server ---------------------------------------------------------------


def test_parse_ack_of_a_puback() -> None:
    assert parse_ack(b'{"stream":"LOCALFAAS_ASYNC","seq":42}') == Stored(42, False)
    assert parse_ack(b'{"stream":"LOCALFAAS_ASYNC","seq":7,"duplicate":true}') == Stored(7, True)


def test_parse_ack_of_an_error_raises_api_error() -> None:
    error = {"code": 400, "err_code": 10201, "description": "duplicate message id"}
    with pytest.raises(APIError) as caught:
        parse_ack(json.dumps({"error": error}).encode())
    assert caught.value.err_code == 10201
    assert caught.value.code == 400
    full = {"code": 503, "err_code": 10077, "description": "maximum messages exceeded"}
    with pytest.raises(APIError) as caught:
        parse_ack(json.dumps({"error": full}).encode())
    assert caught.value.err_code == 10077


def test_batch_seqs_are_consecutive_and_end_at_the_ack() -> None:
    ack = b'{"stream":"LOCALFAAS_ASYNC","seq":10,"batch":"b1","count":3}'
    assert batch_seqs(ack, 3) == [8, 9, 10]
    one = b'{"stream":"LOCALFAAS_ASYNC","seq":1,"batch":"b2","count":1}'
    assert batch_seqs(one, 1) == [1]


@pytest.mark.parametrize(
    "reply",
    [
        b'{"stream":"LOCALFAAS_ASYNC","seq":10}',  # no count: not stored as a batch
        b'{"stream":"LOCALFAAS_ASYNC","seq":10,"batch":"b1","count":2}',
        b'{"stream":"LOCALFAAS_ASYNC","seq":10,"batch":"b1","count":4}',
        b'{"error":{"code":400,"err_code":10201,"description":"duplicate"}}',
    ],
)
def test_batch_seqs_refuses_an_ack_that_is_not_this_batch(reply: bytes) -> None:
    with pytest.raises(APIError):
        batch_seqs(reply, 3)


def test_batch_seqs_error_keeps_its_err_code() -> None:
    reply = b'{"error":{"code":400,"err_code":10201,"description":"duplicate"}}'
    with pytest.raises(APIError) as caught:
        batch_seqs(reply, 3)
    assert caught.value.err_code == 10201


@pytest.mark.parametrize(
    "kwargs",
    [{"direct_limit": 0}, {"min_batch": 1}, {"min_batch": 8, "max_batch": 4}, {"max_batch": 1001}],
)
def test_publisher_refuses_impossible_limits(kwargs: dict[str, int]) -> None:
    with pytest.raises(ValueError):
        GroupPublisher(None, atomic=True, timeout_s=1.0, **kwargs)  # type: ignore[arg-type]
