"""Fixtures for tests against the real Docker engine (marker `docker`).

These tests are never skipped: without Docker they fail and say how to get it (`./dev test`
starts dockerd and builds the offline base image).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiodocker
import aiohttp
import pytest
from aiodocker.containers import DockerContainer

BASE_IMAGE = "localfaas/python-base:bookworm"
READY_TIMEOUT_S = 30.0


@pytest.fixture(scope="session")
def build_cache_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One wheel/probe cache per test session, so only the first build downloads."""
    return tmp_path_factory.mktemp("localfaas-cache")


@pytest.fixture
async def docker() -> AsyncIterator[aiodocker.Docker]:
    client = aiodocker.Docker()
    try:
        await client.version()
    except Exception as exc:
        await client.close()
        pytest.fail(
            f"Docker is not reachable ({exc}); run the tests with ./dev test, which starts dockerd",
            pytrace=False,
        )
    yield client
    await client.close()


@pytest.fixture
async def base_image(docker: aiodocker.Docker) -> str:
    try:
        await docker.images.inspect(BASE_IMAGE)
    except aiodocker.DockerError:
        pytest.fail(
            f"base image {BASE_IMAGE} is missing; run ./dev test (it builds it with "
            "scripts/build-base-image.sh)",
            pytrace=False,
        )
    return BASE_IMAGE


@pytest.fixture
async def image_tag(docker: aiodocker.Docker) -> AsyncIterator[Callable[[str], str]]:
    """Factory of unique image tags; every one is removed (with its layers) afterwards."""
    tags: list[str] = []

    def make(name: str) -> str:
        tag = f"localfaas-test/{name}:{uuid.uuid4().hex[:10]}"
        tags.append(tag)
        return tag

    yield make
    for tag in reversed(tags):
        with contextlib.suppress(aiodocker.DockerError):
            await docker.images.delete(tag, force=True)


@dataclass(frozen=True)
class Running:
    container: DockerContainer
    url: str  # http://127.0.0.1:<published port>

    async def logs(self) -> str:
        return "".join(await self.container.log(stdout=True, stderr=True))


RunImage = Callable[..., Awaitable[Running]]


@pytest.fixture
async def run_image(docker: aiodocker.Docker) -> AsyncIterator[RunImage]:
    """Factory: start an image with port 8080 published on loopback, wait until `/_/ready`
    answers 200; every container is removed afterwards."""
    containers: list[DockerContainer] = []

    async def run(
        image: str, *, env: Mapping[str, str] | None = None, read_only: bool = False
    ) -> Running:
        config: dict[str, Any] = {
            "Image": image,
            "Env": [f"{k}={v}" for k, v in (env or {}).items()],
            "ExposedPorts": {"8080/tcp": {}},
            "Labels": {"com.localfaas.test": "build"},
            "HostConfig": {
                "PortBindings": {"8080/tcp": [{"HostIp": "127.0.0.1", "HostPort": ""}]},
                "ReadonlyRootfs": read_only,
                # Writable scratch space, as a read-only function gets it from the provider.
                "Tmpfs": {"/tmp": "rw,size=16m"} if read_only else {},
            },
        }
        container = await docker.containers.create(config)
        containers.append(container)
        await container.start()
        info = await container.show()
        port = info["NetworkSettings"]["Ports"]["8080/tcp"][0]["HostPort"]
        running = Running(container, f"http://127.0.0.1:{port}")
        await wait_ready(running)
        return running

    yield run
    for container in reversed(containers):
        with contextlib.suppress(aiodocker.DockerError):
            await container.delete(force=True)


async def wait_ready(running: Running, timeout_s: float = READY_TIMEOUT_S) -> None:
    deadline = time.monotonic() + timeout_s
    last = "no answer"
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=2)) as session:
        while time.monotonic() < deadline:
            try:
                async with session.get(running.url + "/_/ready") as resp:
                    if resp.status == 200:
                        return
                    last = f"HTTP {resp.status}"
            except (aiohttp.ClientError, TimeoutError) as exc:
                last = repr(exc)
            state = (await running.container.show())["State"]
            if not state["Running"]:
                pytest.fail(
                    f"container exited with {state['ExitCode']} before it was ready; logs:\n"
                    + await running.logs(),
                    pytrace=False,
                )
            await asyncio.sleep(0.1)
    pytest.fail(
        f"/_/ready not 200 within {timeout_s:.0f}s ({last}); logs:\n" + await running.logs(),
        pytrace=False,
    )
