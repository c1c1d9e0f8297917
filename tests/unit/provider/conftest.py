"""A scriptable stand-in for the Docker API on a unix socket, for DockerProvider unit tests.

Lets tests produce what a real engine rarely does on demand: an event stream that drops, log
frames split mid-line, a socket nobody listens on.
"""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from aiohttp import web


@pytest.fixture
def socket_dir() -> Iterator[Path]:
    # Unix socket paths are limited to ~108 bytes; pytest's tmp_path can be longer.
    path = Path(tempfile.mkdtemp(prefix="lf-", dir="/tmp"))
    yield path
    shutil.rmtree(path, ignore_errors=True)


@dataclass
class FakeDockerApi:
    """Tests add routes to ``app`` (paths as `/v1.41/...`), then ``await start()``.

    ``requests`` records (method, path, query) of every call.
    """

    app: web.Application
    socket: Path
    requests: list[tuple[str, str, dict[str, str]]] = field(default_factory=list)
    _runner: web.AppRunner | None = None

    @property
    def url(self) -> str:
        return f"unix://{self.socket}"

    async def start(self) -> None:
        self._runner = web.AppRunner(self.app, shutdown_timeout=0.1)
        await self._runner.setup()
        await web.UnixSite(self._runner, str(self.socket)).start()

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None


@pytest.fixture
async def fake_docker_api(socket_dir: Path) -> AsyncIterator[FakeDockerApi]:
    @web.middleware
    async def record(
        request: web.Request,
        handler: Callable[[web.Request], Awaitable[web.StreamResponse]],
    ) -> web.StreamResponse:
        api.requests.append((request.method, request.path, dict(request.query)))
        return await handler(request)

    async def version(_: web.Request) -> web.Response:
        return web.json_response({"ApiVersion": "1.41", "Version": "20.10.24"})

    app = web.Application(middlewares=[record])
    app.router.add_get("/version", version)
    api = FakeDockerApi(app=app, socket=socket_dir / "docker.sock")
    yield api
    await api.stop()
