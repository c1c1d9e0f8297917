"""Fixtures for the Provider contract suite: one harness per backend (fake, docker).

Docker variants never skip: if the engine is not reachable they fail and say how to get one.
Every Docker container a test makes carries a fresh instance id, and the harness removes all
containers of that id when the test ends, passed or failed.
"""

from __future__ import annotations

import asyncio
import gzip
import hashlib
import io
import tarfile
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import aiodocker
import aiohttp
import pytest

from runtime.config import OFFLINE_BASE_IMAGE
from runtime.models import FunctionSpec, Replica
from runtime.provider.base import Provider, ReplicaRequest
from runtime.provider.docker import DockerProvider
from runtime.provider.fake import FakeEngine, FakeProvider

T = TypeVar("T")

DOCKER_DOWN = "Docker is not reachable: run ./dev test, which installs and starts it"
SERVER_SCRIPT = Path(__file__).with_name("replica_server.py")
LABEL_INSTANCE = "com.localfaas.instance"
FAKE_IMAGE = "localfaas-test/replica:fake"
MISSING_IMAGE = "localfaas-test/never-built:missing"


async def until(
    check: Callable[[], Awaitable[T | None]], *, timeout_s: float = 15.0, what: str = "condition"
) -> T:
    """Poll ``check`` until it returns something truthy; fail after ``timeout_s``."""
    deadline = time.monotonic() + timeout_s
    last: Any = None
    while True:
        try:
            result = await check()
        except (aiohttp.ClientError, OSError, AssertionError) as exc:
            result, last = None, exc
        if result:
            return result
        if time.monotonic() > deadline:
            raise AssertionError(
                f"timed out after {timeout_s}s waiting for {what} (last: {last!r})"
            )
        await asyncio.sleep(0.02)


# -- the test images (built offline FROM the base image, classic builder) --------------------


_HEALTHCHECK = (
    "HEALTHCHECK --interval=200ms --timeout=2s --retries=3 CMD "
    '["python3", "-c", "import urllib.request as u; u.urlopen(\'http://127.0.0.1:8080/_/health\')"]'
)


def _dockerfile(user: str | None, *, healthcheck: bool = False) -> str:
    lines = [
        f"FROM {OFFLINE_BASE_IMAGE}",
        "COPY replica_server.py /app/replica_server.py",
        "EXPOSE 8080",
        'CMD ["python3", "-u", "/app/replica_server.py"]',
    ]
    if user is not None:
        lines.insert(2, f"USER {user}")
    if healthcheck:
        lines.append(_HEALTHCHECK)
    return "\n".join(lines) + "\n"


def _context(dockerfile: str) -> io.BytesIO:
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w") as tar:
        for name, data in (
            ("Dockerfile", dockerfile.encode()),
            ("replica_server.py", SERVER_SCRIPT.read_bytes()),
        ):
            info = tarfile.TarInfo(name)
            info.size = len(data)
            info.mtime = 0
            tar.addfile(info, io.BytesIO(data))
    return io.BytesIO(gzip.compress(raw.getvalue()))


async def _build_images() -> dict[str, str]:
    images: dict[str, str] = {}
    async with aiodocker.Docker() as docker:
        try:
            await docker.system.info()
        except Exception as exc:  # any failure to talk to Docker at all
            pytest.fail(f"{DOCKER_DOWN} ({exc})", pytrace=False)
        try:
            await docker.images.inspect(OFFLINE_BASE_IMAGE)
        except aiodocker.DockerError:
            pytest.fail(
                f"base image {OFFLINE_BASE_IMAGE} is missing: run ./dev setup", pytrace=False
            )
        variants = {
            "user": _dockerfile("1000:1000"),
            "root": _dockerfile(None),
            "badu": _dockerfile("nosuchuser"),
            "health": _dockerfile("1000:1000", healthcheck=True),
        }
        for variant, dockerfile in variants.items():
            # Content-addressed tag: parallel and repeated runs share one build, never clash.
            digest = hashlib.sha256((dockerfile + SERVER_SCRIPT.read_text()).encode()).hexdigest()
            tag = f"localfaas-test/replica:{variant}-{digest[:12]}"
            try:
                await docker.images.inspect(tag)
            except aiodocker.DockerError:
                await docker.images.build(
                    fileobj=_context(dockerfile), encoding="gzip", tag=tag, rm=True
                )
            images[variant] = tag
    return images


@pytest.fixture(scope="session")
def docker_images() -> dict[str, str]:
    """Tags of the test images: `user` (USER 1000:1000), `root` (no USER), `badu` (a USER
    that does not exist: create works, start fails), `health` (`user` with a HEALTHCHECK)."""
    return asyncio.run(_build_images())


# -- harnesses -------------------------------------------------------------------------------


