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

from runtime.config import Settings
from runtime.credentials import ensure_credentials, instance_id
from runtime.functions import FunctionManager
from runtime.gateway.app import build_app
from runtime.gateway.middleware import BasicAuth
from runtime.gateway.state import Services
from runtime.invoker import Invoker
from runtime.metrics import GatewayMetrics
from runtime.provider.docker import DockerProvider
from runtime.secrets import SecretFiles
from runtime.store import Store

log = logging.getLogger("localfaas.daemon")
SHUTDOWN_DRAIN_S = 10.0


class Daemon:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self._stack = AsyncExitStack()
        self._runner: web.AppRunner | None = None
        self._functions: FunctionManager | None = None
        self.port: int | None = None

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
        functions = FunctionManager(provider, store, secrets, session)
        self._functions = functions
        metrics = GatewayMetrics()
        invoker = Invoker(functions, session, metrics)
        services = Services(
            settings, store, secrets, provider, functions, invoker, metrics, session
        )
        try:
            await provider.ping()
        except Exception as exc:
            log.warning("Docker is not reachable (%s); will keep retrying", exc)
            functions.backend_error = str(exc)
        await functions.start()
        self._stack.push_async_callback(functions.close)
        app = build_app(services, BasicAuth(credentials.user, credentials.password))
        self._runner = web.AppRunner(app, access_log=None, shutdown_timeout=SHUTDOWN_DRAIN_S)
        await self._runner.setup()
        site = web.TCPSite(self._runner, settings.host, settings.port, reuse_address=True)
        await site.start()
        server = self._runner.server
        sockets = getattr(site, "_server", None)
        if sockets is not None and sockets.sockets:
            self.port = sockets.sockets[0].getsockname()[1]
        else:
            self.port = settings.port
        del server
        log.info(
            "localfaas gateway listening on http://%s:%s state=%s",
            settings.host,
            self.port,
            state_dir,
        )

    async def stop(self) -> None:
        """Shutdown procedure, in this order:

        1. stop accepting connections and mark unready (the listening socket closes);
        2. let in-flight requests finish, up to SHUTDOWN_DRAIN_S;
        3. stop supervisors and event watchers (function containers keep running, to be adopted
           on the next start) — unless --stop-functions, which removes every replica;
        4. close the HTTP session, the Docker client and the store.
        """
        log.info("shutting down")
        if self._runner is not None:
            await self._runner.cleanup()  # steps 1 and 2
        if self.settings.stop_functions and self._functions is not None:
            await self._functions.close()
            await self._functions.remove_all_replicas()
        await self._stack.aclose()  # steps 3 and 4, in reverse order of creation
        log.info("stopped")


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
