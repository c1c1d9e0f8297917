"""CPU per replica, sampled from Docker every few seconds: the `cpu` scale type's load.

Docker's one-shot stats give the CPU time a container used so far; two readings a few seconds
apart give its milli-CPU (1000 = one core busy). Only functions that scale on CPU are sampled,
so the others cost no Docker calls.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Iterable

from runtime.errors import LocalFaasError
from runtime.provider.base import Provider
from runtime.router import ReplicaHandle, ReplicaState

log = logging.getLogger("localfaas.scaling")

CPU_SAMPLE_EVERY_S = 3.0


class CpuSampler:
    def __init__(self, provider: Provider) -> None:
        self._provider = provider
        self._last: dict[str, tuple[float, int]] = {}  # container id → (when, cpu ns)
        self.millicpu: dict[str, float] = {}  # container id → milli-CPU over the last interval

    async def sample(
        self, replicas: Iterable[ReplicaHandle], *, forget_others: bool = True
    ) -> None:
        """Read each ready replica's CPU time once; keep milli-CPU for those read twice.
        ``forget_others``: these are all the replicas there are; drop what is known of others."""
        handles = [h for h in replicas if h.state is ReplicaState.READY]
        readings = await asyncio.gather(
            *(self._provider.replica_cpu_ns(h.container_id) for h in handles),
            return_exceptions=True,
        )
        now = time.monotonic()
        seen: set[str] = set()
        for handle, reading in zip(handles, readings, strict=True):
            cid = handle.container_id
            if isinstance(reading, LocalFaasError):
                log.debug("no CPU reading for %s: %s", handle.replica.container_name, reading)
                continue
            if isinstance(reading, BaseException):
                raise reading
            if reading is None:
                continue
            seen.add(cid)
            previous = self._last.get(cid)
            self._last[cid] = (now, reading)
            if previous is not None and now > previous[0]:
                used_ns = max(reading - previous[1], 0)
                self.millicpu[cid] = used_ns / 1e6 / (now - previous[0])
        if not forget_others:
            return
        for cid in set(self._last) - seen:
            # Gone, paused or draining: its next reading starts afresh.
            self._last.pop(cid, None)
            self.millicpu.pop(cid, None)

    def total(self, replicas: Iterable[ReplicaHandle]) -> float:
        """Milli-CPU of those of these replicas that are ready, together (those with a reading)."""
        return sum(
            self.millicpu.get(h.container_id, 0.0)
            for h in replicas
            if h.state is ReplicaState.READY
        )
