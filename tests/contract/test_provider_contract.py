"""The Provider contract, run on the fake and on real Docker (the same assertions for both)."""

from __future__ import annotations

import asyncio
import json
import uuid

import pytest

from runtime.errors import InvalidSpec
from runtime.models import Replica, Resources
from runtime.provider.base import LogLine, ReplicaEvent

from .conftest import Harness, until


async def _texts(harness: Harness, replicas: list[Replica], **kwargs: object) -> list[LogLine]:
    return [line async for line in harness.provider.logs(replicas, **kwargs)]  # type: ignore[arg-type]


async def test_ping(harness: Harness) -> None:
    await harness.provider.ping()


async def test_created_replica_is_listed_running_with_port_and_labels(harness: Harness) -> None:
    request = harness.request(
        generation=3,
        labels={"team": "blue", "com.openfaas.scale.min": "2"},
        annotations={"topic": "orders"},
        env_process="python3 handler.py",
    )
    replica = await harness.provider.create_replica(request)

    assert replica.state == "running"
    assert replica.host_port is not None and replica.host_port > 0
    assert (replica.function, replica.namespace) == (request.spec.name, "openfaas-fn")
    assert replica.generation == 3
    assert replica.container_name.startswith(f"lf-openfaas-fn-{request.spec.name}-")
    assert replica.created_at.tzinfo is not None

    listed = await harness.provider.list_replicas(function=request.spec.name)
    assert [r.container_id for r in listed] == [replica.container_id]
    assert listed[0].host_port == replica.host_port
    assert listed[0].state == "running"
    assert listed[0].container_name == replica.container_name
    assert await harness.provider.list_replicas(function=request.spec.name, namespace="other") == []
    assert replica.container_id in {r.container_id for r in await harness.provider.list_replicas()}

    inspected = await harness.provider.inspect_replica(replica.container_id)
    assert inspected is not None
    assert (inspected.host_port, inspected.state, inspected.generation) == (
        replica.host_port,
        "running",
        3,
    )

    labels = await harness.labels(replica)
    assert labels["com.localfaas.managed"] == "true"
    assert labels["com.localfaas.instance"] == harness.instance_id
    assert labels["com.localfaas.function"] == request.spec.name
    assert labels["com.localfaas.namespace"] == "openfaas-fn"
    assert labels["com.localfaas.generation"] == "3"
    assert labels["team"] == "blue"  # user labels are the container's labels, as in faasd
    assert labels["com.openfaas.scale.min"] == "2"
    assert labels["com.localfaas.annotation.topic"] == "orders"


async def test_replica_answers_http_on_its_loopback_port(harness: Harness) -> None:
    replica = await harness.provider.create_replica(harness.request())
    assert await harness.ready(replica) == 200
    status, body = await harness.get(replica, "/some/path?x=1")
    assert status == 200
    assert json.loads(body)["path"] == "/some/path"


async def test_pause_then_unpause(harness: Harness) -> None:
    replica = await harness.provider.create_replica(harness.request())
    await harness.ready(replica)

    await harness.provider.pause_replica(replica.container_id)
    paused = await harness.provider.inspect_replica(replica.container_id)
    assert paused is not None and paused.state == "paused"
    listed = await harness.provider.list_replicas(function=replica.function)
    assert [r.state for r in listed] == ["paused"]
    await harness.provider.pause_replica(replica.container_id)  # idempotent

    await harness.provider.unpause_replica(replica.container_id)
    running = await harness.provider.inspect_replica(replica.container_id)
    assert running is not None and running.state == "running"
    await harness.provider.unpause_replica(replica.container_id)  # idempotent
    assert await harness.ready(replica) == 200


async def test_logs_tail_since_and_follow(harness: Harness) -> None:
    replica = await harness.provider.create_replica(harness.request())
    await harness.ready(replica)
    mark = uuid.uuid4().hex[:6]
    await harness.say(replica, f"{mark} one")

    async def first_seen() -> bool | None:
        lines = await _texts(harness, [replica])
        return True if any(line.text == f"{mark} one" for line in lines) else None

    # Docker reads stdout and stderr on separate pipes, so two lines printed back to back on
    # different streams may be logged in either order; wait for the first to land.
    await until(first_seen, what="the first log line")
    await harness.say(replica, f"{mark} two", stderr=True)

    async def both() -> list[LogLine] | None:
        lines = [line for line in await _texts(harness, [replica]) if line.text.startswith(mark)]
        return lines if len(lines) == 2 else None

    one, two = await until(both, what="two log lines")
    # The text is exactly what was printed: no timestamp prefix, no newline; stderr included.
    assert (one.text, two.text) == (f"{mark} one", f"{mark} two")
    assert one.timestamp <= two.timestamp and one.timestamp.tzinfo is not None
    assert (one.function, one.namespace, one.instance) == (
        replica.function,
        replica.namespace,
        replica.container_name,
    )

    assert [line.text for line in await _texts(harness, [replica], tail=1)] == [f"{mark} two"]
    assert [line.text for line in await _texts(harness, [replica], since=two.timestamp)] == [
        f"{mark} two"
    ]

    stream = harness.provider.logs([replica], since=two.timestamp, follow=True)
    async with asyncio.timeout(15):
        first = await anext(stream)
        assert first.text == f"{mark} two"
        await harness.say(replica, f"{mark} three")
        third = await anext(stream)
    assert third.text == f"{mark} three"

    await stream.aclose()  # type: ignore[attr-defined]
    # Closing the generator ends every per-replica stream task it started.
    leftovers = [
        t
        for t in asyncio.all_tasks()
        if t.get_name().startswith("localfaas-logs-") and not t.done()
    ]
    assert leftovers == []


