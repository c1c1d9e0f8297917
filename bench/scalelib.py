"""Helpers for the scaling benchmarks (bench/coldstart, bench/autoscale): a daemon whose log
lines are time-stamped to the microsecond as they arrive, Docker's own event stream for the
same function, the daemon's replica gauges, and the Docker Engine API over its socket.

The daemon's log format keeps whole seconds only, so the benchmark stamps each line itself on
arrival (Python's stderr is line-buffered, so a line arrives as it is logged).
"""

from __future__ import annotations

import http.client
import json
import os
import re
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.parse
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import benchlib
import daemonlib

DOCKER_SOCKET = os.environ.get("DOCKER_HOST", "unix:///var/run/docker.sock").removeprefix("unix://")
NAMESPACE = "openfaas-fn"


# -- Docker Engine API ----------------------------------------------------------------------


class _UnixConnection(http.client.HTTPConnection):
    def __init__(self, path: str, timeout: float = 60.0) -> None:
        super().__init__("localhost", timeout=timeout)
        self._path = path

    def connect(self) -> None:
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.settimeout(self.timeout)
        self.sock.connect(self._path)


class DockerAPI:
    """The few Engine API calls the benchmarks time, over one kept-alive socket (as the
    daemon's provider talks to Docker), so the baselines carry no CLI start-up cost."""

    def __init__(self, path: str = DOCKER_SOCKET) -> None:
        self._conn = _UnixConnection(path)

    def call(self, method: str, path: str, body: Any = None, params: dict[str, Any] | None = None) -> Any:
        if params:
            path += "?" + urllib.parse.urlencode({k: json.dumps(v) if isinstance(v, (dict, list)) else str(v).lower() if isinstance(v, bool) else v for k, v in params.items()})
        data = json.dumps(body).encode() if body is not None else None
        headers = {"Content-Type": "application/json"} if data is not None else {}
        self._conn.request(method, "/v1.41" + path, body=data, headers=headers)
        resp = self._conn.getresponse()
        raw = resp.read()
        if resp.status >= 300:
            raise RuntimeError(f"docker {method} {path}: {resp.status} {raw[:300]!r}")
        return json.loads(raw) if raw.strip() else None

    def close(self) -> None:
        self._conn.close()


def bridge_ip(info: dict[str, Any]) -> str | None:
    settings = info.get("NetworkSettings") or {}
    if settings.get("IPAddress"):
        return str(settings["IPAddress"])
    for net in (settings.get("Networks") or {}).values():
        if net.get("IPAddress"):
            return str(net["IPAddress"])
    return None


def endpoint(info: dict[str, Any]) -> tuple[str, int]:
    """Where to reach a container's watchdog: its bridge address (as the daemon does when it
    shares dockerd's network namespace), else the published loopback port."""
    ip = bridge_ip(info)
    if ip:
        return ip, 8080
    return "127.0.0.1", int(info["NetworkSettings"]["Ports"]["8080/tcp"][0]["HostPort"])


def get_once(host: str, port: int, path: str, timeout_s: float = 2.0) -> int:
    """One GET on a fresh connection; the status, or 0 when it could not connect."""
    conn = http.client.HTTPConnection(host, port, timeout=timeout_s)
    try:
        conn.request("GET", path)
        resp = conn.getresponse()
        resp.read()
        return resp.status
    except OSError:
        return 0
    finally:
        conn.close()


def poll_200(host: str, port: int, path: str, *, every_s: float = 0.001, timeout_s: float = 30.0) -> float:
    """Poll until 200; the time.time() it came."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if get_once(host, port, path) == 200:
            return time.time()
        time.sleep(every_s)
    raise RuntimeError(f"http://{host}:{port}{path} never answered 200")


# -- Docker events ----------------------------------------------------------------------------


@dataclass(frozen=True)
class DockerEvent:
    at: float  # time.time() of the event, from Docker's timeNano
    action: str
    container_id: str
    function: str


class DockerEvents:
    """Container events of one daemon instance's replicas, collected in a thread."""

    def __init__(self, instance_id: str) -> None:
        self.events: list[DockerEvent] = []
        self._lock = threading.Lock()
        filters = {"type": ["container"], "label": [f"com.localfaas.instance={instance_id}"]}
        self._conn = _UnixConnection(DOCKER_SOCKET, timeout=3600)
        self._conn.request("GET", "/v1.41/events?" + urllib.parse.urlencode({"filters": json.dumps(filters)}))
        self._resp = self._conn.getresponse()
        self._thread = threading.Thread(target=self._read, daemon=True, name="docker events")
        self._thread.start()

    def _read(self) -> None:
        try:
            while line := self._resp.readline():
                if not line.strip():
                    continue
                item = json.loads(line)
                attrs = (item.get("Actor") or {}).get("Attributes") or {}
                event = DockerEvent(item["timeNano"] / 1e9, item.get("Action", item.get("status", "")), item.get("id", ""), attrs.get("com.localfaas.function", ""))
                with self._lock:
                    self.events.append(event)
        except Exception:
            pass

    def between(self, function: str, start: float, end: float) -> list[DockerEvent]:
        with self._lock:
            return [e for e in self.events if e.function == function and start <= e.at <= end]

    def close(self) -> None:
        try:
            self._conn.sock.shutdown(socket.SHUT_RDWR)  # type: ignore[union-attr]
        except OSError:
            pass
        self._conn.close()


# -- a daemon with stamped log lines -------------------------------------------------------------


