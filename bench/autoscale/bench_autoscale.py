"""Autoscaler reaction time: a load step that needs N replicas, until N replicas serve it.

A python3-http function that sleeps 50 ms and answers its container's hostname, scale type
`capacity` with target 4 in flight per replica (proportion 1.0), min 1. The load is C closed-loop
clients through the gateway on 127.0.0.1 (C = 4 × N, so the formula asks for N replicas). From
the moment the clients start, per round:

- decision: the daemon logs `scaled <fn> 1→N` (log lines stamped on arrival);
- available: `GET /system/function/<fn>` reports availableReplicas ≥ N (polled every 50 ms);
- serving: responses have come from N distinct replicas (hostnames).

Two functions, measured alternately: `scale-new`, whose extra replicas are removed between
rounds (so each round starts N − 1 new containers), and `scale-paused`, whose extras are paused
between rounds (the idle tier, so each round resumes them). The first round of each is a
warm-up and is reported apart.
"""

from __future__ import annotations

import argparse
import contextlib
import asyncio
import json
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
import benchlib
import daemonlib
import scalelib
from scalelib import fmt, summary

IMAGE = "localfaas-bench/autoscale-sleep:latest"
HANDLER = '''import time


def handle(event, context):
    time.sleep(0.05)
    return {"statusCode": 200, "body": context.hostname}
'''
TARGET_IN_FLIGHT = 4
TARGET_REACTION_S = 3.0
COMMON_LABELS = {
    "com.openfaas.scale.type": "capacity",
    "com.openfaas.scale.target": str(TARGET_IN_FLIGHT),
    "com.openfaas.scale.target-proportion": "1.0",
    "com.openfaas.scale.min": "1",
    "com.localfaas.scale.down-window": "2s",
    "com.localfaas.scale.pause-after": "2s",  # idle for 2 s: back to min, the extras paused
}
VARIANTS = {
    # Paused extras leave zero-duration − pause-after = 1 s after pausing: each round starts new containers.
    "scale-new": {**COMMON_LABELS, "com.openfaas.scale.zero-duration": "3s"},
    # Paused extras stay: each round resumes them.
    "scale-paused": {**COMMON_LABELS, "com.openfaas.scale.zero-duration": "1h"},
}


@dataclass
class Round:
    function: str
    number: int
    t0: float = 0.0
    responses: list[tuple[float, str, int]] = field(default_factory=list)  # (answered, hostname, status)
    available: list[tuple[float, int]] = field(default_factory=list)  # (polled, availableReplicas)
    decision_s: float | None = None
    decision_line: str = ""
    available_s: float | None = None
    serving_s: float | None = None
    last_started_s: float | None = None  # last Docker `start` / `unpause` event of the round
    containers_started: int = 0
    containers_resumed: int = 0
    errors: int = 0
    requests: int = 0
    max_available: int = 0
    busy: float = 0.0

    def figures(self) -> dict[str, Any]:
        return {k: v for k, v in self.__dict__.items() if k not in ("responses", "available")}


async def load(daemon: scalelib.StampedDaemon, rnd: Round, replicas: int, clients: int, max_s: float) -> None:
    url = f"{daemon.url}/function/{rnd.function}"
    status_url = f"{daemon.url}/system/function/{rnd.function}"
    auth = {"Authorization": daemon.auth()}
    stop = asyncio.Event()
    seen: set[str] = set()

    async def client(session: aiohttp.ClientSession) -> None:
        while not stop.is_set():
            try:
                async with session.get(url) as resp:
                    body = await resp.text()
                    now = time.time()
                    rnd.responses.append((now, body.strip() if resp.status == 200 else "", resp.status))
                    if resp.status == 200:
                        seen.add(body.strip())
                        if rnd.serving_s is None and len(seen) >= replicas:
                            rnd.serving_s = now - rnd.t0
                    else:
                        rnd.errors += 1
            except aiohttp.ClientError:
                rnd.errors += 1
                await asyncio.sleep(0.01)

    async def monitor(session: aiohttp.ClientSession) -> None:
        while not stop.is_set():
            async with session.get(status_url, headers=auth) as resp:
                count = int((await resp.json())["availableReplicas"])
            now = time.time()
            rnd.available.append((now, count))
            rnd.max_available = max(rnd.max_available, count)
            if rnd.available_s is None and count >= replicas:
                rnd.available_s = now - rnd.t0
            await asyncio.sleep(0.05)

    connector = aiohttp.TCPConnector(limit=clients + 4)
    async with aiohttp.ClientSession(connector=connector) as session:
        rnd.t0 = time.time()
        tasks = [asyncio.create_task(client(session)) for _ in range(clients)]
        tasks.append(asyncio.create_task(monitor(session)))
        deadline = time.monotonic() + max_s
        while time.monotonic() < deadline:
            if rnd.serving_s is not None and rnd.available_s is not None:
                await asyncio.sleep(1.0)  # a second of steady state, to see it hold
                break
            await asyncio.sleep(0.05)
        stop.set()
        await asyncio.gather(*tasks, return_exceptions=True)
    rnd.requests = len(rnd.responses)


def settled(daemon: scalelib.StampedDaemon, fn: str, paused_extras: int) -> bool:
    """Back to one ready replica, the extras paused (``paused_extras``) or removed."""
    counts = daemon.replicas(fn)
    if counts != {"starting": 0, "ready": 1, "draining": 0, "paused": paused_extras}:
        return False
    states = sorted(c["state"] for c in daemon.containers(fn))
    return states == sorted(["running"] + ["paused"] * paused_extras)


