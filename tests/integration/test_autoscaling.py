"""Autoscaling, scale to zero, the paused tier and the activator, end to end: the real daemon
(`localfaas up`) with its 1-second autoscaler, real Docker containers, real pause/unpause.

Labels are short (seconds, not minutes) so the file stays quick; every wait is a poll with a
deadline. The figures each test sees (cold start, resume, scale-up time) are printed: run with
``-s`` to read them.
"""

from __future__ import annotations

import re
import subprocess
import threading
import time
from collections import Counter
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

import pytest

from tests.integration.daemon_fixtures import (
    DaemonProcess,
    Reply,
    daemon_factory,  # noqa: F401 - fixture
    docker_ids,
    test_function_image,  # noqa: F401 - fixture
)

pytestmark = [pytest.mark.docker, pytest.mark.slow]
Factory = Callable[..., DaemonProcess]

NS = "openfaas-fn"
SCALE = "com.openfaas.scale."
LOCAL = "com.localfaas.scale."


def deploy(
    daemon: DaemonProcess, image: str, name: str, labels: dict[str, str], **extra: object
) -> None:
    reply = daemon.request(
        "POST",
        "/system/functions",
        json_body={"service": name, "image": image, "labels": labels, **extra},
    )
    assert reply.status == 202, reply.body


def containers(daemon: DaemonProcess) -> set[str]:
    """The daemon's containers that run (or are paused): not the standby a function at zero
    keeps created, never started, for its next cold start."""
    instance = (daemon.state_dir / "instance-id").read_text().strip()
    return docker_ids(instance) - standbys(instance)


def standbys(instance: str) -> set[str]:
    return docker_ids(instance, status="created")


def docker_state(container_id: str) -> str:
    """Docker's state of a container ("running", "paused", ...), or "gone"."""
    result = subprocess.run(
        ["docker", "inspect", "-f", "{{.State.Status}}", container_id],
        capture_output=True,
        text=True,
    )
    return result.stdout.strip() if result.returncode == 0 else "gone"


def replicas(daemon: DaemonProcess, name: str) -> tuple[int, int]:
    """(replicas, availableReplicas) as the API reports them."""
    status = daemon.status(name)
    return int(status["replicas"]), int(status["availableReplicas"])


def timed(daemon: DaemonProcess, path: str, timeout_s: float = 30.0) -> tuple[Reply, float]:
    began = time.perf_counter()
    reply = daemon.request("GET", path, timeout_s=timeout_s)
    return reply, (time.perf_counter() - began) * 1000


def scaled_lines(log: str, name: str) -> list[str]:
    """The autoscaler's decisions for ``name`` (`scaled NAME.NS 1→4 type=... `)."""
    return re.findall(rf"scaled {re.escape(name)}\.{NS} \d+→\d+ .*", log)


class Load:
    """``clients`` threads calling ``path`` back to back until stopped; counts statuses."""

    def __init__(self, daemon: DaemonProcess, path: str, clients: int) -> None:
        self._daemon, self._path = daemon, path
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self.statuses: Counter[int] = Counter()
        self._threads = [threading.Thread(target=self._run, daemon=True) for _ in range(clients)]

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                status = self._daemon.request("GET", self._path, timeout_s=30).status
            except OSError:
                status = -1  # connection refused, reset or timed out: a failure too
            with self._lock:
                self.statuses[status] += 1

    def __enter__(self) -> Load:
        for thread in self._threads:
            thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(timeout=60)


