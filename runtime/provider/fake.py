"""FakeProvider: the Provider in memory, for fast component tests of the gateway and loops.

Each replica is a real aiohttp server on 127.0.0.1:<ephemeral> that behaves like our watchdog
(`/_/ready` and `/_/health` answer 200; `/_fake/...` paths stream, sleep or answer a chosen
status, see `_fake_path`; any other path echoes the request as JSON with the replica's container
name in `X-Replica`), so the proxy path is tested for real without Docker.

Behaviour chosen to match Docker where it matters:
- A paused replica *hangs*: with the cgroup freezer the kernel still accepts the connection but
  nothing answers until unpause, and then the request completes. The fake holds requests at
  the handler the same way and lets them go on unpause.
- A killed or removed replica refuses connections (its server is closed).
- `events()` subscribes at the moment it is called, like DockerProvider, so a test can
  subscribe, then act, and never miss an event.
- Containers live in a `FakeEngine` (the "Docker daemon"). Several providers may share one
  engine: each sees only its own instance's replicas, and a new provider on the same engine
  and instance id adopts running replicas, as after a daemon restart.
"""

from __future__ import annotations

import asyncio
import json
import secrets
import socket
from collections.abc import AsyncIterator, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from aiohttp import web
from multidict import CIMultiDict

from runtime.errors import BackendUnavailable, Conflict, InvalidSpec
from runtime.models import FunctionSpec, Replica
from runtime.provider.base import LogLine, ReplicaEvent, ReplicaRequest
from runtime.provider.container_config import container_config, container_name, labels_match
from runtime.provider.docker import ReplicaNotFound, ReplicaStartFailed
from runtime.provider.logmerge import merge_live, merge_past

_HEX = "0123456789abcdef"
_IMAGE_USER = "1000:1000"


@dataclass
class FakeContainer:
    """One fake replica; tests may read anything here (config is the Docker create body)."""

    container_id: str
    name: str
    instance_id: str
    spec: FunctionSpec
    generation: int
    config: dict[str, Any]
    created_at: datetime
    state: str = "created"
    host_port: int | None = None
    health: str | None = None
    requests_seen: int = 0
    cpu_ns: int = 0  # CPU time used, as tests set it (what replica_cpu_ns reports)
    runner: web.AppRunner | None = None
    thawed: asyncio.Event = field(default_factory=asyncio.Event)
    log_lines: list[LogLine] = field(default_factory=list)
    log_changed: asyncio.Condition = field(default_factory=asyncio.Condition)

    @property
    def labels(self) -> dict[str, str]:
        labels: dict[str, str] = self.config["Labels"]
        return labels

    def replica(self) -> Replica:
        return Replica(
            container_id=self.container_id,
            container_name=self.name,
            function=self.spec.name,
            namespace=self.spec.namespace,
            generation=self.generation,
            host_port=self.host_port if self.state in ("running", "paused") else None,
            state=self.state,
            created_at=self.created_at,
            health=self.health,
        )


class FakeEngine:
    """The shared in-memory "Docker daemon" behind one or more FakeProviders."""

    def __init__(self) -> None:
        self.containers: dict[str, FakeContainer] = {}
        self.reachable = True
        self._subscribers: list[tuple[str, asyncio.Queue[ReplicaEvent | Exception]]] = []
        self._last_log_at = datetime.now(UTC)

    def publish(self, container: FakeContainer, action: str) -> None:
        event = ReplicaEvent(
            action, container.container_id, container.spec.name, container.spec.namespace
        )
        for instance_id, queue in self._subscribers:
            if instance_id == container.instance_id:
                queue.put_nowait(event)

    def subscribe(self, instance_id: str) -> asyncio.Queue[ReplicaEvent | Exception]:
        queue: asyncio.Queue[ReplicaEvent | Exception] = asyncio.Queue()
        self._subscribers.append((instance_id, queue))
        return queue

    def unsubscribe(self, queue: asyncio.Queue[ReplicaEvent | Exception]) -> None:
        self._subscribers = [(i, q) for i, q in self._subscribers if q is not queue]

    def disconnect(self) -> None:
        """Simulate Docker going away: pings fail, every event stream raises."""
        self.reachable = False
        for _, queue in self._subscribers:
            queue.put_nowait(BackendUnavailable("fake Docker engine is not reachable"))

    def reconnect(self) -> None:
        self.reachable = True

    def next_log_time(self) -> datetime:
        # Strictly increasing, so `since` and merge order are deterministic in tests.
        now = datetime.now(UTC)
        if now <= self._last_log_at:
            now = self._last_log_at + timedelta(microseconds=1)
        self._last_log_at = now
        return now

    async def stop_server(self, container: FakeContainer) -> None:
        runner, container.runner = container.runner, None
        container.thawed.set()  # let held requests go (they fail with the closing server)
        if runner is not None:
            await runner.cleanup()
        async with container.log_changed:
            container.log_changed.notify_all()

    async def close(self) -> None:
        """Stop every replica server (the containers' records stay)."""
        for container in list(self.containers.values()):
            await self.stop_server(container)
            if container.state in ("running", "paused"):
                container.state = "exited"


