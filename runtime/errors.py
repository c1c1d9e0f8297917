"""One small error tree for the whole daemon; the gateway maps it to HTTP status in one place."""

from __future__ import annotations


class LocalFaasError(Exception):
    """Base of every error localfaas raises on purpose; its message is shown to people as is."""


class InvalidSpec(LocalFaasError, ValueError):
    """Input (a deployment, a stack file, a setting, a label) that cannot be accepted."""


class FunctionNotFound(LocalFaasError, LookupError):
    """A function name that is not deployed in that namespace."""


class Conflict(LocalFaasError):
    """The request clashes with existing state (e.g. deploying a function that exists)."""


class BackendUnavailable(LocalFaasError):
    """A dependency (Docker, NATS) cannot be reached right now; worth retrying later."""


class BuildFailed(LocalFaasError):
    """An image build did not complete; the message says which step and why."""


class PayloadTooLarge(LocalFaasError):
    """A request body over the configured limit."""


class NoReadyReplica(LocalFaasError):
    """No replica could take the request in time (starting, crashed, or queue full)."""

    def __init__(self, message: str, retry_after_s: int | None = None) -> None:
        super().__init__(message)
        self.retry_after_s = retry_after_s


class UpstreamFailed(LocalFaasError):
    """The replica could not be reached or broke the connection."""


class UpstreamTimeout(LocalFaasError):
    """The function did not answer within the gateway's timeout."""
