"""DockerProvider without a Docker engine: parsing, error mapping, streams that break."""

from __future__ import annotations

import asyncio
import json
import socket
from datetime import UTC, datetime
from pathlib import Path

import pytest
from aiohttp import web

from runtime.errors import BackendUnavailable
from runtime.models import FunctionSpec, Replica
from runtime.provider.base import ReplicaRequest
from runtime.provider.docker import (
    DockerProvider,
    _parse_frame,
    _replica_event,
    parse_docker_time,
)

from .conftest import FakeDockerApi

INSTANCE = "inst-1"
OURS = {
    "com.localfaas.managed": "true",
    "com.localfaas.instance": INSTANCE,
    "com.localfaas.function": "hello",
    "com.localfaas.namespace": "openfaas-fn",
}


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("2024-05-01T12:00:00.123456789Z", datetime(2024, 5, 1, 12, 0, 0, 123456, UTC)),
        ("2024-05-01T12:00:00Z", datetime(2024, 5, 1, 12, 0, 0, tzinfo=UTC)),
        ("2024-05-01T12:00:00.5Z", datetime(2024, 5, 1, 12, 0, 0, 500000, UTC)),
        ("2024-05-01T14:00:00.000000001+02:00", datetime(2024, 5, 1, 12, 0, 0, tzinfo=UTC)),
        ("0001-01-01T00:00:00Z", datetime(1, 1, 1, tzinfo=UTC)),
        ("yesterday", None),
        ("", None),
    ],
)
def test_parse_docker_time(text: str, expected: datetime | None) -> None:
    assert parse_docker_time(text) == expected


def test_parse_frame_strips_timestamp_and_newline() -> None:
    pending: dict[int, tuple[datetime, str]] = {}
    line = _parse_frame("2024-05-01T12:00:00.000001Z hello world \n", pending, 1)
    assert line == (datetime(2024, 5, 1, 12, 0, 0, 1, UTC), "hello world ")
    assert _parse_frame("2024-05-01T12:00:00Z \n", pending, 1) == (
        datetime(2024, 5, 1, 12, tzinfo=UTC),
        "",
    )


def test_parse_frame_joins_partial_messages_per_stream() -> None:
    pending: dict[int, tuple[datetime, str]] = {}
    assert _parse_frame("2024-05-01T12:00:00.1Z aaa", pending, 1) is None
    assert _parse_frame("2024-05-01T12:00:00.2Z err\n", pending, 2) is not None
    assert _parse_frame("2024-05-01T12:00:00.3Z bbb", pending, 1) is None
    stamp, text = _parse_frame("2024-05-01T12:00:00.4Z ccc\n", pending, 1) or (None, None)
    assert text == "aaabbbccc"
    assert stamp == datetime(2024, 5, 1, 12, 0, 0, 100000, UTC)  # the line's first part
    assert pending == {}


def _event(action: str, labels: dict[str, str], kind: str = "container") -> bytes:
    return json.dumps(
        {
            "Type": kind,
            "Action": action,
            "Actor": {"ID": "c1", "Attributes": {**labels, "name": "x"}},
        }
    ).encode()


@pytest.mark.parametrize(
    ("raw", "action"),
    [
        (_event("start", OURS), "start"),
        (_event("die", OURS), "die"),
        (_event("health_status: healthy", OURS), "health_status:healthy"),
        (_event("health_status: unhealthy", OURS), "health_status:unhealthy"),
        (_event("exec_start: sh", OURS), None),
        (_event("start", {**OURS, "com.localfaas.instance": "other"}), None),
        (_event("start", {}), None),
        (_event("start", OURS, kind="network"), None),
        (b"not json", None),
    ],
)
def test_replica_event(raw: bytes, action: str | None) -> None:
    event = _replica_event(raw, INSTANCE)
    if action is None:
        assert event is None
    else:
        assert event is not None
        assert (event.action, event.container_id, event.function, event.namespace) == (
            action,
            "c1",
            "hello",
            "openfaas-fn",
        )


# -- Docker unreachable ----------------------------------------------------------------------


async def test_missing_socket_is_backend_unavailable(socket_dir: Path) -> None:
    url = f"unix://{socket_dir}/missing.sock"
    provider = DockerProvider(INSTANCE, url=url)
    try:
        with pytest.raises(BackendUnavailable) as failure:
            await provider.ping()
        assert str(failure.value) == f"Docker is not reachable at {url}: No such file or directory"
        with pytest.raises(BackendUnavailable):
            await provider.list_replicas()
        with pytest.raises(BackendUnavailable):
            await provider.create_replica(
                ReplicaRequest(FunctionSpec(name="fn", image="img"), generation=1)
            )
        with pytest.raises(BackendUnavailable):
            await provider.remove_replica("abc")
        with pytest.raises(BackendUnavailable):
            await anext(provider.events())
        with pytest.raises(BackendUnavailable):
            await anext(provider.logs([_replica("abc")]))
    finally:
        await provider.close()


