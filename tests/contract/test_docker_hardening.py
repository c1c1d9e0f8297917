"""What a real Docker container of ours looks like from the outside and from the inside."""

from __future__ import annotations

import asyncio
import errno
import json
import os
from pathlib import Path

import pytest

from runtime.errors import InvalidSpec
from runtime.models import Resources
from runtime.provider.base import ReplicaRequest
from runtime.provider.docker import ReplicaStartFailed
from runtime.provider.resources import DOCKER_MIN_MEMORY_BYTES, MIB
from runtime.secrets import SecretFiles

from .conftest import DockerHarness

pytestmark = pytest.mark.docker


async def _whoami(h: DockerHarness, replica: object) -> dict[str, object]:
    status, body = await h.get(replica, "/whoami")  # type: ignore[arg-type]
    assert status == 200
    result: dict[str, object] = json.loads(body)
    return result


async def test_container_is_locked_down(docker_harness: DockerHarness) -> None:
    h = docker_harness
    replica = await h.provider.create_replica(
        h.request(limits=Resources(memory="128Mi", cpu="0.5"), requests=Resources(memory="64Mi"))
    )
    await h.ready(replica)
    info = await h.inspect(replica)
    host = info["HostConfig"]

    assert host["CapDrop"] == ["ALL"]
    assert not host.get("CapAdd")
    assert "no-new-privileges:true" in host["SecurityOpt"]
    assert host["Privileged"] is False
    assert host["NetworkMode"] in ("bridge", "default")
    assert host["PidsLimit"] == 512
    assert host["Memory"] == 128 * MIB
    assert host["MemoryReservation"] == 64 * MIB
    assert host["NanoCpus"] == 500_000_000
    assert host["RestartPolicy"]["Name"] == "no"
    assert host["LogConfig"] == {
        "Type": "json-file",
        "Config": {"max-file": "3", "max-size": "10m"},
    }
    assert host["ExtraHosts"] == ["gateway:host-gateway"]
    assert not host.get("Binds")
    assert all("docker.sock" not in m.get("Source", "") for m in info["Mounts"])
    # Published on loopback only, asked for and as bound.
    assert host["PortBindings"] == {"8080/tcp": [{"HostIp": "127.0.0.1", "HostPort": ""}]}
    bound = info["NetworkSettings"]["Ports"]["8080/tcp"]
    assert bound and {b["HostIp"] for b in bound} == {"127.0.0.1"}
    assert int(bound[0]["HostPort"]) == replica.host_port
    # The image's own non-root user is kept.
    assert info["Config"]["User"] == "1000:1000"
    who = await _whoami(h, replica)
    assert (who["uid"], who["gid"]) == (1000, 1000)


async def test_root_image_runs_as_an_unprivileged_user(docker_harness: DockerHarness) -> None:
    h = docker_harness
    replica = await h.provider.create_replica(h.request(image=h.images["root"]))
    await h.ready(replica)
    assert (await h.inspect(replica))["Config"]["User"] == "10001:10001"
    who = await _whoami(h, replica)
    assert (who["uid"], who["gid"]) == (10001, 10001)


async def test_read_only_root_filesystem_keeps_tmp_writable(docker_harness: DockerHarness) -> None:
    h = docker_harness
    replica = await h.provider.create_replica(h.request(read_only_root_filesystem=True))
    await h.ready(replica)
    host = (await h.inspect(replica))["HostConfig"]
    assert host["ReadonlyRootfs"] is True
    assert host["Tmpfs"] == {"/tmp": "rw,noexec,nosuid,size=64m"}

    status, body = await h.get(replica, "/write?path=/app/new-file")
    assert status == 403 and json.loads(body)["errno"] == errno.EROFS
    status, _ = await h.get(replica, "/write?path=/tmp/scratch")
    assert status == 200


async def test_writable_root_filesystem_by_default(docker_harness: DockerHarness) -> None:
    h = docker_harness
    replica = await h.provider.create_replica(h.request(image=h.images["root"]))
    await h.ready(replica)
    assert not (await h.inspect(replica))["HostConfig"].get("ReadonlyRootfs")
    status, _ = await h.get(replica, "/write?path=/tmp/scratch")
    assert status == 200


