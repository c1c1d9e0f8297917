"""The daemon end to end through its public API: real `localfaas up`, real Docker."""

from __future__ import annotations

import contextlib
import json
import signal
import subprocess
import threading
import time
from collections import Counter
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

import pytest

from tests.integration.daemon_fixtures import (
    DaemonProcess,
    daemon_factory,  # noqa: F401 - fixture
    docker_ids,
    test_function_image,  # noqa: F401 - fixture
)

pytestmark = [pytest.mark.docker, pytest.mark.slow]
Factory = Callable[..., DaemonProcess]


def deploy(daemon: DaemonProcess, image: str, name: str = "probe", **extra: object) -> None:
    reply = daemon.request(
        "POST", "/system/functions", json_body={"service": name, "image": image, **extra}
    )
    assert reply.status == 202, reply.body


def instance_of(daemon: DaemonProcess) -> str:
    return (daemon.state_dir / "instance-id").read_text().strip()


def test_lifecycle_deploy_update_scale_logs_secrets_delete(
    daemon_factory: Factory, test_function_image: str
) -> None:
    daemon = daemon_factory()
    # Secrets first: the function mounts it read-only and reads it as its non-root user.
    assert (
        daemon.cli("secret", "create", "api-key", "--from-literal", "s3cr3t-value").returncode == 0
    )
    # One replica until scaled by hand: under the update's load (hundreds of requests/s) the
    # autoscaler would add replicas at its default target (50/s each), and this test counts
    # containers.
    fixed = {"com.openfaas.scale.target": "10000"}
    deploy(
        daemon,
        test_function_image,
        envVars={"VERSION": "1"},
        secrets=["api-key"],
        labels=fixed,
    )
    daemon.wait_available("probe", 1)
    reply = daemon.request("POST", "/function/probe", b"hi")
    assert reply.status == 200 and reply.json()["version"] == "1"
    assert reply.headers["X-Call-Id"] and int(reply.headers["X-Start-Time"]) > 0
    assert daemon.request("GET", "/function/probe/secret/api-key").body == b"s3cr3t-value"
    assert "s3cr3t-value" not in daemon.log()

    # Update under concurrent load: every request must succeed.
    stop = threading.Event()
    outcomes: Counter[str] = Counter()

    def load() -> None:
        while not stop.is_set():
            r = daemon.request("GET", "/function/probe", timeout_s=10)
            outcomes[f"{r.status} v{r.json()['version'] if r.status == 200 else '?'}"] += 1

    # The stack stops the load on the way out: after a failed wait, too (else the pool's exit
    # waits for the load threads forever).
    with ThreadPoolExecutor(4) as pool, contextlib.ExitStack() as stack:
        stack.callback(stop.set)
        for _ in range(4):
            pool.submit(load)
        time.sleep(0.3)
        reply = daemon.request(
            "PUT",
            "/system/functions",
            json_body={
                "service": "probe",
                "image": test_function_image,
                "envVars": {"VERSION": "2"},
                "secrets": ["api-key"],
                "labels": fixed,
            },
        )
        assert reply.status == 202, reply.body
        daemon.wait_for(
            lambda: daemon.request("GET", "/function/probe").json()["version"] == "2",
            "version 2 to serve",
        )
        daemon.wait_for(
            lambda: len(docker_ids(instance_of(daemon))) == 1, "old replica to be removed"
        )
        time.sleep(0.3)
        stop.set()
    assert set(outcomes) <= {"200 v1", "200 v2"}, outcomes
    assert outcomes["200 v2"] > 0 and outcomes["200 v1"] > 0

    # Scale to 3: requests spread over the replicas.
    assert daemon.cli("scale", "probe", "--replicas", "3").returncode == 0
    daemon.wait_available("probe", 3)
    hosts = {daemon.request("GET", "/function/probe").json()["host"] for _ in range(12)}
    assert len(hosts) == 3

    # Logs: what the handler printed, as NDJSON with the OpenFaaS fields.
    daemon.request("POST", "/function/probe/log", b"marker-42")

    def logged() -> bool:
        body = daemon.request("GET", "/system/logs?name=probe&tail=50").body.decode()
        return any("marker-42" in json.loads(line)["text"] for line in body.splitlines())

    daemon.wait_for(logged, "the handler's log line")
    cli_logs = daemon.cli("logs", "probe", "--tail", "100").stdout.decode()
    assert "log line from handler: marker-42" in cli_logs

    # Delete: containers gone.
    assert daemon.cli("rm", "probe").returncode == 0
    daemon.wait_for(lambda: not docker_ids(instance_of(daemon)), "containers to be removed")
    assert daemon.request("GET", "/function/probe").status == 404


def test_restart_adopts_running_replicas(daemon_factory: Factory, test_function_image: str) -> None:
    daemon = daemon_factory()
    deploy(daemon, test_function_image)
    daemon.wait_available("probe", 1)
    before = docker_ids(instance_of(daemon))
    assert daemon.stop(signal.SIGTERM) == 0
    assert docker_ids(instance_of(daemon)) == before  # function containers keep running
    again = daemon_factory(daemon.state_dir)
    again.wait_available("probe", 1, timeout_s=10)
    assert again.request("GET", "/function/probe").status == 200
    assert docker_ids(instance_of(again)) == before  # adopted: no new container, no cold start
    assert "adopted replica" in again.log()