async def _fake_path(request: web.Request, container: FakeContainer) -> web.StreamResponse:
    """Test paths under `/_fake/` (behaviours a proxy must pass through unchanged):

    - `stream?n=3&delay_ms=100`: chunked body, a line `chunk <i>` every delay;
    - `sleep?ms=500`: answer 200 after that long;
    - `slowbody?delay_ms=200`: a body of known length (`first second`), its second half sent
      that much later than the head;
    - `status?code=302&h=Name:value&...`: that status and those response headers, body `status`.
    """
    query = request.query
    action = request.path.removeprefix("/_fake/")
    if action == "stream":
        response = web.StreamResponse(headers={"X-Replica": container.name})
        response.enable_chunked_encoding()
        await response.prepare(request)
        for i in range(int(query.get("n", "3"))):
            if i:
                await asyncio.sleep(int(query.get("delay_ms", "100")) / 1000)
            await response.write(f"chunk {i}\n".encode())
        await response.write_eof()
        return response
    if action == "slowbody":
        response = web.StreamResponse(headers={"X-Replica": container.name})
        response.content_length = len(b"first second")
        await response.prepare(request)
        await response.write(b"first ")
        await asyncio.sleep(int(query.get("delay_ms", "200")) / 1000)
        await response.write(b"second")
        await response.write_eof()
        return response
    if action == "sleep":
        await asyncio.sleep(int(query.get("ms", "1000")) / 1000)
        return web.Response(text="slept", headers={"X-Replica": container.name})
    if action == "status":
        headers: CIMultiDict[str] = CIMultiDict()
        for field in query.getall("h", []):
            name, _, value = field.partition(":")
            headers.add(name, value)
        return web.Response(status=int(query.get("code", "200")), text="status", headers=headers)
    return web.Response(status=404, text=f"no fake path {action!r}")


def _make_app(container: FakeContainer) -> web.Application:
    async def handle(request: web.Request) -> web.StreamResponse:
        # Paused: hold the request until unpause, like a frozen process behind an open socket.
        await container.thawed.wait()
        container.requests_seen += 1
        if request.path in ("/_/ready", "/_/health"):
            return web.Response(text="OK", headers={"X-Replica": container.name})
        if request.path.startswith("/_fake/"):
            return await _fake_path(request, container)
        body = await request.read()
        echo = {
            "method": request.method,
            "path": request.path,
            "raw_path": request.raw_path,
            "query": request.query_string,
            "body": body.decode("utf-8", "replace"),
            "headers": dict(request.headers),
            "replica": container.name,
        }
        return web.Response(
            text=json.dumps(echo),
            content_type="application/json",
            headers={"X-Replica": container.name},
        )

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", handle)
    return app


