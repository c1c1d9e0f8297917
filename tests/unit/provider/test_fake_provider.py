"""What the fake does beyond the shared contract: the knobs gateway tests rely on."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator

import aiohttp
import pytest

from runtime.errors import BackendUnavailable, Conflict, InvalidSpec
from runtime.models import FunctionSpec
from runtime.provider.base import ReplicaRequest
from runtime.provider.docker import ReplicaNotFound
from runtime.provider.fake import FakeEngine, FakeProvider


def _request(name: str = "hello", image: str = "img:1") -> ReplicaRequest:
    return ReplicaRequest(FunctionSpec(name=name, image=image), generation=1)


@pytest.fixture
async def fake() -> AsyncIterator[FakeProvider]:
    provider = FakeProvider("unit")
    yield provider
    await provider.close()


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=5)) as session:
        yield session


async def test_replica_echoes_the_request(fake: FakeProvider, http: aiohttp.ClientSession) -> None:
    replica = await fake.create_replica(_request())
    base = f"http://127.0.0.1:{replica.host_port}"
    async with http.get(f"{base}/_/ready") as response:
        assert response.status == 200
    async with http.get(f"{base}/_/health") as response:
        assert response.status == 200
    async with http.post(f"{base}/a/b?x=1&y=2", data=b"payload", headers={"X-Test": "t"}) as r:
        assert r.status == 200
        assert r.headers["X-Replica"] == replica.container_name
        echo = await r.json()
    assert echo["method"] == "POST"
    assert echo["path"] == "/a/b"
    assert echo["query"] == "x=1&y=2"
    assert echo["body"] == "payload"
    assert echo["headers"]["X-Test"] == "t"
    assert echo["replica"] == replica.container_name
    assert fake.container(replica.container_id).requests_seen == 3


async def test_paused_replica_holds_requests_until_unpause(
    fake: FakeProvider, http: aiohttp.ClientSession
) -> None:
    replica = await fake.create_replica(_request())
    await fake.pause_replica(replica.container_id)
    url = f"http://127.0.0.1:{replica.host_port}/work"

    async def call() -> int:
        async with http.get(url) as response:
            return response.status

    pending = asyncio.create_task(call())
    done, _ = await asyncio.wait({pending}, timeout=0.2)
    assert not done  # held, like a frozen process behind an open socket
    assert fake.container(replica.container_id).requests_seen == 0
    await fake.unpause_replica(replica.container_id)
    assert await pending == 200


async def test_kill_refuses_connections_and_reports_die(
    fake: FakeProvider, http: aiohttp.ClientSession
) -> None:
    events = fake.events()
    replica = await fake.create_replica(_request())
    await fake.kill(replica.container_id)
    with pytest.raises(aiohttp.ClientConnectionError):
        async with http.get(f"http://127.0.0.1:{replica.host_port}/"):
            pass
    found = await fake.inspect_replica(replica.container_id)
    assert found is not None and found.state == "exited" and found.host_port is None
    assert [(await anext(events)).action for _ in range(2)] == ["start", "die"]
    with pytest.raises(Conflict):
        await fake.pause_replica(replica.container_id)


async def test_create_error_and_delay_knobs(fake: FakeProvider) -> None:
    fake.create_error = BackendUnavailable("docker went away")
    with pytest.raises(BackendUnavailable, match="docker went away"):
        await fake.create_replica(_request())
    assert await fake.list_replicas() == []

    fake.create_error = None
    fake.create_delay_s = 0.1
    started = time.monotonic()
    await fake.create_replica(_request())
    assert time.monotonic() - started >= 0.1


async def test_images_all_present_unless_a_set_is_given() -> None:
    everything = FakeProvider("a")
    assert await everything.image_present("anything:latest")
    some = FakeProvider("b", images={"known:1"})
    assert await some.image_present("known:1")
    with pytest.raises(InvalidSpec, match="'other:1' is not present locally"):
        await some.create_replica(_request(image="other:1"))
    some.add_image("other:1")
    replica = await some.create_replica(_request(image="other:1"))
    assert replica.state == "running"
    await some.close()
    await everything.close()


async def test_disconnect_breaks_pings_and_event_streams(fake: FakeProvider) -> None:
    events = fake.events()
    fake.engine.disconnect()
    with pytest.raises(BackendUnavailable):
        await fake.ping()
    with pytest.raises(BackendUnavailable):
        await anext(events)
    with pytest.raises(BackendUnavailable):
        await fake.list_replicas()
    with pytest.raises(BackendUnavailable):
        await anext(fake.events())  # resubscribing while away fails at once
    fake.engine.reconnect()
    await fake.ping()
    replica = await fake.create_replica(_request())
    resubscribed = fake.events()
    await fake.kill(replica.container_id)
    assert (await anext(resubscribed)).action == "die"


async def test_health_changes_are_events_and_state(fake: FakeProvider) -> None:
    replica = await fake.create_replica(_request())
    events = fake.events()
    fake.set_health(replica.container_id, "healthy")
    event = await anext(events)
    assert event.action == "health_status:healthy"
    found = await fake.inspect_replica(replica.container_id)
    assert found is not None and found.health == "healthy"


async def test_a_new_provider_on_the_same_engine_adopts_running_replicas(
    http: aiohttp.ClientSession,
) -> None:
    engine = FakeEngine()
    before = FakeProvider("daemon", engine=engine)
    replica = await before.create_replica(_request())
    await before.close()  # the daemon restarts; the engine (Docker) keeps running

    after = FakeProvider("daemon", engine=engine)
    assert [r.container_id for r in await after.list_replicas()] == [replica.container_id]
    async with http.get(f"http://127.0.0.1:{replica.host_port}/_/ready") as response:
        assert response.status == 200
    await after.close()
    await engine.close()


async def test_follow_ends_when_the_replica_dies(fake: FakeProvider) -> None:
    replica = await fake.create_replica(_request())
    fake.emit_log(replica.container_id, "before")
    lines = []
    async with asyncio.timeout(5):
        stream = fake.logs([replica], follow=True)
        lines.append((await anext(stream)).text)
        fake.emit_log(replica.container_id, "after")
        lines.append((await anext(stream)).text)
        await fake.kill(replica.container_id)
        lines.extend([line.text async for line in stream])
    assert lines == ["before", "after"]


async def test_unknown_replica(fake: FakeProvider) -> None:
    with pytest.raises(ReplicaNotFound):
        await fake.pause_replica("nope")
    with pytest.raises(ReplicaNotFound):
        fake.emit_log("nope", "x")
    assert await fake.inspect_replica("nope") is None
    await fake.remove_replica("nope")