async def test_function_reads_its_secret_through_its_group(
    docker_harness: DockerHarness, tmp_path: Path
) -> None:
    h = docker_harness
    files = SecretFiles(tmp_path / "state")
    files.put("openfaas-fn", "api-key", b"s3cret-value")
    # The root image makes the replica run as 10001: it owns nothing, only the group lets it in.
    request = h.request(image=h.images["root"], secrets=("api-key",))
    gid = 23456
    mount = files.materialize(request.spec, gid)
    replica = await h.provider.create_replica(
        ReplicaRequest(request.spec, 1, secrets_dir=mount, secrets_gid=gid)
    )
    await h.ready(replica)

    info = await h.inspect(replica)
    assert info["HostConfig"]["GroupAdd"] == [str(gid)]
    (secret_mount,) = [m for m in info["Mounts"] if m["Destination"] == "/var/openfaas/secrets"]
    assert secret_mount["RW"] is False
    assert gid in (await _whoami(h, replica))["groups"]  # type: ignore[operator]

    status, body = await h.get(replica, "/read?path=/var/openfaas/secrets/api-key")
    assert (status, body) == (200, b"s3cret-value")
    status, body = await h.get(replica, "/write?path=/var/openfaas/secrets/other")
    assert status == 403 and json.loads(body)["errno"] in (errno.EROFS, errno.EACCES)


@pytest.mark.skipif(os.geteuid() != 0, reason="group-only secret files need a root daemon")
async def test_without_the_group_the_secret_is_unreadable(
    docker_harness: DockerHarness, tmp_path: Path
) -> None:
    h = docker_harness
    files = SecretFiles(tmp_path / "state")
    files.put("openfaas-fn", "api-key", b"s3cret-value")
    request = h.request(image=h.images["root"], secrets=("api-key",))
    mount = files.materialize(request.spec, 23457)
    # Someone else's folder mounted without its group: the files are 0440 root:23457.
    replica = await h.provider.create_replica(ReplicaRequest(request.spec, 1, secrets_dir=mount))
    await h.ready(replica)
    status, body = await h.get(replica, "/read?path=/var/openfaas/secrets/api-key")
    assert status == 403 and json.loads(body)["errno"] == errno.EACCES


async def test_tiny_memory_limit_is_raised_to_dockers_minimum(
    docker_harness: DockerHarness,
) -> None:
    h = docker_harness
    request = h.request(limits=Resources(memory="5Mi"))
    replica = await h.provider.create_replica(request)
    assert replica.state in ("running", "exited")  # it started; 6 MiB may not keep python up
    info = await h.inspect(replica)
    assert info["HostConfig"]["Memory"] == DOCKER_MIN_MEMORY_BYTES
    assert request.spec.limits == Resources(memory="5Mi")  # the spec keeps what was deployed


async def test_cpu_limit_above_the_host_is_capped(docker_harness: DockerHarness) -> None:
    h = docker_harness
    replica = await h.provider.create_replica(h.request(limits=Resources(cpu="512")))
    info = await h.inspect(replica)
    cpus = (await h.client.system.info())["NCPU"]
    assert info["HostConfig"]["NanoCpus"] == cpus * 1_000_000_000


async def test_failed_start_leaves_no_container(docker_harness: DockerHarness) -> None:
    h = docker_harness
    request = h.request(image=h.images["badu"])  # USER nosuchuser: create works, start fails
    with pytest.raises(ReplicaStartFailed, match="did not start") as failure:
        await h.provider.create_replica(request)
    assert "nosuchuser" in str(failure.value)
    leftovers = await h.client.containers.list(
        all=True, filters={"label": [f"com.localfaas.instance={h.instance_id}"]}
    )
    assert leftovers == []


async def test_envprocess_and_env_vars_reach_the_container(docker_harness: DockerHarness) -> None:
    h = docker_harness
    replica = await h.provider.create_replica(
        h.request(env_process="python3 index.py", env_vars={"MODE": "x", "fprocess": "ignored"})
    )
    env = (await h.inspect(replica))["Config"]["Env"]
    assert "MODE=x" in env
    assert "fprocess=python3 index.py" in env
    assert "fprocess=ignored" not in env


async def test_invalid_spec_creates_nothing(docker_harness: DockerHarness) -> None:
    h = docker_harness
    request = h.request(limits=Resources(memory="64Mi"), requests=Resources(memory="128Mi"))
    with pytest.raises(InvalidSpec, match=r"requests\.memory"):
        await h.provider.create_replica(request)
    assert await h.provider.list_replicas() == []


async def test_health_status_is_reported_in_events_list_and_inspect(
    docker_harness: DockerHarness,
) -> None:
    h = docker_harness
    stream = h.provider.events()
    try:
        replica = await h.provider.create_replica(h.request(image=h.images["health"]))

        async with asyncio.timeout(15):
            async for event in stream:
                if event.container_id == replica.container_id and (
                    event.action == "health_status:healthy"
                ):
                    break
        (listed,) = await h.provider.list_replicas(function=replica.function)
        assert listed.health == "healthy"
        inspected = await h.provider.inspect_replica(replica.container_id)
        assert inspected is not None and inspected.health == "healthy"
    finally:
        await stream.aclose()  # type: ignore[attr-defined]
