"""Errors of the async queue, all inside runtime.errors' tree so the gateway maps them."""

from __future__ import annotations

from runtime.errors import BackendUnavailable, Conflict, LocalFaasError


class QueueUnavailable(BackendUnavailable):
    """NATS is down, too slow, or the stream is full: the caller should retry later (503)."""

    def __init__(self, message: str, retry_after_s: int = 5) -> None:
        super().__init__(message)
        self.retry_after_s = retry_after_s


class NatsServerError(LocalFaasError):
    """The embedded nats-server cannot be started, or a server lacks what localfaas needs."""


class CallNotFound(LocalFaasError, LookupError):
    """No async call with that id is queued, running, known to the status store or dead-lettered."""


class CallConflict(Conflict):
    """The call is not in a state that allows the operation (e.g. cancelling a running call)."""
