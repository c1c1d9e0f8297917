"""A real gateway app around the FakeProvider: real HTTP, real SQLite, fake containers."""

from __future__ import annotations

import asyncio
import base64
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path

import aiohttp
import pytest
from aiohttp.test_utils import TestClient, TestServer

from runtime.config import Settings
from runtime.functions import FunctionManager
from runtime.gateway.app import build_app
from runtime.gateway.middleware import BasicAuth
from runtime.gateway.state import Services
from runtime.invoker import Invoker
from runtime.metrics import GatewayMetrics
from runtime.provider.fake import FakeProvider
from runtime.secrets import SecretFiles
from runtime.store import Store

PASSWORD = "test-password"
AUTH = {"Authorization": "Basic " + base64.b64encode(f"admin:{PASSWORD}".encode()).decode()}


@dataclass
class Gateway:
    client: TestClient
    provider: FakeProvider
    functions: FunctionManager
    store: Store

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
    ) -> Gateway:
        settings = Settings(
            state_dir=tmp_path / "state",
            cache_dir=tmp_path / "cache",
            max_body_bytes=max_body_bytes,
            invoke_timeout_s=invoke_timeout_s,
        )
        store = Store(tmp_path / "state.db")
        secrets = SecretFiles(settings.state_dir)
        provider = provider or FakeProvider()
        session = aiohttp.ClientSession(auto_decompress=False)
        functions = FunctionManager(
            provider, store, secrets, session, ready_timeout_s=5.0, drain_timeout_s=2.0
        )
        metrics = GatewayMetrics()
        invoker = Invoker(functions, session, metrics, ready_wait_s=2.0)
        services = Services(
            settings, store, secrets, provider, functions, invoker, metrics, session
        )
        await functions.start()
        app = build_app(services, BasicAuth("admin", PASSWORD))
        client = TestClient(TestServer(app))
        await client.start_server()

        async def cleanup() -> None:
            await client.close()
            await functions.close()
            await session.close()
            await provider.engine.close()
            store.close()

        cleanups.append(cleanup)
        return Gateway(client, provider, functions, store)

    yield factory
    for cleanup in reversed(cleanups):
        await cleanup()