async def test_logs_of_several_replicas_merge_by_time(harness: Harness) -> None:
    spec_request = harness.request()
    first = await harness.provider.create_replica(spec_request)
    second = await harness.provider.create_replica(spec_request)
    await harness.ready(first)
    await harness.ready(second)
    mark = uuid.uuid4().hex[:6]
    await harness.say(first, f"{mark} a")
    await harness.say(second, f"{mark} b")
    await harness.say(first, f"{mark} c")

    async def merged() -> list[LogLine] | None:
        lines = await _texts(harness, [first, second])
        ours = [line for line in lines if line.text.startswith(mark)]
        return ours if len(ours) == 3 else None

    lines = await until(merged, what="three lines from two replicas")
    assert [line.text for line in lines] == [f"{mark} a", f"{mark} b", f"{mark} c"]
    assert [line.instance for line in lines] == [
        first.container_name,
        second.container_name,
        first.container_name,
    ]
    tail = await _texts(harness, [first, second], tail=2)
    assert [line.text for line in tail] == [f"{mark} b", f"{mark} c"]


async def test_events_report_start_and_die_of_a_killed_replica(harness: Harness) -> None:
    stream = harness.provider.events()
    seen: list[ReplicaEvent] = []

    async def collect() -> None:
        async for event in stream:
            seen.append(event)

    collector = asyncio.create_task(collect())
    try:
        replica = await harness.provider.create_replica(harness.request())
        await harness.kill(replica)

        async def started_and_died() -> bool:
            actions = [e.action for e in seen if e.container_id == replica.container_id]
            return "start" in actions and "die" in actions

        await until(started_and_died, what="start and die events")
        event = next(e for e in seen if e.container_id == replica.container_id)
        assert (event.function, event.namespace) == (replica.function, replica.namespace)

        async def exited() -> bool:
            found = await harness.provider.inspect_replica(replica.container_id)
            return found is not None and found.state == "exited"

        await until(exited, what="state exited")
    finally:
        collector.cancel()
        await asyncio.gather(collector, return_exceptions=True)
        await stream.aclose()  # type: ignore[attr-defined]


async def test_events_start_when_subscribed_not_when_first_read(harness: Harness) -> None:
    # A caller subscribes, acts, and only then reads: nothing in between may be lost.
    stream = harness.provider.events()
    try:
        replica = await harness.provider.create_replica(harness.request())
        await harness.kill(replica)
        actions: list[str] = []
        async with asyncio.timeout(15):
            async for event in stream:
                if event.container_id == replica.container_id:
                    actions.append(event.action)
                if "die" in actions:
                    break
        assert actions[0] == "start"
    finally:
        await stream.aclose()  # type: ignore[attr-defined]


async def test_remove_makes_the_replica_go_away(harness: Harness) -> None:
    replica = await harness.provider.create_replica(harness.request())
    await harness.ready(replica)  # (the test server handles SIGTERM only once it is up)
    await harness.provider.remove_replica(replica.container_id, stop_timeout_s=2)
    assert await harness.provider.inspect_replica(replica.container_id) is None
    assert await harness.provider.list_replicas(function=replica.function) == []
    # Missing is not an error: removing twice, or something that never existed.
    await harness.provider.remove_replica(replica.container_id)
    await harness.provider.remove_replica("0" * 64)


async def test_remove_a_paused_replica(harness: Harness) -> None:
    replica = await harness.provider.create_replica(harness.request())
    await harness.ready(replica)
    await harness.provider.pause_replica(replica.container_id)
    await harness.provider.remove_replica(replica.container_id, stop_timeout_s=2)
    assert await harness.provider.inspect_replica(replica.container_id) is None


async def test_another_instance_sees_none_of_our_replicas(harness: Harness) -> None:
    replica = await harness.provider.create_replica(harness.request())
    other = await harness.other_provider()

    assert await other.list_replicas() == []
    assert await other.inspect_replica(replica.container_id) is None
    await other.remove_replica(replica.container_id)  # not ours to remove: nothing happens

    still = await harness.provider.inspect_replica(replica.container_id)
    assert still is not None and still.state == "running"


async def test_missing_image_is_an_invalid_spec(harness: Harness) -> None:
    missing = "localfaas-test/never-built:missing"
    assert await harness.provider.image_present(harness.image)
    assert not await harness.provider.image_present(missing)
    await harness.provider.ensure_image(harness.image)
    with pytest.raises(InvalidSpec, match="not present locally and could not be pulled"):
        await harness.provider.ensure_image(missing)
    request = harness.request(image=missing)
    with pytest.raises(InvalidSpec, match=f"image '{missing}' is not present locally"):
        await harness.provider.create_replica(request)
    assert await harness.provider.list_replicas(function=request.spec.name) == []


async def test_bad_quantity_is_an_invalid_spec_naming_the_field(harness: Harness) -> None:
    request = harness.request(limits=Resources(memory="12XB"))
    with pytest.raises(
        InvalidSpec, match=r"limits.memory: invalid quantity '12XB' \(use e.g. 128Mi\)"
    ):
        await harness.provider.create_replica(request)
    assert await harness.provider.list_replicas(function=request.spec.name) == []
