"""Cold start and resume through the gateway, each next to the bare Docker operation it rests on.

- cold start: a function at zero whose replica has been removed (labels: scale to zero, no
  paused tier, zero-duration 1s), one request through the gateway until its 200; beside it,
  the same container (the body the daemon's provider sends, built by the same code) created
  and started straight through the Docker API and polled every millisecond until its first 200.
- resume: a function whose one replica is paused (pause-after 1s; Docker says `paused` and the
  daemon counts it paused), one request until its 200; beside it, `unpause` of an identical
  paused container through the Docker API and a request straight to it.

The gateway and the bare variant alternate sample by sample, so both see the same machine.
Where the cold start's time goes comes from the daemon's log lines (stamped on arrival) and
Docker's own event stream: request → activator → container created → started → ready → 200.
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import http.client
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
import benchlib
import daemonlib
import scalelib
from scalelib import fmt, summary

IMAGE = "localfaas-bench/coldstart-hello:latest"
COLD, RESUME = "cold", "resume"
LABELS = {
    # At zero one second after its last request, and removed (no paused tier).
    COLD: {"com.openfaas.scale.zero": "true", "com.openfaas.scale.zero-duration": "1s", "com.localfaas.scale.pause-after": "0"},
    # Paused one second after its last request, and kept paused.
    RESUME: {"com.openfaas.scale.zero": "true", "com.localfaas.scale.pause-after": "1s", "com.openfaas.scale.zero-duration": "1h"},
}
TARGET_COLD_P50_MS = 450.0
TARGET_RESUME_P50_MS = 30.0


def request(daemon: scalelib.StampedDaemon, name: str) -> tuple[float, float, int]:
    """One GET /function/<name> on a fresh connection: (sent, answered) as time.time(), status."""
    host, port = daemon.url.removeprefix("http://").split(":")
    conn = http.client.HTTPConnection(host, int(port), timeout=60)
    t0 = time.time()
    conn.request("GET", f"/function/{name}")
    resp = conn.getresponse()
    resp.read()
    t1 = time.time()
    conn.close()
    return t0, t1, resp.status


# -- the bare Docker baselines -------------------------------------------------------------------


def baseline_config() -> dict[str, Any]:
    """The create body the daemon's provider sends for a replica of IMAGE (same code path)."""
    from runtime.models import FunctionSpec
    from runtime.provider.base import ReplicaRequest
    from runtime.provider.container_config import container_config

    user = json.loads(subprocess.run(["docker", "image", "inspect", IMAGE], capture_output=True, check=True).stdout)[0]["Config"].get("User")
    request_ = ReplicaRequest(FunctionSpec(name="baseline", image=IMAGE), 1, default_env={"OPENFAAS_URL": "http://gateway:8080"})
    return container_config(request_, instance_id="bench-baseline", image_user=user, host_cpus=os.cpu_count())


def bare_cold(api: scalelib.DockerAPI, config: dict[str, Any]) -> dict[str, float]:
    """create + start + inspect through the API, poll /_/ready every 1 ms, then GET / → 200."""
    t0 = time.time()
    cid = api.call("POST", "/containers/create", config)["Id"]
    t_created = time.time()
    try:
        api.call("POST", f"/containers/{cid}/start")
        t_started = time.time()
        info = api.call("GET", f"/containers/{cid}/json")
        t_inspected = time.time()
        host, port = scalelib.endpoint(info)
        t_ready = scalelib.poll_200(host, port, "/_/ready")
        status = scalelib.get_once(host, port, "/")
        t1 = time.time()
        if status != 200:
            raise RuntimeError(f"bare container answered {status}")
    finally:
        api.call("DELETE", f"/containers/{cid}", params={"force": True, "v": True})
    return {
        "total_ms": (t1 - t0) * 1000,
        "create_ms": (t_created - t0) * 1000,
        "start_ms": (t_started - t_created) * 1000,
        "inspect_ms": (t_inspected - t_started) * 1000,
        "started_to_ready_ms": (t_ready - t_started) * 1000,
        "ready_to_200_ms": (t1 - t_ready) * 1000,
    }


