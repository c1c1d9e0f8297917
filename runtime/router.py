"""Replica pools: which replicas of a function may take a request right now, and who is least busy.

A replica joins its pool only after its `/_/ready` answered 200 and leaves it (becomes
unroutable) before it is drained, paused or removed, so a request never reaches a starting,
paused or draining replica.
"""

from __future__ import annotations

import asyncio
import enum
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

from runtime.errors import NoReadyReplica
from runtime.models import Replica


class ReplicaState(enum.Enum):
    STARTING = "starting"
    READY = "ready"
    DRAINING = "draining"
    PAUSED = "paused"
    GONE = "gone"


# As a plain name for `pick`: an Enum class attribute lookup goes through EnumType.__getattr__.
_READY = ReplicaState.READY


@dataclass(eq=False)
class ReplicaHandle:
    """A replica as the router sees it: where to reach it, its state and its in-flight count."""

    replica: Replica
    state: ReplicaState = ReplicaState.STARTING
    in_flight: int = 0
    served: int = 0
    last_pick: int = 0  # pool-wide sequence number of the last time this replica was picked
    paused_at: float = 0.0  # loop time it was paused (while PAUSED)
    idle: asyncio.Event = field(default_factory=asyncio.Event)

    def __post_init__(self) -> None:
        self.idle.set()

    @property
    def container_id(self) -> str:
        return self.replica.container_id

    @property
    def base_url(self) -> str:
        host, port = self.replica.endpoint or ("127.0.0.1", 0)
        return f"http://{host}:{port}"

    def acquire(self) -> None:
        """Count one request in flight on this replica; every acquire needs one release."""
        self.in_flight += 1
        self.served += 1
        if self.in_flight == 1:
            self.idle.clear()

    def release(self) -> None:
        self.in_flight -= 1
        if self.in_flight == 0:
            self.idle.set()

    @contextmanager
    def lease(self) -> Iterator[ReplicaHandle]:
        """Counts one request in flight on this replica for the duration of the block."""
        self.acquire()
        try:
            yield self
        finally:
            self.release()

    async def wait_idle(self, timeout_s: float) -> bool:
        """Wait until nothing is in flight; False if the deadline passed first."""
        # asyncio.timeout, not wait_for, which on 3.11 can swallow a racing cancel.
        try:
            async with asyncio.timeout(timeout_s):
                await self.idle.wait()
        except TimeoutError:
            return False
        return True


class ReplicaPool:
    """All replicas of one function, keyed by container id."""

    def __init__(self) -> None:
        self._replicas: dict[str, ReplicaHandle] = {}
        self._ready_changed = asyncio.Condition()
        self._picks = 0
        # Start failures so far, and the last one's reason: a waiter fails fast when one comes
        # while it waits (a bad image or a crashing replica answers 503 now, not at timeout).
        self._failures = 0
        self._failure = ""

    def __len__(self) -> int:
        return len(self._replicas)

    def __iter__(self) -> Iterator[ReplicaHandle]:
        return iter(list(self._replicas.values()))

    def get(self, container_id: str) -> ReplicaHandle | None:
        return self._replicas.get(container_id)

    def add(self, replica: Replica, state: ReplicaState = ReplicaState.STARTING) -> ReplicaHandle:
        handle = self._replicas.get(replica.container_id)
        if handle is None:
            handle = ReplicaHandle(replica, state)
            self._replicas[replica.container_id] = handle
        else:
            handle.replica = replica
        return handle

    async def set_state(self, handle: ReplicaHandle, state: ReplicaState) -> None:
        handle.state = state
        if state is ReplicaState.GONE:
            self._replicas.pop(handle.container_id, None)
        async with self._ready_changed:
            self._ready_changed.notify_all()

    def ready(self) -> list[ReplicaHandle]:
        return [h for h in self._replicas.values() if h.state is ReplicaState.READY]

    def in_state(self, state: ReplicaState) -> list[ReplicaHandle]:
        return [h for h in self._replicas.values() if h.state is state]

    async def report_failure(self, reason: str) -> None:
        """No replica could be started: fail the requests waiting for one, with ``reason``."""
        self._failures += 1
        self._failure = reason
        async with self._ready_changed:
            self._ready_changed.notify_all()

    def available_count(self) -> int:
        return sum(1 for h in self._replicas.values() if h.state is ReplicaState.READY)

    def pick(self) -> ReplicaHandle | None:
        """The ready replica with the fewest requests in flight; ties go round-robin (the one
        picked longest ago), so a replica that just joined shares the load at once instead of
        taking all of it until its count catches up."""
        best: ReplicaHandle | None = None
        for handle in self._replicas.values():
            if handle.state is not _READY:
                continue
            if best is None or (handle.in_flight, handle.last_pick) < (
                best.in_flight,
                best.last_pick,
            ):
                best = handle
        if best is not None:
            self._picks += 1
            best.last_pick = self._picks
        return best

    async def wait_ready(self, timeout_s: float) -> ReplicaHandle | None:
        """Wait (bounded) until some replica is ready; None when the deadline passes.
        NoReadyReplica with the reason if starting one fails meanwhile."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout_s
        failures = self._failures
        async with self._ready_changed:
            while (handle := self.pick()) is None:
                if self._failures != failures:
                    raise NoReadyReplica(self._failure, retry_after_s=1)
                remaining = deadline - loop.time()
                if remaining <= 0:
                    return None
                try:
                    async with asyncio.timeout(remaining):
                        await self._ready_changed.wait()
                except TimeoutError:
                    return None
            return handle