def test_killed_replica_is_replaced(daemon_factory: Factory, test_function_image: str) -> None:
    daemon = daemon_factory()
    deploy(daemon, test_function_image, labels={"com.openfaas.scale.min": "2"})
    daemon.wait_available("probe", 2)
    victim = sorted(docker_ids(instance_of(daemon)))[0]
    subprocess.run(["docker", "kill", victim], check=True, capture_output=True)
    # Service continues on the other replica while the dead one is replaced.
    for _ in range(10):
        assert daemon.request("GET", "/function/probe").status == 200
    daemon.wait_for(
        lambda: (
            victim not in docker_ids(instance_of(daemon))
            and len(docker_ids(instance_of(daemon))) == 2
        ),
        "replacement",
        30,
    )
    daemon.wait_available("probe", 2)


def test_functions_chain_through_the_gateway(
    daemon_factory: Factory, test_function_image: str
) -> None:
    daemon = daemon_factory()
    deploy(daemon, test_function_image, name="caller")
    deploy(daemon, test_function_image, name="callee", envVars={"VERSION": "callee"})
    daemon.wait_available("caller", 1)
    daemon.wait_available("callee", 1)
    reply = daemon.request("GET", "/function/caller/chain/callee")
    assert reply.status == 200, reply.body
    assert reply.json()["version"] == "callee"


def test_bad_requests_against_the_real_daemon(daemon_factory: Factory) -> None:
    daemon = daemon_factory()
    reply = daemon.request(
        "POST",
        "/system/functions",
        json_body={"service": "nope", "image": "localfaas-test/does-not-exist:1"},
    )
    assert reply.status == 400 and b"does-not-exist" in reply.body
    reply = daemon.request(
        "GET", "/system/functions", headers={"Authorization": "Basic YWRtaW46bm8="}
    )
    assert reply.status == 401 and "Basic" in reply.headers["WWW-Authenticate"]
    assert daemon.request("GET", "/function/ghost").status == 404
    assert daemon.request("GET", "/healthz").status == 200


def test_docker_unavailable_then_back(daemon_factory: Factory, tmp_path) -> None:
    daemon = daemon_factory(extra_env={"DOCKER_HOST": f"unix://{tmp_path}/missing.sock"})
    reply = daemon.request("GET", "/healthz")
    assert reply.status == 503 and b"Docker" in reply.body
    reply = daemon.request("POST", "/system/functions", json_body={"service": "a", "image": "x:1"})
    assert reply.status == 503 and reply.headers.get("Retry-After")


RELAY = """
import asyncio, sys

async def pipe(reader, writer):
    try:
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()
    except OSError:
        pass
    finally:
        writer.close()

async def handle(reader, writer):
    up_reader, up_writer = await asyncio.open_unix_connection(sys.argv[2])
    await asyncio.gather(pipe(reader, up_writer), pipe(up_reader, writer))

async def main():
    server = await asyncio.start_unix_server(handle, sys.argv[1])
    async with server:
        await server.serve_forever()

asyncio.run(main())
"""


class SocketRelay:
    """A unix socket relaying to the real Docker socket, in a child process that can be
    started and killed: a Docker engine that goes away and comes back."""

    def __init__(self, path: str, target: str = "/var/run/docker.sock") -> None:
        self.path, self.target = path, target
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        import os
        import sys

        self.proc = subprocess.Popen([sys.executable, "-c", RELAY, self.path, self.target])
        deadline = time.monotonic() + 10
        while not os.path.exists(self.path):
            assert time.monotonic() < deadline, "relay did not start"
            time.sleep(0.01)

    def close(self) -> None:
        import os

        if self.proc is not None:
            self.proc.kill()
            self.proc.wait()
        if os.path.exists(self.path):
            os.unlink(self.path)


def test_docker_comes_back(daemon_factory: Factory, test_function_image: str, tmp_path) -> None:
    relay = SocketRelay(str(tmp_path / "docker.sock"))
    try:
        daemon = daemon_factory(extra_env={"DOCKER_HOST": f"unix://{relay.path}"})
        daemon.wait_for(lambda: daemon.request("GET", "/healthz").status == 503, "healthz 503")
        relay.start()
        daemon.wait_for(lambda: daemon.request("GET", "/healthz").status == 200, "reconnect", 30)
        deploy(daemon, test_function_image)
        daemon.wait_available("probe", 1)
        assert daemon.request("GET", "/function/probe").status == 200
        # Docker goes away while running: health says so, invocations of running replicas go on.
        relay.close()
        daemon.wait_for(lambda: daemon.request("GET", "/healthz").status == 503, "healthz 503", 30)
        assert daemon.request("GET", "/function/probe").status == 200
        reply = daemon.request(
            "POST",
            "/system/scale-function/probe",
            json_body={"serviceName": "probe", "replicas": 2},
        )
        assert reply.status == 503 and b"Docker" in reply.body
        relay.start()
        daemon.wait_for(lambda: daemon.request("GET", "/healthz").status == 200, "reconnect", 30)
        daemon.cli("scale", "probe", "--replicas", "2")
        daemon.wait_available("probe", 2)
    finally:
        relay.close()


def test_stop_functions_removes_replicas_on_exit(
    daemon_factory: Factory, test_function_image: str
) -> None:
    daemon = daemon_factory(args=("--stop-functions",))
    deploy(daemon, test_function_image)
    daemon.wait_available("probe", 1)
    assert docker_ids(instance_of(daemon))
    assert daemon.stop(signal.SIGINT) == 0
    assert docker_ids(instance_of(daemon)) == set()
    assert "stopped" in daemon.log()
