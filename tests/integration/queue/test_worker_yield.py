"""Workers yield to accepting (WorkerOptions.accepting_busy) against real JetStream: while
accepting is busy a worker runs at most max(1, concurrency // YIELD_SHARE) calls, takes its full
concurrency back when it is not; Enqueuer.in_flight / busy count enqueues waiting for their
publish, whatever way the publish ends."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass, field

import pytest
from nats.errors import TimeoutError as NatsTimeoutError
from nats.js.errors import APIError

import runtime.queue.enqueue as enqueue_module
from runtime.queue.errors import QueueUnavailable
from runtime.queue.message import Envelope
from runtime.queue.status import CallState
from runtime.queue.streams import WORK_STREAM, consumer_name
from runtime.queue.worker import YIELD_SHARE, AsyncWorkers, FunctionWorker

from .conftest import Queue, eventually

pytestmark = pytest.mark.nats

NS, FN = "openfaas-fn", "hello"
# Long enough to span a full wake-up cycle of the pull loop (it re-checks at least every 0.5 s).
QUIET_WINDOW_S = 0.6


@dataclass
class Gated:
    """An ``invoke`` whose calls wait for a permit (``release(n)``) or, once ``open()``,
    run at once (after ``delay_s``). Records calls and how many run at the same time."""

    delay_s: float = 0.0
    calls: list[str] = field(default_factory=list)
    in_flight: int = 0
    peak: int = 0
    _permits: asyncio.Semaphore = field(default_factory=lambda: asyncio.Semaphore(0))
    _opened: bool = False

    async def __call__(self, env: Envelope) -> tuple[int, dict[str, str], bytes]:
        self.calls.append(env.call_id)
        self.in_flight += 1
        self.peak = max(self.peak, self.in_flight)
        try:
            if not self._opened:
                await self._permits.acquire()
            if self.delay_s:
                await asyncio.sleep(self.delay_s)
            return 200, {}, b"ok"
        finally:
            self.in_flight -= 1

    def release(self, n: int) -> None:
        for _ in range(n):
            self._permits.release()

    def open(self) -> None:
        self._opened = True
        self.release(self.in_flight)  # every call waiting now; later ones do not wait

    def reset_peak(self) -> None:
        self.peak = self.in_flight


async def _workers(
    queue: Queue, fn: Gated, accepting_busy: Callable[[], bool] | None
) -> AsyncWorkers:
    workers = await queue.workers(fn, accepting_busy=accepting_busy)
    queue.stack.callback(fn.open)  # runs before close: a failed test does not wait for drain
    return workers


async def _enqueue_many(queue: Queue, n: int) -> list[str]:
    return list(await asyncio.gather(*(queue.enqueue(FN) for _ in range(n))))


async def _all_succeeded_once(queue: Queue, fn: Gated, ids: list[str]) -> None:
    async def done() -> bool:
        for call_id in ids:
            if await queue.state(call_id) is not CallState.SUCCEEDED:
                return False
        return True

    await eventually(done, what=f"all {len(ids)} calls succeeded")
    assert sorted(fn.calls) == sorted(ids)  # each ran exactly once


async def _ack_pending(queue: Queue) -> tuple[int, int]:
    """(delivered and not acked, not yet delivered) for the function's consumer."""
    info = await queue.js.consumer_info(WORK_STREAM, consumer_name(NS, FN))
    return info.num_ack_pending, info.num_pending


async def _hold_steady(fn: Gated, worker: FunctionWorker, running: int) -> None:
    """``running`` calls run and, over a quiet window, no more start."""
    await eventually(lambda: fn.in_flight >= running, what=f"{running} calls running")
    await asyncio.sleep(QUIET_WINDOW_S)
    assert (fn.peak, fn.in_flight, worker.running) == (running, running, running)


async def test_busy_worker_runs_a_quarter_then_takes_full_concurrency_back(
    queue: Queue,
) -> None:
    busy = [True]
    fn = Gated(delay_s=0.01)
    workers = await _workers(queue, fn, lambda: busy[0])
    worker = await workers.ensure(NS, FN, concurrency=8)
    ids = await _enqueue_many(queue, 20)

    await _hold_steady(fn, worker, 2)  # 8 // YIELD_SHARE
    # The limit is on what is pulled: the rest stays in the stream, not in the worker's inbox.
    assert await _ack_pending(queue) == (2, 18)

    busy[0] = False  # nothing released: the worker pulls more on its next wake-up
    await eventually(lambda: fn.in_flight == 8, timeout_s=3.0, what="full concurrency back")
    await asyncio.sleep(0.3)
    assert (fn.peak, fn.in_flight) == (8, 8)
    assert await _ack_pending(queue) == (8, 12)

    fn.open()
    await _all_succeeded_once(queue, fn, ids)
    assert fn.peak == 8


