"""Run the real daemon (`localfaas up`) as a child process against real Docker."""

from __future__ import annotations

import base64
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[2]
BASE_IMAGE = os.environ.get("LOCALFAAS_BASE_IMAGE", "localfaas/python-base:bookworm")

HANDLER = """import os, time, urllib.request


def handle(event, context):
    if event.path.startswith("/chain/"):
        # Function chaining: call another function through the gateway, as OpenFaaS functions do.
        url = os.environ["OPENFAAS_URL"] + "/function/" + event.path.rsplit("/", 1)[1]
        with urllib.request.urlopen(url, timeout=10) as resp:
            return resp.read()
    if event.path.startswith("/secret/"):
        name = event.path.rsplit("/", 1)[1]
        with open(f"/var/openfaas/secrets/{name}") as f:
            return f.read()
    if "sleep" in event.query:
        time.sleep(float(event.query["sleep"]))
    if event.path == "/log":
        print("log line from handler:", event.body.decode(), flush=True)
    # Async tests. /tmp is writable in every function container; call ids are [A-Za-z0-9_-].
    call_id = event.headers.get("X-Call-Id", "none")
    if event.path == "/flaky":
        # 503 for the first `fail` attempts of each call id, then 200.
        counter = "/tmp/flaky-" + call_id
        seen = int(open(counter).read()) if os.path.exists(counter) else 0
        with open(counter, "w") as f:
            f.write(str(seen + 1))
        if seen + 1 <= int(event.query.get("fail", "0")):
            return {"statusCode": 503, "body": f"failing attempt {seen + 1}"}
        return {"statusCode": 200, "body": {"attempt": seen + 1}}
    if event.path.startswith("/attempts/"):
        # How many times /flaky ran for a call id.
        counter = "/tmp/flaky-" + event.path.rsplit("/", 1)[1]
        return open(counter).read() if os.path.exists(counter) else "0"
    if event.path == "/count":
        # Every execution appends its call id (after the optional sleep: a finished run).
        with open("/tmp/count.log", "a") as f:
            f.write(call_id + "\\n")
        return {"statusCode": 200, "body": {"counted": call_id}}
    if event.path == "/counted":
        return open("/tmp/count.log").read() if os.path.exists("/tmp/count.log") else ""
    if event.path.startswith("/route-echo"):
        # HTTP routes: what a friendly path handed to the function.
        seen = {"path": event.path, "method": event.method, "x": event.query.get("x")}
        return {"statusCode": 200, "body": {**seen, "prefix": event.headers.get("X-Forwarded-Prefix")}}
    if event.headers.get("X-Connector") == "webhook":
        # Webhooks (always path /): log each run's delivery id; /webhook-log reads the log.
        with open("/tmp/webhook.log", "a") as f:
            f.write(event.headers.get("X-Webhook-Id", "") + "\\n")
        return {"statusCode": 200, "body": {"id": event.headers.get("X-Webhook-Id"), "size": len(event.body)}}
    if event.path == "/webhook-log":
        return open("/tmp/webhook.log").read() if os.path.exists("/tmp/webhook.log") else ""
    if event.headers.get("X-Connector") == "nats":
        # NATS subjects (always path /): log each run's X-Msg; /nats-log reads the log.
        with open("/tmp/nats.log", "a") as f:
            f.write(event.headers.get("X-Msg", "") + "\\n")
        body = {"topic": event.headers.get("X-Topic"), "body": event.body.decode()}
        return {"statusCode": 500 if event.headers.get("X-Fail") else 200, "body": body}
    if event.path == "/nats-log":
        return open("/tmp/nats.log").read() if os.path.exists("/tmp/nats.log") else ""
    if event.headers.get("X-Connector") == "cron":
        # Cron (always path /): log each run as call id|topic|schedule|fire time; /cron-log reads it.
        h = event.headers
        with open("/tmp/cron.log", "a") as f:
            f.write("|".join([call_id, h.get("X-Topic", ""), h.get("X-Schedule", ""), h.get("X-Fire-Time", "")]) + "\\n")
        return {"statusCode": 200, "body": {"fired": h.get("X-Fire-Time")}}
    if event.path == "/cron-log":
        return open("/tmp/cron.log").read() if os.path.exists("/tmp/cron.log") else ""
    return {"statusCode": 200, "body": {"version": os.environ.get("VERSION", "1"), "host": context.hostname}}
"""


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class Reply:
    status: int
    headers: Mapping[str, str]
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)