class FakeProvider:
    """The Provider Protocol in memory. Knobs for tests:

    - ``images``: the images present (None: every image is present);
    - ``create_delay_s``: how long create_replica takes;
    - ``create_error``: raised by every create_replica while set;
    - ``kill(id)``, ``emit_log(id, text)``, ``set_health(id, status)``; ``engine.disconnect()``.
    """

    def __init__(
        self,
        instance_id: str = "fake",
        *,
        engine: FakeEngine | None = None,
        images: Iterable[str] | None = None,
        create_delay_s: float = 0.0,
        create_error: BaseException | None = None,
    ) -> None:
        self.instance_id = instance_id
        self._owns_engine = engine is None
        self.engine = engine or FakeEngine()
        self.images: set[str] | None = None if images is None else set(images)
        self.create_delay_s = create_delay_s
        self.create_error = create_error

    # -- test controls ----------------------------------------------------------------------

    def container(self, container_id: str) -> FakeContainer:
        found = self.engine.containers.get(container_id)
        if found is None or found.instance_id != self.instance_id:
            raise ReplicaNotFound(f"replica {container_id} not found")
        return found

    def add_image(self, image: str) -> None:
        if self.images is not None:
            self.images.add(image)

    def emit_log(self, container_id: str, text: str, *, timestamp: datetime | None = None) -> None:
        """A line as if the replica printed it."""
        container = self.container(container_id)
        container.log_lines.append(
            LogLine(
                function=container.spec.name,
                namespace=container.spec.namespace,
                instance=container.name,
                timestamp=timestamp or self.engine.next_log_time(),
                text=text,
            )
        )
        asyncio.get_running_loop().create_task(self._notify(container))

    async def _notify(self, container: FakeContainer) -> None:
        async with container.log_changed:
            container.log_changed.notify_all()

    async def kill(self, container_id: str) -> None:
        """Simulate a crash: the server goes away, state exited, a `die` event."""
        container = self.container(container_id)
        await self.engine.stop_server(container)
        container.state = "exited"
        self.engine.publish(container, "die")

    def set_health(self, container_id: str, status: str) -> None:
        container = self.container(container_id)
        container.health = status
        self.engine.publish(container, f"health_status:{status}")

    def _check_reachable(self) -> None:
        if not self.engine.reachable:
            raise BackendUnavailable("fake Docker engine is not reachable")

    # -- Provider ---------------------------------------------------------------------------

    async def bridge_gateway_ip(self) -> str | None:
        return None

    async def ping(self) -> None:
        self._check_reachable()

    async def image_present(self, image: str) -> bool:
        self._check_reachable()
        return self.images is None or image in self.images

    async def ensure_image(self, image: str) -> None:
        if not await self.image_present(image):
            raise InvalidSpec(
                f"image {image!r} is not present locally and could not be pulled: "
                "the fake registry has no such image"
            )

    async def create_replica(self, request: ReplicaRequest) -> Replica:
        return await self.start_prepared(await self.prepare_replica(request), request)

    async def prepare_replica(self, request: ReplicaRequest) -> str:
        self._check_reachable()
        if self.create_error is not None:
            raise self.create_error
        await self.ensure_image(request.spec.image)
        # The same create body as Docker gets: bad quantities fail here exactly as for real.
        config = container_config(request, instance_id=self.instance_id, image_user=_IMAGE_USER)
        container = FakeContainer(
            container_id="".join(secrets.choice(_HEX) for _ in range(64)),
            name=container_name(request.spec),
            instance_id=self.instance_id,
            spec=request.spec,
            generation=request.generation,
            config=config,
            created_at=datetime.now(UTC),
        )
        container.thawed.set()
        self.engine.containers[container.container_id] = container
        return container.container_id

    async def start_prepared(self, container_id: str, request: ReplicaRequest) -> Replica:
        self._check_reachable()
        container = self.container(container_id)
        if self.create_delay_s:
            await asyncio.sleep(self.create_delay_s)  # starting is the slow part, as for real
        if self.create_error is not None:
            del self.engine.containers[container_id]
            raise self.create_error
        runner = web.AppRunner(_make_app(container), access_log=None, shutdown_timeout=0.5)
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        try:
            sock.bind(("127.0.0.1", 0))  # ephemeral, loopback only, like the real thing
            await runner.setup()
            await web.SockSite(runner, sock).start()
        except OSError as exc:
            sock.close()
            await runner.cleanup()
            del self.engine.containers[container.container_id]
            raise ReplicaStartFailed(f"replica {container.name} did not start: {exc}") from exc
        container.host_port = int(sock.getsockname()[1])
        container.runner = runner
        container.state = "running"
        self.engine.publish(container, "start")
        return container.replica()

    def _mine(self) -> list[FakeContainer]:
        return [
            c for c in self.engine.containers.values() if labels_match(c.labels, self.instance_id)
        ]

    async def list_replicas(
        self, function: str | None = None, namespace: str | None = None
    ) -> list[Replica]:
        self._check_reachable()
        found = [
            c.replica()
            for c in self._mine()
            if (function is None or c.spec.name == function)
            and (namespace is None or c.spec.namespace == namespace)
        ]
        found.sort(key=lambda r: (r.namespace, r.function, r.created_at, r.container_name))
        return found

    async def inspect_replica(self, container_id: str) -> Replica | None:
        self._check_reachable()
        container = self.engine.containers.get(container_id)
        if container is None or container.instance_id != self.instance_id:
            return None
        return container.replica()

    async def remove_replica(self, container_id: str, *, stop_timeout_s: float = 10.0) -> None:
        self._check_reachable()
        container = self.engine.containers.get(container_id)
        if container is None or container.instance_id != self.instance_id:
            return
        was_up = container.state in ("running", "paused")
        await self.engine.stop_server(container)
        container.state = "removing"
        if was_up:
            self.engine.publish(container, "die")
            self.engine.publish(container, "stop")
        del self.engine.containers[container_id]
        self.engine.publish(container, "destroy")

    async def replica_cpu_ns(self, container_id: str) -> int | None:
        self._check_reachable()
        try:
            return self.container(container_id).cpu_ns
        except ReplicaNotFound:
            return None

    async def pause_replica(self, container_id: str) -> None:
        self._check_reachable()
        container = self.container(container_id)
        if container.state == "paused":
            return
        if container.state != "running":
            raise Conflict(f"cannot pause replica {container.name}: it is {container.state}")
        container.thawed.clear()
        container.state = "paused"
        self.engine.publish(container, "pause")

    async def unpause_replica(self, container_id: str) -> None:
        self._check_reachable()
        container = self.container(container_id)
        if container.state != "paused":
            return
        container.state = "running"
        container.thawed.set()
        self.engine.publish(container, "unpause")

    # -- logs -------------------------------------------------------------------------------

    def logs(
        self,
        replicas: Sequence[Replica],
        *,
        tail: int | None = None,
        since: datetime | None = None,
        follow: bool = False,
    ) -> AsyncIterator[LogLine]:
        containers = [
            c
            for r in replicas
            if (c := self.engine.containers.get(r.container_id)) is not None
            and c.instance_id == self.instance_id
        ]
        if follow:
            return self._follow(containers, tail=tail, since=since)
        return self._past(containers, tail=tail, since=since)

    @staticmethod
    def _initial(
        container: FakeContainer, tail: int | None, since: datetime | None
    ) -> list[LogLine]:
        lines = [line for line in container.log_lines if since is None or line.timestamp >= since]
        if tail is not None:
            lines = lines[-tail:] if tail > 0 else []
        return lines

    async def _past(
        self, containers: list[FakeContainer], *, tail: int | None, since: datetime | None
    ) -> AsyncIterator[LogLine]:
        self._check_reachable()
        for line in merge_past((self._initial(c, tail, since) for c in containers), tail):
            yield line

    def _follow(
        self, containers: list[FakeContainer], *, tail: int | None, since: datetime | None
    ) -> AsyncIterator[LogLine]:
        self._check_reachable()
        return merge_live([(c.name, self._follow_one(c, tail, since)) for c in containers])

    async def _follow_one(
        self, container: FakeContainer, tail: int | None, since: datetime | None
    ) -> AsyncIterator[LogLine]:
        sent = len(container.log_lines) - len(self._initial(container, tail, since))
        while True:
            async with container.log_changed:
                while len(container.log_lines) <= sent and container.runner is not None:
                    await container.log_changed.wait()
            for line in container.log_lines[sent:]:
                yield line
            sent = len(container.log_lines)
            if container.runner is None:  # like `docker logs -f`: ends when it stops
                return

    # -- events -----------------------------------------------------------------------------

    def events(self) -> AsyncIterator[ReplicaEvent]:
        return _EventStream(self.engine, self.engine.subscribe(self.instance_id))

    async def close(self) -> None:
        if self._owns_engine:
            await self.engine.close()


class _EventStream:
    """The fake's event subscription: registered at creation, removed on close or error."""

    def __init__(self, engine: FakeEngine, queue: asyncio.Queue[ReplicaEvent | Exception]) -> None:
        self._engine = engine
        self._queue: asyncio.Queue[ReplicaEvent | Exception] | None = queue

    def __aiter__(self) -> _EventStream:
        return self

    async def __anext__(self) -> ReplicaEvent:
        if self._queue is None:
            raise StopAsyncIteration
        if not self._engine.reachable:
            # Subscribing while Docker is away fails at once, as a refused connection would.
            await self.aclose()
            raise BackendUnavailable("fake Docker engine is not reachable")
        item = await self._queue.get()
        if isinstance(item, Exception):
            await self.aclose()
            raise item
        return item

    async def aclose(self) -> None:
        if self._queue is not None:
            self._engine.unsubscribe(self._queue)
            self._queue = None
