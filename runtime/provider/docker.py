"""DockerProvider: replicas as Docker containers, through one aiodocker client.

Every container carries `com.localfaas.managed=true` and `com.localfaas.instance=<id>`; lists,
inspects, events and every mutating call only ever see containers of this instance, so two
daemons (or test runs) with different state dirs never touch each other's replicas.

Docker calls go through aiodocker's `_query_json`/`_query`: the public wrappers leave response
bodies unread (pause, start) or never close infinite streams (logs, events), which leaks
connections in a long-running daemon. Both methods have been stable across aiodocker releases.
"""

from __future__ import annotations

import asyncio
import ipaddress
import json
import logging
import math
import re
import socket
import time
from collections.abc import AsyncIterator, Mapping, Sequence
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from typing import Any

import aiodocker
import aiohttp
from aiodocker.exceptions import DockerError

from runtime.errors import BackendUnavailable, Conflict, InvalidSpec, LocalFaasError
from runtime.models import WATCHDOG_CONTAINER_PORT, Replica
from runtime.provider.base import LogLine, ReplicaEvent, ReplicaRequest
from runtime.provider.container_config import (
    DEFAULT_PIDS_LIMIT,
    LABEL_FUNCTION,
    LABEL_GENERATION,
    LABEL_INSTANCE,
    LABEL_MANAGED,
    LABEL_NAMESPACE,
    WATCHDOG_PORT,
    container_config,
    container_name,
    labels_match,
)
from runtime.provider.logmerge import merge_live, merge_past

log = logging.getLogger(__name__)

DEFAULT_DOCKER_URL = "unix:///var/run/docker.sock"
# The Docker actions the daemon reacts to; health_status arrives as "health_status: healthy".
EVENT_ACTIONS = ("start", "die", "stop", "destroy", "pause", "unpause", "health_status")
_KNOWN_IDS_MAX = 10_000
_TIMESTAMP = re.compile(
    r"^(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d)(?:\.(\d+))?(Z|[+-]\d\d:\d\d)$",
)
_HEALTH_IN_STATUS = re.compile(r"\((healthy|unhealthy|health: starting)\)")
# Stream timeouts: connecting must be quick; reading may wait forever (a quiet log, no events).
_STREAM_TIMEOUT = aiohttp.ClientTimeout(total=None, connect=10, sock_connect=10, sock_read=None)


class ReplicaStartFailed(LocalFaasError):
    """Docker created the container but could not start it (the message is Docker's)."""


class ReplicaNotFound(LocalFaasError, LookupError):
    """No replica of this instance with that container id."""


def parse_docker_time(value: str) -> datetime | None:
    """Docker's RFC 3339 time with nanoseconds → aware datetime (microseconds), None if bad."""
    match = _TIMESTAMP.fullmatch(value)
    if match is None:
        return None
    base, fraction, zone = match.groups()
    micros = (fraction or "")[:6].ljust(6, "0")
    offset = "+00:00" if zone == "Z" else zone
    try:
        return datetime.fromisoformat(f"{base}.{micros}{offset}")
    except ValueError:
        return None


def _connection_reason(exc: BaseException) -> str:
    """The useful part of a connection failure: `Connection refused`, `No such file...`."""
    cause: BaseException | None = exc
    while cause is not None:
        if isinstance(cause, aiohttp.ClientConnectorError):
            return cause.os_error.strerror or str(cause.os_error)
        if isinstance(cause, OSError) and cause.strerror:
            return cause.strerror
        cause = cause.__cause__ or cause.__context__
    if isinstance(exc, DockerError):
        return exc.message
    return str(exc) or type(exc).__name__


def _is_unreachable(exc: BaseException) -> bool:
    # aiodocker wraps connection failures as DockerError(900, ...); mid-stream losses surface
    # as aiohttp's own errors.
    if isinstance(exc, DockerError):
        return exc.status == 900
    return isinstance(
        exc, aiohttp.ClientConnectionError | aiohttp.ClientPayloadError | ConnectionError
    ) or (isinstance(exc, OSError) and not isinstance(exc, TimeoutError))


