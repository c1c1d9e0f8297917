"""Scaling component tests: the gateway fixture around the FakeProvider, plus an Autoscaler bound
to that gateway's functions and metrics, ticked by hand with the time passed in.

Ticks take monotonic time (what FunctionRuntime.last_active is), so a test jumps ahead with
``Ticks.at(offset_s)`` (``base + offset_s``). The supervisor's own clock (paused-replica expiry,
drains) stays real: labels with small real durations keep those parts fast.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable

import pytest

from runtime.functions import FunctionRuntime
from runtime.models import Replica
from runtime.provider.base import ReplicaRequest
from runtime.provider.fake import FakeProvider
from runtime.router import ReplicaState
from runtime.scaling.autoscaler import Autoscaler
from runtime.scaling.policy import Decision
from tests.component.gateway.conftest import (  # noqa: F401
    AUTH,
    Gateway,
    GatewayFactory,
    make_gateway,
)

NAMESPACE = "openfaas-fn"


class CountingProvider(FakeProvider):
    """FakeProvider that counts replica starts (``creates``: a fresh container, or the standby
    made while the function was at zero; including failed ones) and pause_replica calls, and
    can swap each replica it started for another (``after_create``) before the function manager
    sees it."""

    def __init__(self, *, create_delay_s: float = 0.0) -> None:
        super().__init__(create_delay_s=create_delay_s)
        self.creates = 0
        self.pauses = 0
        self.created: list[str] = []  # container ids, in order
        # Given each new replica, returns the one the function manager gets (e.g. altered).
        self.after_create: Callable[[Replica], Awaitable[Replica]] | None = None

    async def start_prepared(self, container_id: str, request: ReplicaRequest) -> Replica:
        self.creates += 1
        replica = await super().start_prepared(container_id, request)
        self.created.append(replica.container_id)
        if self.after_create is not None:
            replica = await self.after_create(replica)
        return replica

    def running(self) -> list[str]:
        """Containers started and not removed (a standby, created only, is not one)."""
        return [c.container_id for c in self.engine.containers.values() if c.state != "created"]

    async def pause_replica(self, container_id: str) -> None:
        self.pauses += 1
        await super().pause_replica(container_id)


class Ticks:
    """An Autoscaler on a gateway's functions and metrics, not started: the test ticks it with
    times ``base + offset_s``. Created with one tick at ``base`` (now), as the loop's first tick:
    it learns where the counters stand, and (like any replica count set from outside) counts
    as activity, so idle offsets are measured from ``base``."""

    def __init__(self, gw: Gateway, *, register: bool = False) -> None:
        self.autoscaler = Autoscaler(gw.functions, gw.metrics)
        if register:
            self.autoscaler.register(gw.metrics.registry)
        self.base = time.monotonic()
        self.autoscaler.tick(self.base)

    def at(self, offset_s: float) -> list[tuple[FunctionRuntime, Decision]]:
        return self.autoscaler.tick(self.base + offset_s)

    def elapsed(self) -> float:
        """The real time since ``base``: offsets below it are in the past."""
        return time.monotonic() - self.base


async def until(
    condition: Callable[[], bool], what: str, timeout_s: float = 5.0, every_s: float = 0.01
) -> None:
    """Poll ``condition`` until true; AssertionError naming ``what`` after ``timeout_s``."""
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"not within {timeout_s:g}s: {what}")
        await asyncio.sleep(every_s)


async def converged(fn: FunctionRuntime, timeout_s: float = 5.0) -> None:
    """Until the supervisor has exactly the desired number of ready replicas (nothing starting)."""

    def done() -> bool:
        current = fn.current()
        return len(current) == fn.desired_replicas and all(
            h.state is ReplicaState.READY for h in current
        )

    await until(done, f"{fn.qualified_name} at {fn.desired_replicas} ready replicas", timeout_s)


async def deploy_ready(
    gw: Gateway, name: str, labels: dict[str, str], replicas: int = 1
) -> FunctionRuntime:
    resp = await gw.deploy(name, labels=labels)
    assert resp.status == 202, await resp.text()
    if replicas:
        await gw.wait_available(name, replicas)
    return gw.functions.get(name, NAMESPACE)


@pytest.fixture
def counting() -> CountingProvider:
    return CountingProvider()
