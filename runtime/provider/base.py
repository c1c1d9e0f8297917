"""The Provider seam: the only interface the rest of the daemon uses to touch containers."""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Protocol

from runtime.models import FunctionSpec, Replica


@dataclass(frozen=True)
class ReplicaEvent:
    """A state change Docker reported for one of our replicas (start, die, health_status, ...)."""

    action: str
    container_id: str
    function: str
    namespace: str


@dataclass(frozen=True)
class LogLine:
    function: str
    namespace: str
    instance: str  # container name
    timestamp: datetime
    text: str  # the line as the function printed it, without Docker's timestamp prefix


@dataclass(frozen=True)
class ReplicaRequest:
    """Everything needed to start one replica of ``spec``."""

    spec: FunctionSpec
    generation: int
    secrets_dir: Path | None = None  # host folder bind-mounted read-only at /var/openfaas/secrets
    secrets_gid: int | None = None  # supplementary group that may read the secret files
    # Defaults the daemon gives every replica (e.g. OPENFAAS_URL for chaining); the function's
    # own envVars win over these.
    default_env: Mapping[str, str] = field(default_factory=dict)


class Provider(Protocol):
    async def ping(self) -> None:
        """Raise BackendUnavailable with the reason if the backend cannot be reached."""

    async def image_present(self, image: str) -> bool: ...

    async def ensure_image(self, image: str) -> None:
        """Use a local image as is; else try to pull; InvalidSpec naming the image if neither."""

    async def create_replica(self, request: ReplicaRequest) -> Replica:
        """Create and start one container; returns once Docker reports it running."""

    async def prepare_replica(self, request: ReplicaRequest) -> str:
        """Create one container without starting it (a standby for the next cold start);
        its id."""

    async def start_prepared(self, container_id: str, request: ReplicaRequest) -> Replica:
        """Start a container `prepare_replica` made for ``request``; as `create_replica`.
        A failed start removes it."""

    async def list_replicas(
        self, function: str | None = None, namespace: str | None = None
    ) -> list[Replica]: ...

    async def inspect_replica(self, container_id: str) -> Replica | None: ...

    async def remove_replica(self, container_id: str, *, stop_timeout_s: float = 10.0) -> None:
        """Stop (SIGTERM, then SIGKILL after the timeout) and remove; missing is not an error."""

    async def pause_replica(self, container_id: str) -> None: ...

    async def replica_cpu_ns(self, container_id: str) -> int | None:
        """CPU time the replica has used so far, in nanoseconds; None if it is gone."""

    async def unpause_replica(self, container_id: str) -> None: ...

    def logs(
        self,
        replicas: Sequence[Replica],
        *,
        tail: int | None = None,
        since: datetime | None = None,
        follow: bool = False,
    ) -> AsyncIterator[LogLine]: ...

    def events(self) -> AsyncIterator[ReplicaEvent]:
        """Our replicas' Docker events, until cancelled; raises BackendUnavailable on loss."""

    async def bridge_gateway_ip(self) -> str | None:
        """The host's address on the default container network (what `host-gateway` maps to),
        or None when it cannot be found."""

    async def close(self) -> None: ...
