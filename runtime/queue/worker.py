"""Async workers: one JetStream pull consumer per function, a bounded number of calls at once.

Per message: claim the call in the status store (compare-and-set, so a cancelled, finished or
concurrently running call is skipped), keep the lease alive with ``in_progress`` while it runs,
decide with the pure retry policy, then either ``nak(delay)`` for a retry, or record the final
outcome (dead letter first when attempts are exhausted), POST the callback, and only then ack.
A crash anywhere before the ack means redelivery: at least once, and a redelivered call whose
status is already final is acked without running again.

Pulling is done by hand (``$JS.API.CONSUMER.MSG.NEXT``) rather than with nats-py's ``fetch``:
``fetch(n)`` holds the first message until all ``n`` arrived or the timeout passed, which would
add up to the timeout to an idle queue's latency. Here every free slot has one outstanding pull
credit and each message is dispatched the moment it arrives.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import random
import time
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass, field, replace
from types import TracebackType

from multidict import CIMultiDict
from nats.aio.client import Client as NATS
from nats.aio.msg import Msg
from nats.aio.subscription import Subscription
from nats.errors import Error as NatsError
from nats.js import JetStreamContext
from nats.js.errors import NotFoundError

from runtime.errors import FunctionNotFound, NoReadyReplica, UpstreamTimeout
from runtime.queue.callbacks import CallbackSender, callback_headers
from runtime.queue.calls import QueueDepth, queue_depth
from runtime.queue.dlq import publish_dead_letter
from runtime.queue.message import Envelope, MalformedMessage, decode
from runtime.queue.metrics import AsyncMetrics
from runtime.queue.retry import Decision, Outcome, RetryPolicy, decide
from runtime.queue.status import AttemptRecord, CallState, CallStatus, StatusStore, short_error
from runtime.queue.streams import (
    WORK_STREAM,
    QueueLimits,
    consumer_config,
    consumer_name,
    parse_subject,
)

log = logging.getLogger("localfaas.queue")

ResponseHeaders = Mapping[str, str] | Iterable[tuple[str, str]]
Invoke = Callable[[Envelope], Awaitable[tuple[int, ResponseHeaders, bytes]]]
"""Run one attempt of a call: ``(status, headers, body)``. Raise on connection errors
(any exception counts as "could not reach the function" and is retried), FunctionNotFound when
the function is gone (dead-lettered at once, replayable after a redeploy), NoReadyReplica
(treated as 503 with its Retry-After), UpstreamTimeout (treated as 504)."""

_WAKE = object()
YIELD_SHARE = 4


@dataclass
class _Pull:
    remaining: int
    deadline: float


@dataclass(frozen=True)
class WorkerOptions:
    """Shared by all functions' workers."""

    limits: QueueLimits = field(default_factory=QueueLimits)
    heartbeat_s: float | None = None  # default: a third of ack_wait
    pull_expires_s: float = 5.0
    drain_timeout_s: float = 10.0
    clock: Callable[[], float] = time.time
    rand: Callable[[], float] = random.random
    # True while callers wait on many enqueues (Enqueuer.busy): workers then start at most
    # 1/YIELD_SHARE of their concurrency (at least one call each), so accepting, which a
    # client waits on, gets the daemon's CPU and the stream's fsyncs first. The queue absorbs
    # the burst; the workers take their full concurrency back as soon as it passes.
    accepting_busy: Callable[[], bool] | None = None

    @property
    def heartbeat_interval_s(self) -> float:
        return self.heartbeat_s or self.limits.ack_wait_s / 3


@dataclass(frozen=True)
class _Attempt:
    status: int | None  # None: the function could not be reached
    headers: CIMultiDict[str]
    body: bytes
    error: str | None
    gone: bool = False  # the function does not exist (any more)