async def test_worker_yields_again_when_accepting_becomes_busy(queue: Queue) -> None:
    busy = [False]
    fn = Gated(delay_s=0.01)
    workers = await _workers(queue, fn, lambda: busy[0])
    worker = await workers.ensure(NS, FN, concurrency=8)
    ids = await _enqueue_many(queue, 20)
    await _hold_steady(fn, worker, 8)

    busy[0] = True
    fn.release(8)  # the 8 running calls finish; only 2 new ones may start
    await eventually(lambda: len(set(fn.calls)) == 10, what="2 new calls started")
    fn.reset_peak()
    await _hold_steady(fn, worker, 2)
    assert await _ack_pending(queue) == (2, 10)

    # One at a time: each finished call makes room for exactly one more.
    for started in (11, 12):
        fn.release(1)
        await eventually(lambda n=started: len(set(fn.calls)) == n, what=f"call {started}")
        await eventually(lambda: fn.in_flight == 2, what="2 running")
        assert fn.peak == 2

    fn.open()
    await _all_succeeded_once(queue, fn, ids)


async def test_idle_worker_yields_at_the_start_of_a_burst(queue: Queue) -> None:
    """The usual way accepting becomes busy: a burst arrives while the worker idles."""
    busy = [False]
    fn = Gated(delay_s=0.01)
    workers = await _workers(queue, fn, lambda: busy[0])
    worker = await workers.ensure(NS, FN, concurrency=8)

    async def pull_waiting() -> bool:
        info = await queue.js.consumer_info(WORK_STREAM, consumer_name(NS, FN))
        return (info.num_waiting or 0) >= 1

    await eventually(pull_waiting, what="the idle worker's pull request")
    busy[0] = True  # the burst: callers wait on their enqueues
    ids = await _enqueue_many(queue, 20)
    try:
        await _hold_steady(fn, worker, 2)
    finally:
        fn.open()
    await _all_succeeded_once(queue, fn, ids)


@pytest.mark.parametrize("concurrency", [1, 2, 3])
async def test_small_concurrency_still_runs_one_call_while_busy(
    queue: Queue, concurrency: int
) -> None:
    assert concurrency // YIELD_SHARE == 0  # the case max(1, ...) is for
    fn = Gated(delay_s=0.05)
    workers = await _workers(queue, fn, lambda: True)  # busy for the whole test
    worker = await workers.ensure(NS, FN, concurrency=concurrency)
    ids = await _enqueue_many(queue, 6)
    await _hold_steady(fn, worker, 1)  # one runs, never none: the queue keeps moving
    fn.release(1)
    await eventually(lambda: len(fn.calls) == 2, what="the next call started")
    fn.open()
    await _all_succeeded_once(queue, fn, ids)
    assert fn.peak == 1


@pytest.mark.parametrize("accepting_busy", [None, lambda: False], ids=["unset", "not-busy"])
async def test_without_busy_accepting_the_worker_uses_full_concurrency(
    queue: Queue, accepting_busy: Callable[[], bool] | None
) -> None:
    fn = Gated(delay_s=0.01)
    workers = await _workers(queue, fn, accepting_busy)
    worker = await workers.ensure(NS, FN, concurrency=8)
    ids = await _enqueue_many(queue, 20)
    await _hold_steady(fn, worker, 8)
    assert await _ack_pending(queue) == (8, 12)
    fn.open()
    await _all_succeeded_once(queue, fn, ids)
    assert fn.peak == 8


# -- Enqueuer.in_flight / busy --------------------------------------------------------------


@dataclass
class HeldPublish:
    """Replaces the enqueuer's ``publisher.publish``: each publish waits for ``release``, then
    raises ``error()`` if set, else publishes for real."""

    original: Callable[..., object]
    release: asyncio.Event = field(default_factory=asyncio.Event)
    error: Callable[[], BaseException] | None = None
    held: int = 0
    tasks: list[asyncio.Task[str]] = field(default_factory=list)

    async def __call__(self, subject: str, payload: bytes, headers: dict[str, str]) -> object:
        self.held += 1
        await self.release.wait()
        if self.error is not None:
            raise self.error()
        return await self.original(subject, payload, headers)  # type: ignore[misc]

    async def finish(self) -> None:
        """Teardown: let every held enqueue end and collect its outcome (a failed test would
        otherwise leave tasks whose exceptions are never retrieved)."""
        self.release.set()
        await asyncio.gather(*self.tasks, return_exceptions=True)


@pytest.fixture
def held(queue: Queue, monkeypatch: pytest.MonkeyPatch) -> HeldPublish:
    monkeypatch.setattr(enqueue_module, "ACCEPT_BUSY", 3)
    hold = HeldPublish(queue.enqueuer.publisher.publish)
    monkeypatch.setattr(queue.enqueuer.publisher, "publish", hold)
    queue.stack.push_async_callback(hold.finish)
    return hold


