"""The daemon's own image: built offline from the top-level Dockerfile, run with the host's Docker
socket, the state dir as a volume and host networking; it must behave like `localfaas up`."""

from __future__ import annotations

import base64
import json
import os
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from tests.integration.daemon_fixtures import (
    BASE_IMAGE,
    ROOT,
    free_port,
    remove_instance_containers,
    test_function_image,  # noqa: F401 - fixture
)

pytestmark = [pytest.mark.docker, pytest.mark.slow]


def _call(
    url: str, method: str = "GET", body: bytes | None = None, auth: str | None = None
) -> tuple[int, bytes]:
    headers = {"Content-Type": "application/json"} if body else {}
    if auth:
        headers["Authorization"] = auth
    req = urllib.request.Request(url, data=body, method=method, headers=headers)
    try:
        with urllib.request.urlopen(req, timeout=10) as resp:
            return resp.status, resp.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()
    except OSError:
        return 0, b""


def _wait(predicate, what: str, timeout_s: float = 60.0) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout_s
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.1)


def test_daemon_image_deploys_and_invokes(tmp_path: Path, test_function_image: str) -> None:
    tag = f"localfaas-test/daemon:{os.getpid()}"
    env = {
        **os.environ,
        "LOCALFAAS_BASE_IMAGE": BASE_IMAGE,
        "LOCALFAAS_CACHE_DIR": str(tmp_path / "cache"),
    }
    build = subprocess.run(
        [str(ROOT / "scripts" / "build-daemon-image.sh"), tag],
        env={**env, "PYTHON": sys.executable},
        capture_output=True,
        timeout=600,
    )
    assert build.returncode == 0, build.stderr.decode()[-3000:]
    inspect = json.loads(
        subprocess.run(["docker", "image", "inspect", tag], capture_output=True, check=True).stdout
    )
    assert inspect[0]["Config"]["Healthcheck"]["Test"][0] == "CMD"

    state = tmp_path / "state"
    state.mkdir()
    port = free_port()
    name = f"localfaas-daemon-test-{os.getpid()}"
    run = subprocess.run(
        [
            "docker",
            "run",
            "-d",
            "--name",
            name,
            "--network",
            "host",
            "-v",
            "/var/run/docker.sock:/var/run/docker.sock",
            "-v",
            f"{state}:{state}",
            "-e",
            f"LOCALFAAS_STATE_DIR={state}",
            "-e",
            f"LOCALFAAS_PORT={port}",
            tag,
        ],
        capture_output=True,
    )
    assert run.returncode == 0, run.stderr.decode()
    url = f"http://127.0.0.1:{port}"
    try:
        _wait(lambda: _call(url + "/healthz")[0] == 200, "the daemon in the container to answer")
        password = (state / "basic-auth-password").read_text().strip()
        auth = "Basic " + base64.b64encode(f"admin:{password}".encode()).decode()
        status, body = _call(
            url + "/system/functions",
            "POST",
            json.dumps({"service": "probe", "image": test_function_image}).encode(),
            auth,
        )
        assert status == 202, body
        _wait(
            lambda: _call(url + "/function/probe")[0] == 200,
            "the function to answer through the containerised daemon",
        )
        status, body = _call(url + "/function/probe", "POST", b"x")
        assert status == 200 and json.loads(body)["version"] == "1"
        _wait(
            lambda: (
                json.loads(subprocess.run(["docker", "inspect", name], capture_output=True).stdout)[
                    0
                ]["State"]
                .get("Health", {})
                .get("Status")
                == "healthy"
            ),
            "HEALTHCHECK healthy",
            40,
        )
    finally:
        out = subprocess.run(["docker", "logs", name], capture_output=True)
        logs = (out.stdout + out.stderr).decode()
        subprocess.run(["docker", "rm", "-f", name], capture_output=True)
        remove_instance_containers(state)
        subprocess.run(["docker", "rmi", "-f", tag], capture_output=True)
    assert "gateway listening" in logs