async def test_refused_connection_is_backend_unavailable(socket_dir: Path) -> None:
    path = socket_dir / "dead.sock"
    dead = socket.socket(socket.AF_UNIX)
    dead.bind(str(path))  # bound, never listening: connect() is refused
    provider = DockerProvider(INSTANCE, url=f"unix://{path}")
    try:
        with pytest.raises(BackendUnavailable, match="Connection refused"):
            await provider.ping()
    finally:
        dead.close()
        await provider.close()


# -- streams, against a scripted Docker API --------------------------------------------------


def _replica(container_id: str, name: str = "lf-openfaas-fn-hello-abc123") -> Replica:
    return Replica(
        container_id=container_id,
        container_name=name,
        function="hello",
        namespace="openfaas-fn",
        generation=1,
        host_port=None,
        state="running",
        created_at=datetime.now(UTC),
    )


def _frame(stream: int, text: str) -> bytes:
    data = text.encode()
    return bytes([stream, 0, 0, 0]) + len(data).to_bytes(4, "big") + data


async def test_event_stream_loss_raises_backend_unavailable(fake_docker_api: FakeDockerApi) -> None:
    async def events(request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse()
        await response.prepare(request)
        await response.write(_event("start", {**OURS, "com.localfaas.instance": "other"}) + b"\n")
        # One event split across two writes, then the engine goes away.
        raw = _event("start", OURS) + b"\n"
        await response.write(raw[:10])
        await response.write(raw[10:])
        return response

    fake_docker_api.app.router.add_get("/v1.41/events", events)
    await fake_docker_api.start()
    provider = DockerProvider(INSTANCE, url=fake_docker_api.url)
    try:
        stream = provider.events()
        event = await anext(stream)
        assert (event.action, event.function) == ("start", "hello")
        with pytest.raises(BackendUnavailable, match="closed the event stream"):
            await anext(stream)
    finally:
        await provider.close()
    _, _, query = next(r for r in fake_docker_api.requests if r[1] == "/v1.41/events")
    filters = json.loads(query["filters"])
    assert filters["type"] == ["container"]
    assert f"com.localfaas.instance={INSTANCE}" in filters["label"]
    assert float(query["since"]) > 0


async def test_logs_demultiplex_and_join_partial_lines(fake_docker_api: FakeDockerApi) -> None:
    async def logs(request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse()
        await response.prepare(request)
        await response.write(_frame(1, "2024-05-01T12:00:00.000001Z out one\n"))
        await response.write(_frame(2, "2024-05-01T12:00:00.000002Z err one\n"))
        await response.write(_frame(1, "2024-05-01T12:00:00.000003Z long-"))
        await response.write(_frame(1, "2024-05-01T12:00:00.000004Z line\n"))
        await response.write(_frame(1, "2024-05-01T12:00:00.000005Z ünïcode ✓\n"))
        return response

    fake_docker_api.app.router.add_get("/v1.41/containers/{id}/logs", logs)
    await fake_docker_api.start()
    provider = DockerProvider(INSTANCE, url=fake_docker_api.url)
    try:
        lines = [line async for line in provider.logs([_replica("c1")], tail=10)]
    finally:
        await provider.close()
    assert [line.text for line in lines] == ["out one", "err one", "long-line", "ünïcode ✓"]
    assert lines[0].instance == "lf-openfaas-fn-hello-abc123"
    _, _, query = next(r for r in fake_docker_api.requests if r[1].endswith("/logs"))
    assert query["timestamps"] == "1" and query["stdout"] == "1" and query["stderr"] == "1"
    assert query["tail"] == "10" and query["follow"] == "0"


async def test_closing_a_followed_log_ends_its_streams(fake_docker_api: FakeDockerApi) -> None:
    closed = asyncio.Event()

    async def logs(request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse()
        await response.prepare(request)
        await response.write(_frame(1, "2024-05-01T12:00:00Z first\n"))
        try:
            while True:  # a quiet function: only empty frames, until the client goes away
                await asyncio.sleep(0.01)
                await response.write(_frame(1, ""))
        except (ConnectionError, RuntimeError):
            closed.set()
        return response

    fake_docker_api.app.router.add_get("/v1.41/containers/{id}/logs", logs)
    await fake_docker_api.start()
    provider = DockerProvider(INSTANCE, url=fake_docker_api.url)
    try:
        stream = provider.logs([_replica("c1"), _replica("c2", "other")], follow=True)
        assert (await anext(stream)).text == "first"
        await stream.aclose()  # type: ignore[attr-defined]
        pumps = [t for t in asyncio.all_tasks() if t.get_name().startswith("localfaas-logs-")]
        assert all(t.done() for t in pumps)
        # The HTTP streams were really closed: the server saw both clients go.
        async with asyncio.timeout(5):
            await closed.wait()
    finally:
        await provider.close()


async def test_logs_of_a_removed_container_are_empty(fake_docker_api: FakeDockerApi) -> None:
    async def gone(_: web.Request) -> web.Response:
        return web.json_response({"message": "No such container: c1"}, status=404)

    fake_docker_api.app.router.add_get("/v1.41/containers/{id}/logs", gone)
    await fake_docker_api.start()
    provider = DockerProvider(INSTANCE, url=fake_docker_api.url)
    try:
        assert [line async for line in provider.logs([_replica("c1")])] == []
    finally:
        await provider.close()