def test_load_step_scales_up_then_back_to_min_after_the_down_window(
    daemon_factory: Factory, test_function_image: str
) -> None:
    daemon = daemon_factory()
    # 8 clients each keeping a 100 ms request in flight: capacity 8 over a target of 2 per
    # replica → ceil(8 / (2 * 1.0)) = 4 replicas. max 6 leaves room to see an overshoot.
    # pause-after 0: no idle tier, so the way down is the policy's own (stable window, down
    # window, at most halving per step) and leaving replicas are removed.
    deploy(
        daemon,
        test_function_image,
        "stepper",
        {
            SCALE + "type": "capacity",
            SCALE + "target": "2",
            SCALE + "target-proportion": "1.0",
            SCALE + "min": "1",
            SCALE + "max": "6",
            LOCAL + "down-window": "5s",
            LOCAL + "pause-after": "0",
        },
    )
    daemon.wait_available("stepper", 1)
    assert len(containers(daemon)) == 1

    with Load(daemon, "/function/stepper?sleep=0.1", clients=8) as heavy:
        began = time.monotonic()
        daemon.wait_for(lambda: replicas(daemon, "stepper") == (4, 4), "4 replicas", 5.0)
        up_s = time.monotonic() - began
        # Held steady under the same load: no overshoot, no flapping.
        seen: set[int] = set()
        hold_until = time.monotonic() + 3.0
        while time.monotonic() < hold_until:
            seen.add(replicas(daemon, "stepper")[0])
            time.sleep(0.2)
        assert seen == {4}, seen
    load_stopped = time.monotonic()
    assert len(containers(daemon)) == 4

    # The load steps down to one client; replicas go back to min, without a failed request
    # (a leaving replica is drained first).
    with Load(daemon, "/function/stepper?sleep=0.1", clients=1) as light:
        first_down: float | None = None

        def at_min() -> bool:
            nonlocal first_down
            count, available = replicas(daemon, "stepper")
            if count < 4 and first_down is None:
                first_down = time.monotonic()
            return (count, available) == (1, 1) and len(containers(daemon)) == 1

        daemon.wait_for(at_min, "back to 1 replica", 60.0)
        down_s = time.monotonic() - load_stopped
    assert first_down is not None
    # Not before a down window (5 s) past the last high recommendation (the load's end).
    assert first_down - load_stopped >= 5.0 - 0.5, first_down - load_stopped

    failures = {s: n for s, n in (heavy.statuses + light.statuses).items() if s != 200}
    assert failures == {}, failures
    assert heavy.statuses[200] > 100 and light.statuses[200] > 10
    decisions = scaled_lines(daemon.log(), "stepper")
    # Up in panic (the first second's peak may not yet be all 8), never above 4.
    assert any(re.search(r"→4 type=capacity load=\S+ panic=yes", d) for d in decisions), decisions
    assert max(int(m) for m in re.findall(r"→(\d+)", " ".join(decisions))) == 4, decisions
    print(
        f"\nload step: 1→4 ready in {up_s:.2f}s; first step down "
        f"{first_down - load_stopped:.1f}s and back to 1 in {down_s:.1f}s after the load ended; "
        f"{heavy.statuses[200] + light.statuses[200]} requests, all 200; decisions: {decisions}"
    )


def test_burst_at_zero_starts_exactly_one_replica(
    daemon_factory: Factory, test_function_image: str
) -> None:
    daemon = daemon_factory()
    # Scale to zero after 3 s idle, no paused tier (pause-after 0: removed, not frozen). A high
    # rps target, so the burst itself does not make the autoscaler want a second replica:
    # a second container could then only come from the activator starting one twice.
    deploy(
        daemon,
        test_function_image,
        "bursty",
        {
            SCALE + "zero": "true",
            SCALE + "zero-duration": "3s",
            SCALE + "target": "1000",
            LOCAL + "pause-after": "0",
        },
    )
    daemon.wait_available("bursty", 1)
    daemon.wait_for(
        lambda: replicas(daemon, "bursty") == (0, 0) and not containers(daemon),
        "scale to zero (no container left)",
        20.0,
    )
    instance = (daemon.state_dir / "instance-id").read_text().strip()
    daemon.wait_for(lambda: len(standbys(instance)) == 1, "a standby container at zero", 20.0)
    (standby,) = standbys(instance)
    log_mark = len(daemon.log())

    # Every container id Docker shows while the burst runs.
    seen: set[str] = set()
    sampling = threading.Event()

    def sample() -> None:
        while not sampling.is_set():
            seen.update(containers(daemon))
            time.sleep(0.05)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    barrier = threading.Barrier(100)

    def call(_: int) -> tuple[int, float]:
        barrier.wait()
        try:
            reply, ms = timed(daemon, "/function/bursty", timeout_s=60)
        except OSError:
            return -1, 0.0
        return reply.status, ms

    try:
        with ThreadPoolExecutor(100) as pool:
            results = list(pool.map(call, range(100)))
    finally:
        sampling.set()
        sampler.join()
    seen.update(containers(daemon))

    statuses = Counter(status for status, _ in results)
    assert statuses == {200: 100}, statuses
    assert seen == {standby}, seen  # the standby was started: no `docker create` on the way
    burst_log = daemon.log()[log_mark:]
    started = re.findall(r"replica started bursty\.openfaas-fn ", burst_log)
    assert len(started) == 1, burst_log
    assert len(re.findall(r"scaled bursty\.openfaas-fn 0→1 reason=activator", burst_log)) == 1
    times = sorted(ms for _, ms in results)
    print(
        f"\nburst of 100 at zero: 1 container; first answer {times[0]:.0f} ms (cold start), "
        f"median {times[50]:.0f} ms, last {times[-1]:.0f} ms"
    )


