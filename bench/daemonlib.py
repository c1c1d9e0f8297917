"""Start a real daemon and build a benchmark function for benchmarks (bench/gateway, coldstart)."""

from __future__ import annotations

import base64
import json
import os
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import benchlib

HELLO = '''def handle(event, context):
    return {"statusCode": 200, "body": "Hello, world!"}
'''


def base_image() -> str:
    return os.environ.get("LOCALFAAS_BASE_IMAGE", "localfaas/python-base:bookworm")


def build_hello(image: str, cache_dir: Path, handler: str = HELLO) -> None:
    """Build a python3-http function (``handler``: the source of its handler.py) as ``image``."""
    root = Path(tempfile.mkdtemp(prefix="bench-fn-"))
    (root / "hello").mkdir()
    (root / "hello" / "handler.py").write_text(handler)
    (root / "stack.yml").write_text(
        f"version: 1.0\nfunctions:\n  hello:\n    lang: python3-http\n    handler: ./hello\n    image: {image}\n"
    )
    env = {**os.environ, "LOCALFAAS_BASE_IMAGE": base_image(), "LOCALFAAS_CACHE_DIR": str(cache_dir)}
    subprocess.run([sys.executable, "-m", "runtime.cli", "build", "-f", str(root / "stack.yml")], check=True, env=env, cwd=benchlib.ROOT, capture_output=True)


@dataclass
class Daemon:
    proc: subprocess.Popen[bytes]
    url: str
    state_dir: Path

    def auth(self) -> str:
        password = (self.state_dir / "basic-auth-password").read_text().strip()
        return "Basic " + base64.b64encode(f"admin:{password}".encode()).decode()

    def api(self, method: str, path: str, body: Any = None) -> tuple[int, Any]:
        data = json.dumps(body).encode() if body is not None else None
        req = urllib.request.Request(self.url + path, data=data, method=method, headers={"Authorization": self.auth(), "Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(req, timeout=30) as resp:
                raw = resp.read()
                return resp.status, json.loads(raw) if raw.startswith((b"{", b"[")) else raw
        except urllib.error.HTTPError as exc:
            return exc.code, exc.read()

    def deploy(self, name: str, image: str, **extra: Any) -> None:
        status, body = self.api("POST", "/system/functions", {"service": name, "image": image, **extra})
        if status != 202:
            raise RuntimeError(f"deploy {name}: {status} {body!r}")

    def wait_ready(self, name: str, count: int = 1, timeout_s: float = 120) -> None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            status, body = self.api("GET", f"/system/function/{name}")
            if status == 200 and body["availableReplicas"] >= count:
                return
            time.sleep(0.05)
        raise RuntimeError(f"{name} not ready in {timeout_s}s")

    def rss_mib(self) -> float:
        for line in Path(f"/proc/{self.proc.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
        raise RuntimeError("no VmRSS")

    def replica_ports(self, name: str) -> list[int]:
        instance = (self.state_dir / "instance-id").read_text().strip()
        ids = subprocess.run(["docker", "ps", "-q", "--filter", f"label=com.localfaas.instance={instance}", "--filter", f"label=com.localfaas.function={name}"], capture_output=True, text=True, check=True).stdout.split()
        ports = []
        for cid in ids:
            info = json.loads(subprocess.run(["docker", "inspect", cid], capture_output=True, check=True).stdout)[0]
            ports.append(int(info["NetworkSettings"]["Ports"]["8080/tcp"][0]["HostPort"]))
        return ports

    def stop(self) -> None:
        benchlib.stop(self.proc)
        instance = (self.state_dir / "instance-id").read_text().strip()
        ids = subprocess.run(["docker", "ps", "-aq", "--filter", f"label=com.localfaas.instance={instance}"], capture_output=True, text=True).stdout.split()
        if ids:
            subprocess.run(["docker", "rm", "-f", *ids], capture_output=True)


def start_daemon(*, cpu: int | None = None, env: dict[str, str] | None = None) -> Daemon:
    """A daemon on a free port with a fresh state dir; ``env`` adds settings (LOCALFAAS_*)."""
    state_dir = Path(tempfile.mkdtemp(prefix="bench-state-"))
    port = benchlib.free_port()
    cmd = [sys.executable, "-m", "runtime.cli", "up", "--port", str(port), "--state-dir", str(state_dir)]
    proc = benchlib.start(cmd, cwd=benchlib.ROOT, cpu=cpu, env={"LOCALFAAS_BASE_IMAGE": base_image(), **(env or {})})
    url = f"http://127.0.0.1:{port}"
    benchlib.wait_http(url + "/healthz")
    return Daemon(proc, url, state_dir)