class FunctionWorker:
    def __init__(
        self,
        nc: NATS,
        js: JetStreamContext,
        store: StatusStore,
        invoke: Invoke,
        *,
        namespace: str,
        name: str,
        policy: RetryPolicy,
        concurrency: int,
        options: WorkerOptions,
        callbacks: CallbackSender | None = None,
        metrics: AsyncMetrics | None = None,
    ) -> None:
        self.namespace = namespace
        self.name = name
        self.function_name = f"{name}.{namespace}"
        self.consumer = consumer_name(namespace, name)
        self.policy = policy
        self._concurrency = max(1, concurrency)
        self._nc = nc
        self._js = js
        self._store = store
        self._invoke = invoke
        self._opts = options
        self._callbacks = callbacks
        self._metrics = metrics
        self._inbox = ""
        self._sub: Subscription | None = None
        self._incoming: asyncio.Queue[Msg | object] = asyncio.Queue()
        self._pulls: dict[str, _Pull] = {}
        self._pull_seq = 0
        self._loop_task: asyncio.Task[None] | None = None
        self._running: set[asyncio.Task[None]] = set()
        self._stopping = False
        self._consumer_lost = False
        self._recreate_at = 0.0
        self._pause_until = 0.0

    # -- lifetime ---------------------------------------------------------------------------

    async def start(self) -> None:
        await self._js.add_consumer(
            WORK_STREAM, consumer_config(self.namespace, self.name, self._opts.limits)
        )
        self._inbox = self._nc.new_inbox()
        self._sub = await self._nc.subscribe(self._inbox + ".*", cb=self._on_message)
        self._loop_task = asyncio.create_task(self._pull_loop(), name=f"async {self.function_name}")
        log.info(
            "async worker started %s concurrency=%d attempts=%d",
            self.function_name,
            self._concurrency,
            self.policy.attempts,
        )

    async def stop(self, drain_timeout_s: float | None = None) -> None:
        """Stop pulling, let running calls finish up to the deadline, interrupt the rest (their
        messages are nak'ed and come back to the queue)."""
        self._stopping = True
        if self._loop_task is not None:
            self._loop_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._loop_task
            self._loop_task = None
        if self._sub is not None:
            with contextlib.suppress(NatsError):
                await self._sub.unsubscribe()
            self._sub = None
        if self._running:
            timeout = self._opts.drain_timeout_s if drain_timeout_s is None else drain_timeout_s
            _, late = await asyncio.wait(set(self._running), timeout=timeout)
            for task in late:
                task.cancel()
            if late:
                await asyncio.wait(late)
                log.warning(
                    "async worker %s interrupted %d running call(s) at stop",
                    self.function_name,
                    len(late),
                )
        # Messages delivered to our inbox but not started go back after ack_wait; say so now.
        while not self._incoming.empty():
            item = self._incoming.get_nowait()
            if isinstance(item, Msg) and item.reply and not _status_of(item):
                with contextlib.suppress(NatsError):
                    await item.nak()
        log.info("async worker stopped %s", self.function_name)

    def set_concurrency(self, concurrency: int) -> None:
        self._concurrency = max(1, concurrency)
        self._incoming.put_nowait(_WAKE)

    @property
    def concurrency(self) -> int:
        return self._concurrency

    @property
    def running(self) -> int:
        return len(self._running)

    async def depth(self) -> QueueDepth:
        return await queue_depth(self._js, self.namespace, self.name)

    # -- pulling ----------------------------------------------------------------------------

    async def _on_message(self, msg: Msg) -> None:
        self._incoming.put_nowait(msg)

    async def _pull_loop(self) -> None:
        api = f"$JS.API.CONSUMER.MSG.NEXT.{WORK_STREAM}.{self.consumer}"
        expires_s = self._opts.pull_expires_s
        reconnects = self._nc.stats["reconnects"]
        while not self._stopping:
            now = time.monotonic()
            if self._nc.stats["reconnects"] != reconnects:
                # Pull requests do not survive a reconnect (the server may have restarted).
                reconnects = self._nc.stats["reconnects"]
                self._pulls.clear()
            for key in [k for k, p in self._pulls.items() if p.deadline < now]:
                del self._pulls[key]
            if self._consumer_lost and now >= self._recreate_at and self._nc.is_connected:
                await self._recreate_consumer()
            credit = sum(p.remaining for p in self._pulls.values())
            share = max(1, self._concurrency // YIELD_SHARE)
            busy = self._opts.accepting_busy is not None and self._opts.accepting_busy()
            want = (share if busy else self._concurrency) - len(self._running) - credit
            if not self._running:
                # An idle worker's standing pull asks for no more than it may start once a
                # burst has made accepting busy; the next pulls, with calls running, ask for
                # the rest.
                want = min(want, share - credit)
            ready = self._nc.is_connected and not self._consumer_lost and now >= self._pause_until
            if want > 0 and ready:
                self._pull_seq += 1
                key = str(self._pull_seq)
                request = {"batch": want, "expires": int(expires_s * 1e9)}
                try:
                    await self._nc.publish(
                        api, json.dumps(request).encode(), reply=f"{self._inbox}.{key}"
                    )
                    self._pulls[key] = _Pull(want, now + expires_s + 1.0)
                except NatsError as exc:
                    log.debug("async worker %s cannot pull: %s", self.function_name, exc)
            # Wake for a message, a freed slot, or (at the latest) to notice a lost pull.
            # asyncio.timeout, not wait_for: on 3.11 wait_for can swallow a cancel that races
            # with an arriving item, and stop() would wait for ever.
            try:
                async with asyncio.timeout(0.5):
                    item = await self._incoming.get()
            except TimeoutError:
                continue
            if isinstance(item, Msg):
                self._receive(item)

    def _receive(self, msg: Msg) -> None:
        status = _status_of(msg)
        if status:
            key = msg.subject.rsplit(".", 1)[-1]  # control messages come to the request's inbox
            if status == "100":  # idle heartbeat
                return
            self._pulls.pop(key, None)  # 404/408/409/503 end the pull request
            description = str((msg.headers or {}).get("Description", "")).strip()
            # 503: no consumer answers; 409 "Consumer Deleted": someone removed it.
            if status == "503" or (status == "409" and "deleted" in description.lower()):
                if not self._consumer_lost:
                    log.warning(
                        "async worker %s lost its consumer (%s %s); recreating it",
                        self.function_name,
                        status,
                        description or "no responders",
                    )
                self._consumer_lost = True
            elif status == "409":
                # e.g. "Exceeded MaxWaiting": ask again a little later, not in a tight loop
                self._pause_until = time.monotonic() + 0.5
                log.info("async worker %s pull ended: %s", self.function_name, description)
            return
        # A delivered message carries its stream subject, not our request's inbox; the server
        # serves pull requests oldest first, so the oldest one is the one it fills.
        for oldest, pull in self._pulls.items():
            pull.remaining -= 1
            if pull.remaining <= 0:
                del self._pulls[oldest]
            break
        task = asyncio.create_task(self._handle(msg), name=f"async call {self.function_name}")
        self._running.add(task)
        task.add_done_callback(self._done)

    async def _recreate_consumer(self) -> None:
        try:
            await self._js.add_consumer(
                WORK_STREAM, consumer_config(self.namespace, self.name, self._opts.limits)
            )
        except (NatsError, TimeoutError) as exc:
            self._recreate_at = time.monotonic() + 1.0
            log.debug("async worker %s cannot recreate its consumer: %s", self.function_name, exc)
            return
        self._consumer_lost = False
        self._pulls.clear()
        log.info("async worker %s recreated its consumer", self.function_name)

    def _done(self, task: asyncio.Task[None]) -> None:
        self._running.discard(task)
        self._incoming.put_nowait(_WAKE)

    # -- one message ------------------------------------------------------------------------

    async def _handle(self, msg: Msg) -> None:
        try:
            await self._process(msg)
        except asyncio.CancelledError:
            with contextlib.suppress(Exception):
                await msg.nak()
            raise
        except (NatsError, TimeoutError) as exc:
            # NATS went away mid-call: the message comes back after ack_wait (or sooner, after
            # a nak); the status store lets the next delivery tell a finished call from one
            # that still has to run.
            log.warning("async call on %s left unacked: %s", self.function_name, exc)
        except Exception:
            log.exception(
                "async call on %s failed in the worker; left for redelivery", self.function_name
            )

    async def _process(self, msg: Msg) -> None:
        opts = self._opts
        try:
            _, _, call_id = parse_subject(msg.subject)
            env = decode(call_id, msg.headers, msg.data)
        except (MalformedMessage, ValueError) as exc:
            log.error("async worker %s drops an unreadable message: %s", self.function_name, exc)
            await msg.term()
            return
        meta = msg.metadata
        attempt = int(meta.num_delivered or 1)
        seq = int(meta.sequence.stream) if meta.sequence is not None else 0
        claimed = await self._claim(env, attempt, seq)
        if claimed is None:
            await msg.ack()
            return
        status, revision = claimed
        heartbeat = _Heartbeat(msg, self._opts.heartbeat_interval_s, self.function_name)
        try:
            if self._metrics is not None:
                self._metrics.started_total.labels(self.function_name).inc()
            started_at = opts.clock()
            started = time.monotonic()
            result = await self._attempt(env)
            duration_s = time.monotonic() - started
            finished_at = opts.clock()
            record = AttemptRecord(attempt, started_at, finished_at, result.status, result.error)
            if result.gone:
                decision = Decision(Outcome.DEAD_LETTER)
            else:
                decision = decide(
                    self.policy,
                    attempt,
                    result.status,
                    retry_after=result.headers.get("Retry-After"),
                    now=finished_at,
                    rand=opts.rand,
                )
            if decision.outcome is Outcome.RETRY:
                retry = status.with_attempt(
                    record,
                    state=CallState.QUEUED,
                    updated_at=finished_at,
                    next_attempt_at=finished_at + decision.delay_s,
                )
                await self._save(retry, revision)
                # Heartbeat off first: a +WPI after the NAK could stretch the retry delay.
                heartbeat.cancel()
                await msg.nak(delay=decision.delay_s)
                if self._metrics is not None:
                    self._metrics.retried_total.labels(self.function_name).inc()
                log.info(
                    "async call %s of %s attempt %d/%d got %s; retry in %.2fs",
                    env.call_id,
                    self.function_name,
                    attempt,
                    self.policy.attempts,
                    result.status or result.error,
                    decision.delay_s,
                )
                return
            await self._finish(msg, env, status, revision, record, decision, result, duration_s)
            heartbeat.cancel()
            await msg.ack()
        finally:
            heartbeat.cancel()

    async def _claim(self, env: Envelope, attempt: int, seq: int) -> tuple[CallStatus, int] | None:
        """The call's status as ``running`` with its revision, or None when it must not run:
        already final (a duplicate delivery), cancelled, or running from another message."""
        now = self._opts.clock()
        fresh = CallStatus(
            call_id=env.call_id,
            function=env.function,
            namespace=env.namespace,
            state=CallState.RUNNING,
            enqueued_at=env.enqueued_at,
            updated_at=now,
            attempts=attempt,
            callback_url=env.callback_url,
            seq=seq,
        )
        for _ in range(10):
            # A first delivery has no record yet: try to create it before reading.
            revision = await self._store.create(fresh)
            if revision is not None:
                return fresh, revision
            found = await self._store.get(env.call_id)
            if found is None:
                continue
            current, revision = found
            if current.state.final or (current.state is CallState.RUNNING and current.seq != seq):
                if self._metrics is not None:
                    if current.state is CallState.CANCELLED:
                        self._metrics.cancelled_total.labels(self.function_name).inc()
                    else:
                        self._metrics.duplicates_total.labels(self.function_name, "delivery").inc()
                log.info(
                    "async call %s of %s is %s; not run again",
                    env.call_id,
                    self.function_name,
                    current.state.value,
                )
                return None
            running = replace(
                current,
                state=CallState.RUNNING,
                updated_at=now,
                attempts=attempt,
                next_attempt_at=None,
                seq=seq,
            )
            new_revision = await self._store.update(running, revision)
            if new_revision is not None:
                return running, new_revision
        raise RuntimeError(f"call {env.call_id}: status kept changing while claiming it")

    async def _attempt(self, env: Envelope) -> _Attempt:
        try:
            status, headers, body = await self._invoke(env)
        except FunctionNotFound as exc:
            return _Attempt(404, CIMultiDict(), str(exc).encode(), str(exc), gone=True)
        except NoReadyReplica as exc:
            headers_out: CIMultiDict[str] = CIMultiDict()
            if exc.retry_after_s is not None:
                headers_out["Retry-After"] = str(exc.retry_after_s)
            return _Attempt(503, headers_out, str(exc).encode(), short_error(str(exc)))
        except UpstreamTimeout as exc:
            return _Attempt(504, CIMultiDict(), str(exc).encode(), short_error(str(exc)))
        except Exception as exc:
            text = short_error(f"{type(exc).__name__}: {exc}".rstrip(": "))
            return _Attempt(None, CIMultiDict(), text.encode(), text)
        pairs = headers.items() if isinstance(headers, Mapping) else headers
        error = None if status < 400 else f"function answered {status}"
        return _Attempt(status, CIMultiDict(pairs), body, error)

    async def _finish(
        self,
        msg: Msg,
        env: Envelope,
        status: CallStatus,
        revision: int,
        record: AttemptRecord,
        decision: Decision,
        result: _Attempt,
        duration_s: float,
    ) -> None:
        """Record the final outcome (dead letter first), then deliver the callback. The caller
        acks after this returns."""
        now = self._opts.clock()
        state = {
            Outcome.SUCCEEDED: CallState.SUCCEEDED,
            Outcome.FAILED: CallState.FAILED,
            Outcome.DEAD_LETTER: CallState.DEAD_LETTERED,
        }[decision.outcome]
        wants_callback = env.callback_url is not None and self._callbacks is not None
        final = status.with_attempt(
            record,
            state=state,
            updated_at=now,
            next_attempt_at=None,
            callback_state="pending" if wants_callback else None,
        )
        if state is CallState.DEAD_LETTERED:
            # Stored before the status says so and before the ack: a crash in between leaves a
            # redelivery that dead-letters again (deduplicated), never a lost call.
            await publish_dead_letter(self._js, env, final, dead_at=now)
        revision = await self._save(final, revision)
        if self._metrics is not None:
            counter = {
                CallState.SUCCEEDED: self._metrics.succeeded_total,
                CallState.FAILED: self._metrics.failed_total,
                CallState.DEAD_LETTERED: self._metrics.dead_lettered_total,
            }[state]
            counter.labels(self.function_name).inc()
        # One line per call that did not simply succeed; a success is the normal case and
        # shows in the metrics and the call's status (a line each cost measurable CPU).
        log.log(
            logging.DEBUG if state is CallState.SUCCEEDED else logging.INFO,
            "async call %s of %s %s after %d attempt(s) status=%s",
            env.call_id,
            self.function_name,
            state.value,
            record.attempt,
            result.status if result.status is not None else result.error,
        )
        if wants_callback:
            assert self._callbacks is not None and env.callback_url is not None
            headers = callback_headers(
                result.headers,
                call_id=env.call_id,
                function_name=self.function_name,
                status=result.status if result.status is not None else 502,
                duration_s=duration_s,
                attempt=record.attempt,
            )
            outcome = await self._callbacks.send(env.callback_url, headers, result.body)
            if self._metrics is not None:
                label = "delivered" if outcome.delivered else "failed"
                self._metrics.callbacks_total.labels(self.function_name, label).inc()
            if not outcome.delivered:
                log.warning(
                    "callback for async call %s of %s failed after %d attempt(s): %s",
                    env.call_id,
                    self.function_name,
                    outcome.attempts,
                    outcome.error,
                )
            await self._save(
                replace(
                    final,
                    callback_state="delivered" if outcome.delivered else "failed",
                    callback_status=outcome.status,
                    updated_at=self._opts.clock(),
                ),
                revision,
            )

    async def _save(self, status: CallStatus, revision: int) -> int:
        new_revision = await self._store.update(status, revision)
        if new_revision is None:
            # Only this worker writes a running call's record; a lost race here means an
            # operator raced us (e.g. a replay): the worker's outcome is the truth to record.
            new_revision = await self._store.put(status)
        return new_revision


class _Heartbeat:
    """Keeps the lease of a running call: without it a call longer than ack_wait would be
    redelivered (and run twice) while still running. A timer, not a task: most calls end
    long before the first beat, and a task per call was a measurable part of their cost."""

    __slots__ = ("_handle", "_interval_s", "_loop", "_msg", "_name", "_task")

    def __init__(self, msg: Msg, interval_s: float, function_name: str) -> None:
        self._msg = msg
        self._interval_s = interval_s
        self._name = function_name
        self._loop = asyncio.get_running_loop()
        self._task: asyncio.Task[None] | None = None
        self._handle: asyncio.TimerHandle | None = self._loop.call_later(interval_s, self._beat)

    def _beat(self) -> None:
        self._handle = self._loop.call_later(self._interval_s, self._beat)
        if self._task is None or self._task.done():
            self._task = self._loop.create_task(self._send())

    async def _send(self) -> None:
        try:
            await self._msg.in_progress()
        except NatsError as exc:
            log.debug("in_progress for %s failed: %s", self._name, exc)

    def cancel(self) -> None:
        if self._handle is not None:
            self._handle.cancel()
            self._handle = None
        if self._task is not None:
            self._task.cancel()
            self._task = None


def _status_of(msg: Msg) -> str:
    """The status code of a JetStream control message ("" for a real message)."""
    if msg.headers and not msg.data and "Status" in msg.headers:
        return str(msg.headers["Status"])
    return ""


class AsyncWorkers:
    """Owns the workers of all functions. ``ensure`` when a function is deployed or changed,
    ``remove`` when it goes, ``close`` at shutdown (after the gateway stopped accepting)."""

    def __init__(
        self,
        nc: NATS,
        js: JetStreamContext,
        store: StatusStore,
        invoke: Invoke,
        *,
        options: WorkerOptions | None = None,
        default_policy: RetryPolicy | None = None,
        callbacks: CallbackSender | None = None,
        metrics: AsyncMetrics | None = None,
    ) -> None:
        self._nc = nc
        self._js = js
        self._store = store
        self._invoke = invoke
        self.options = options or WorkerOptions()
        self.default_policy = default_policy or RetryPolicy()
        self._callbacks = callbacks
        self._metrics = metrics
        self._workers: dict[tuple[str, str], FunctionWorker] = {}
        self._lock = asyncio.Lock()

    async def ensure(
        self,
        namespace: str,
        name: str,
        *,
        concurrency: int = 1,
        policy: RetryPolicy | None = None,
    ) -> FunctionWorker:
        """Start the function's worker, or apply a new concurrency / policy to it."""
        async with self._lock:
            worker = self._workers.get((namespace, name))
            if worker is None:
                worker = FunctionWorker(
                    self._nc,
                    self._js,
                    self._store,
                    self._invoke,
                    namespace=namespace,
                    name=name,
                    policy=policy or self.default_policy,
                    concurrency=concurrency,
                    options=self.options,
                    callbacks=self._callbacks,
                    metrics=self._metrics,
                )
                await worker.start()
                self._workers[(namespace, name)] = worker
            else:
                worker.policy = policy or self.default_policy
                if worker.concurrency != concurrency:
                    log.info(
                        "async worker %s concurrency %d→%d",
                        worker.function_name,
                        worker.concurrency,
                        concurrency,
                    )
                    worker.set_concurrency(concurrency)
            return worker

    async def remove(self, namespace: str, name: str, *, delete_consumer: bool = False) -> None:
        """Stop the function's worker. Its queued calls stay in the stream (they run if the
        function comes back) unless ``delete_consumer`` also drops its consumer."""
        async with self._lock:
            worker = self._workers.pop((namespace, name), None)
        if worker is not None:
            await worker.stop()
        if delete_consumer:
            with contextlib.suppress(NotFoundError):
                await self._js.delete_consumer(WORK_STREAM, consumer_name(namespace, name))

    def get(self, namespace: str, name: str) -> FunctionWorker | None:
        return self._workers.get((namespace, name))

    async def refresh_depths(self) -> dict[str, QueueDepth]:
        """Queue depth per running worker, also written to the metrics gauge."""
        out: dict[str, QueueDepth] = {}
        for worker in list(self._workers.values()):
            depth = await worker.depth()
            out[worker.function_name] = depth
            if self._metrics is not None:
                self._metrics.set_depth(worker.function_name, depth.pending, depth.in_flight)
        return out

    async def close(self, drain_timeout_s: float | None = None) -> None:
        async with self._lock:
            workers = list(self._workers.values())
            self._workers.clear()
        await asyncio.gather(*(w.stop(drain_timeout_s) for w in workers))

    async def __aenter__(self) -> AsyncWorkers:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()
