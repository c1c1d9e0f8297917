"""Enqueue: one durable JetStream message per accepted call, deduplicated by call id.

The gateway answers 202 only after ``enqueue`` returned, i.e. after the server acknowledged the
message (stored, and with the embedded server's ``sync_interval: always`` fsynced). Calls that
arrive together are stored together (publisher.py: group commit). Every way the publish can
fail maps to QueueUnavailable (→ 503 with Retry-After), never to a 202.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from nats.aio.client import Client as NATS
from nats.errors import Error as NatsError
from nats.js.errors import APIError

from runtime.errors import PayloadTooLarge
from runtime.queue.errors import QueueUnavailable
from runtime.queue.message import Envelope, encode
from runtime.queue.metrics import AsyncMetrics
from runtime.queue.publisher import GroupPublisher
from runtime.queue.streams import WORK_STREAM, work_subject

log = logging.getLogger("localfaas.queue")

DEFAULT_MAX_BODY_BYTES = 1024 * 1024
# Room for the Lf-Call header (method, path, query, request headers) next to the body.
HEADER_ALLOWANCE_BYTES = 64 * 1024


def required_max_payload(max_body_bytes: int) -> int:
    """The NATS max_payload a server needs for bodies up to ``max_body_bytes``."""
    return max_body_bytes + HEADER_ALLOWANCE_BYTES


EXPECTED_STREAM = "Nats-Expected-Stream"
# Enqueues in flight from which accepting counts as busy (see WorkerOptions.accepting_busy).
ACCEPT_BUSY = 32

# JetStream error codes that mean "the stream is full" (max msgs / bytes / storage).
_FULL = {10077, 10078, 10047, 10028}


@dataclass(frozen=True)
class Enqueued:
    call_id: str
    seq: int
    duplicate: bool  # the call id was already accepted: nothing new was stored


class Enqueuer:
    def __init__(
        self,
        nc: NATS,
        *,
        atomic_batches: bool = False,
        max_body_bytes: int = DEFAULT_MAX_BODY_BYTES,
        publish_timeout_s: float = 5.0,
        retry_after_s: int = 5,
        metrics: AsyncMetrics | None = None,
    ) -> None:
        self._nc = nc
        self.publisher = GroupPublisher(nc, atomic=atomic_batches, timeout_s=publish_timeout_s)
        self.max_body_bytes = max_body_bytes
        self._retry_after_s = retry_after_s
        self._metrics = metrics
        self.in_flight = 0

    @property
    def busy(self) -> bool:
        """Whether many callers wait for their calls to be stored right now."""
        return self.in_flight >= ACCEPT_BUSY

    def check_body_size(self, size: int | None) -> None:
        """For the handler, before reading a body whose Content-Length is known."""
        if size is not None and size > self.max_body_bytes:
            raise PayloadTooLarge(
                f"request body is larger than the async limit of {self.max_body_bytes} bytes"
            )

    async def enqueue(self, env: Envelope) -> Enqueued:
        self.check_body_size(len(env.body))
        headers, payload = encode(env)
        size = len(payload) + sum(len(k) + len(v) + 4 for k, v in headers.items())
        if size > self._nc.max_payload:
            raise PayloadTooLarge(
                f"async request of {size} bytes exceeds the NATS server's max_payload of "
                f"{self._nc.max_payload} bytes"
            )
        if not self._nc.is_connected:
            raise QueueUnavailable("the async queue (NATS) is not connected", self._retry_after_s)
        headers[EXPECTED_STREAM] = WORK_STREAM
        self.in_flight += 1
        try:
            stored = await self.publisher.publish(
                work_subject(env.namespace, env.function, env.call_id), payload, headers
            )
        except APIError as exc:
            if exc.err_code in _FULL:
                raise QueueUnavailable(
                    f"the async queue is full ({exc.description})", self._retry_after_s
                ) from exc
            raise QueueUnavailable(
                f"the async queue refused the call: {exc.description or exc}", self._retry_after_s
            ) from exc
        except (NatsError, TimeoutError, OSError) as exc:
            raise QueueUnavailable(
                f"the async queue (NATS) is unavailable: {exc}", self._retry_after_s
            ) from exc
        finally:
            self.in_flight -= 1
        if self._metrics is not None:
            self._metrics.enqueued(env.function_name, duplicate=stored.duplicate)
        return Enqueued(env.call_id, stored.seq, stored.duplicate)