def test_paused_tier_resume_then_removal(daemon_factory: Factory, test_function_image: str) -> None:
    daemon = daemon_factory()
    # Idle 2 s → paused; idle 6 s in all (4 s paused) → removed.
    deploy(
        daemon,
        test_function_image,
        "napper",
        {
            SCALE + "zero": "true",
            SCALE + "zero-duration": "6s",
            LOCAL + "pause-after": "2s",
        },
    )
    daemon.wait_available("napper", 1)
    (container,) = containers(daemon)
    statuses: Counter[int] = Counter()
    warm = []
    for _ in range(5):
        reply, ms = timed(daemon, "/function/napper")
        statuses[reply.status] += 1
        warm.append(ms)
    last_request = time.monotonic()

    daemon.wait_for(lambda: docker_state(container) == "paused", "the replica to be paused", 10)
    paused_after_s = time.monotonic() - last_request
    assert paused_after_s >= 2.0 - 0.2, paused_after_s
    assert replicas(daemon, "napper") == (0, 0)

    # A request resumes the same container (no cold start) and is answered.
    reply, resume_ms = timed(daemon, "/function/napper")
    statuses[reply.status] += 1
    assert reply.status == 200, reply.body
    assert docker_state(container) == "running"
    assert containers(daemon) == {container}
    for _ in range(3):
        reply, ms = timed(daemon, "/function/napper")
        statuses[reply.status] += 1
        warm.append(ms)
    assert replicas(daemon, "napper") == (1, 1)
    last_request = time.monotonic()

    # Idle again: paused, then (zero-duration 6 s - pause-after 2 s = 4 s later) removed.
    daemon.wait_for(lambda: docker_state(container) == "paused", "paused again", 10)
    paused_at = time.monotonic()
    # Removal starts (Docker thaws it to stop it) once it was paused for 4 s, not a resync late.
    daemon.wait_for(lambda: docker_state(container) != "paused", "removal to start", 15)
    kept_paused_s = time.monotonic() - paused_at
    assert 4.0 - 0.5 <= kept_paused_s <= 4.0 + 0.7, kept_paused_s
    daemon.wait_for(lambda: not containers(daemon), "the paused replica to be removed", 20)
    removed_after_s = time.monotonic() - last_request
    assert replicas(daemon, "napper") == (0, 0)

    # From nothing: a cold start, answered too.
    reply, cold_ms = timed(daemon, "/function/napper")
    statuses[reply.status] += 1
    assert statuses == {200: 10}, statuses
    assert len(containers(daemon)) == 1 and containers(daemon) != {container}
    log = daemon.log()
    assert "replica paused napper.openfaas-fn" in log and "replica unpaused napper" in log
    warm.sort()
    print(
        f"\npaused tier: paused {paused_after_s:.1f}s after the last request; resume request "
        f"{resume_ms:.0f} ms (warm median {warm[len(warm) // 2]:.0f} ms); kept paused "
        f"{kept_paused_s:.1f}s, container gone {removed_after_s:.1f}s after the last request; "
        f"cold start request {cold_ms:.0f} ms"
    )


