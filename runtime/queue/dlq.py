"""Dead letters: calls that exhausted their attempts, stored with their history; list and replay.

A dead letter is the original envelope (body as payload) plus an ``Lf-Dead`` header holding the
attempt history, so replay re-enqueues exactly what the caller sent.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any

from nats.errors import Error as NatsError
from nats.js import JetStreamContext
from nats.js.api import RawStreamMsg
from nats.js.errors import NotFoundError

from runtime.queue.errors import CallConflict, CallNotFound, QueueUnavailable
from runtime.queue.message import MSG_ID_HEADER, Envelope, check_call_id, decode, encode
from runtime.queue.status import AttemptRecord, CallState, CallStatus, StatusStore
from runtime.queue.streams import (
    DLQ_STREAM,
    dlq_call_filter,
    dlq_filter,
    dlq_subject,
    parse_subject,
    work_subject,
)

log = logging.getLogger("localfaas.queue")

DEAD_HEADER = "Lf-Dead"


@dataclass(frozen=True)
class DeadLetter:
    seq: int
    envelope: Envelope
    attempts: int
    last_status: int | None
    last_error: str | None
    first_attempt_at: float | None
    dead_at: float
    replays: int
    history: tuple[AttemptRecord, ...]

    def to_json(self, *, with_headers: bool = False) -> dict[str, Any]:
        env = self.envelope
        out: dict[str, Any] = {
            "seq": self.seq,
            "callId": env.call_id,
            "function": env.function,
            "namespace": env.namespace,
            "method": env.method,
            "path": env.path,
            "query": env.query,
            "callbackUrl": env.callback_url,
            "enqueuedAt": env.enqueued_at,
            "bodyBytes": len(env.body),
            "attempts": self.attempts,
            "lastStatus": self.last_status,
            "lastError": self.last_error,
            "firstAttemptAt": self.first_attempt_at,
            "deadAt": self.dead_at,
            "replays": self.replays,
            "history": [item.to_json() for item in self.history],
        }
        if with_headers:  # request headers may carry credentials: only on request
            out["headers"] = [list(pair) for pair in env.headers]
        return out

    def as_status(self) -> CallStatus:
        env = self.envelope
        return CallStatus(
            call_id=env.call_id,
            function=env.function,
            namespace=env.namespace,
            state=CallState.DEAD_LETTERED,
            enqueued_at=env.enqueued_at,
            updated_at=self.dead_at,
            attempts=self.attempts,
            last_status=self.last_status,
            last_error=self.last_error,
            replays=self.replays,
            callback_url=env.callback_url,
            history=self.history,
        )


def dead_header(status: CallStatus, dead_at: float) -> str:
    record = {
        "attempts": status.attempts,
        "last_status": status.last_status,
        "last_error": status.last_error,
        "first_attempt_at": status.history[0].started_at if status.history else None,
        "dead_at": dead_at,
        "replays": status.replays,
        "history": [vars(item) for item in status.history],
    }
    return json.dumps(record, ensure_ascii=True, separators=(",", ":"))


def _letter(msg: RawStreamMsg) -> DeadLetter:
    assert msg.subject is not None and msg.seq is not None
    _, _, call_id = parse_subject(msg.subject)
    headers = {k: str(v) for k, v in (msg.headers or {}).items()}
    env = decode(call_id, headers, msg.data)
    dead = json.loads(headers.get(DEAD_HEADER, "{}"))
    return DeadLetter(
        seq=msg.seq,
        envelope=env,
        attempts=int(dead.get("attempts", 0)),
        last_status=dead.get("last_status"),
        last_error=dead.get("last_error"),
        first_attempt_at=dead.get("first_attempt_at"),
        dead_at=float(dead.get("dead_at", 0.0)),
        replays=int(dead.get("replays", 0)),
        history=tuple(AttemptRecord(**item) for item in dead.get("history", ())),
    )


async def publish_dead_letter(
    js: JetStreamContext,
    env: Envelope,
    status: CallStatus,
    *,
    dead_at: float,
    timeout_s: float = 5.0,
) -> int:
    """Store ``env`` with its history. Deduplicated per call and replay round, so a worker that
    dies between this and its ack does not store the same dead letter twice."""
    headers, payload = encode(
        env,
        extra={
            DEAD_HEADER: dead_header(status, dead_at),
            MSG_ID_HEADER: f"{env.call_id}.dlq.{status.replays}",
        },
    )
    ack = await js.publish(
        dlq_subject(env.namespace, env.function, env.call_id),
        payload,
        timeout=timeout_s,
        stream=DLQ_STREAM,
        headers=headers,
    )
    return ack.seq


async def find_dead_letter(js: JetStreamContext, call_id: str) -> DeadLetter | None:
    try:
        msg = await js.get_msg(DLQ_STREAM, subject=dlq_call_filter(call_id), direct=True)
    except NotFoundError:
        return None
    return _letter(msg)


async def list_dead_letters(
    js: JetStreamContext,
    *,
    namespace: str | None = None,
    function: str | None = None,
    after_seq: int = 0,
    limit: int = 100,
) -> list[DeadLetter]:
    """Oldest first, from stream sequence ``after_seq + 1``; page with the last ``seq``."""
    subject = dlq_filter(namespace, function)
    out: list[DeadLetter] = []
    seq = after_seq + 1
    try:
        while len(out) < limit:
            try:
                msg = await js.get_msg(DLQ_STREAM, seq=seq, subject=subject, next=True, direct=True)
            except NotFoundError:
                break
            assert msg.seq is not None
            out.append(_letter(msg))
            seq = msg.seq + 1
    except (NatsError, TimeoutError) as exc:
        raise QueueUnavailable(f"dead letters are unavailable: {exc}") from exc
    return out


async def replay(
    js: JetStreamContext,
    store: StatusStore,
    call_id: str,
    *,
    clock: Callable[[], float] = time.time,
    timeout_s: float = 5.0,
) -> CallStatus:
    """Queue a dead letter again under its call id, with a fresh set of attempts.

    Order matters for a crash in between: the status says ``queued`` before the message exists
    (a worker seeing the new message must not take it for a finished duplicate), and the dead
    letter is deleted last (a crash leaves it replayable; the re-publish is deduplicated)."""
    check_call_id(call_id)
    try:
        letter = await find_dead_letter(js, call_id)
        if letter is None:
            raise CallNotFound(f"no dead letter for call {call_id}")
        env = letter.envelope
        now = clock()
        found = await store.get(call_id)
        if found is not None and found[0].state in (CallState.RUNNING,):
            raise CallConflict(f"call {call_id} is running; it cannot be replayed now")
        base = found[0] if found is not None else letter.as_status()
        replays = max(base.replays, letter.replays) + 1
        queued = replace(
            base,
            state=CallState.QUEUED,
            updated_at=now,
            next_attempt_at=None,
            replays=replays,
            callback_state=None,
            callback_status=None,
        )
        if found is None:
            if await store.create(queued) is None:
                raise CallConflict(f"call {call_id} changed while replaying; try again")
        elif await store.update(queued, found[1]) is None:
            raise CallConflict(f"call {call_id} changed while replaying; try again")
        headers, payload = encode(env, extra={MSG_ID_HEADER: f"{call_id}.replay.{replays}"})
        await js.publish(
            work_subject(env.namespace, env.function, call_id),
            payload,
            timeout=timeout_s,
            headers=headers,
        )
        await js.delete_msg(DLQ_STREAM, letter.seq)
    except (NatsError, TimeoutError) as exc:
        raise QueueUnavailable(f"cannot replay call {call_id} now: {exc}") from exc
    log.info("replayed dead letter %s of %s (replay %d)", call_id, env.function_name, replays)
    return queued
