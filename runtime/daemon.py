"""`localfaas up`: one asyncio daemon owning every long-lived resource, with a written shutdown.

Lifetimes are owned by one AsyncExitStack and closed in reverse order of creation.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
from contextlib import AsyncExitStack

import aiohttp
from aiohttp import web

from connectors.host import ConnectorHost
from connectors.registry import daemon_context, default_connectors
from runtime.config import Settings
from runtime.credentials import ensure_credentials, instance_id
from runtime.functions import FunctionManager
from runtime.gateway.app import build_app
from runtime.gateway.front import FrontSite, FunctionFront
from runtime.gateway.middleware import BasicAuth
from runtime.gateway.state import Services
from runtime.invoker import Invoker
from runtime.metrics import GatewayMetrics
from runtime.provider.docker import DockerProvider
from runtime.queue.service import AsyncQueue, validate_async_annotations
from runtime.scaling.autoscaler import Autoscaler
from runtime.secrets import SecretFiles
from runtime.store import Store
from runtime.upstream import UpstreamClient

log = logging.getLogger("localfaas.daemon")
SHUTDOWN_DRAIN_S = 10.0
# Expired rows of the store's kv (webhook delivery ids, cron firing claims) are ignored on read;
# this only keeps the table from growing.
KV_PURGE_EVERY_S = 600.0


async def purge_expired_kv(store: Store, every_s: float = KV_PURGE_EVERY_S) -> None:
    while True:
        await asyncio.sleep(every_s)
        try:
            removed = store.kv_purge_expired()
        except Exception as exc:  # a locked or full disk must not end the loop
            log.warning("expired state entries not purged: %s", exc)
            continue
        if removed:
            log.info("purged %d expired state entries (delivery ids, cron claims)", removed)


class Daemon:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self._stack = AsyncExitStack()
        self._runner: web.AppRunner | None = None
        self._front: FunctionFront | None = None
        self._functions: FunctionManager | None = None
        self._queue: AsyncQueue | None = None
        self._connectors: ConnectorHost | None = None

    async def start(self) -> None:
        settings = self.settings
        state_dir = settings.state_dir
        credentials = ensure_credentials(state_dir)
        if credentials.created:
            print(
                f"gateway credentials: user {credentials.user}, password {credentials.password} "
                f"(stored in {state_dir}/basic-auth-password)",
                flush=True,
            )
        store = Store(state_dir / "state.db")
        self._stack.callback(store.close)
        housekeeping = asyncio.create_task(purge_expired_kv(store), name="kv purge")
        self._stack.push_async_callback(_cancel, housekeeping)
        secrets = SecretFiles(state_dir)
        provider = DockerProvider(instance_id(state_dir), url=settings.docker_url)
        self._stack.push_async_callback(provider.close)
        session = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(
                limit=0, keepalive_timeout=30, enable_cleanup_closed=True
            ),
            auto_decompress=False,
        )
        self._stack.push_async_callback(session.close)
        upstream = UpstreamClient()
        self._stack.push_async_callback(upstream.close)
        # A replica leaving (scaled down, paused) finishes its requests first: as long as
        # a request may take.
        functions = FunctionManager(
            provider, store, secrets, session, drain_timeout_s=settings.invoke_timeout_s
        )
        self._functions = functions
        metrics = GatewayMetrics()
        invoker = Invoker(functions, upstream, metrics)
        bridge_address: str | None = None
        try:
            await provider.ping()
            bridge_address = await provider.bridge_gateway_ip()
        except Exception as exc:
            log.warning("Docker is not reachable (%s); will keep retrying", exc)
            functions.backend_error = str(exc)
        functions.default_env["OPENFAAS_URL"] = f"http://gateway:{settings.port}"
        # The daemon drains a replica (unroutable, nothing in flight) before it stops it, so
        # the watchdog's own wait for routers to notice (5 s by default) only delays removal.
        functions.default_env["healthcheck_interval"] = "0"
        functions.validators.append(validate_async_annotations)
        await functions.start()
        self._stack.push_async_callback(functions.close)
        autoscaler = Autoscaler(functions, metrics, provider)
        autoscaler.register(metrics.registry)
        await autoscaler.start()
        self._stack.push_async_callback(autoscaler.close)  # stops before the supervisors
        system_api = [(settings.host, settings.port)]
        if bridge_address is not None:
            system_api.append((bridge_address, settings.port))
        queue = AsyncQueue(
            settings, functions, invoker, session, metrics.registry, system_api=system_api
        )
        self._queue = queue
        await queue.start()
        autoscaler.busy = queue.has_queued  # queued async calls keep a function from idling
        self._stack.push_async_callback(queue.close)  # closed before the functions' supervisors
        context = daemon_context(settings, invoker, queue, store, secrets, metrics.registry)
        connectors = ConnectorHost(functions, default_connectors(context))
        self._connectors = connectors
        await connectors.start()
        self._stack.push_async_callback(connectors.close)
        services = Services(
            settings,
            store,
            secrets,
            provider,
            functions,
            invoker,
            metrics,
            session,
            queue,
            connectors,
        )
        app = build_app(services, BasicAuth(credentials.user, credentials.password))
        self._runner = web.AppRunner(app, access_log=None, shutdown_timeout=SHUTDOWN_DRAIN_S)
        await self._runner.setup()
        assert self._runner.server is not None
        self._front = FunctionFront(services, self._runner.server)
        await FrontSite(self._runner, self._front, settings.host, settings.port).start()
        await self._listen_on_bridge(bridge_address)
        log.info(
            "localfaas gateway listening on http://%s:%s state=%s",
            settings.host,
            settings.port,
            state_dir,
        )

    async def _listen_on_bridge(self, address: str | None) -> None:
        """Functions call the gateway as http://gateway:<port> (Docker's host-gateway, the
        bridge address). A loopback-only gateway would be out of their reach, so it also
        listens there; the bridge address is reachable only from this host's containers."""
        if (
            self.settings.host not in ("127.0.0.1", "localhost", "::1")
            or self._runner is None
            or self._front is None
        ):
            return
        if address is None:
            log.warning("Docker's bridge address is unknown; function chaining is off")
            return
        try:
            await FrontSite(self._runner, self._front, address, self.settings.port).start()
        except OSError as exc:
            log.warning(
                "cannot listen on %s:%s for function chaining: %s", address, self.settings.port, exc
            )
            return
        log.info(
            "functions reach the gateway at http://gateway:%s (%s)", self.settings.port, address
        )

    async def stop(self) -> None:
        """Shutdown procedure, in this order:

        1. stop accepting connections and mark unready (the listening socket closes);
        2. let in-flight requests finish, up to SHUTDOWN_DRAIN_S;
        3. stop the connectors (no new events: cron, NATS subscriptions), then the async workers (running calls finish up to their drain deadline; unacked
           ones stay in the stream for the next start), close NATS, stop the embedded server;
        4. stop supervisors and event watchers (function containers keep running, to be adopted
           on the next start) — unless --stop-functions, which removes every replica;
        5. close the HTTP clients (replica connections, probes), the Docker client and the store.
        """
        log.info("shutting down")
        if self._runner is not None:
            for site in list(self._runner.sites):
                await site.stop()  # step 1
            drains = [self._runner.cleanup()]  # step 2, for connections aiohttp serves
            if self._front is not None:
                drains.append(self._front.shutdown(SHUTDOWN_DRAIN_S))  # and the front's
            await asyncio.gather(*drains)
        if self._connectors is not None:
            await self._connectors.close()  # step 3
        if self._queue is not None:
            await self._queue.close()
        if self.settings.stop_functions and self._functions is not None:
            await self._functions.close()
            await self._functions.remove_all_replicas()
        await self._stack.aclose()  # steps 4 and 5, in reverse order of creation
        log.info("stopped")


async def _cancel(task: asyncio.Task[None]) -> None:
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task


async def serve(settings: Settings) -> None:
    daemon = Daemon(settings)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    await daemon.start()
    try:
        await stop.wait()
    finally:
        with contextlib.suppress(Exception):
            await daemon.stop()