class PausedBare:
    """One bare container of IMAGE, kept paused between samples."""

    def __init__(self, api: scalelib.DockerAPI, config: dict[str, Any]) -> None:
        self.api = api
        self.cid = api.call("POST", "/containers/create", config)["Id"]
        api.call("POST", f"/containers/{self.cid}/start")
        self.host, self.port = scalelib.endpoint(api.call("GET", f"/containers/{self.cid}/json"))
        scalelib.poll_200(self.host, self.port, "/_/ready", every_s=0.01)
        scalelib.get_once(self.host, self.port, "/")
        self.pause_ms: list[float] = []
        self.pause_failures = 0

    def pause(self) -> None:
        for attempt in range(5):
            t0 = time.time()
            try:
                self.api.call("POST", f"/containers/{self.cid}/pause")
            except RuntimeError as exc:
                # cgroup v1's freezer gives up ("unable to freeze") now and then on a busy machine.
                self.pause_failures += 1
                if attempt == 4:
                    raise
                print(f"  bare pause failed, retrying: {exc}", file=sys.stderr)
                time.sleep(0.1)
                continue
            self.pause_ms.append((time.time() - t0) * 1000)
            return

    def resume(self) -> dict[str, float]:
        t0 = time.time()
        self.api.call("POST", f"/containers/{self.cid}/unpause")
        t_unpaused = time.time()
        status = scalelib.get_once(self.host, self.port, "/")
        t1 = time.time()
        if status != 200:
            raise RuntimeError(f"bare container answered {status} after unpause")
        return {"total_ms": (t1 - t0) * 1000, "unpause_ms": (t_unpaused - t0) * 1000, "unpaused_to_200_ms": (t1 - t_unpaused) * 1000}

    def remove(self) -> None:
        self.api.call("DELETE", f"/containers/{self.cid}", params={"force": True, "v": True})


def docker_variants(api: scalelib.DockerAPI, config: dict[str, Any], samples: int) -> dict[str, dict[str, list[float]]]:
    """Docker's create and start calls alone (no readiness) for the daemon's container body and
    for variants without parts of it, alternating: which part of `start` our config costs."""

    def variant(change: Any) -> dict[str, Any]:
        body = copy.deepcopy(config)
        change(body["HostConfig"])
        return body

    def no_port(hc: dict[str, Any]) -> None:
        hc.pop("PortBindings", None)

    def no_port_hosts(hc: dict[str, Any]) -> None:
        no_port(hc)
        hc.pop("ExtraHosts", None)

    def no_limits(hc: dict[str, Any]) -> None:
        for key in ("Memory", "MemorySwap", "PidsLimit", "NanoCpus", "CpuShares", "MemoryReservation"):
            hc.pop(key, None)

    def no_network(hc: dict[str, Any]) -> None:
        no_port_hosts(hc)
        hc["NetworkMode"] = "none"

    bodies = {
        "as the daemon creates it": config,
        "without the published loopback port": variant(no_port),
        "without port and host-gateway entry": variant(no_port_hosts),
        "without memory/pids/cpu limits": variant(no_limits),
        "no network at all (NetworkMode none)": variant(no_network),
    }
    out: dict[str, dict[str, list[float]]] = {name: {"create_ms": [], "start_ms": []} for name in bodies}
    for _ in range(samples):
        for name, body in bodies.items():
            t0 = time.time()
            cid = api.call("POST", "/containers/create", body)["Id"]
            t1 = time.time()
            api.call("POST", f"/containers/{cid}/start")
            t2 = time.time()
            api.call("DELETE", f"/containers/{cid}", params={"force": True, "v": True})
            out[name]["create_ms"].append((t1 - t0) * 1000)
            out[name]["start_ms"].append((t2 - t1) * 1000)
            time.sleep(0.3)
    return out


# -- through the gateway -------------------------------------------------------------------------


def at_zero(daemon: scalelib.StampedDaemon, name: str) -> bool:
    # At rest at zero: no replica, and the standby (created, never started) that the daemon
    # keeps for the next cold start.
    return not any(daemon.replicas(name).values()) and [
        c["state"] for c in daemon.containers(name)
    ] == ["created"]


def paused(daemon: scalelib.StampedDaemon, name: str) -> bool:
    counts = daemon.replicas(name)
    if counts != {"starting": 0, "ready": 0, "draining": 0, "paused": 1}:
        return False
    return [c["state"] for c in daemon.containers(name)] == ["paused"]


