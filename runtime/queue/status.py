"""Call status: one record per call id in the status store, changed with compare-and-set.

A call has no record while it waits for its first attempt (enqueue is one durable write, not
two); then it is found by its subject in the work stream and reported as ``queued``. The worker
claims a call by creating/updating the record to ``running`` with the revision it read, and
cancel moves a ``queued`` call to ``cancelled`` the same way, so exactly one of them wins.
"""

from __future__ import annotations

import enum
import json
from dataclasses import dataclass, field, replace
from typing import Any, Protocol

_dumps = json.JSONEncoder(separators=(",", ":")).encode

MAX_HISTORY = 50
MAX_ERROR_CHARS = 300


class CallState(enum.StrEnum):
    QUEUED = "queued"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    DEAD_LETTERED = "dead-lettered"
    CANCELLED = "cancelled"

    @property
    def final(self) -> bool:
        return self in _FINAL


_FINAL = frozenset(
    {CallState.SUCCEEDED, CallState.FAILED, CallState.DEAD_LETTERED, CallState.CANCELLED}
)


def short_error(text: str) -> str:
    return text if len(text) <= MAX_ERROR_CHARS else text[: MAX_ERROR_CHARS - 3] + "..."


@dataclass(frozen=True)
class AttemptRecord:
    attempt: int
    started_at: float
    finished_at: float
    status: int | None = None
    error: str | None = None

    def to_json(self) -> dict[str, Any]:
        return {
            "attempt": self.attempt,
            "startedAt": self.started_at,
            "finishedAt": self.finished_at,
            "status": self.status,
            "error": self.error,
        }


@dataclass(frozen=True)
class CallStatus:
    call_id: str
    function: str
    namespace: str
    state: CallState
    enqueued_at: float
    updated_at: float
    attempts: int = 0
    last_status: int | None = None
    last_error: str | None = None
    next_attempt_at: float | None = None
    replays: int = 0
    callback_url: str | None = None
    callback_state: str | None = None  # pending | delivered | failed
    callback_status: int | None = None
    seq: int = 0  # work-stream sequence of the message being run (tells twins from redeliveries)
    history: tuple[AttemptRecord, ...] = field(default=())

    @property
    def function_name(self) -> str:
        return f"{self.function}.{self.namespace}"

    def with_attempt(self, record: AttemptRecord, **changes: Any) -> CallStatus:
        history = (*self.history, record)[-MAX_HISTORY:]
        return replace(
            self,
            attempts=record.attempt,
            last_status=record.status,
            last_error=record.error,
            history=history,
            **changes,
        )

    def to_json(self) -> dict[str, Any]:
        """The management API's shape (camelCase, like the rest of the OpenFaaS API)."""
        return {
            "callId": self.call_id,
            "function": self.function,
            "namespace": self.namespace,
            "state": self.state.value,
            "attempts": self.attempts,
            "lastStatus": self.last_status,
            "lastError": self.last_error,
            "enqueuedAt": self.enqueued_at,
            "updatedAt": self.updated_at,
            "nextAttemptAt": self.next_attempt_at,
            "replays": self.replays,
            "callbackUrl": self.callback_url,
            "callbackState": self.callback_state,
            "callbackStatus": self.callback_status,
            "history": [item.to_json() for item in self.history],
        }

    def encode(self) -> bytes:
        """The stored form (field names as in the dataclass). Fields straight from
        ``__dict__`` (in field order, as `asdict` gives them): `asdict`'s recursive copy was
        a measurable part of an async call's cost."""
        data = dict(self.__dict__)
        data["state"] = self.state.value
        data["history"] = [record.__dict__ for record in self.history]
        return _dumps(data).encode()

    @classmethod
    def decode(cls, raw: bytes) -> CallStatus:
        data = json.loads(raw)
        data["state"] = CallState(data["state"])
        data["history"] = tuple(AttemptRecord(**item) for item in data.get("history", ()))
        return cls(**data)


class StatusStore(Protocol):
    """Compare-and-set access to call statuses (runtime/queue/status_sqlite.py).

    ``None`` results mean "lost the race; read again"."""

    async def get(self, call_id: str) -> tuple[CallStatus, int] | None: ...

    async def create(self, status: CallStatus) -> int | None:
        """Store a first record; None if one exists."""
        ...

    async def update(self, status: CallStatus, revision: int) -> int | None:
        """Replace the record if it is still at ``revision``; None otherwise."""
        ...

    async def put(self, status: CallStatus) -> int:
        """Store unconditionally."""
        ...