def run_round(daemon: scalelib.StampedDaemon, events: scalelib.DockerEvents, fn: str, number: int, args: argparse.Namespace, paused_extras: int) -> Round:
    daemon.wait_until(f"{fn} settled at 1 replica", lambda: settled(daemon, fn, paused_extras), timeout_s=120)
    time.sleep(args.settle)
    rnd = Round(fn, number)
    rnd.busy = scalelib.cpu_busy_fraction(0.5)
    asyncio.run(load(daemon, rnd, args.replicas, args.replicas * TARGET_IN_FLIGHT, args.max_seconds))
    t_end = time.time()
    time.sleep(0.1)
    qualified = f"{fn}.{scalelib.NAMESPACE}"
    line = next(iter(daemon.lines_between(rnd.t0, t_end, rf"scaled {qualified} 1→\d+")), None)
    if line is not None:
        rnd.decision_s = line.at - rnd.t0
        rnd.decision_line = line.text.split(": ", 1)[-1]
    evs = events.between(fn, rnd.t0, t_end)
    arrivals = [e for e in evs if e.action in ("start", "unpause")]
    rnd.containers_started = sum(1 for e in evs if e.action == "start")
    rnd.containers_resumed = sum(1 for e in evs if e.action == "unpause")
    if arrivals:
        rnd.last_started_s = max(e.at for e in arrivals[: args.replicas - 1]) - rnd.t0
    return rnd


def report(result: dict[str, Any], args: argparse.Namespace) -> None:
    m = result["machine"]
    print(f"\nMachine: {m['line']} · docker {m['docker']} · commit {m['commit']}")
    print(f"load before: {m['uptime']}")
    print(
        f"\n{args.replicas * TARGET_IN_FLIGHT} closed-loop clients (aiohttp, 127.0.0.1) against a python3-http function that sleeps 50 ms; "
        f"type capacity, target {TARGET_IN_FLIGHT}, proportion 1.0 → {args.replicas} replicas wanted; seconds from the load step\n"
    )
    rows = []
    for r in result["rounds"]:
        rows.append((
            r["function"] + (" (warm-up)" if r["number"] == 0 else ""), r["number"], f"{r['busy']:.0%}",
            fmt(r["decision_s"], 2), fmt(r["last_started_s"], 2), fmt(r["available_s"], 2), fmt(r["serving_s"], 2),
            f"{r['containers_started']} / {r['containers_resumed']}", r["max_available"], f"{r['requests']:,}", r["errors"],
        ))
    print(benchlib.table(rows, ("function", "round", "busy before", "decision s", "last replica started/resumed s", f"{args.replicas} available s", f"served by {args.replicas} s", "containers started / resumed", "max available", "requests", "errors")))
    print()
    for fn in VARIANTS:
        counted = [r for r in result["rounds"] if r["function"] == fn and r["number"] > 0]
        if not counted:
            continue
        s = summary([r["serving_s"] for r in counted if r["serving_s"] is not None])
        a = summary([r["available_s"] for r in counted if r["available_s"] is not None])
        d = summary([r["decision_s"] for r in counted if r["decision_s"] is not None])
        missed = sum(1 for r in counted if r["serving_s"] is None)
        worst = s.get("max", float("nan"))
        print(
            f"{fn}: decision p50 {fmt(d.get('p50'), 2)} s, {args.replicas} available p50 {fmt(a.get('p50'), 2)} s, "
            f"served by {args.replicas} p50 {fmt(s.get('p50'), 2)} s (max {fmt(worst, 2)} s; target ≤ {TARGET_REACTION_S:.0f} s: "
            f"{'met' if not missed and worst <= TARGET_REACTION_S else 'missed'})" + (f"; {missed} rounds never reached {args.replicas}" if missed else "")
        )
    print(f"daemon log (stamped): {result['daemon_log']}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--replicas", type=int, default=4, help="replicas the load needs (default 4; clients = 4 × this)")
    parser.add_argument("--rounds", type=int, default=3, help="measured rounds per function, after a warm-up round (default 3)")
    parser.add_argument("--max-seconds", type=float, default=20.0, help="give up on a round after this long (default 20)")
    parser.add_argument("--settle", type=float, default=1.0, help="seconds to wait once settled, before a round (default 1)")
    parser.add_argument("--json", action="store_true", help="print the figures (and every round) as JSON on stdout; the tables go to stderr")
    args = parser.parse_args()

    result: dict[str, Any] = {"machine": scalelib.machine(), "rounds": []}
    daemonlib.build_hello(IMAGE, Path(tempfile.mkdtemp(prefix="bench-cache-")), handler=HANDLER)
    daemon = scalelib.start_stamped_daemon()
    events = scalelib.DockerEvents(daemon.instance_id)
    try:
        for fn, labels in VARIANTS.items():
            daemon.deploy(fn, IMAGE, labels={**labels, "com.openfaas.scale.max": str(args.replicas * 2)})
        for fn in VARIANTS:
            daemon.wait_ready(fn)
        for number in range(args.rounds + 1):
            for fn in VARIANTS:
                extras = args.replicas - 1 if fn == "scale-paused" and number > 0 else 0
                rnd = run_round(daemon, events, fn, number, args, extras)
                result["rounds"].append(rnd.figures())
                print(f"  {fn} round {number}: decision {fmt(rnd.decision_s, 2)} s, available {fmt(rnd.available_s, 2)} s, served by {args.replicas} {fmt(rnd.serving_s, 2)} s", file=sys.stderr)
    finally:
        events.close()
        daemon.stop()
    result["daemon_log"] = str(daemon.log_path)
    if args.json:
        with contextlib.redirect_stdout(sys.stderr):  # the tables still show, on stderr
            report(result, args)
        print(json.dumps(result, indent=2))
    else:
        report(result, args)


if __name__ == "__main__":
    main()
