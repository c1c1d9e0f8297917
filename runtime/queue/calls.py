"""Management operations by call id and per function: status, cancel, replay, dead letters,
queue depth. What `/system/async/...` and `localfaas async ...` call."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, replace

from nats.aio.client import Client as NATS
from nats.errors import Error as NatsError
from nats.js import JetStreamContext
from nats.js.errors import NotFoundError

from runtime.queue import dlq
from runtime.queue.errors import CallConflict, CallNotFound, QueueUnavailable
from runtime.queue.message import check_call_id
from runtime.queue.status import CallState, CallStatus, StatusStore
from runtime.queue.streams import (
    WORK_STREAM,
    consumer_name,
    parse_subject,
    work_call_filter,
    work_filter,
)

log = logging.getLogger("localfaas.queue")


@dataclass(frozen=True)
class QueuedCall:
    namespace: str
    function: str
    seq: int
    enqueued_at: float


@dataclass(frozen=True)
class QueueDepth:
    pending: int  # not yet handed to the worker
    in_flight: int  # handed out and not acked: running, or waiting for a retry

    @property
    def total(self) -> int:
        return self.pending + self.in_flight


async def find_queued(js: JetStreamContext, call_id: str) -> QueuedCall | None:
    """A call whose message is still in the work stream (queued, running or retrying)."""
    try:
        msg = await js.get_msg(WORK_STREAM, subject=work_call_filter(call_id), direct=True)
    except NotFoundError:
        return None
    assert msg.subject is not None and msg.seq is not None
    namespace, name, _ = parse_subject(msg.subject)
    enqueued_at = msg.time.timestamp() if msg.time is not None else 0.0
    return QueuedCall(namespace, name, msg.seq, enqueued_at)


async def queue_depth(js: JetStreamContext, namespace: str, name: str) -> QueueDepth:
    """From the function's consumer; a function whose worker never started has its backlog
    counted from the stream instead."""
    try:
        info = await js.consumer_info(WORK_STREAM, consumer_name(namespace, name))
    except NotFoundError:
        try:
            stream = await js.stream_info(WORK_STREAM, subjects_filter=work_filter(namespace, name))
        except NotFoundError:
            return QueueDepth(0, 0)
        return QueueDepth(sum((stream.state.subjects or {}).values()), 0)
    except (NatsError, TimeoutError) as exc:
        raise QueueUnavailable(f"queue depth is unavailable: {exc}") from exc
    return QueueDepth(int(info.num_pending or 0), int(info.num_ack_pending or 0))


class Calls:
    def __init__(
        self,
        nc: NATS,
        js: JetStreamContext,
        store: StatusStore,
        *,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._nc = nc
        self._js = js
        self._store = store
        self._clock = clock

    async def status(self, call_id: str) -> CallStatus:
        """InvalidSpec for a malformed id (→ 400), CallNotFound for an unknown one (→ 404)."""
        check_call_id(call_id)
        self._check_connected()
        try:
            found = await self._store.get(call_id)
            if found is not None:
                return found[0]
            queued = await find_queued(self._js, call_id)
            if queued is not None:
                return CallStatus(
                    call_id,
                    queued.function,
                    queued.namespace,
                    CallState.QUEUED,
                    queued.enqueued_at,
                    queued.enqueued_at,
                )
            # Status records and dead letters age out together by default; a dead letter must
            # stay visible even if its status record went first.
            letter = await dlq.find_dead_letter(self._js, call_id)
        except (NatsError, TimeoutError) as exc:
            raise QueueUnavailable(f"call status is unavailable: {exc}") from exc
        if letter is not None:
            return letter.as_status()
        raise CallNotFound(f"no async call with id {call_id}")

    async def cancel(self, call_id: str) -> CallStatus:
        """Cancel a call that has not started, or waits for a retry. The worker acks it unrun;
        the queued message is also deleted at once so the queue depth drops."""
        check_call_id(call_id)
        self._check_connected()
        try:
            return await self._cancel(call_id)
        except (NatsError, TimeoutError) as exc:
            raise QueueUnavailable(f"cannot cancel call {call_id} now: {exc}") from exc

    async def _cancel(self, call_id: str) -> CallStatus:
        for _ in range(10):
            now = self._clock()
            queued = await find_queued(self._js, call_id)
            found = await self._store.get(call_id)
            if found is None:
                if queued is None:
                    raise CallNotFound(f"no queued async call with id {call_id}")
                cancelled = CallStatus(
                    call_id,
                    queued.function,
                    queued.namespace,
                    CallState.CANCELLED,
                    queued.enqueued_at,
                    now,
                )
                if await self._store.create(cancelled) is None:
                    continue  # a worker claimed it meanwhile: look again
            else:
                current, revision = found
                if current.state is CallState.CANCELLED:
                    return current
                if current.state is not CallState.QUEUED:
                    raise CallConflict(
                        f"call {call_id} is {current.state.value}; only queued calls can be "
                        "cancelled"
                    )
                cancelled = replace(
                    current, state=CallState.CANCELLED, updated_at=now, next_attempt_at=None
                )
                if await self._store.update(cancelled, revision) is None:
                    continue
            if queued is not None:
                try:
                    await self._js.delete_msg(WORK_STREAM, queued.seq)
                except (NatsError, TimeoutError):
                    pass  # the worker acks it unrun when it comes up
            log.info("cancelled async call %s of %s", call_id, cancelled.function_name)
            return cancelled
        raise CallConflict(f"call {call_id} changed too often while cancelling; try again")

    def _check_connected(self) -> None:
        # Fail fast: a request to a disconnected client would wait for its whole timeout.
        if not self._nc.is_connected:
            raise QueueUnavailable("the async queue (NATS) is not connected")

    async def replay(self, call_id: str) -> CallStatus:
        self._check_connected()
        return await dlq.replay(self._js, self._store, call_id, clock=self._clock)

    async def dead_letters(
        self,
        *,
        namespace: str | None = None,
        function: str | None = None,
        after_seq: int = 0,
        limit: int = 100,
    ) -> list[dlq.DeadLetter]:
        self._check_connected()
        return await dlq.list_dead_letters(
            self._js, namespace=namespace, function=function, after_seq=after_seq, limit=limit
        )

    async def depth(self, namespace: str, name: str) -> QueueDepth:
        self._check_connected()
        return await queue_depth(self._js, namespace, name)