@dataclass
class DaemonProcess:
    state_dir: Path
    port: int
    proc: subprocess.Popen[bytes]
    log_path: Path
    env: dict[str, str] = field(default_factory=dict)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def auth(self) -> str:
        password = (self.state_dir / "basic-auth-password").read_text().strip()
        return "Basic " + base64.b64encode(f"admin:{password}".encode()).decode()

    def request(
        self,
        method: str,
        path: str,
        body: bytes | None = None,
        *,
        json_body: Any = None,
        headers: Mapping[str, str] | None = None,
        timeout_s: float = 30.0,
    ) -> Reply:
        hdrs = dict(headers or {})
        if json_body is not None:
            body = json.dumps(json_body).encode()
            hdrs["Content-Type"] = "application/json"
        if path.startswith("/system/"):
            hdrs.setdefault("Authorization", self.auth())
        req = urllib.request.Request(self.url + path, data=body, method=method, headers=hdrs)
        try:
            with urllib.request.urlopen(req, timeout=timeout_s) as resp:
                return Reply(resp.status, dict(resp.headers), resp.read())
        except urllib.error.HTTPError as exc:
            return Reply(exc.code, dict(exc.headers), exc.read())

    def cli(
        self, *args: str, stdin: bytes | None = None, check: bool = True
    ) -> subprocess.CompletedProcess[bytes]:
        env = {
            **os.environ,
            **self.env,
            "OPENFAAS_URL": self.url,
            "LOCALFAAS_STATE_DIR": str(self.state_dir),
            "LOCALFAAS_BASE_IMAGE": BASE_IMAGE,
        }
        result = subprocess.run(
            [sys.executable, "-m", "runtime.cli", *args],
            input=stdin,
            capture_output=True,
            env=env,
            cwd=ROOT,
            timeout=300,
        )
        if check and result.returncode != 0:
            raise AssertionError(
                f"localfaas {' '.join(args)} exited {result.returncode}: {result.stderr.decode()}"
            )
        return result

    def log(self) -> str:
        return self.log_path.read_text()

    def wait_for(self, predicate: Callable[[], bool], what: str, timeout_s: float = 30.0) -> None:
        deadline = time.monotonic() + timeout_s
        while not predicate():
            if self.proc.poll() is not None:
                raise AssertionError(
                    f"daemon exited ({self.proc.returncode}) while waiting for {what}:\n{self.log()}"
                )
            if time.monotonic() > deadline:
                raise AssertionError(
                    f"timed out after {timeout_s}s waiting for {what}\n{self.log()[-3000:]}"
                )
            time.sleep(0.05)

    def status(self, name: str, namespace: str = "openfaas-fn") -> dict[str, Any]:
        reply = self.request("GET", f"/system/function/{name}?namespace={namespace}")
        assert reply.status == 200, reply.body
        result: dict[str, Any] = reply.json()
        return result

    def wait_available(
        self, name: str, count: int, namespace: str = "openfaas-fn", timeout_s: float = 60.0
    ) -> None:
        def ok() -> bool:
            status = self.status(name, namespace)
            return bool(status["availableReplicas"] == count and status["replicas"] == count)

        self.wait_for(ok, f"{name} to have {count} available replicas", timeout_s)

    def stop(self, sig: int = signal.SIGTERM, timeout_s: float = 30.0) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(timeout=timeout_s)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        return self.proc.returncode


def start_daemon(
    state_dir: Path,
    log_path: Path,
    *,
    extra_env: Mapping[str, str] | None = None,
    args: tuple[str, ...] = (),
) -> DaemonProcess:
    port = free_port()
    env = {**os.environ, "LOCALFAAS_BASE_IMAGE": BASE_IMAGE, **(extra_env or {})}
    log_file = log_path.open("ab")
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "runtime.cli",
            "up",
            "--port",
            str(port),
            "--state-dir",
            str(state_dir),
            *args,
        ],
        stdout=log_file,
        stderr=subprocess.STDOUT,
        env=env,
        cwd=ROOT,
    )
    log_file.close()
    daemon = DaemonProcess(state_dir, port, proc, log_path, dict(extra_env or {}))

    def answers() -> bool:
        try:
            with urllib.request.urlopen(daemon.url + "/healthz", timeout=1):
                return True
        except urllib.error.HTTPError:
            return True  # up, possibly unhealthy: the test decides
        except OSError:
            return False

    daemon.wait_for(answers, "the daemon to listen", 30.0)
    return daemon


def docker_ids(label_value: str, *, status: str | None = None) -> set[str]:
    """Ids of the containers of a daemon instance, in any state or only in ``status``."""
    filters = ["--filter", f"label=com.localfaas.instance={label_value}"]
    if status is not None:
        filters += ["--filter", f"status={status}"]
    out = subprocess.run(
        ["docker", "ps", "-aq", "--no-trunc", *filters],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    return set(out.split())


def remove_instance_containers(state_dir: Path) -> None:
    instance_file = state_dir / "instance-id"
    if not instance_file.exists():
        return
    ids = docker_ids(instance_file.read_text().strip())
    if ids:
        subprocess.run(["docker", "rm", "-f", *ids], capture_output=True)


@pytest.fixture(scope="session")
def test_function_image(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """One python3-http image built by our own CLI (`localfaas build`), shared by the session."""
    root = tmp_path_factory.mktemp("fn-src")
    (root / "probe").mkdir()
    (root / "probe" / "handler.py").write_text(HANDLER)
    (root / "probe" / "requirements.txt").write_text("")
    image = f"localfaas-test/probe:{os.getpid()}"
    (root / "stack.yml").write_text(
        f"version: 1.0\nprovider:\n  name: openfaas\nfunctions:\n  probe:\n    lang: python3-http\n    handler: ./probe\n    image: {image}\n"
    )
    cache = tmp_path_factory.mktemp("build-cache")
    env = {**os.environ, "LOCALFAAS_BASE_IMAGE": BASE_IMAGE, "LOCALFAAS_CACHE_DIR": str(cache)}
    result = subprocess.run(
        [sys.executable, "-m", "runtime.cli", "build", "-f", str(root / "stack.yml")],
        capture_output=True,
        env=env,
        cwd=ROOT,
        timeout=600,
    )
    if result.returncode != 0:
        pytest.fail(f"building the test function failed:\n{result.stderr.decode()}", pytrace=False)
    yield image
    subprocess.run(["docker", "rmi", "-f", image], capture_output=True)


@pytest.fixture
def daemon_factory(tmp_path: Path) -> Iterator[Callable[..., DaemonProcess]]:
    started: list[DaemonProcess] = []

    def factory(state_dir: Path | None = None, **kwargs: Any) -> DaemonProcess:
        daemon = start_daemon(state_dir or tmp_path / "state", tmp_path / "daemon.log", **kwargs)
        started.append(daemon)
        return daemon

    yield factory
    for daemon in started:
        daemon.stop()
    for daemon in started:
        remove_instance_containers(daemon.state_dir)
