"""Function lifecycle: desired state (store) converged onto replicas (provider), one supervisor
task per function.

Every change (deploy, update, scale, a replica dying, Docker coming back) only edits the desired
state and wakes the function's supervisor; the supervisor alone starts, adopts and retires
replicas, so no two code paths race to create containers for the same function.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable, Coroutine, Iterable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import aiohttp

from runtime.errors import (
    BackendUnavailable,
    FunctionNotFound,
    InvalidSpec,
    LocalFaasError,
    NoReadyReplica,
)
from runtime.models import FunctionSpec
from runtime.provider.base import Provider, ReplicaRequest
from runtime.router import ReplicaHandle, ReplicaPool, ReplicaState
from runtime.scaling.config import ScalingConfig, scaling_config
from runtime.secrets import SecretFiles
from runtime.store import Store

log = logging.getLogger("localfaas.functions")

RESYNC_INTERVAL_S = 5.0
READY_TIMEOUT_S = 60.0
DRAIN_TIMEOUT_S = 30.0
START_PARALLELISM = 4


@dataclass(eq=False)
class FunctionRuntime:
    """Desired state of one function plus its live replica pool."""

    spec: FunctionSpec
    generation: int
    desired_replicas: int
    created_at: datetime
    pool: ReplicaPool = field(default_factory=ReplicaPool)
    secrets_gid: int = 0
    invocation_count: int = 0
    failed: set[str] = field(default_factory=set)  # container ids Docker reported dead/unhealthy
    wake: asyncio.Event = field(default_factory=asyncio.Event)
    task: asyncio.Task[None] | None = None
    deleted: bool = False
    scaling: ScalingConfig = field(default_factory=ScalingConfig)
    # Monotonic time of the last request start the autoscaler saw, or of the last activation.
    last_active: float = field(default_factory=time.monotonic)
    waiting: int = 0  # requests waiting for a replica (the activator's queue)
    # Bumped whenever the replica count is set from outside the autoscaler (deploy, API,
    # activator), so the autoscaler holds it for a down window before scaling it down.
    outside_changes: int = 0
    # Replicas beyond the desired count are paused (the idle tier) rather than removed, unless
    # the count was set through the API: a user scaling down expects the containers gone.
    pause_extras: bool = True
    # A created, never started container (id, generation) kept while the function is at zero,
    # so the next cold start skips `docker create`; "" while one is being made.
    standby: tuple[str, int] | None = None

    @property
    def key(self) -> tuple[str, str]:
        return (self.spec.namespace, self.spec.name)

    @property
    def qualified_name(self) -> str:
        return self.spec.qualified_name

    def current(self) -> list[ReplicaHandle]:
        """Replicas of the current generation that are (or are becoming) routable."""
        return [
            h
            for h in self.pool
            if h.replica.generation == self.generation
            and h.state in (ReplicaState.STARTING, ReplicaState.READY)
        ]


class FunctionManager:
    def __init__(
        self,
        provider: Provider,
        store: Store,
        secrets: SecretFiles,
        session: aiohttp.ClientSession,
        *,
        ready_timeout_s: float = READY_TIMEOUT_S,
        drain_timeout_s: float = DRAIN_TIMEOUT_S,
    ) -> None:
        self._provider = provider
        self._store = store
        self._secrets = secrets
        self._session = session
        self._ready_timeout_s = ready_timeout_s
        self._drain_timeout_s = drain_timeout_s
        self._functions: dict[tuple[str, str], FunctionRuntime] = {}
        self._start_slots = asyncio.Semaphore(START_PARALLELISM)
        # Resumes started by the activator, and replicas leaving (drain, then pause or remove)
        # in the background so the supervisor is free to start or resume others meanwhile.
        self._tasks: set[asyncio.Task[Any]] = set()
        self._events_task: asyncio.Task[None] | None = None
        self.backend_error: str | None = None
        # Environment every replica gets unless its envVars say otherwise (set by the daemon).
        self.default_env: dict[str, str] = {}
        # Checks a deploy must pass besides the scaling labels (e.g. async and connector
        # annotations): each raises InvalidSpec naming the bad field, before anything changes.
        self.validators: list[Callable[[FunctionSpec], None]] = []
        # Told (namespace, name) whenever a function's desired state changed: loaded at start,
        # deployed, updated, scaled or deleted. They re-read it with `get`; called in order, sync.
        self._watchers: list[Callable[[str, str], None]] = []

    def watch(self, watcher: Callable[[str, str], None]) -> None:
        """Call ``watcher(namespace, name)`` on every change, and now for every known function."""
        self._watchers.append(watcher)
        for fn in self.list():
            watcher(*fn.key)

    def _changed(self, fn: FunctionRuntime) -> None:
        for watcher in self._watchers:
            try:
                watcher(*fn.key)
            except Exception:
                log.exception("a watcher of %s failed", fn.qualified_name)

    # -- lookups ---------------------------------------------------------------------------

    def get(self, name: str, namespace: str) -> FunctionRuntime:
        fn = self._functions.get((namespace, name))
        if fn is None or fn.deleted:
            raise FunctionNotFound(f"function {name!r} not found in namespace {namespace!r}")
        return fn

    def list(self, namespace: str | None = None) -> list[FunctionRuntime]:
        return sorted(
            (
                fn
                for fn in self._functions.values()
                if not fn.deleted and (namespace is None or fn.spec.namespace == namespace)
            ),
            key=lambda fn: fn.key,
        )

    # -- lifecycle ---------------------------------------------------------------------------

    async def start(self) -> None:
        """Load desired state and start supervisors; adoption happens in each first reconcile."""
        for stored in self._store.list_functions():
            fn = FunctionRuntime(
                spec=stored.spec,
                generation=stored.generation,
                desired_replicas=stored.replicas,
                created_at=stored.created_at,
                secrets_gid=stored.secrets_gid,
                scaling=_stored_scaling(stored.spec),
            )
            self._functions[fn.key] = fn
            self._start_supervisor(fn)
        self._events_task = asyncio.create_task(self._watch_events(), name="docker-events")
        await self._remove_orphans()

    async def close(self) -> None:
        tasks = [fn.task for fn in self._functions.values() if fn.task is not None]
        tasks.extend(self._tasks)  # a replica left half-paused or half-removed is adopted again
        if self._events_task is not None:
            tasks.append(self._events_task)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    async def remove_all_replicas(self) -> None:
        """For `up --stop-functions`: stop every replica of every function (state is kept)."""
        replicas = await self._provider.list_replicas()
        await asyncio.gather(*(self._provider.remove_replica(r.container_id) for r in replicas))

    # -- desired-state changes ----------------------------------------------------------------

    def require_backend(self) -> None:
        """Management calls answer 503 while Docker is away rather than half-applying."""
        if self.backend_error is not None:
            raise BackendUnavailable(f"Docker is not reachable: {self.backend_error}")

    async def deploy(self, spec: FunctionSpec, *, update: bool) -> FunctionRuntime:
        """Create (update=False) or replace (update=True) a function; replicas follow async."""
        scaling = scaling_config(spec)
        for validate in self.validators:
            validate(spec)
        self.require_backend()
        existing = self._functions.get((spec.namespace, spec.name))
        if existing is not None and existing.deleted:
            existing = None
        if update and existing is None:
            raise FunctionNotFound(
                f"function {spec.name!r} not found in namespace {spec.namespace!r}"
            )
        self._check_namespace(spec.namespace)
        for secret in spec.secrets:
            if not self._secrets.exists(spec.namespace, secret):
                raise InvalidSpec(f"secret {secret!r} not found in namespace {spec.namespace!r}")
        await self._provider.ensure_image(spec.image)
        if existing is None:
            replicas = scaling.min
        else:
            # An update keeps the current scale, within the new bounds (a function scaled to
            # zero stays there until a request comes).
            replicas = min(max(existing.desired_replicas, scaling.idle_floor), scaling.max)
        generation = self._store.put_function(spec, replicas=replicas)
        stored = self._store.get_function(spec.name, spec.namespace)
        assert stored is not None
        if existing is None:
            fn = FunctionRuntime(
                spec,
                generation,
                replicas,
                stored.created_at,
                secrets_gid=stored.secrets_gid,
                scaling=scaling,
            )
            self._functions[fn.key] = fn
            self._start_supervisor(fn)
            log.info("deployed %s image=%s replicas=%d", fn.qualified_name, spec.image, replicas)
            self._changed(fn)
        else:
            fn = existing
            fn.spec, fn.generation, fn.desired_replicas = spec, generation, replicas
            fn.scaling = scaling
            fn.outside_changes += 1
            fn.wake.set()
            log.info(
                "updating %s to generation %d image=%s", fn.qualified_name, generation, spec.image
            )
            self._changed(fn)
        return fn

    async def delete(self, name: str, namespace: str) -> None:
        fn = self.get(name, namespace)
        self.require_backend()
        fn.deleted = True
        self._store.delete_function(name, namespace)
        self._secrets.remove_mount(namespace, name)
        if fn.task is not None:
            fn.task.cancel()
            await asyncio.gather(fn.task, return_exceptions=True)
        self._functions.pop(fn.key, None)
        self._changed(fn)
        await asyncio.gather(*(self._retire(fn, h, drain=False) for h in fn.pool))
        # Containers Docker knows about that the pool never adopted (e.g. mid-start).
        for replica in await self._provider.list_replicas(name, namespace):
            await self._provider.remove_replica(replica.container_id, stop_timeout_s=2)
        log.info("deleted %s", fn.qualified_name)

    async def scale(self, name: str, namespace: str, replicas: int) -> None:
        fn = self.get(name, namespace)
        self.require_backend()
        if replicas == fn.desired_replicas:
            return
        fn.outside_changes += 1
        self.set_replicas(fn, replicas, "reason=api", pause_extras=False)

    def set_replicas(
        self, fn: FunctionRuntime, replicas: int, why: str, *, pause_extras: bool = True
    ) -> None:
        """Change the desired replica count (kept in the store); the supervisor follows.
        ``why`` ends the log line, e.g. ``type=rps load=183.0 panic=yes``."""
        log.info("scaled %s %d→%d %s", fn.qualified_name, fn.desired_replicas, replicas, why)
        fn.desired_replicas = replicas
        fn.pause_extras = pause_extras
        self._store.set_replicas(fn.spec.name, fn.spec.namespace, replicas=replicas)
        fn.wake.set()
        self._changed(fn)

    # -- the activator: requests for a function with no ready replica --------------------------

    async def wait_for_replica(self, fn: FunctionRuntime, timeout_s: float) -> ReplicaHandle:
        """A ready replica of ``fn``, waking one (resume a paused replica, or scale up from
        zero) when there is none. At most ``queue-depth`` requests wait per function; the
        wait is bounded by ``timeout_s``. NoReadyReplica (503) with the reason otherwise."""
        handle = fn.pool.pick()
        if handle is not None:
            return handle
        if fn.waiting >= fn.scaling.queue_depth:
            raise NoReadyReplica(
                f"function {fn.qualified_name} has {fn.waiting} requests waiting for a replica"
                " (the queue is full); try again shortly",
                retry_after_s=1,
            )
        fn.waiting += 1
        try:
            self.activate(fn)
            handle = await fn.pool.wait_ready(timeout_s)
        finally:
            fn.waiting -= 1
        if handle is None:
            raise NoReadyReplica(
                f"function {fn.qualified_name} has no ready replica after {timeout_s:g}s",
                retry_after_s=1,
            )
        return handle

    def activate(self, fn: FunctionRuntime) -> None:
        """Someone needs ``fn`` now: count it as active, resume a paused replica at once (the
        fast tier), else make sure at least one replica is wanted. Single flight: a replica
        already starting or resuming serves every waiter."""
        fn.last_active = time.monotonic()
        if fn.deleted or any(h.state is ReplicaState.STARTING for h in fn.pool):
            return
        paused = [
            h
            for h in fn.pool.in_state(ReplicaState.PAUSED)
            if h.replica.generation == fn.generation
        ]
        if fn.desired_replicas < 1:
            fn.outside_changes += 1
            self.set_replicas(fn, max(fn.scaling.active_floor, 1), "reason=activator")
        if paused:
            handle = paused[0]
            handle.state = ReplicaState.STARTING  # claimed: nothing else resumes or expires it
            self._spawn(self._resume(fn, handle), f"resume {fn.qualified_name}")
        else:
            fn.wake.set()

    def _check_namespace(self, namespace: str) -> None:
        if self._store.get_namespace(namespace) is None:
            raise FunctionNotFound(f"namespace {namespace!r} not found")

    # -- supervision ---------------------------------------------------------------------------

    def _start_supervisor(self, fn: FunctionRuntime) -> None:
        fn.task = asyncio.create_task(self._supervise(fn), name=f"supervise {fn.qualified_name}")

    async def _supervise(self, fn: FunctionRuntime) -> None:
        backoff_s = 0.5
        adopted = False
        while not fn.deleted:
            try:
                if not adopted:
                    await self._adopt(fn)
                    adopted = True
                expires_in_s = await self._reconcile(fn)
                backoff_s = 0.5
                timeout_s = RESYNC_INTERVAL_S
                if expires_in_s is not None:
                    # Back when the next paused replica is due to go, not up to a resync late.
                    timeout_s = min(timeout_s, expires_in_s)
            except asyncio.CancelledError:
                raise
            except BackendUnavailable as exc:
                self.backend_error = str(exc)
                timeout_s = backoff_s
                backoff_s = min(backoff_s * 2, 10.0)
            except LocalFaasError as exc:
                log.warning("cannot converge %s: %s", fn.qualified_name, exc)
                timeout_s = backoff_s
                backoff_s = min(backoff_s * 2, 30.0)
            except Exception:
                log.exception("supervisor of %s failed; retrying", fn.qualified_name)
                timeout_s = backoff_s
                backoff_s = min(backoff_s * 2, 30.0)
            # asyncio.timeout, not wait_for: on 3.11 wait_for swallows a cancel that races with
            # the event being set (a replica dying as the daemon stops), and close() then hangs.
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(timeout_s):
                    await fn.wake.wait()
            fn.wake.clear()

    async def _adopt(self, fn: FunctionRuntime) -> None:
        """Take over replicas that survived a daemon restart: no cold start after `up` again."""
        for replica in await self._provider.list_replicas(fn.spec.name, fn.spec.namespace):
            if fn.pool.get(replica.container_id) is not None:
                continue
            if (
                replica.state == "created"
                and replica.generation == fn.generation
                and fn.standby is None
            ):
                fn.standby = (replica.container_id, replica.generation)
                continue
            if replica.state == "paused" and replica.generation == fn.generation:
                handle = fn.pool.add(replica, ReplicaState.PAUSED)
                handle.paused_at = time.monotonic()  # its idle time before the restart is unknown
                log.info(
                    "adopted paused replica %s of %s", replica.container_name, fn.qualified_name
                )
                continue
            if replica.state != "running":
                await self._provider.remove_replica(replica.container_id, stop_timeout_s=1)
                continue
            handle = fn.pool.add(replica)
            if await self._probe_ready(fn, handle, timeout_s=2.0):
                await fn.pool.set_state(handle, ReplicaState.READY)
                log.info("adopted replica %s of %s", replica.container_name, fn.qualified_name)
            else:
                await self._retire(fn, handle, drain=False)

    async def _reconcile(self, fn: FunctionRuntime) -> float | None:
        """Converge ``fn`` once; the seconds until its next paused replica expires, if any."""
        # Forget replicas Docker no longer runs (died while we were not looking).
        live = {
            r.container_id: r
            for r in await self._provider.list_replicas(fn.spec.name, fn.spec.namespace)
        }
        for handle in fn.pool:
            if handle.state is ReplicaState.DRAINING and handle.container_id not in fn.failed:
                continue  # leaving on purpose (scaled down, pausing): not a replica to replace
            replica = live.get(handle.container_id)
            if (
                replica is None
                or replica.state in ("exited", "dead")
                or handle.container_id in fn.failed
            ):
                fn.failed.discard(handle.container_id)
                log.warning(
                    "replica %s of %s is gone; replacing",
                    handle.replica.container_name,
                    fn.qualified_name,
                )
                await self._retire(fn, handle, drain=False)
        current = fn.current()
        missing = fn.desired_replicas - len(current)
        if missing > 0:
            # The paused tier first: resuming takes milliseconds, starting a replica much longer.
            paused = [
                h
                for h in fn.pool.in_state(ReplicaState.PAUSED)
                if h.replica.generation == fn.generation
            ][:missing]
            for handle in paused:
                handle.state = ReplicaState.STARTING  # claimed, as the activator does
            resumed = await asyncio.gather(*(self._resume(fn, h) for h in paused))
            missing -= sum(resumed)
            if missing > 0:
                await asyncio.gather(*(self._start_replica(fn) for _ in range(missing)))
        elif missing < 0:
            # The least busy extra replicas leave: drained, then paused (the idle tier) or removed.
            extra = sorted(current, key=lambda h: (h.state is ReplicaState.READY, h.in_flight))
            pause = fn.pause_extras and fn.scaling.pause_after_s > 0
            for handle in extra[:-missing]:
                self._leave(fn, handle, pause=pause)
        # Paused replicas idle long enough leave for good; the others are timed.
        now = time.monotonic()
        expires_in_s: float | None = None
        for handle in fn.pool.in_state(ReplicaState.PAUSED):
            left_s = handle.paused_at + fn.scaling.paused_keep_s - now
            if left_s <= 0:
                self._leave(fn, handle, pause=False)
            elif expires_in_s is None or left_s < expires_in_s:
                expires_in_s = left_s
        ready_now = [h for h in fn.current() if h.state is ReplicaState.READY]
        # Rolling update: older generations leave only once the new one is fully ready.
        if len(ready_now) >= fn.desired_replicas:
            for handle in fn.pool:
                if (
                    handle.replica.generation != fn.generation
                    and handle.state is not ReplicaState.DRAINING
                ):
                    self._leave(fn, handle, pause=False)
        self._keep_standby(fn)
        return expires_in_s

    def _request(self, fn: FunctionRuntime) -> ReplicaRequest:
        secrets_dir = None
        gid = None
        if fn.spec.secrets:
            gid = fn.secrets_gid
            secrets_dir = self._secrets.materialize(fn.spec, gid)
        return ReplicaRequest(fn.spec, fn.generation, secrets_dir, gid, self.default_env)

    def _keep_standby(self, fn: FunctionRuntime) -> None:
        """At zero (and allowed to be): have a created container ready for the next cold
        start; a standby of an older generation goes."""
        standby = fn.standby
        if standby and standby[1] != fn.generation:
            fn.standby = None
            self._spawn(
                self._provider.remove_replica(standby[0]), f"remove standby {standby[0][:12]}"
            )
            standby = None
        if (
            standby is None
            and not fn.deleted
            and fn.desired_replicas == 0
            and fn.scaling.idle_floor == 0
            and len(fn.pool) == 0  # none paused (resumed instead), pausing or leaving
            and self.backend_error is None
        ):
            fn.standby = ("", fn.generation)  # being made
            self._spawn(self._prepare_standby(fn, fn.generation), f"standby {fn.qualified_name}")

    async def _prepare_standby(self, fn: FunctionRuntime, generation: int) -> None:
        try:
            container_id = await self._provider.prepare_replica(self._request(fn))
        except LocalFaasError as exc:
            log.debug("no standby container for %s: %s", fn.qualified_name, exc)
            if fn.standby == ("", generation):
                fn.standby = None
            return
        if fn.standby == ("", generation) and not fn.deleted and fn.generation == generation:
            fn.standby = (container_id, generation)
        else:  # taken over meanwhile: deleted, updated, or started without it
            await self._provider.remove_replica(container_id)

    async def _start_replica(self, fn: FunctionRuntime) -> None:
        standby, fn.standby = fn.standby, None
        try:
            async with self._start_slots:
                request = self._request(fn)
                replica = None
                if standby and standby[0] and standby[1] == fn.generation:
                    try:
                        replica = await self._provider.start_prepared(standby[0], request)
                    except LocalFaasError as exc:
                        log.info(
                            "standby of %s did not start (%s); creating one", fn.qualified_name, exc
                        )
                elif standby and standby[0]:
                    self._spawn(self._provider.remove_replica(standby[0]), "remove standby")
                if replica is None:
                    replica = await self._provider.create_replica(request)
        except LocalFaasError as exc:
            await self._start_failed(fn, f"cannot start a replica of {fn.qualified_name}: {exc}")
            raise
        handle = fn.pool.add(replica)
        if replica.state in ("exited", "dead"):
            # Died before the pool knew it (its "die" event found no handle to mark).
            fn.failed.add(replica.container_id)
        if fn.deleted or replica.generation != fn.generation:
            await self._retire(fn, handle, drain=False)
            return
        if await self._probe_ready(fn, handle, timeout_s=self._ready_timeout_s):
            await fn.pool.set_state(handle, ReplicaState.READY)
            log.info(
                "replica %s of %s ready port=%s at %s",
                replica.container_name,
                fn.qualified_name,
                replica.host_port,
                "%s:%s" % (replica.endpoint or ("-", "-")),
            )
            return
        if handle.container_id in fn.failed:
            reason = (
                f"replica {replica.container_name} of {fn.qualified_name} exited while starting"
                f" (see: localfaas logs {fn.spec.name})"
            )
        else:
            reason = (
                f"replica {replica.container_name} of {fn.qualified_name} never became ready"
                f" within {self._ready_timeout_s:.0f}s"
            )
        log.warning("%s; removing", reason)
        fn.failed.discard(handle.container_id)
        await self._retire(fn, handle, drain=False)
        await self._start_failed(fn, reason)

    async def _start_failed(self, fn: FunctionRuntime, reason: str) -> None:
        """Requests waiting for a replica get ``reason`` (503) unless another is still starting."""
        if not fn.pool.in_state(ReplicaState.STARTING) and not fn.pool.ready():
            await fn.pool.report_failure(reason)

    async def _resume(self, fn: FunctionRuntime, handle: ReplicaHandle) -> bool:
        """Unpause a replica claimed for resuming (state STARTING); False if that failed (it
        is then removed)."""
        try:
            await self._provider.unpause_replica(handle.container_id)
        except LocalFaasError as exc:
            log.warning(
                "cannot resume %s of %s: %s", handle.replica.container_name, fn.qualified_name, exc
            )
            await self._retire(fn, handle, drain=False)
            fn.wake.set()  # the supervisor starts a fresh replica for those waiting
            return False
        if fn.deleted or handle.replica.generation != fn.generation:
            await self._retire(fn, handle, drain=False)
            return False
        await fn.pool.set_state(handle, ReplicaState.READY)
        return True

    def _leave(self, fn: FunctionRuntime, handle: ReplicaHandle, *, pause: bool) -> None:
        """Take a replica out of service now (unroutable, no longer counted) and drain it, then
        pause or remove it, in the background: a drain waits for the requests in flight and
        stopping a container takes seconds, which must not hold up the supervisor."""
        if handle.state in (ReplicaState.DRAINING, ReplicaState.GONE):
            return
        pause = pause and handle.state is ReplicaState.READY  # half-started: not worth keeping
        was_paused = handle.state is ReplicaState.PAUSED
        handle.state = ReplicaState.DRAINING
        leave = self._pause(fn, handle) if pause else self._retire(fn, handle, drain=not was_paused)
        self._spawn(leave, f"{'pause' if pause else 'remove'} {handle.replica.container_name}")

    def _spawn(self, work: Coroutine[Any, Any, Any], name: str) -> None:
        task = asyncio.create_task(work, name=name)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _pause(self, fn: FunctionRuntime, handle: ReplicaHandle) -> None:
        """The idle tier: unroutable, drained (bounded), then frozen; removed if that fails."""
        if not await self._drain(fn, handle):
            await self._retire(fn, handle, drain=False)
            return
        try:
            await self._provider.pause_replica(handle.container_id)
        except LocalFaasError as exc:
            log.warning(
                "cannot pause %s of %s: %s; removing",
                handle.replica.container_name,
                fn.qualified_name,
                exc,
            )
            await self._retire(fn, handle, drain=False)
            return
        handle.paused_at = time.monotonic()
        await fn.pool.set_state(handle, ReplicaState.PAUSED)
        fn.wake.set()  # the supervisor times its expiry from now

    async def _probe_ready(
        self, fn: FunctionRuntime, handle: ReplicaHandle, *, timeout_s: float
    ) -> bool:
        """Poll the replica's `/_/ready` until 200, every 2 ms at first, then at most every
        20 ms: on a cold start requests wait on this, and a refused connection costs little."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout_s
        delay_s = 0.002
        url = handle.base_url + "/_/ready"
        while loop.time() < deadline:
            if handle.state is ReplicaState.GONE:
                return False
            if handle.container_id in fn.failed:
                return False  # Docker said it died: no point waiting for it
            try:
                async with self._session.get(url, timeout=aiohttp.ClientTimeout(total=1.0)) as resp:
                    if resp.status == 200:
                        return True
            except (aiohttp.ClientError, TimeoutError):
                pass
            await asyncio.sleep(delay_s)
            delay_s = min(delay_s * 2, 0.02)
        return False

    async def _drain(self, fn: FunctionRuntime, handle: ReplicaHandle) -> bool:
        """Make a replica unroutable and wait (bounded) for its requests in flight to finish;
        False, with a warning, if some were still running at the deadline."""
        await fn.pool.set_state(handle, ReplicaState.DRAINING)
        if await handle.wait_idle(self._drain_timeout_s):
            return True
        log.warning(
            "replica %s of %s still had %d in flight after %.0fs; removing it anyway",
            handle.replica.container_name,
            fn.qualified_name,
            handle.in_flight,
            self._drain_timeout_s,
        )
        return False

    async def _retire(
        self, fn: FunctionRuntime, handle: ReplicaHandle, *, drain: bool = True
    ) -> None:
        """Make a replica unroutable, let in-flight requests finish (bounded), then remove it."""
        if handle.state is ReplicaState.GONE:
            return
        if drain:
            await self._drain(fn, handle)
        else:
            await fn.pool.set_state(handle, ReplicaState.DRAINING)
        try:
            await self._provider.remove_replica(handle.container_id)
        finally:
            await fn.pool.set_state(handle, ReplicaState.GONE)
            fn.wake.set()  # e.g. the last one gone: the supervisor makes the standby now

    def secret_changed(self, namespace: str, name: str) -> None:
        """Rewrite the mounted copies of an updated secret; replicas see the new value at once
        (the bind mount is the folder, and files in it are replaced atomically)."""
        for fn in self.list(namespace):
            if name in fn.spec.secrets:
                self._secrets.materialize(fn.spec, fn.secrets_gid)

    async def _remove_orphans(self) -> None:
        """Containers of ours whose function is no longer in the desired state."""
        try:
            replicas = await self._provider.list_replicas()
        except BackendUnavailable as exc:
            self.backend_error = str(exc)
            return
        for replica in replicas:
            if (replica.namespace, replica.function) not in self._functions:
                log.info(
                    "removing orphan replica %s (%s)",
                    replica.container_name,
                    replica.qualified_name,
                )
                await self._provider.remove_replica(replica.container_id, stop_timeout_s=2)

    async def _watch_events(self) -> None:
        """Docker events wake the affected supervisor at once; on loss, back off and resync."""
        backoff_s = 0.5
        while True:
            try:
                async for event in self._provider.events():
                    backoff_s = 0.5
                    if self.backend_error is not None:
                        self.backend_error = None
                        self._wake_all(self._functions.values())
                    fn = self._functions.get((event.namespace, event.function))
                    if fn is None:
                        continue
                    if event.action in ("die", "destroy", "health_status:unhealthy"):
                        handle = fn.pool.get(event.container_id)
                        if handle is not None and handle.state is ReplicaState.READY:
                            # Unroutable at once; the supervisor removes and replaces it.
                            await fn.pool.set_state(handle, ReplicaState.DRAINING)
                            fn.failed.add(event.container_id)
                        elif handle is not None and handle.state is ReplicaState.STARTING:
                            fn.failed.add(event.container_id)  # its start gives up at once
                        fn.wake.set()
            except asyncio.CancelledError:
                raise
            except BackendUnavailable as exc:
                if self.backend_error is None:
                    log.warning("lost Docker: %s; retrying in %.1fs", exc, backoff_s)
                self.backend_error = str(exc)
            except Exception:
                log.exception("Docker event stream failed; resubscribing")
            await asyncio.sleep(backoff_s)
            backoff_s = min(backoff_s * 2, 10.0)
            try:
                await self._provider.ping()
            except BackendUnavailable:
                continue
            if self.backend_error is not None:
                log.info("Docker is reachable again")
                self.backend_error = None
            self._wake_all(self._functions.values())

    @staticmethod
    def _wake_all(functions: Iterable[FunctionRuntime]) -> None:
        for fn in functions:
            fn.wake.set()


def _stored_scaling(spec: FunctionSpec) -> ScalingConfig:
    """Scaling settings of a function deployed earlier; defaults (with a warning) if its
    labels are no longer accepted, rather than not starting it at all."""
    try:
        return scaling_config(spec)
    except InvalidSpec as exc:
        log.warning("%s: %s; using the default scaling settings", spec.qualified_name, exc)
        return ScalingConfig()
