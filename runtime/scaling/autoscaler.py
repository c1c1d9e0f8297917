"""The autoscaler loop: once a second, each function's load window gets a sample, the policy
decides, and a changed replica count goes to the FunctionManager (which logs it and converges).

Everything is in process: the windows come from the invoke path's counters, not from
Prometheus, so a decision rests on data at most a second old.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass

from prometheus_client.metrics_core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector, CollectorRegistry

from runtime.functions import FunctionManager, FunctionRuntime
from runtime.metrics import GatewayMetrics
from runtime.provider.base import Provider
from runtime.router import ReplicaState
from runtime.scaling.cpu import CPU_SAMPLE_EVERY_S, CpuSampler
from runtime.scaling.policy import Decision, Observation, PolicyState, decide
from runtime.scaling.window import LoadWindow

log = logging.getLogger("localfaas.scaling")

TICK_S = 1.0
EXPORT_CPU_EVERY = 5  # rounds of the CPU sampler

# Is there work for this function besides requests in flight (e.g. queued async calls)?
BusyCheck = Callable[[str, str], bool]


@dataclass
class _Tracked:
    window: LoadWindow
    policy: PolicyState
    outside_changes: int


class Autoscaler:
    def __init__(
        self,
        functions: FunctionManager,
        metrics: GatewayMetrics,
        provider: Provider | None = None,
        *,
        busy: BusyCheck | None = None,
        tick_s: float = TICK_S,
        cpu_every_s: float = CPU_SAMPLE_EVERY_S,
    ) -> None:
        self._functions = functions
        self._metrics = metrics
        self.busy = busy
        self._tick_s = tick_s
        self._cpu_every_s = cpu_every_s
        self.cpu = CpuSampler(provider) if provider is not None else None
        self._tracked: dict[FunctionRuntime, _Tracked] = {}
        self._tasks: list[asyncio.Task[None]] = []

    def register(self, registry: CollectorRegistry) -> None:
        registry.register(_ReplicaCollector(self._functions, self))

    async def start(self) -> None:
        self._tasks.append(asyncio.create_task(self._run(), name="autoscaler"))
        if self.cpu is not None:
            self._tasks.append(asyncio.create_task(self._sample_cpu(), name="cpu sampler"))

    async def close(self) -> None:
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self._tasks.clear()

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        next_tick = loop.time()
        while True:
            try:
                self.tick(time.monotonic())
            except Exception:
                log.exception("autoscaler tick failed")
            # On a fixed beat, so a slow tick does not stretch the 1-second samples.
            next_tick = max(next_tick + self._tick_s, loop.time())
            await asyncio.sleep(next_tick - loop.time())

    async def _sample_cpu(self) -> None:
        """Functions that scale on CPU every few seconds; the others, whose CPU is only
        exported, every EXPORT_CPU_EVERY rounds (each reading is one Docker API call)."""
        assert self.cpu is not None
        rounds = 0
        while True:
            everyone = rounds % EXPORT_CPU_EVERY == 0
            handles = [
                h
                for fn in self._functions.list()
                if everyone or fn.scaling.type == "cpu"
                for h in fn.pool
            ]
            try:
                await self.cpu.sample(handles, forget_others=everyone)
            except Exception as exc:
                log.debug("CPU sample failed: %s", exc)
            rounds += 1
            await asyncio.sleep(self._cpu_every_s)

    def tick(self, now: float) -> list[tuple[FunctionRuntime, Decision]]:
        """Sample every function's last second and apply the policy; the changes made."""
        changes: list[tuple[FunctionRuntime, Decision]] = []
        live = self._functions.list()
        for fn in live:
            tracked = self._tracked.get(fn)
            if tracked is None:
                tracked = self._tracked[fn] = _Tracked(
                    LoadWindow(), PolicyState(since=now), fn.outside_changes
                )
            stats = self._metrics.function(fn.qualified_name)
            millicpu = self.cpu.total(fn.pool) if self.cpu is not None else 0.0
            sample = tracked.window.observe(stats, millicpu)
            if sample.started or stats.in_flight:
                # Idle counts from the last moment it had work: a 20 s request that just
                # ended does not leave the function idle for 20 s already.
                fn.last_active = max(fn.last_active, now)
            if fn.outside_changes != tracked.outside_changes:
                tracked.outside_changes = fn.outside_changes
                tracked.policy.reset(now)
            if fn.scaling.fixed or self._functions.backend_error is not None:
                continue
            stable, panic = tracked.window.load(fn.scaling.type)
            busy = fn.waiting > 0 or (
                self.busy is not None and self.busy(fn.spec.namespace, fn.spec.name)
            )
            if busy:
                fn.last_active = max(fn.last_active, now)
            decision = decide(
                fn.scaling,
                tracked.policy,
                Observation(
                    now=now,
                    # What is wanted, not what is in the pool yet: replicas still being
                    # created are not in it, and an API scale-up would be undone at once.
                    replicas=fn.desired_replicas,
                    stable_load=stable,
                    panic_load=panic,
                    # A replica count set from outside (API, activator) counts as activity: a
                    # manual scale-up is not paused away at the next tick.
                    idle_s=max(now - max(fn.last_active, tracked.policy.since), 0.0),
                    in_flight=stats.in_flight,
                    busy=busy,
                ),
            )
            if decision.replicas != fn.desired_replicas:
                why = (
                    f"type={fn.scaling.type} load={decision.load:.1f}"
                    f" panic={'yes' if decision.panic else 'no'}"
                )
                if decision.reason != fn.scaling.type:
                    why += f" reason={decision.reason}"
                # Idle past zero-duration: the replicas go for good, not to the paused tier
                # (with zero-duration below pause-after they would be frozen, then removed).
                self._functions.set_replicas(
                    fn, decision.replicas, why, pause_extras=decision.reason != "zero"
                )
                tracked.outside_changes = fn.outside_changes
                changes.append((fn, decision))
        if len(self._tracked) != len(live):
            keep = set(live)
            for fn in [f for f in self._tracked if f not in keep]:
                del self._tracked[fn]
        return changes


