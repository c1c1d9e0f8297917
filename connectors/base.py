"""What every connector is and what it may use.

A connector turns outside events (a cron firing, a NATS message, a webhook, an HTTP request on a
friendly path) into invocations of functions. It learns its bindings from function annotations,
re-read on every deploy/update/delete (the ConnectorHost tells it; nobody polls), and invokes
only through `Dispatch`: the daemon's internal Invoker for sync calls and the async queue.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

from runtime.invoker import BufferedResult, Invocation
from runtime.models import FunctionSpec
from runtime.queue.enqueue import Enqueued
from runtime.queue.message import Envelope


@dataclass(frozen=True)
class Binding:
    """One trigger of one function, as `GET /system/connectors` and `describe` show it."""

    connector: str  # cron | nats | webhook | http
    function: str
    namespace: str
    trigger: str  # human form: "*/5 * * * * (Europe/Paris)", "orders.*", "/webhook/hook (github)"
    details: Mapping[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return {
            "connector": self.connector,
            "function": self.function,
            "namespace": self.namespace,
            "trigger": self.trigger,
            "details": dict(self.details),
        }


class Dispatch(Protocol):
    """The one way a connector reaches a function."""

    async def invoke(self, inv: Invocation) -> BufferedResult:
        """Sync call through the Invoker (routing, metrics, scale-from-zero as for HTTP)."""
        ...

    async def enqueue(self, env: Envelope) -> Enqueued:
        """Store an async call (at least once). QueueUnavailable (503) when NATS is away."""
        ...

    @property
    def invoke_timeout_s(self) -> float: ...


class Connector(Protocol):
    name: str

    def validate(self, spec: FunctionSpec) -> None:
        """At deploy, before anything changes: InvalidSpec (400) or Conflict (409) naming the
        annotation if the function's trigger annotations are unusable. Pure or cheap."""
        ...

    async def start(self) -> None: ...

    async def bind(self, spec: FunctionSpec) -> None:
        """The function was deployed or updated: (re)bind from its annotations; a function
        without this connector's annotations is unbound."""
        ...

    async def unbind(self, namespace: str, name: str) -> None:
        """The function was deleted."""
        ...

    def bindings(self) -> list[Binding]: ...

    async def close(self) -> None: ...