def _parse_frame(
    payload: str, pending: dict[int, tuple[datetime, str]], stream: int
) -> tuple[datetime, str] | None:
    """One Docker log message ("<RFC3339Nano> text\\n") → (timestamp, text), joining partials.

    Docker splits lines longer than 16 KiB into partial messages, each with its own timestamp
    and without the trailing newline; the line is complete at the message that ends with one.
    """
    stamp_text, _, text = payload.partition(" ")
    stamp = parse_docker_time(stamp_text)
    if stamp is None:
        stamp, text = datetime.now(UTC), payload
    complete = text.endswith("\n")
    if complete:
        text = text[:-1]
    if stream in pending:
        first_stamp, head = pending.pop(stream)
        stamp, text = first_stamp, head + text
    if not complete:
        pending[stream] = (stamp, text)
        return None
    return stamp, text


class DockerProvider:
    """The Provider on a local Docker engine (`url`, e.g. from DOCKER_HOST via Settings)."""

    def __init__(
        self,
        instance_id: str,
        docker: aiodocker.Docker | None = None,
        *,
        url: str = DEFAULT_DOCKER_URL,
        pull_timeout_s: float = 120.0,
        request_timeout_s: float = 60.0,
        pids_limit: int = DEFAULT_PIDS_LIMIT,
    ) -> None:
        if not instance_id:
            raise InvalidSpec("DockerProvider needs a non-empty instance id")
        self.instance_id = instance_id
        self._url = url
        # One owner per lifetime: a client passed in belongs to the caller, ours we close.
        self._owns_docker = docker is None
        self._docker: aiodocker.Docker | None = docker
        self._pull_timeout_s = pull_timeout_s
        self._request_timeout_s = request_timeout_s
        self._pids_limit = pids_limit
        self._host_cpus: int | None = None
        self._bridge_direct: bool | None = None  # decided on the first successful ping
        # container id → (qualified function name, container name) of containers known to be
        # ours: saves an inspect on pause/unpause, which sit on the cold-request path.
        self._known: dict[str, tuple[str, str]] = {}

    # -- plumbing ---------------------------------------------------------------------------

    @property
    def docker(self) -> aiodocker.Docker:
        # Made on first use: aiohttp wants a running loop, the constructor may not have one.
        if self._docker is None:
            try:
                self._docker = aiodocker.Docker(url=self._url)
            except ValueError as exc:
                raise InvalidSpec(f"Docker URL {self._url!r} is invalid: {exc}") from exc
        return self._docker

    def _unavailable(self, exc: BaseException) -> BackendUnavailable:
        return BackendUnavailable(
            f"Docker is not reachable at {self._url}: {_connection_reason(exc)}"
        )

    async def _call(
        self,
        method: str,
        path: str,
        *,
        params: Mapping[str, Any] | None = None,
        data: Any = None,
        timeout_s: float | None = None,
    ) -> Any:
        """One Docker API call; unreachable → BackendUnavailable, other DockerErrors pass."""
        try:
            async with asyncio.timeout(timeout_s or self._request_timeout_s):
                return await self.docker._query_json(path, method, params=params, data=data)
        except DockerError as exc:
            if _is_unreachable(exc):
                raise self._unavailable(exc) from exc
            raise
        except TimeoutError as exc:
            raise BackendUnavailable(
                f"Docker at {self._url} did not answer {method} /{path} within "
                f"{timeout_s or self._request_timeout_s:.0f}s"
            ) from exc
        except (aiohttp.ClientError, OSError) as exc:
            raise self._unavailable(exc) from exc

    @asynccontextmanager
    async def _stream(
        self, path: str, params: Mapping[str, Any]
    ) -> AsyncIterator[aiohttp.ClientResponse]:
        """An open streaming response, always closed on exit (release() would wait for EOF)."""
        try:
            async with asyncio.timeout(self._request_timeout_s):
                response = await self.docker._do_query(
                    path, "GET", params=dict(params), timeout=_STREAM_TIMEOUT
                )
        except DockerError as exc:
            if _is_unreachable(exc):
                raise self._unavailable(exc) from exc
            raise
        except TimeoutError as exc:
            raise BackendUnavailable(f"Docker at {self._url} did not answer GET /{path}") from exc
        except (aiohttp.ClientError, OSError) as exc:
            raise self._unavailable(exc) from exc
        try:
            yield response
        finally:
            response.close()

    def _remember(self, container_id: str, qualified: str, name: str) -> None:
        if len(self._known) >= _KNOWN_IDS_MAX:
            self._known.clear()
        self._known[container_id] = (qualified, name)

    async def _inspect_raw(self, container_id: str) -> dict[str, Any] | None:
        """Inspect a container of ours; None if it does not exist or belongs to someone else."""
        try:
            info: dict[str, Any] = await self._call("GET", f"containers/{container_id}/json")
        except DockerError as exc:
            if exc.status == 404:
                return None
            raise LocalFaasError(f"inspecting container {container_id}: {exc.message}") from exc
        labels = (info.get("Config") or {}).get("Labels") or {}
        if not labels_match(labels, self.instance_id):
            return None
        return info

    async def _identify(self, container_id: str) -> tuple[str, str]:
        known = self._known.get(container_id)
        if known is not None:
            return known
        info = await self._inspect_raw(container_id)
        if info is None:
            raise ReplicaNotFound(f"replica {container_id} not found")
        replica = self._from_inspect(info)
        self._remember(container_id, replica.qualified_name, replica.container_name)
        return replica.qualified_name, replica.container_name

    def _from_inspect(self, info: Mapping[str, Any]) -> Replica:
        labels = (info.get("Config") or {}).get("Labels") or {}
        state = info.get("State") or {}
        ports = ((info.get("NetworkSettings") or {}).get("Ports") or {}).get(WATCHDOG_PORT) or []
        host_port = next((int(p["HostPort"]) for p in ports if p.get("HostPort")), None)
        health = (state.get("Health") or {}).get("Status")
        replica = Replica(
            container_id=info["Id"],
            container_name=str(info.get("Name", "")).lstrip("/"),
            function=labels.get(LABEL_FUNCTION, ""),
            namespace=labels.get(LABEL_NAMESPACE, ""),
            generation=_int(labels.get(LABEL_GENERATION)),
            host_port=host_port,
            state=state.get("Status", "unknown"),
            created_at=parse_docker_time(str(info.get("Created", ""))) or datetime.now(UTC),
            health=health if health and health != "none" else None,
            bridge_ip=self._pick_bridge_ip(info.get("NetworkSettings") or {}),
        )
        self._remember(replica.container_id, replica.qualified_name, replica.container_name)
        return replica

    def _from_summary(self, item: Mapping[str, Any]) -> Replica:
        """A `GET /containers/json` entry → Replica, without an inspect per container.

        The list API gives `created_at` to the second and health only inside the human
        `Status` text ("Up 3 seconds (healthy)"); inspect_replica has the precise values.
        """
        labels = item.get("Labels") or {}
        names = item.get("Names") or [""]
        host_port = None
        for port in item.get("Ports") or []:
            if port.get("PrivatePort") == WATCHDOG_CONTAINER_PORT and port.get("Type") == "tcp":
                if port.get("PublicPort"):
                    host_port = int(port["PublicPort"])
                    break
        health_match = _HEALTH_IN_STATUS.search(str(item.get("Status", "")))
        health = None
        if health_match:
            health = "starting" if health_match[1] == "health: starting" else health_match[1]
        replica = Replica(
            container_id=item["Id"],
            container_name=str(names[0]).lstrip("/"),
            function=labels.get(LABEL_FUNCTION, ""),
            namespace=labels.get(LABEL_NAMESPACE, ""),
            generation=_int(labels.get(LABEL_GENERATION)),
            host_port=host_port,
            state=str(item.get("State", "unknown")),
            created_at=datetime.fromtimestamp(int(item.get("Created", 0)), UTC),
            health=health,
            bridge_ip=self._pick_bridge_ip(item.get("NetworkSettings") or {}),
        )
        self._remember(replica.container_id, replica.qualified_name, replica.container_name)
        return replica

    def _pick_bridge_ip(self, network_settings: Mapping[str, Any]) -> str | None:
        if not self._bridge_direct:
            return None
        bridge = (network_settings.get("Networks") or {}).get("bridge") or {}
        return str(bridge.get("IPAddress") or "") or None

    async def _get_host_cpus(self) -> int | None:
        if self._host_cpus is None:
            info = await self._call("GET", "info")
            ncpu = info.get("NCPU") if isinstance(info, Mapping) else None
            self._host_cpus = int(ncpu) if isinstance(ncpu, int) and ncpu > 0 else 0
        return self._host_cpus or None

    # -- Provider ---------------------------------------------------------------------------

    async def bridge_gateway_ip(self) -> str | None:
        try:
            info = await self._call("GET", "networks/bridge")
        except DockerError:
            return None
        for config in (info.get("IPAM") or {}).get("Config") or []:
            if config.get("Gateway"):
                return str(config["Gateway"])
            if config.get("Subnet"):
                # The default bridge often reports only its subnet; Docker gives the bridge
                # itself the subnet's first address.
                network = ipaddress.ip_network(config["Subnet"], strict=False)
                return str(next(network.hosts()))
        return None

    async def ping(self) -> None:
        await self._call("GET", "_ping", timeout_s=min(self._request_timeout_s, 10.0))
        if self._bridge_direct is None:
            gateway = await self.bridge_gateway_ip()
            # Replicas are reached on their bridge address only when this process shares
            # dockerd's network namespace (host install, or the daemon image with host
            # networking): then the bridge's own address is one of ours. Rootless Docker or a
            # remote engine keep to the published loopback port.
            self._bridge_direct = gateway is not None and is_local_address(gateway)
            log.info(
                "replicas reached %s",
                "on Docker's bridge directly" if self._bridge_direct else "through published ports",
            )

    async def _image_inspect(self, image: str) -> dict[str, Any] | None:
        try:
            info: dict[str, Any] = await self._call("GET", f"images/{image}/json")
        except DockerError as exc:
            if exc.status == 404:
                return None
            if exc.status == 400:
                raise InvalidSpec(f"image {image!r} is invalid: {exc.message}") from exc
            raise LocalFaasError(f"inspecting image {image!r}: {exc.message}") from exc
        return info

    async def image_present(self, image: str) -> bool:
        return await self._image_inspect(image) is not None

    async def _ensure_image_info(self, image: str) -> dict[str, Any]:
        info = await self._image_inspect(image)
        if info is not None:
            # A local image is used as is: no registry round-trip, as the design asks.
            return info
        log.info(
            "image %s is not present locally; pulling (at most %.0fs)", image, self._pull_timeout_s
        )
        try:
            async with asyncio.timeout(self._pull_timeout_s):
                await self.docker.images.pull(image)
        except TimeoutError:
            raise InvalidSpec(
                f"image {image!r} is not present locally and could not be pulled: "
                f"no answer within {self._pull_timeout_s:.0f}s"
            ) from None
        except DockerError as exc:
            if _is_unreachable(exc):
                raise self._unavailable(exc) from exc
            raise InvalidSpec(
                f"image {image!r} is not present locally and could not be pulled: {exc.message}"
            ) from exc
        except (aiohttp.ClientError, OSError) as exc:
            raise self._unavailable(exc) from exc
        info = await self._image_inspect(image)
        if info is None:
            raise InvalidSpec(
                f"image {image!r} is not present locally and could not be pulled: "
                "the pull finished but the image is still missing"
            )
        log.info("image %s pulled", image)
        return info

    async def ensure_image(self, image: str) -> None:
        await self._ensure_image_info(image)

    async def create_replica(self, request: ReplicaRequest) -> Replica:
        return await self.start_prepared(await self.prepare_replica(request), request)

    async def prepare_replica(self, request: ReplicaRequest) -> str:
        spec = request.spec
        image = await self._ensure_image_info(spec.image)
        config = container_config(
            request,
            instance_id=self.instance_id,
            image_user=(image.get("Config") or {}).get("User"),
            host_cpus=await self._get_host_cpus(),
            pids_limit=self._pids_limit,
        )
        container_id = ""
        name = ""
        for attempt in range(3):
            name = container_name(spec)
            try:
                created = await self._call(
                    "POST", "containers/create", params={"name": name}, data=config
                )
            except DockerError as exc:
                if exc.status == 409 and attempt < 2:
                    continue  # the random suffix clashed: draw another
                if exc.status == 404:
                    raise InvalidSpec(
                        f"image {spec.image!r} is not present locally: {exc.message}"
                    ) from exc
                if exc.status == 400:
                    raise InvalidSpec(
                        f"Docker refused the replica of {spec.qualified_name}: {exc.message}"
                    ) from exc
                raise ReplicaStartFailed(
                    f"creating a replica of {spec.qualified_name} failed: {exc.message}"
                ) from exc
            container_id = created["Id"]
            break
        return container_id

    async def start_prepared(self, container_id: str, request: ReplicaRequest) -> Replica:
        spec = request.spec
        name = container_id[:12]
        try:
            await self._call("POST", f"containers/{container_id}/start")
            info = await self._call("GET", f"containers/{container_id}/json")
        except BaseException as exc:
            # Also on cancellation: a created-but-never-started container is litter.
            await self._discard(container_id)
            if isinstance(exc, DockerError):
                raise ReplicaStartFailed(
                    f"replica {name} of {spec.qualified_name} did not start: {exc.message}"
                ) from exc
            raise
        replica = self._from_inspect(info)
        log.info(
            "replica started %s %s port=%s generation=%d",
            spec.qualified_name,
            replica.container_name,
            replica.host_port,
            request.generation,
        )
        return replica

    async def _discard(self, container_id: str) -> None:
        try:
            await self._call(
                "DELETE", f"containers/{container_id}", params={"force": True, "v": True}
            )
        except (DockerError, LocalFaasError) as exc:
            log.warning("could not remove half-created container %s: %s", container_id, exc)

    async def list_replicas(
        self, function: str | None = None, namespace: str | None = None
    ) -> list[Replica]:
        labels = [f"{LABEL_MANAGED}=true", f"{LABEL_INSTANCE}={self.instance_id}"]
        if function is not None:
            labels.append(f"{LABEL_FUNCTION}={function}")
        if namespace is not None:
            labels.append(f"{LABEL_NAMESPACE}={namespace}")
        try:
            items = await self._call(
                "GET", "containers/json", params={"all": True, "filters": {"label": labels}}
            )
        except DockerError as exc:
            raise LocalFaasError(f"listing replicas: {exc.message}") from exc
        replicas = [self._from_summary(item) for item in items]
        replicas.sort(key=lambda r: (r.namespace, r.function, r.created_at, r.container_name))
        return replicas

    async def inspect_replica(self, container_id: str) -> Replica | None:
        info = await self._inspect_raw(container_id)
        return None if info is None else self._from_inspect(info)

    async def remove_replica(self, container_id: str, *, stop_timeout_s: float = 10.0) -> None:
        info = await self._inspect_raw(container_id)
        if info is None:
            self._known.pop(container_id, None)
            return
        replica = self._from_inspect(info)
        state = info.get("State") or {}
        try:
            if state.get("Paused"):
                # A frozen process cannot handle SIGTERM: thaw it so it can drain and exit.
                await self._call("POST", f"containers/{container_id}/unpause")
            if state.get("Running") or state.get("Paused") or state.get("Restarting"):
                await self._call(
                    "POST",
                    f"containers/{container_id}/stop",
                    params={"t": max(0, math.ceil(stop_timeout_s))},
                    timeout_s=stop_timeout_s + self._request_timeout_s,
                )
        except DockerError as exc:
            # Already stopped or gone: the force-remove below settles it either way.
            log.debug("stopping %s: %s", replica.container_name, exc.message)
        try:
            await self._call(
                "DELETE", f"containers/{container_id}", params={"force": True, "v": True}
            )
        except DockerError as exc:
            if exc.status == 404 or (exc.status == 409 and "in progress" in exc.message):
                pass
            else:
                raise LocalFaasError(
                    f"removing replica {replica.container_name}: {exc.message}"
                ) from exc
        self._known.pop(container_id, None)
        self._known.pop(replica.container_id, None)
        log.info("replica removed %s %s", replica.qualified_name, replica.container_name)

    async def replica_cpu_ns(self, container_id: str) -> int | None:
        # one-shot: a single reading at once, instead of Docker waiting ~1 s for a second one
        # (the sampler keeps its own previous reading).
        try:
            stats = await self._call(
                "GET",
                f"containers/{container_id}/stats",
                params={"stream": "false", "one-shot": "true"},
            )
        except DockerError as exc:
            if exc.status == 404:
                return None
            raise LocalFaasError(
                f"reading CPU of replica {container_id[:12]}: {exc.message}"
            ) from exc
        usage = ((stats or {}).get("cpu_stats") or {}).get("cpu_usage") or {}
        total = usage.get("total_usage")
        return int(total) if isinstance(total, int | float) else None

    async def pause_replica(self, container_id: str) -> None:
        qualified, name = await self._identify(container_id)
        try:
            await self._call("POST", f"containers/{container_id}/pause")
        except DockerError as exc:
            if "already paused" in exc.message:
                return
            if exc.status == 404:
                raise ReplicaNotFound(f"replica {name} of {qualified} not found") from exc
            raise Conflict(f"cannot pause replica {name} of {qualified}: {exc.message}") from exc
        log.info("replica paused %s %s", qualified, name)

    async def unpause_replica(self, container_id: str) -> None:
        qualified, name = await self._identify(container_id)
        try:
            await self._call("POST", f"containers/{container_id}/unpause")
        except DockerError as exc:
            if "not paused" in exc.message:
                return
            if exc.status == 404:
                raise ReplicaNotFound(f"replica {name} of {qualified} not found") from exc
            raise Conflict(f"cannot unpause replica {name} of {qualified}: {exc.message}") from exc
        log.info("replica unpaused %s %s", qualified, name)

    # -- logs -------------------------------------------------------------------------------

    async def _replica_log(
        self,
        replica: Replica,
        *,
        tail: int | None,
        since: datetime | None,
        follow: bool,
    ) -> AsyncIterator[LogLine]:
        params: dict[str, Any] = {
            "stdout": True,
            "stderr": True,
            "timestamps": True,
            "follow": follow,
            "tail": "all" if tail is None else str(max(0, tail)),
        }
        if since is not None:
            params["since"] = f"{since.timestamp():.6f}"
        try:
            async with self._stream(f"containers/{replica.container_id}/logs", params) as response:
                pending: dict[int, tuple[datetime, str]] = {}
                content = response.content
                while True:
                    try:
                        header = await content.readexactly(8)
                        size = int.from_bytes(header[4:8], "big")
                        if not size:
                            continue
                        payload = await content.readexactly(size)
                    except asyncio.IncompleteReadError:
                        break  # the container stopped (follow) or the log is done
                    except (aiohttp.ClientError, OSError) as exc:
                        raise self._unavailable(exc) from exc
                    line = _parse_frame(payload.decode("utf-8", "replace"), pending, header[0])
                    if line is not None:
                        yield LogLine(
                            function=replica.function,
                            namespace=replica.namespace,
                            instance=replica.container_name,
                            timestamp=line[0],
                            text=line[1],
                        )
                for stamp, text in pending.values():
                    yield LogLine(
                        replica.function, replica.namespace, replica.container_name, stamp, text
                    )
        except DockerError as exc:
            if exc.status == 404:
                return  # removed meanwhile: it has no more logs to give
            raise LocalFaasError(
                f"reading logs of {replica.container_name}: {exc.message}"
            ) from exc

    def logs(
        self,
        replicas: Sequence[Replica],
        *,
        tail: int | None = None,
        since: datetime | None = None,
        follow: bool = False,
    ) -> AsyncIterator[LogLine]:
        if follow:
            return self._follow_logs(list(replicas), tail=tail, since=since)
        return self._past_logs(list(replicas), tail=tail, since=since)

    async def _past_logs(
        self, replicas: list[Replica], *, tail: int | None, since: datetime | None
    ) -> AsyncIterator[LogLine]:
        async def collect(replica: Replica) -> list[LogLine]:
            return [
                line
                async for line in self._replica_log(replica, tail=tail, since=since, follow=False)
            ]

        try:
            async with asyncio.TaskGroup() as group:
                tasks = [group.create_task(collect(r)) for r in replicas]
        except BaseExceptionGroup as failed:
            raise failed.exceptions[0] from None  # callers expect our errors, not a group
        # `tail` is per container at Docker; across replicas it means the last N overall.
        for line in merge_past((task.result() for task in tasks), tail):
            yield line

    def _follow_logs(
        self, replicas: list[Replica], *, tail: int | None, since: datetime | None
    ) -> AsyncIterator[LogLine]:
        return merge_live(
            [
                (r.container_name, self._replica_log(r, tail=tail, since=since, follow=True))
                for r in replicas
            ]
        )

    # -- events -----------------------------------------------------------------------------

    def events(self) -> AsyncIterator[ReplicaEvent]:
        """Events from the moment of this call (Docker replays from `since`), so a caller that
        subscribes and then creates a replica never misses its `start`."""
        return self._events(since=time.time())

    async def _events(self, since: float) -> AsyncIterator[ReplicaEvent]:
        filters = {
            "type": ["container"],
            "label": [f"{LABEL_MANAGED}=true", f"{LABEL_INSTANCE}={self.instance_id}"],
            "event": list(EVENT_ACTIONS),
        }
        params = {"filters": json.dumps(filters), "since": f"{since:.6f}"}
        try:
            async with self._stream("events", params) as response:
                buffer = b""
                while True:
                    try:
                        chunk = await response.content.readany()
                    except (aiohttp.ClientError, OSError) as exc:
                        raise self._unavailable(exc) from exc
                    if not chunk:
                        raise BackendUnavailable(f"Docker at {self._url} closed the event stream")
                    buffer += chunk
                    *lines, buffer = buffer.split(b"\n")
                    for raw in lines:
                        event = _replica_event(raw, self.instance_id)
                        if event is not None:
                            yield event
        except DockerError as exc:
            raise BackendUnavailable(f"Docker event stream failed: {exc.message}") from exc

    async def close(self) -> None:
        if self._owns_docker and self._docker is not None:
            await self._docker.close()
        self._docker = None