def _first(items: list[Any]) -> Any:
    return items[0] if items else None


def gateway_cold(daemon: scalelib.StampedDaemon, events: scalelib.DockerEvents) -> dict[str, float | None]:
    waited_s = daemon.wait_until(f"{COLD} at zero with no container", lambda: at_zero(daemon, COLD))
    time.sleep(0.3)  # let dockerd finish the removal's aftermath
    t0, t1, status = request(daemon, COLD)
    if status != 200:
        raise RuntimeError(f"cold request answered {status}")
    time.sleep(0.05)  # the last log lines and events
    fn = f"{COLD}.{scalelib.NAMESPACE}"
    act = _first(daemon.lines_between(t0, t1, rf"scaled {fn} 0→1 .*reason=activator"))
    started = _first(daemon.lines_between(t0, t1, rf"replica started {fn} "))
    ready = _first(daemon.lines_between(t0, t1, rf"replica \S+ of {fn} ready"))
    evs = events.between(COLD, t0, t1)
    created = _first([e for e in evs if e.action == "create"])
    run = _first([e for e in evs if e.action == "start"])

    def span(a: Any, b: Any) -> float | None:
        return (b.at - a.at) * 1000 if a is not None and b is not None else None

    begin, end = scalelib.LogLine(t0, ""), scalelib.LogLine(t1, "")
    return {
        "total_ms": (t1 - t0) * 1000,
        "waited_for_zero_s": waited_s,
        "request_to_activator_ms": span(begin, act),
        "activator_to_created_ms": span(act, created),
        "created_to_started_ms": span(created, run),
        "started_to_provider_ms": span(run, started),
        "provider_to_ready_ms": span(started, ready),
        "started_to_ready_ms": span(run, ready),
        "ready_to_200_ms": span(ready, end),
    }


def gateway_resume(daemon: scalelib.StampedDaemon, events: scalelib.DockerEvents) -> dict[str, float | None]:
    began = time.monotonic()
    restarts = 0

    def ready_to_time() -> bool:
        nonlocal restarts
        if paused(daemon, RESUME):
            return True
        if at_zero(daemon, RESUME):
            # The daemon could not pause it (it then removes the replica): start one, untimed.
            restarts += 1
            print("  resume: replica was removed instead of paused; starting another", file=sys.stderr)
            request(daemon, RESUME)
        return False

    daemon.wait_until(f"{RESUME} paused", ready_to_time)
    waited_s = time.monotonic() - began
    time.sleep(0.1)
    t0, t1, status = request(daemon, RESUME)
    if status != 200:
        raise RuntimeError(f"resume request answered {status}")
    time.sleep(0.05)
    fn = f"{RESUME}.{scalelib.NAMESPACE}"
    act = _first(daemon.lines_between(t0, t1, rf"scaled {fn} 0→1 .*reason=activator"))
    unpause = _first([e for e in events.between(RESUME, t0, t1) if e.action == "unpause"])
    return {
        "total_ms": (t1 - t0) * 1000,
        "waited_for_pause_s": waited_s,
        "request_to_activator_ms": (act.at - t0) * 1000 if act else None,
        "activator_to_unpaused_ms": (unpause.at - act.at) * 1000 if act and unpause else None,
        "unpaused_to_200_ms": (t1 - unpause.at) * 1000 if unpause else None,
        "removed_instead_of_paused": restarts,
        "started_new_replica": bool([e for e in events.between(RESUME, t0, t1) if e.action == "start"]),
    }


# -- report --------------------------------------------------------------------------------------


def col(samples: list[dict[str, Any]], key: str) -> list[float]:
    return [s[key] for s in samples if s.get(key) is not None]


def row(label: str, values: list[float]) -> tuple[str, ...]:
    s = summary(values)
    return (label, str(s["n"]), *(fmt(s.get(k)) for k in ("p50", "p90", "min", "max")))