class _ReplicaCollector(Collector):
    """Replica gauges per function and state, desired replicas, requests waiting for a
    replica and milli-CPU per replica, read when /metrics is scraped."""

    def __init__(self, functions: FunctionManager, autoscaler: Autoscaler) -> None:
        self._functions = functions
        self._autoscaler = autoscaler

    def collect(self) -> Iterator[Metric]:
        replicas = GaugeMetricFamily(
            "localfaas_function_replicas",
            "Replicas of a function by state (starting, ready, draining, paused)",
            labels=["function_name", "state"],
        )
        desired = GaugeMetricFamily(
            "localfaas_function_desired_replicas",
            "Replicas the autoscaler (or the API) wants active",
            labels=["function_name"],
        )
        waiting = GaugeMetricFamily(
            "localfaas_function_waiting_requests",
            "Requests waiting for a replica (scale from zero, resume)",
            labels=["function_name"],
        )
        cpu = GaugeMetricFamily(
            "localfaas_replica_cpu_millicores",
            "CPU of a replica over the last sample interval (1000 = one core)",
            labels=["function_name", "replica"],
        )
        sampler = self._autoscaler.cpu
        for fn in self._functions.list():
            name = fn.qualified_name
            counts = dict.fromkeys(
                (
                    ReplicaState.STARTING,
                    ReplicaState.READY,
                    ReplicaState.DRAINING,
                    ReplicaState.PAUSED,
                ),
                0,
            )
            for handle in fn.pool:
                if handle.state in counts:
                    counts[handle.state] += 1
                if sampler is not None and handle.container_id in sampler.millicpu:
                    cpu.add_metric(
                        [name, handle.replica.container_name], sampler.millicpu[handle.container_id]
                    )
            for state, count in counts.items():
                replicas.add_metric([name, state.value], count)
            desired.add_metric([name], fn.desired_replicas)
            waiting.add_metric([name], fn.waiting)
        yield from (replicas, desired, waiting, cpu)
