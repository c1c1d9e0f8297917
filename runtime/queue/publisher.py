"""Durable JetStream publishes, committed together when many wait: group commit for the work stream.

With fsync before ack the server stores and fsyncs each published message on its own, one after
another on the stream's single goroutine, so at 64 calls in flight each 202 waited ~25 ms in the
stream's queue. An atomic batch (nats-server 2.12+, stream ``allow_atomic``) is stored with one
fsync; but the server stages each batch in a temporary file store (~5 ms of directory and file
work per batch on this machine, measured with perf), so a batch only pays off when several calls
wait. Hence:

- while fewer than ``direct_limit`` publishes are in flight (an idle or lightly loaded daemon),
  each call goes out on its own at once: the lowest latency for a lone call;
- calls that arrive beyond that wait, and every ``min_batch`` or more of them go out together as
  one atomic batch (up to ``batch_limit`` batches in flight, which the server pipelines); a few
  stragglers take the next free single slot instead.

The defaults (4 single, batches of 8 or more, 4 batches in flight) were the best of the settings
tried with ``bench/async`` (BENCHMARKS.md). Each message keeps its own ``Nats-Msg-Id``, so the
server's dedupe still works per call. A batch is all or nothing: one that is refused (a call id
already stored, the stream full, ...) stored nothing, and its messages are published again one by
one, so each gets its own answer (a duplicate, a 503, or stored). A server that cannot take
batches of these messages turns batching off for the rest of the connection, with one log line.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import logging
import secrets
from dataclasses import dataclass, field

from nats.aio.client import Client as NATS
from nats.errors import NoRespondersError
from nats.js.errors import APIError, NoStreamResponseError

log = logging.getLogger("localfaas.queue")

BATCH_ID = "Nats-Batch-Id"
BATCH_SEQUENCE = "Nats-Batch-Sequence"
BATCH_COMMIT = "Nats-Batch-Commit"

# JetStream error codes meaning "this server or stream cannot take such batches at all" (atomic
# publish disabled, a header it does not allow in batches, batch id refused, batch too large):
# stop batching. Any other refusal is about the messages (a call id already stored, the stream
# full, ...): they are published again one by one.
_CANNOT_BATCH = {10174, 10177, 10179, 10199}
# The server takes at most 1000 messages per atomic batch.
SERVER_MAX_BATCH = 1000


@dataclass(frozen=True)
class Stored:
    seq: int
    duplicate: bool


@dataclass
class _Waiting:
    subject: str
    payload: bytes
    headers: dict[str, str]
    future: asyncio.Future[Stored] = field(repr=False)
    since: float = 0.0


def parse_ack(data: bytes) -> Stored:
    """A PubAck (``{"stream":..,"seq":..,"duplicate":..}``); APIError for an error reply."""
    reply = json.loads(data)
    if "error" in reply:
        raise APIError.from_error(reply["error"])
    return Stored(int(reply["seq"]), bool(reply.get("duplicate", False)))


def batch_seqs(data: bytes, size: int) -> list[int]:
    """The stream sequences of a committed batch's messages, in order: the ack names the last
    and the count."""
    reply = json.loads(data)
    if "error" in reply:
        raise APIError.from_error(reply["error"])
    last, count = int(reply["seq"]), reply.get("count")
    if count != size:
        # No count: a server that does not know batches stored these as single messages.
        raise APIError(
            code=400, err_code=10174, description=f"batch of {size} acknowledged as {count}"
        )
    return list(range(last - size + 1, last + 1))


class GroupPublisher:
    def __init__(
        self,
        nc: NATS,
        *,
        atomic: bool,
        timeout_s: float,
        direct_limit: int = 4,
        min_batch: int = 8,
        batch_limit: int = 4,
        max_batch: int = 256,
        max_batch_bytes: int = 8 * 1024 * 1024,
    ) -> None:
        if not 2 <= min_batch <= max_batch <= SERVER_MAX_BATCH or direct_limit < 1:
            raise ValueError("need direct_limit >= 1 and 2 <= min_batch <= max_batch <= 1000")
        self._nc = nc
        self.atomic = atomic
        self._timeout_s = timeout_s
        self._direct_limit = direct_limit
        self._min_batch = min_batch
        self._batch_limit = batch_limit
        self._max_batch = max_batch
        self._max_batch_bytes = max_batch_bytes
        self._direct = 0
        self._batches = 0
        self._waiting: list[_Waiting] = []
        self._flush_scheduled = False
        # Batch ids only need to be unique among the batches in flight on this server.
        self._batch_ids = (f"lf{secrets.token_hex(6)}{n}" for n in itertools.count())
        self.batches_committed = 0
        self.messages_batched = 0

    async def publish(self, subject: str, payload: bytes, headers: dict[str, str]) -> Stored:
        """Store one message durably (``headers`` become the publisher's). APIError for a
        refusal (full, ...), NatsError / TimeoutError when the server did not answer in time.
        A call waiting for a batch gives up after the publish timeout (checked whenever a
        publish ends, so within twice the timeout); a cancelled caller's call is not sent."""
        if not self.atomic or (self._direct < self._direct_limit and not self._waiting):
            self._direct += 1
            try:
                return await self._publish_one(subject, payload, headers)
            finally:
                self._direct -= 1
                self._schedule_flush()
        loop = asyncio.get_running_loop()
        future: asyncio.Future[Stored] = loop.create_future()
        self._waiting.append(_Waiting(subject, payload, headers, future, loop.time()))
        self._schedule_flush()
        return await future

    async def _publish_one(self, subject: str, payload: bytes, headers: dict[str, str]) -> Stored:
        try:
            msg = await self._nc.request(subject, payload, timeout=self._timeout_s, headers=headers)
        except NoRespondersError:
            raise NoStreamResponseError from None
        return parse_ack(msg.data)

    # -- grouping -------------------------------------------------------------------------------

    def _schedule_flush(self) -> None:
        # At the end of this round of the event loop: every call that arrived in the same round
        # (one read of many connections) joins the same batch.
        if self._waiting and not self._flush_scheduled:
            self._flush_scheduled = True
            asyncio.get_running_loop().call_soon(self._flush)

    def _flush(self) -> None:
        self._flush_scheduled = False
        too_old = asyncio.get_running_loop().time() - self._timeout_s
        for waiting in self._waiting:
            if waiting.since < too_old and not waiting.future.done():
                waiting.future.set_exception(TimeoutError("no batch slot within the timeout"))
        self._waiting = [w for w in self._waiting if not w.future.done()]
        while (
            self.atomic
            and self._batches < self._batch_limit
            and len(self._waiting) >= self._min_batch
        ):
            self._start_batch(self._take_batch())
        while self._waiting and (self._direct < self._direct_limit or not self.atomic):
            self._send_alone(self._waiting.pop(0))

    def _take_batch(self) -> list[_Waiting]:
        size, count = 0, 0
        for waiting in self._waiting:
            size += len(waiting.payload)
            if count and (count == self._max_batch or size > self._max_batch_bytes):
                break
            count += 1
        batch, self._waiting = self._waiting[:count], self._waiting[count:]
        return batch

    def _start_batch(self, batch: list[_Waiting]) -> None:
        self._batches += 1
        asyncio.get_running_loop().create_task(self._batch_for(batch))

    def _send_alone(self, waiting: _Waiting) -> asyncio.Task[None]:
        self._direct += 1  # counted now, so one flush never starts more than the limit
        return asyncio.get_running_loop().create_task(self._alone(waiting))

    async def _alone(self, waiting: _Waiting) -> None:
        try:
            stored = await self._publish_one(waiting.subject, waiting.payload, waiting.headers)
        except Exception as exc:
            if not waiting.future.done():
                waiting.future.set_exception(exc)
        else:
            if not waiting.future.done():
                waiting.future.set_result(stored)
        finally:
            self._direct -= 1
            self._schedule_flush()

    async def _batch_for(self, batch: list[_Waiting]) -> None:
        try:
            seqs = await self._commit(batch)
        except APIError as exc:
            if exc.err_code in _CANNOT_BATCH and self.atomic:
                self.atomic = False
                log.warning(
                    "async queue: the NATS server refused a batched publish (%s); publishing "
                    "one call at a time from now on",
                    exc.description or exc,
                )
            # Nothing of the batch was stored: each message again on its own, for its own answer.
            await asyncio.gather(*(self._send_alone(waiting) for waiting in batch))
        except BaseException as exc:
            for waiting in batch:
                if not waiting.future.done():
                    waiting.future.set_exception(exc)
            if not isinstance(exc, Exception):
                raise
        else:
            self.batches_committed += 1
            self.messages_batched += len(batch)
            for waiting, seq in zip(batch, seqs, strict=True):
                if not waiting.future.done():
                    waiting.future.set_result(Stored(seq, False))
        finally:
            self._batches -= 1
            self._schedule_flush()

    async def _commit(self, batch: list[_Waiting]) -> list[int]:
        batch_id = next(self._batch_ids)
        last = len(batch)
        for number, waiting in enumerate(batch, 1):
            headers = {**waiting.headers, BATCH_ID: batch_id, BATCH_SEQUENCE: str(number)}
            if number < last:
                # No reply asked: the server answers the batch once, at the commit.
                await self._nc.publish(waiting.subject, waiting.payload, headers=headers)
                continue
            headers[BATCH_COMMIT] = "1"
            try:
                msg = await self._nc.request(
                    waiting.subject, waiting.payload, timeout=self._timeout_s, headers=headers
                )
            except NoRespondersError:
                raise NoStreamResponseError from None
            return batch_seqs(msg.data, last)
        raise AssertionError("empty batch")
