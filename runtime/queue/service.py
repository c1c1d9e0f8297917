"""The daemon's async invocation service: one owner for the NATS server (embedded child, or an
external one), the connection, the streams, the workers bound to deployed functions and the
call-management API behind the gateway routes.

Async stays optional at run time: if NATS is missing or down, the daemon keeps serving sync
calls, and every async entry point answers 503 with the reason and a Retry-After until the
connection is back.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, replace
from typing import Any

import aiohttp
from multidict import CIMultiDictProxy
from nats.aio.client import Client as NATS
from nats.errors import Error as NatsError
from nats.js import JetStreamContext
from prometheus_client import CollectorRegistry

from runtime.config import Settings
from runtime.errors import FunctionNotFound, PayloadTooLarge
from runtime.functions import FunctionManager
from runtime.invoker import Invocation, Invoker
from runtime.labels import int_annotation
from runtime.models import FunctionSpec
from runtime.queue.callbacks import CallbackGuard, CallbackPolicy, CallbackSender
from runtime.queue.calls import Calls, QueueDepth
from runtime.queue.connection import connect
from runtime.queue.enqueue import Enqueued, Enqueuer, required_max_payload
from runtime.queue.errors import CallConflict, CallNotFound, NatsServerError, QueueUnavailable
from runtime.queue.message import Envelope
from runtime.queue.metrics import AsyncMetrics
from runtime.queue.nats_server import EmbeddedNats
from runtime.queue.retry import RetryPolicy
from runtime.queue.status_sqlite import SqliteStatusStore
from runtime.queue.streams import (
    ATOMIC_BATCH_VERSION,
    WORK_STREAM,
    QueueLimits,
    ensure_layout,
    parse_consumer_name,
)
from runtime.queue.worker import AsyncWorkers, WorkerOptions

log = logging.getLogger("localfaas.queue")

CONCURRENCY_ANNOTATION = "com.localfaas.async.concurrency"
MAX_CONCURRENCY = 1000
DEPTH_REFRESH_S = 2.0
# How long `start` waits for the first connection before letting the daemon serve anyway.
FIRST_CONNECT_WAIT_S = 10.0
RECONNECT_MIN_S = 0.5
RECONNECT_MAX_S = 30.0
STATUS_DB = "async-calls.db"
STATUS_PURGE_EVERY_S = 3600.0


def async_concurrency(spec: FunctionSpec, replicas: int) -> int:
    """How many async calls of the function run at once: the annotation, else one per replica
    of capacity (at least one, so a function at zero still drains its queue).

    Raises InvalidSpec naming the annotation when its value is not a whole number in range."""
    value = int_annotation(spec.annotations, CONCURRENCY_ANNOTATION, None, 1, MAX_CONCURRENCY)
    return max(1, replicas) if value is None else value


def validate_async_annotations(spec: FunctionSpec) -> None:
    """Deploy-time check (FunctionManager validator): bad async annotations → 400."""
    async_concurrency(spec, 1)
    RetryPolicy.from_annotations(spec.annotations)


def invoke_through(invoker: Invoker, timeout_s: float) -> Callable[[Envelope], Any]:
    """The workers' ``invoke``: the same internal path as a sync call (routing, metrics,
    in-flight accounting), never a loop back over HTTP."""

    async def invoke(env: Envelope) -> tuple[int, CIMultiDictProxy[str], bytes]:
        inv = Invocation(
            name=env.function,
            namespace=env.namespace,
            method=env.method,
            path=env.path,
            query_string=env.query,
            headers=list(env.headers),
            body=env.body,
            body_length=len(env.body),
            call_id=env.call_id,
            timeout_s=timeout_s,
        )
        result = await invoker.call_buffered(inv)
        return result.status, result.headers, result.body

    return invoke


@dataclass
class _Connected:
    nc: NATS
    js: JetStreamContext
    enqueuer: Enqueuer
    calls: Calls
    workers: AsyncWorkers


class AsyncQueue:
    def __init__(
        self,
        settings: Settings,
        functions: FunctionManager,
        invoker: Invoker,
        session: aiohttp.ClientSession,
        registry: CollectorRegistry,
        *,
        system_api: Iterable[tuple[str, int]] = (),
        worker_options: WorkerOptions | None = None,
    ) -> None:
        self._settings = settings
        self._functions = functions
        self._invoker = invoker
        self._session = session
        self.metrics = AsyncMetrics(registry)
        payload = required_max_payload(settings.async_max_body_bytes)
        self._min_payload = payload
        self._limits = QueueLimits(max_msg_bytes=max(QueueLimits().max_msg_bytes, payload))
        self._worker_options = worker_options or WorkerOptions(limits=self._limits)
        policy = CallbackPolicy.build(
            extra_deny=settings.callback_deny,
            allow=settings.callback_allow,
            system_api=system_api,
        )
        self.guard = CallbackGuard(policy)
        self._server: EmbeddedNats | None = None
        self._live: _Connected | None = None
        # Calls queued or in flight per function ("name.namespace"), as of the last refresh:
        # the autoscaler counts a function with queued calls as busy, not idle.
        self._depths: dict[str, int] = {}
        self._tasks: list[asyncio.Task[None]] = []
        self._changes: asyncio.Queue[tuple[str, str]] = asyncio.Queue()
        self._connected = asyncio.Event()
        self.problem: str | None = "the async queue is starting"
        self._status: SqliteStatusStore | None = None

    # -- lifecycle ----------------------------------------------------------------------------

    async def start(self) -> None:
        """Start (or find) NATS and connect. Never raises for NATS trouble: async stays
        unavailable with `problem` saying why, and the connection keeps being retried."""
        url = self._settings.nats_url
        if url is None:
            server = EmbeddedNats(
                self._settings.state_dir,
                port=self._settings.nats_port,
                max_payload=max(self._min_payload, 1024 * 1024),
                sync_always=self._settings.nats_fsync,
            )
            try:
                await server.start()
            except (NatsServerError, OSError, TimeoutError) as exc:
                self.problem = f"the embedded nats-server did not start: {exc}"
                log.error("async invocations are unavailable: %s", self.problem)
                return
            self._server = server
            url = server.url
        self._tasks.append(asyncio.create_task(self._connect_loop(url), name="nats connect"))
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._connected.wait(), FIRST_CONNECT_WAIT_S)

    async def close(self) -> None:
        """Shutdown steps for async: stop the workers (running calls finish up to the drain
        deadline; unacked ones return to the stream), close the connection, stop the server."""
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self._tasks.clear()
        live, self._live = self._live, None
        self.problem = "the daemon is shutting down"
        if live is not None:
            await live.workers.close()
            with contextlib.suppress(Exception):
                await live.nc.close()
        if self._server is not None:
            await self._server.stop()
            self._server = None
        if self._status is not None:
            self._status.close()
            self._status = None

    @property
    def nats_url(self) -> str | None:
        if self._server is not None:
            return self._server.url
        return self._settings.nats_url

    @property
    def server(self) -> EmbeddedNats | None:
        return self._server

    async def _connect_loop(self, url: str) -> None:
        wait_s = RECONNECT_MIN_S
        while True:
            try:
                nc = await connect(url, min_max_payload=self._min_payload)
                live = await self._set_up(nc)
            except (QueueUnavailable, NatsServerError, OSError, TimeoutError) as exc:
                if self.problem != str(exc):
                    log.warning("async queue unavailable: %s (retrying)", exc)
                self.problem = str(exc)
                await asyncio.sleep(wait_s)
                wait_s = min(wait_s * 2, RECONNECT_MAX_S)
                continue
            break
        self._live = live
        self.problem = None
        self._connected.set()
        log.info("async invocations ready (nats %s)", "embedded" if self._server else "external")
        self._functions.watch(self._function_changed)
        await self._drain_leftovers(live)
        self._tasks.append(asyncio.create_task(self._bind_loop(live), name="async bindings"))
        self._tasks.append(asyncio.create_task(self._depth_loop(live), name="async depths"))

    async def _set_up(self, nc: NATS) -> _Connected:
        try:
            js = nc.jetstream()
            version = nc.connected_server_version
            layout = await ensure_layout(
                js,
                self._limits,
                atomic=(version.major, version.minor, version.patch) >= ATOMIC_BATCH_VERSION,
            )
        except BaseException:
            await nc.close()
            raise
        store = self._status_store(layout.limits)
        callbacks = CallbackSender(self._session, self.guard)
        enqueuer = Enqueuer(
            nc,
            atomic_batches=layout.atomic,
            max_body_bytes=self._settings.async_max_body_bytes,
            metrics=self.metrics,
        )
        options = self._worker_options
        if options.accepting_busy is None:
            options = replace(options, accepting_busy=lambda: enqueuer.busy)
        workers = AsyncWorkers(
            nc,
            js,
            store,
            invoke_through(self._invoker, self._settings.invoke_timeout_s),
            options=options,
            callbacks=callbacks,
            metrics=self.metrics,
        )
        return _Connected(nc, js, enqueuer, Calls(nc, js, store), workers)

    async def _drain_leftovers(self, live: _Connected) -> None:
        """Consumers of functions deleted while the daemon was down still hold calls: run a
        worker for each, so those calls end as dead letters (404, replayable after a
        redeploy) instead of staying queued for ever; the depth loop removes it when empty."""
        try:
            consumers = await live.js.consumers_info(WORK_STREAM)
        except (NatsError, TimeoutError) as exc:
            log.warning("cannot list async consumers: %s", exc)
            return
        for info in consumers:
            parsed = parse_consumer_name(info.name or "")
            if parsed is None or self._exists(parsed[1], parsed[0]):
                continue
            namespace, name = parsed
            log.info("draining async calls left for deleted function %s.%s", name, namespace)
            await live.workers.ensure(namespace, name)

    def _function_changed(self, namespace: str, name: str) -> None:
        self._changes.put_nowait((namespace, name))

    def _status_store(self, limits: QueueLimits) -> SqliteStatusStore:
        if self._status is None:
            self._settings.state_dir.mkdir(parents=True, exist_ok=True)
            self._status = SqliteStatusStore(
                self._settings.state_dir / STATUS_DB, ttl_s=limits.status_ttl_s
            )
        return self._status

    async def _bind_loop(self, live: _Connected) -> None:
        """Apply function changes to the workers, one at a time, in order."""
        while True:
            namespace, name = await self._changes.get()
            try:
                await self._bind(live, namespace, name)
            except Exception as exc:
                log.warning("async worker for %s.%s not updated: %s", name, namespace, exc)

    async def _bind(self, live: _Connected, namespace: str, name: str) -> None:
        try:
            fn = self._functions.get(name, namespace)
        except FunctionNotFound:
            # Deleted: the worker stays until its queue is empty, so calls accepted before the
            # delete end as dead letters (404, replayable after a redeploy), never vanish.
            return
        await live.workers.ensure(
            namespace,
            name,
            concurrency=async_concurrency(fn.spec, fn.desired_replicas),
            policy=RetryPolicy.from_annotations(fn.spec.annotations),
        )

    async def _depth_loop(self, live: _Connected) -> None:
        """Queue-depth gauges, and the end of workers whose function is gone and drained."""
        purged_at = time.monotonic()
        while True:
            await asyncio.sleep(DEPTH_REFRESH_S)
            if self._status is not None and time.monotonic() - purged_at > STATUS_PURGE_EVERY_S:
                purged_at = time.monotonic()
                self._status.purge_expired()
            try:
                depths = await live.workers.refresh_depths()
            except Exception as exc:
                log.debug("queue depths not refreshed: %s", exc)
                continue
            self._depths = {qualified: depth.total for qualified, depth in depths.items()}
            for qualified, depth in depths.items():
                name, _, namespace = qualified.partition(".")
                if depth.total == 0 and not self._exists(name, namespace):
                    await live.workers.remove(namespace, name, delete_consumer=True)
                    log.info(
                        "async worker for %s removed (function deleted, queue empty)", qualified
                    )

    def has_queued(self, namespace: str, name: str) -> bool:
        """Whether calls of the function wait in its queue or retry (as of the last refresh,
        at most a couple of seconds old)."""
        return self._depths.get(f"{name}.{namespace}", 0) > 0

    def _exists(self, name: str, namespace: str) -> bool:
        try:
            self._functions.get(name, namespace)
        except FunctionNotFound:
            return False
        return True

    # -- what the gateway uses ----------------------------------------------------------------

    def _require(self) -> _Connected:
        live = self._live
        if live is None or not live.nc.is_connected:
            reason = self.problem or "the async queue (NATS) is not connected"
            raise QueueUnavailable(reason)
        return live

    def check_body_size(self, size: int | None) -> None:
        """413 for a body over the async limit, whether or not NATS is up."""
        limit = self._settings.async_max_body_bytes
        if size is not None and size > limit:
            raise PayloadTooLarge(f"request body is larger than the async limit of {limit} bytes")

    @property
    def max_body_bytes(self) -> int:
        return self._settings.async_max_body_bytes

    async def enqueue(self, env: Envelope) -> Enqueued:
        """Store the call. A call id already taken by another function is a conflict (409),
        not a silent no-op: JetStream's dedupe window spans the whole stream."""
        live = self._require()
        result = await live.enqueuer.enqueue(env)
        if result.duplicate:
            with contextlib.suppress(CallNotFound):
                earlier = await live.calls.status(env.call_id)
                if (earlier.function, earlier.namespace) != (env.function, env.namespace):
                    raise CallConflict(
                        f"X-Call-Id {env.call_id} is already used by a call to "
                        f"{earlier.function_name}; use another id for {env.function_name}"
                    )
        return result

    @property
    def calls(self) -> Calls:
        return self._require().calls

    async def depth(self, namespace: str, name: str) -> tuple[QueueDepth, int, int]:
        """(depth, running now, concurrency) of one function's queue."""
        live = self._require()
        depth = await live.calls.depth(namespace, name)
        worker = live.workers.get(namespace, name)
        if worker is None:
            return depth, 0, 0
        return depth, worker.running, worker.concurrency