@dataclass
class LogLine:
    at: float  # time.time() the line arrived
    text: str


@dataclass
class StampedDaemon(daemonlib.Daemon):
    lines: list[LogLine] = field(default_factory=list)
    log_path: Path | None = None

    @property
    def instance_id(self) -> str:
        return (self.state_dir / "instance-id").read_text().strip()

    def lines_between(self, start: float, end: float, pattern: str) -> list[LogLine]:
        rx = re.compile(pattern)
        return [ln for ln in list(self.lines) if start <= ln.at <= end and rx.search(ln.text)]

    def replicas(self, name: str) -> dict[str, int]:
        """The daemon's replica gauges for ``name``: {starting, ready, draining, paused}."""
        with urllib.request.urlopen(self.url + "/metrics", timeout=10) as resp:
            text = resp.read().decode()
        counts = {"starting": 0, "ready": 0, "draining": 0, "paused": 0}
        qualified = re.escape(f"{name}.{NAMESPACE}")
        rx = re.compile(r'^localfaas_function_replicas\{function_name="' + qualified + r'",state="(\w+)"\} ([\d.]+)', re.M)
        for state, value in rx.findall(text):
            counts[state] = int(float(value))
        return counts

    def containers(self, name: str) -> list[dict[str, Any]]:
        """Docker's view of the function's containers (any state): id, state."""
        out = subprocess.run(
            ["docker", "ps", "-a", "--no-trunc", "--format", "{{.ID}} {{.State}}", "--filter", f"label=com.localfaas.instance={self.instance_id}", "--filter", f"label=com.localfaas.function={name}"],
            capture_output=True, text=True, check=True,
        ).stdout
        return [{"id": i, "state": s} for i, s in (line.split() for line in out.splitlines() if line.strip())]

    def wait_until(self, what: str, check: Any, timeout_s: float = 90.0, every_s: float = 0.05) -> float:
        """Poll ``check()`` until true; the seconds it took. RuntimeError naming ``what`` at timeout."""
        began = time.monotonic()
        while not check():
            if time.monotonic() - began > timeout_s:
                raise RuntimeError(f"timed out after {timeout_s:.0f}s waiting for {what}")
            time.sleep(every_s)
        return time.monotonic() - began


def start_stamped_daemon(env: dict[str, str] | None = None) -> StampedDaemon:
    """As daemonlib.start_daemon, but the log comes through a pipe and each line is stamped
    on arrival (and also written to a file, kept for inspection)."""
    state_dir = Path(tempfile.mkdtemp(prefix="bench-state-"))
    port = benchlib.free_port()
    cmd = [sys.executable, "-m", "runtime.cli", "up", "--port", str(port), "--state-dir", str(state_dir)]
    proc = subprocess.Popen(
        cmd, cwd=benchlib.ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
        env={**os.environ, "LOCALFAAS_BASE_IMAGE": daemonlib.base_image(), "PYTHONUNBUFFERED": "1", **(env or {})},
    )
    log_path = Path(tempfile.mkstemp(prefix="bench-daemon-", suffix=".log")[1])
    daemon = StampedDaemon(proc, f"http://127.0.0.1:{port}", state_dir, log_path=log_path)

    def read() -> None:
        assert proc.stdout is not None
        with log_path.open("w") as sink:
            for raw in proc.stdout:
                now = time.time()
                text = raw.decode(errors="replace").rstrip("\n")
                daemon.lines.append(LogLine(now, text))
                sink.write(f"{now:.6f} {text}\n")
                sink.flush()

    threading.Thread(target=read, daemon=True, name="daemon log").start()
    benchlib.wait_http(daemon.url + "/healthz")
    return daemon


# -- figures and the machine -------------------------------------------------------------------


def summary(values: list[float]) -> dict[str, float]:
    if not values:
        return {"n": 0}
    return {
        "n": len(values),
        "p50": benchlib.median(values),
        "p90": benchlib.percentile(values, 90),
        "min": min(values),
        "max": max(values),
    }


def fmt(value: float | None, digits: int = 0) -> str:
    if value is None or value != value:  # None or NaN
        return "–"
    return f"{value:,.{digits}f}"


def machine() -> dict[str, str]:
    def run(cmd: list[str]) -> str:
        try:
            return subprocess.run(cmd, capture_output=True, text=True, timeout=20).stdout.strip()
        except (OSError, subprocess.SubprocessError):
            return "?"

    return {
        "line": benchlib.machine_line(),
        "nproc": run(["nproc"]),
        "kernel": run(["uname", "-r"]),
        "docker": run(["docker", "version", "--format", "{{.Server.Version}}"]),
        "uptime": run(["uptime"]),
        "commit": run(["git", "-C", str(benchlib.ROOT), "rev-parse", "--short", "HEAD"]) + (" (+ uncommitted changes)" if run(["git", "-C", str(benchlib.ROOT), "status", "--porcelain", "--untracked-files=no"]) else ""),
    }


def loadavg() -> str:
    return " ".join(Path("/proc/loadavg").read_text().split()[:3])


def cpu_busy_fraction(interval_s: float = 1.0) -> float:
    """Share of the machine's CPU busy over ``interval_s`` (from /proc/stat)."""

    def snap() -> tuple[int, int]:
        fields = [int(x) for x in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
        idle = fields[3] + fields[4]
        return sum(fields), idle

    t1, i1 = snap()
    time.sleep(interval_s)
    t2, i2 = snap()
    return 1 - (i2 - i1) / max(t2 - t1, 1)