def test_long_request_is_not_cut_by_the_reaper(
    daemon_factory: Factory, test_function_image: str
) -> None:
    daemon = daemon_factory()
    deploy(
        daemon,
        test_function_image,
        "longcall",
        {
            SCALE + "zero": "true",
            SCALE + "zero-duration": "3s",
            LOCAL + "pause-after": "2s",
        },
        # The watchdog's own limits (10 s by default) must not end the call either.
        envVars={"exec_timeout": "40s", "write_timeout": "40s", "read_timeout": "40s"},
    )
    daemon.wait_available("longcall", 1)
    (container,) = containers(daemon)

    result: list[tuple[Reply, float]] = []
    caller = threading.Thread(
        target=lambda: result.append(timed(daemon, "/function/longcall?sleep=20", 40)),
        daemon=True,
    )
    caller.start()
    # While it runs (far past pause-after and zero-duration) the replica stays in service: each
    # look taken before the answer came sees it running, available and not scaled to 0.
    states: Counter[str] = Counter()
    while True:
        state, count, log = docker_state(container), replicas(daemon, "longcall"), daemon.log()
        if not caller.is_alive():
            break
        states[state] += 1
        assert count == (1, 1)
        assert not any("→0" in line for line in scaled_lines(log, "longcall")), log
        time.sleep(0.5)
    ((reply, ms),) = result
    assert reply.status == 200, reply.body
    assert ms >= 20_000, ms
    assert set(states) == {"running"} and states["running"] >= 30, states

    # Only now idle: paused and removed afterwards.
    daemon.wait_for(lambda: not containers(daemon), "the idle replica to leave", 20)
    assert any("→0" in line for line in scaled_lines(daemon.log(), "longcall"))
    print(f"\nlong request: 200 after {ms / 1000:.1f}s; states while running {dict(states)}")


def test_api_scale_is_held_for_the_down_window(
    daemon_factory: Factory, test_function_image: str
) -> None:
    daemon = daemon_factory()
    deploy(
        daemon,
        test_function_image,
        "manual",
        {LOCAL + "down-window": "5s", LOCAL + "pause-after": "0"},
    )
    daemon.wait_available("manual", 1)
    reply = daemon.request(
        "POST",
        "/system/scale-function/manual",
        json_body={"serviceName": "manual", "replicas": 3, "namespace": NS},
    )
    assert reply.status in (200, 202), reply.body
    scaled_at = time.monotonic()
    # No load at all, yet a count set by hand stands for a down window before the autoscaler
    # may take it back down.
    counts = []
    while time.monotonic() - scaled_at < 4.0:
        counts.append(replicas(daemon, "manual"))
        time.sleep(0.2)
    assert {count for count, _ in counts} == {3}, (counts, scaled_lines(daemon.log(), "manual"))
    assert counts[-1] == (3, 3), counts
    daemon.wait_for(lambda: replicas(daemon, "manual") == (1, 1), "back to 1 after", 30)


def test_bad_scaling_labels_are_refused_naming_the_label(
    daemon_factory: Factory, test_function_image: str
) -> None:
    daemon = daemon_factory()
    cases = [
        ({SCALE + "type": "memory"}, SCALE + "type"),
        ({SCALE + "zero-duration": "soon"}, SCALE + "zero-duration"),
        ({SCALE + "min": "3", SCALE + "max": "2"}, SCALE + "max"),
        ({LOCAL + "pause-after": "2 minutes"}, LOCAL + "pause-after"),
    ]
    for labels, named in cases:
        reply = daemon.request(
            "POST",
            "/system/functions",
            json_body={"service": "badlabel", "image": test_function_image, "labels": labels},
        )
        assert reply.status == 400, (labels, reply.status, reply.body)
        assert named.encode() in reply.body, (labels, reply.body)
    assert daemon.request("GET", f"/system/function/badlabel?namespace={NS}").status == 404
    assert not containers(daemon)
