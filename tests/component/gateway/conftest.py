"""A real gateway app around the FakeProvider: real HTTP, real SQLite, fake containers.

By default the gateway listens as the daemon does, through its front (`/function/` requests
served on the front's protocol, the rest handed to aiohttp); ``front=False`` listens with plain
aiohttp, so the routed handlers get every request. LOCALFAAS_TEST_FRONT=off makes plain aiohttp
the default, to run whole test files against the routed handlers (the front and aiohttp must
answer alike).
"""

from __future__ import annotations

import asyncio
import base64
import os
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web

from connectors.base import Connector
from connectors.host import ConnectorHost
from connectors.registry import ConnectorContext, daemon_context, default_connectors
from runtime.config import Settings
from runtime.functions import FunctionManager
from runtime.gateway.app import build_app
from runtime.gateway.front import FrontSite, FunctionFront
from runtime.gateway.middleware import BasicAuth
from runtime.gateway.state import Services
from runtime.invoker import Invoker
from runtime.metrics import GatewayMetrics
from runtime.provider.fake import FakeProvider
from runtime.queue.service import AsyncQueue, validate_async_annotations
from runtime.queue.worker import WorkerOptions
from runtime.secrets import SecretFiles
from runtime.store import Store
from runtime.upstream import UpstreamClient

PASSWORD = "test-password"
AUTH = {"Authorization": "Basic " + base64.b64encode(f"admin:{PASSWORD}".encode()).decode()}


@dataclass
class Gateway:
    client: aiohttp.ClientSession  # with the gateway as base URL: client.get("/healthz")
    provider: FakeProvider
    functions: FunctionManager
    store: Store
    metrics: GatewayMetrics
    upstream: UpstreamClient
    url: str
    front: FunctionFront | None  # None when served by plain aiohttp
    queue: AsyncQueue | None = None  # with_async=True: a real embedded nats-server behind it
    connectors: ConnectorHost | None = None  # with_connectors=True: default_connectors()

    async def deploy(self, name: str = "hello", **extra: object) -> aiohttp.ClientResponse:
        body = {"service": name, "image": "fake/hello:1", **extra}
        return await self.client.post("/system/functions", json=body, headers=AUTH)

    async def wait_available(
        self, name: str, count: int = 1, namespace: str = "openfaas-fn", timeout_s: float = 5.0
    ) -> dict[str, object]:
        deadline = asyncio.get_running_loop().time() + timeout_s
        while True:
            resp = await self.client.get(
                f"/system/function/{name}?namespace={namespace}", headers=AUTH
            )
            if resp.status == 200:
                status: dict[str, object] = await resp.json()
                if (
                    status["availableReplicas"] == count
                    and len(self.functions.get(name, namespace).pool) == count
                ):
                    return status
            if asyncio.get_running_loop().time() > deadline:
                raise AssertionError(
                    f"{name} did not reach {count} available replicas in {timeout_s}s"
                )
            await asyncio.sleep(0.01)


GatewayFactory = Callable[..., Awaitable[Gateway]]


@pytest.fixture
async def make_gateway(tmp_path: Path) -> AsyncIterator[GatewayFactory]:
    cleanups: list[Callable[[], Awaitable[None]]] = []

    async def factory(
        *,
        max_body_bytes: int = 1024 * 1024,
        invoke_timeout_s: float = 5.0,
        provider: FakeProvider | None = None,
        front: bool | None = None,
        with_async: bool = False,
        async_max_body_bytes: int = 1024 * 1024,
        nats_url: str | None = None,
        worker_options: WorkerOptions | None = None,
        with_connectors: bool | Callable[[ConnectorContext], list[Connector]] = False,
        settings_overrides: dict[str, Any] | None = None,
    ) -> Gateway:
        settings = Settings(
            state_dir=tmp_path / "state",
            cache_dir=tmp_path / "cache",
            max_body_bytes=max_body_bytes,
            invoke_timeout_s=invoke_timeout_s,
            async_max_body_bytes=async_max_body_bytes,
            nats_url=nats_url,
            **(settings_overrides or {}),
        )
        store = Store(tmp_path / "state.db")
        secrets = SecretFiles(settings.state_dir)
        provider = provider or FakeProvider()
        session = aiohttp.ClientSession(auto_decompress=False)
        functions = FunctionManager(
            provider, store, secrets, session, ready_timeout_s=5.0, drain_timeout_s=2.0
        )
        metrics = GatewayMetrics()
        upstream = UpstreamClient()
        invoker = Invoker(functions, upstream, metrics, ready_wait_s=2.0)
        functions.validators.append(validate_async_annotations)
        await functions.start()
        queue: AsyncQueue | None = None
        if with_async:
            queue = AsyncQueue(
                settings,
                functions,
                invoker,
                session,
                metrics.registry,
                worker_options=worker_options,
            )
            await queue.start()
        connector_host: ConnectorHost | None = None
        if with_connectors:
            context = daemon_context(settings, invoker, queue, store, secrets, metrics.registry)
            make = with_connectors if callable(with_connectors) else default_connectors
            connector_host = ConnectorHost(functions, make(context))
            await connector_host.start()
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
            connector_host,
        )
        app = build_app(services, BasicAuth("admin", PASSWORD))
        runner = web.AppRunner(app, access_log=None, shutdown_timeout=1.0)
        await runner.setup()
        gateway_front: FunctionFront | None = None
        if front is None:
            front = os.environ.get("LOCALFAAS_TEST_FRONT", "on") != "off"
        if front:
            assert runner.server is not None
            gateway_front = FunctionFront(services, runner.server)
            await FrontSite(runner, gateway_front, "127.0.0.1", 0).start()
        else:
            await web.TCPSite(runner, "127.0.0.1", 0).start()
        host, port = runner.addresses[0][:2]
        url = f"http://{host}:{port}"
        client = aiohttp.ClientSession(base_url=url)

        async def cleanup() -> None:
            await client.close()
            for site in list(runner.sites):
                await site.stop()
            if gateway_front is not None:
                await gateway_front.shutdown(1.0)
            await runner.cleanup()
            if connector_host is not None:
                await connector_host.close()
            if queue is not None:
                await queue.close()
            await functions.close()
            await upstream.close()
            await session.close()
            await provider.engine.close()
            store.close()

        cleanups.append(cleanup)
        return Gateway(
            client,
            provider,
            functions,
            store,
            metrics,
            upstream,
            url,
            gateway_front,
            queue,
            connector_host,
        )

    yield factory
    for cleanup in reversed(cleanups):
        await cleanup()