def _replica_event(raw: bytes, instance_id: str) -> ReplicaEvent | None:
    try:
        data = json.loads(raw)
    except ValueError:
        return None
    if not isinstance(data, dict) or data.get("Type", data.get("type")) != "container":
        return None
    actor = data.get("Actor") or {}
    attributes = actor.get("Attributes") or {}
    if not labels_match(attributes, instance_id):
        return None
    action = str(data.get("Action") or data.get("status") or "")
    # "health_status: healthy" → "health_status:healthy": one token, easy to match on.
    action = action.replace(": ", ":")
    if action.split(":", 1)[0] not in EVENT_ACTIONS:
        return None
    return ReplicaEvent(
        action=action,
        container_id=str(actor.get("ID") or data.get("id") or ""),
        function=attributes.get(LABEL_FUNCTION, ""),
        namespace=attributes.get(LABEL_NAMESPACE, ""),
    )


def is_local_address(address: str) -> bool:
    """True when `address` belongs to one of this host's interfaces (binding to it works)."""
    try:
        family = socket.AF_INET6 if ":" in address else socket.AF_INET
        with socket.socket(family, socket.SOCK_STREAM) as probe:
            probe.bind((address, 0))
        return True
    except OSError:
        return False


def _int(value: str | None) -> int:
    try:
        return int(value or 0)
    except ValueError:
        return 0
