"""Watchdog start → ready inside a real container (n runs), against a bare `python3 -m
http.server` container on the same base image, and the idle watchdog's RSS."""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
import time
import urllib.request
from datetime import datetime
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
import benchlib  # noqa: E402
import daemonlib  # noqa: E402

IMAGE = "localfaas-bench/hello:latest"


def _started_at(cid: str) -> float:
    info = json.loads(subprocess.run(["docker", "inspect", cid], capture_output=True, check=True).stdout)[0]
    raw = info["State"]["StartedAt"]  # RFC 3339 with nanoseconds
    whole, _, frac = raw.rstrip("Z").partition(".")
    return datetime.fromisoformat(whole + "+00:00").timestamp() + float("0." + (frac or "0"))


def _port(cid: str) -> int:
    info = json.loads(subprocess.run(["docker", "inspect", cid], capture_output=True, check=True).stdout)[0]
    return int(info["NetworkSettings"]["Ports"]["8080/tcp"][0]["HostPort"])


def _first_200(url: str, timeout_s: float = 30.0) -> float:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(url, timeout=1) as resp:
                if resp.status == 200:
                    return time.time()
        except OSError:
            pass
        time.sleep(0.002)
    raise RuntimeError(f"{url} never answered")


def _one(args: list[str], path: str) -> tuple[float, float, str]:
    t0 = time.time()
    cid = subprocess.run(["docker", "run", "-d", "-p", "127.0.0.1::8080", *args], capture_output=True, text=True, check=True).stdout.strip()
    try:
        ready = _first_200(f"http://127.0.0.1:{_port(cid)}{path}")
        return ready - _started_at(cid), ready - t0, cid
    except BaseException:
        subprocess.run(["docker", "rm", "-f", cid], capture_output=True)
        raise


def _rss_mib(cid: str) -> float:
    info = json.loads(subprocess.run(["docker", "inspect", cid], capture_output=True, check=True).stdout)[0]
    for line in Path(f"/proc/{info['State']['Pid']}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError("no VmRSS")


def report(samples: int) -> None:
    daemonlib.build_hello(IMAGE, Path(tempfile.mkdtemp(prefix="bench-cache-")))
    variants = {
        "watchdog python mode (hello)": ([IMAGE], "/_/ready"),
        "bare python3 -m http.server (same base)": (["--user", "10001", daemonlib.base_image(), "python3", "-m", "http.server", "8080"], "/"),
    }
    rows = []
    rss = []
    for name, (args, path) in variants.items():
        inside, total = [], []
        for i in range(samples):
            start_to_ready, run_to_ready, cid = _one(args, path)
            inside.append(start_to_ready * 1000)
            total.append(run_to_ready * 1000)
            if i == 0 and "watchdog" in name:
                time.sleep(2)  # idle, after start-up work settled
                rss.append(_rss_mib(cid))
            subprocess.run(["docker", "rm", "-f", cid], capture_output=True)
        rows.append((name, samples, f"{benchlib.median(inside):.0f}", f"{benchlib.percentile(inside, 90):.0f}", f"{benchlib.median(total):.0f}", f"{benchlib.percentile(total, 90):.0f}"))
        print(f"  {name}: start→ready p50 {benchlib.median(inside):.0f} ms", file=sys.stderr)
    print("\nContainer start-up (StartedAt → first 200 on the ready path; `docker run` → first 200):\n")
    print(benchlib.table(rows, ("container", "n", "start→ready p50 ms", "p90 ms", "docker run→200 p50 ms", "p90 ms")))
    print(f"\nidle watchdog RSS (VmRSS of PID 1 in the container): {rss[0]:.1f} MiB (target ≤ 35 MB)")