def report(result: dict[str, Any]) -> None:
    cold, bare_c = result["cold"]["gateway"], result["cold"]["bare"]
    resume, bare_r = result["resume"]["gateway"], result["resume"]["bare"]
    m = result["machine"]
    print(f"\nMachine: {m['line']} · docker {m['docker']} · commit {m['commit']}")
    print(f"load before: {m['uptime']}; machine busy before each phase: " + ", ".join(f"{k} {v:.0%}" for k, v in result["busy_before"].items()))
    print(f"\nfunction: python3-http hello ({IMAGE}, watchdog python mode); {result['samples']} samples each, gateway and bare alternating\n")
    rows = []
    if cold:
        rows += [row("cold start via gateway (replica removed → first 200)", col(cold, "total_ms")),
                 row("  bare: Docker API create+start → first 200 (1 ms poll)", col(bare_c, "total_ms"))]
    if resume:
        rows += [row("resume via gateway (paused → first 200)", col(resume, "total_ms")),
                 row("  bare: Docker API unpause → first 200", col(bare_r, "total_ms"))]
    print(benchlib.table(rows, ("path", "n", "p50 ms", "p90 ms", "min ms", "max ms")))

    def p50(samples: list[dict[str, Any]], key: str | None) -> str:
        return fmt(summary(col(samples, key)).get("p50"), 1) if key else "–"

    if cold:
        print("\nCold start, where the time goes (p50 ms of each stage; from the daemon's log stamped on arrival and Docker's events):\n")
        stages = [
            ("request → activator scales 0→1", "request_to_activator_ms", None),
            ("activator → container created (Docker `create` event)", "activator_to_created_ms", "create_ms"),
            ("created → started (Docker `start` event)", "created_to_started_ms", "start_ms"),
            ("started → provider done (inspect, log line)", "started_to_provider_ms", "inspect_ms"),
            ("provider → ready probe passed (watchdog boot + probe)", "provider_to_ready_ms", None),
            ("(started → ready, both)", "started_to_ready_ms", "started_to_ready_ms"),
            ("ready → 200 at the client (proxy + first call)", "ready_to_200_ms", "ready_to_200_ms"),
        ]
        print(benchlib.table([(label, p50(cold, ours), p50(bare_c, bare)) for label, ours, bare in stages], ("stage", "via gateway p50 ms", "bare p50 ms")))
    if resume:
        print("\nResume, where the time goes (p50 ms):\n")
        print(benchlib.table([
            ("request → activator", p50(resume, "request_to_activator_ms"), "–"),
            ("activator → unpaused (Docker `unpause` event) / the unpause call", p50(resume, "activator_to_unpaused_ms"), p50(bare_r, "unpause_ms")),
            ("unpaused → 200", p50(resume, "unpaused_to_200_ms"), p50(bare_r, "unpaused_to_200_ms")),
        ], ("stage", "via gateway p50 ms", "bare p50 ms")))
        restarted = sum(1 for s in resume if s.get("started_new_replica"))
        if restarted:
            print(f"\nwarning: {restarted} resume samples started a new container instead of resuming")
        removed = sum(s.get("removed_instead_of_paused", 0) for s in resume)
        if removed or result["resume"].get("bare_pause_failures"):
            print(f"\nfreezer failures: the daemon removed {removed} replicas it could not pause; bare `pause` failed {result['resume'].get('bare_pause_failures', 0)} times (retried)")
        if result["resume"]["bare_pause_ms"]:
            print(f"\nbare `pause` call p50 {benchlib.median(result['resume']['bare_pause_ms']):.1f} ms")
    if result.get("docker_variants"):
        print("\nDocker alone, by container body (create and start calls only, no readiness; p50 / min ms):\n")
        print(benchlib.table(
            [(name, len(v["start_ms"]), f"{benchlib.median(v['create_ms']):.1f}", f"{benchlib.median(v['start_ms']):.0f} / {min(v['start_ms']):.0f}") for name, v in result["docker_variants"].items()],
            ("container body", "n", "create p50 ms", "start p50 / min ms"),
        ))
    print()
    if cold:
        c50 = benchlib.median(col(cold, "total_ms"))
        vs = f", {c50 - benchlib.median(col(bare_c, 'total_ms')):+.0f} ms vs bare Docker" if bare_c else ""
        print(f"cold start p50 {c50:.0f} ms (target ≤ {TARGET_COLD_P50_MS:.0f} ms: {'met' if c50 <= TARGET_COLD_P50_MS else 'missed'}){vs}")
    if resume:
        r50 = benchlib.median(col(resume, "total_ms"))
        vs = f", {r50 - benchlib.median(col(bare_r, 'total_ms')):+.1f} ms vs bare Docker" if bare_r else ""
        print(f"resume p50 {r50:.1f} ms (target ≤ {TARGET_RESUME_P50_MS:.0f} ms: {'met' if r50 <= TARGET_RESUME_P50_MS else 'missed'}){vs}")
    print(f"daemon log (stamped): {result['daemon_log']}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--samples", type=int, default=20, help="samples of each kind (default 20)")
    parser.add_argument("--only", choices=("cold", "resume"), help="measure one kind only")
    parser.add_argument("--no-bare", action="store_true", help="skip the bare Docker baselines")
    parser.add_argument("--docker-variants", type=int, default=0, metavar="N", help="also time Docker create/start alone for the daemon's container body and variants without parts of it, N each")
    parser.add_argument("--json", action="store_true", help="print the figures (and every sample) as JSON on stdout; the tables go to stderr")
    args = parser.parse_args()

    result: dict[str, Any] = {"samples": args.samples, "machine": scalelib.machine(), "busy_before": {}}
    daemonlib.build_hello(IMAGE, Path(tempfile.mkdtemp(prefix="bench-cache-")))
    daemon = scalelib.start_stamped_daemon()
    events = scalelib.DockerEvents(daemon.instance_id)
    api = scalelib.DockerAPI()
    config = baseline_config()
    result["cold"] = {"gateway": [], "bare": []}
    result["resume"] = {"gateway": [], "bare": [], "bare_pause_ms": []}
    bare_paused: PausedBare | None = None
    try:
        if args.only in (None, "cold"):
            daemon.deploy(COLD, IMAGE, labels=LABELS[COLD])
            daemon.wait_ready(COLD)
            result["busy_before"]["cold"] = scalelib.cpu_busy_fraction()
            for i in range(args.samples):
                sample = gateway_cold(daemon, events)
                result["cold"]["gateway"].append(sample)
                line = f"  cold {i + 1}/{args.samples}: {sample['total_ms']:.0f} ms"
                if not args.no_bare:
                    bare = bare_cold(api, config)
                    result["cold"]["bare"].append(bare)
                    line += f" (bare {bare['total_ms']:.0f} ms)"
                print(line, file=sys.stderr)
        if args.only in (None, "resume"):
            daemon.deploy(RESUME, IMAGE, labels=LABELS[RESUME])  # paused a second after it is ready
            if not args.no_bare:
                bare_paused = PausedBare(api, config)
            result["busy_before"]["resume"] = scalelib.cpu_busy_fraction()
            for i in range(args.samples):
                sample = gateway_resume(daemon, events)
                result["resume"]["gateway"].append(sample)
                line = f"  resume {i + 1}/{args.samples}: {sample['total_ms']:.1f} ms"
                if bare_paused is not None:
                    time.sleep(0.2)
                    bare_paused.pause()
                    time.sleep(0.2)
                    bare = bare_paused.resume()
                    result["resume"]["bare"].append(bare)
                    line += f" (bare {bare['total_ms']:.1f} ms)"
                print(line, file=sys.stderr)
            if bare_paused is not None:
                result["resume"]["bare_pause_ms"] = bare_paused.pause_ms
                result["resume"]["bare_pause_failures"] = bare_paused.pause_failures
        if args.docker_variants:
            result["docker_variants"] = docker_variants(api, config, args.docker_variants)
    finally:
        if bare_paused is not None:
            bare_paused.remove()
        events.close()
        api.close()
        daemon.stop()
    result["daemon_log"] = str(daemon.log_path)
    result["summary"] = {
        "cold_gateway_ms": summary(col(result["cold"]["gateway"], "total_ms")),
        "cold_bare_ms": summary(col(result["cold"]["bare"], "total_ms")),
        "resume_gateway_ms": summary(col(result["resume"]["gateway"], "total_ms")),
        "resume_bare_ms": summary(col(result["resume"]["bare"], "total_ms")),
    }
    if args.json:
        with contextlib.redirect_stdout(sys.stderr):  # the tables still show, on stderr
            report(result)
        print(json.dumps(result, indent=2))
    else:
        report(result)


if __name__ == "__main__":
    main()