@dataclass
class Harness:
    """What a contract test needs beyond the Provider: make a replica print, crash, etc."""

    kind: str
    provider: Provider
    image: str
    http: aiohttp.ClientSession
    instance_id: str
    extra_providers: list[Provider] = field(default_factory=list)

    def request(self, name: str | None = None, generation: int = 1, **spec: Any) -> ReplicaRequest:
        spec.setdefault("image", self.image)
        function = FunctionSpec(name=name or f"fn-{uuid.uuid4().hex[:8]}", **spec)
        return ReplicaRequest(spec=function, generation=generation)

    async def get(self, replica: Replica, path: str) -> tuple[int, bytes]:
        async with self.http.get(f"http://127.0.0.1:{replica.host_port}{path}") as response:
            return response.status, await response.read()

    async def ready(self, replica: Replica) -> int:
        async def answered() -> int | None:
            status, _ = await self.get(replica, "/_/ready")
            return status if status == 200 else None

        return await until(answered, what=f"{replica.container_name} to answer")

    async def say(self, replica: Replica, text: str, *, stderr: bool = False) -> None:
        raise NotImplementedError

    async def kill(self, replica: Replica) -> None:
        raise NotImplementedError

    async def labels(self, replica: Replica) -> dict[str, str]:
        raise NotImplementedError

    async def other_provider(self) -> Provider:
        raise NotImplementedError


@dataclass
class FakeHarness(Harness):
    engine: FakeEngine = field(default_factory=FakeEngine)

    @property
    def fake(self) -> FakeProvider:
        assert isinstance(self.provider, FakeProvider)
        return self.provider

    async def say(self, replica: Replica, text: str, *, stderr: bool = False) -> None:
        self.fake.emit_log(replica.container_id, text)

    async def kill(self, replica: Replica) -> None:
        await self.fake.kill(replica.container_id)

    async def labels(self, replica: Replica) -> dict[str, str]:
        return dict(self.fake.container(replica.container_id).labels)

    async def other_provider(self) -> Provider:
        other = FakeProvider(
            f"other-{uuid.uuid4().hex[:8]}", engine=self.engine, images={self.image}
        )
        self.extra_providers.append(other)
        return other


@dataclass
class DockerHarness(Harness):
    docker: aiodocker.Docker | None = None
    images: dict[str, str] = field(default_factory=dict)
    instance_ids: list[str] = field(default_factory=list)

    @property
    def client(self) -> aiodocker.Docker:
        assert self.docker is not None
        return self.docker

    async def say(self, replica: Replica, text: str, *, stderr: bool = False) -> None:
        query = {"text": text, **({"stream": "stderr"} if stderr else {})}
        url = f"http://127.0.0.1:{replica.host_port}/log"
        async with self.http.get(url, params=query) as response:
            assert response.status == 200

    async def kill(self, replica: Replica) -> None:
        await self.client.containers.container(replica.container_id).kill(signal="SIGKILL")

    async def inspect(self, replica: Replica) -> dict[str, Any]:
        container = await self.client.containers.get(replica.container_id)
        return container._container

    async def labels(self, replica: Replica) -> dict[str, str]:
        return dict((await self.inspect(replica))["Config"]["Labels"])

    async def other_provider(self) -> Provider:
        instance = f"test-{uuid.uuid4().hex[:12]}"
        self.instance_ids.append(instance)
        other = DockerProvider(instance)
        self.extra_providers.append(other)
        return other


async def remove_instance_containers(docker: aiodocker.Docker, instance_id: str) -> None:
    containers = await docker.containers.list(
        all=True, filters={"label": [f"{LABEL_INSTANCE}={instance_id}"]}
    )
    for container in containers:
        try:
            await container.delete(force=True, v=True)
        except aiodocker.DockerError as exc:
            if exc.status != 404:
                raise


@pytest.fixture
async def docker_harness(docker_images: dict[str, str]) -> AsyncIterator[DockerHarness]:
    instance = f"test-{uuid.uuid4().hex[:12]}"
    timeout = aiohttp.ClientTimeout(total=10)
    async with aiohttp.ClientSession(timeout=timeout) as http, aiodocker.Docker() as docker:
        provider = DockerProvider(instance)
        harness = DockerHarness(
            kind="docker",
            provider=provider,
            image=docker_images["user"],
            http=http,
            instance_id=instance,
            docker=docker,
            images=docker_images,
            instance_ids=[instance],
        )
        try:
            try:
                await provider.ping()
            except Exception as exc:
                pytest.fail(f"{DOCKER_DOWN} ({exc})", pytrace=False)
            yield harness
        finally:
            for extra in harness.extra_providers:
                await extra.close()
            await provider.close()
            for instance_id in harness.instance_ids:
                await remove_instance_containers(docker, instance_id)


@pytest.fixture
async def fake_harness() -> AsyncIterator[FakeHarness]:
    timeout = aiohttp.ClientTimeout(total=10)
    async with aiohttp.ClientSession(timeout=timeout) as http:
        engine = FakeEngine()
        instance = f"test-{uuid.uuid4().hex[:12]}"
        provider = FakeProvider(instance, engine=engine, images={FAKE_IMAGE})
        harness = FakeHarness(
            kind="fake",
            provider=provider,
            image=FAKE_IMAGE,
            http=http,
            instance_id=instance,
            engine=engine,
        )
        try:
            yield harness
        finally:
            for extra in harness.extra_providers:
                await extra.close()
            await provider.close()
            await engine.close()


@pytest.fixture(params=["fake", pytest.param("docker", marks=pytest.mark.docker)])
def backend(request: pytest.FixtureRequest) -> Iterator[str]:
    yield request.param


@pytest.fixture
def harness(backend: str, request: pytest.FixtureRequest) -> Harness:
    # Resolved by name so a fake-only run never builds Docker images or needs Docker.
    fixture: Harness = request.getfixturevalue(f"{backend}_harness")
    return fixture