def _start(queue: Queue, held: HeldPublish, n: int) -> list[asyncio.Task[str]]:
    tasks = [asyncio.create_task(queue.enqueue(FN)) for _ in range(n)]
    held.tasks += tasks
    return tasks


async def test_in_flight_counts_enqueues_waiting_for_their_publish(
    queue: Queue, held: HeldPublish
) -> None:
    enqueuer = queue.enqueuer
    assert (enqueuer.in_flight, enqueuer.busy) == (0, False)
    tasks = _start(queue, held, 2)
    await eventually(lambda: held.held == 2, what="2 publishes held")
    assert (enqueuer.in_flight, enqueuer.busy) == (2, False)
    tasks += _start(queue, held, 1)
    await eventually(lambda: held.held == 3, what="3 publishes held")
    assert (enqueuer.in_flight, enqueuer.busy) == (3, True)  # ACCEPT_BUSY (patched) is 3
    tasks += _start(queue, held, 2)
    await eventually(lambda: held.held == 5, what="5 publishes held")
    assert (enqueuer.in_flight, enqueuer.busy) == (5, True)
    assert not any(t.done() for t in tasks)

    held.release.set()
    ids = await asyncio.gather(*tasks)
    assert (enqueuer.in_flight, enqueuer.busy) == (0, False)
    assert len(set(ids)) == 5
    assert (await queue.js.stream_info(WORK_STREAM)).state.messages == 5


@pytest.mark.parametrize(
    ("error", "match"),
    [
        (lambda: APIError(err_code=10077, description="maximum messages exceeded"), "full"),
        (lambda: APIError(err_code=10060, description="wrong last msg ID"), "refused"),
        (NatsTimeoutError, "unavailable"),
    ],
    ids=["full", "refused", "timeout"],
)
async def test_failed_publish_is_no_longer_in_flight(
    queue: Queue, held: HeldPublish, error: Callable[[], BaseException], match: str
) -> None:
    enqueuer = queue.enqueuer
    held.error = error
    tasks = _start(queue, held, 4)
    await eventually(lambda: held.held == 4, what="4 publishes held")
    assert (enqueuer.in_flight, enqueuer.busy) == (4, True)
    held.release.set()
    results = await asyncio.gather(*tasks, return_exceptions=True)
    assert all(isinstance(r, QueueUnavailable) for r in results), results
    assert all(match in str(r) for r in results), results
    assert (enqueuer.in_flight, enqueuer.busy) == (0, False)
    assert (await queue.js.stream_info(WORK_STREAM)).state.messages == 0


async def test_cancelled_enqueue_is_no_longer_in_flight(queue: Queue, held: HeldPublish) -> None:
    """A client that goes away while its call waits for the publish (the handler is
    cancelled) must not keep accepting 'busy' for ever."""
    enqueuer = queue.enqueuer
    tasks = _start(queue, held, 4)
    await eventually(lambda: held.held == 4, what="4 publishes held")
    assert (enqueuer.in_flight, enqueuer.busy) == (4, True)
    for task in tasks[:3]:
        task.cancel()
    await asyncio.wait(tasks[:3])
    assert (enqueuer.in_flight, enqueuer.busy) == (1, False)
    held.release.set()
    call_id = await tasks[3]
    assert (enqueuer.in_flight, enqueuer.busy) == (0, False)
    assert (await queue.calls.status(call_id)).state is CallState.QUEUED


async def test_workers_yield_while_enqueues_wait_for_their_publish(
    queue: Queue, held: HeldPublish
) -> None:
    """The daemon's wiring (AsyncQueue: accepting_busy=lambda: enqueuer.busy) end to end."""
    held.release.set()
    ids = await _enqueue_many(queue, 12)  # stored: nothing held yet
    held.release.clear()
    waiting = _start(queue, held, 3)  # ACCEPT_BUSY (patched) is 3: accepting is busy
    await eventually(lambda: held.held == 15, what="3 publishes held")
    assert queue.enqueuer.busy

    fn = Gated(delay_s=0.01)
    workers = await _workers(queue, fn, lambda: queue.enqueuer.busy)
    worker = await workers.ensure(NS, FN, concurrency=8)
    await _hold_steady(fn, worker, 2)

    held.release.set()  # the waiting enqueues are stored: accepting is no longer busy
    ids += await asyncio.gather(*waiting)
    assert not queue.enqueuer.busy
    await eventually(lambda: fn.in_flight == 8, timeout_s=3.0, what="full concurrency back")
    fn.open()
    await _all_succeeded_once(queue, fn, ids)
    assert fn.peak == 8
