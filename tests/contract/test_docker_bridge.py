"""Docker only: the gateway reaches replicas on their bridge address, skipping docker-proxy."""

from __future__ import annotations

import aiohttp

from runtime.provider.docker import is_local_address
from tests.contract.conftest import DockerHarness


async def test_replica_has_a_bridge_endpoint_that_answers(docker_harness: DockerHarness) -> None:
    h = docker_harness
    await h.provider.ping()  # decides whether the bridge is reachable from here
    replica = await h.provider.create_replica(h.request())
    assert await h.ready(replica) == 200

    assert replica.bridge_ip is not None, "this host shares dockerd's network namespace"
    assert replica.endpoint == (replica.bridge_ip, 8080)
    listed = await h.provider.list_replicas(function=replica.function)
    inspected = await h.provider.inspect_replica(replica.container_id)
    assert inspected is not None
    assert {listed[0].bridge_ip, inspected.bridge_ip} == {replica.bridge_ip}

    async with aiohttp.ClientSession() as http:
        async with http.get(f"http://{replica.bridge_ip}:8080/_/ready") as response:
            assert response.status == 200


def test_local_address_check() -> None:
    assert is_local_address("127.0.0.1")
    assert not is_local_address("192.0.2.1")  # TEST-NET-1, never on an interface
