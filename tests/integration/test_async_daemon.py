"""Async invocations end to end: the real daemon process (`localfaas up`), real Docker and a real
nats-server (the daemon's embedded child, or one this test runs itself).

What is proven here, through the public HTTP API only:
- no accepted call is lost when the daemon is killed with SIGKILL, or when its nats-server is
  (at least once: duplicates are allowed, counted and printed);
- retries follow `com.openfaas.retry.*` and the back-off rule of runtime/queue/retry.py;
- exhausted calls are dead-lettered, listed and replayable;
- a repeated X-Call-Id runs once;
- NATS down means 503 + Retry-After on enqueue (never 202) while sync calls go on.
"""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import time
from collections import Counter
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import pytest

from runtime.queue.nats_server import find_binary, render_config
from runtime.queue.streams import QueueLimits
from tests.integration.daemon_fixtures import (
    DaemonProcess,
    daemon_factory,  # noqa: F401 - fixture
    docker_ids,
    free_port,
    test_function_image,  # noqa: F401 - fixture
)

pytestmark = [pytest.mark.docker, pytest.mark.nats, pytest.mark.slow]
Factory = Callable[..., DaemonProcess]

FN = "probe"
QUALIFIED = f"{FN}.openfaas-fn"
CONCURRENCY = "com.localfaas.async.concurrency"
ATTEMPTS = "com.openfaas.retry.attempts"
MIN_WAIT = "com.openfaas.retry.min_wait"
MAX_WAIT = "com.openfaas.retry.max_wait"
# The consumer's ack_wait (runtime/queue/streams.py QueueLimits): a call that was running when
# its worker died comes back after it. Deadlines for crash tests allow for it.
ACK_WAIT_S = QueueLimits().ack_wait_s


# -- helpers ----------------------------------------------------------------------------------


def deploy(daemon: DaemonProcess, image: str, annotations: dict[str, str] | None = None) -> None:
    reply = daemon.request(
        "POST",
        "/system/functions",
        json_body={"service": FN, "image": image, "annotations": annotations or {}},
    )
    assert reply.status == 202, reply.body
    daemon.wait_available(FN, 1)


def wait_async_ready(daemon: DaemonProcess, timeout_s: float = 30.0) -> None:
    daemon.wait_for(
        lambda: daemon.request("GET", "/system/async/queues").status == 200,
        "async invocations to be ready",
        timeout_s,
    )


def enqueue(daemon: DaemonProcess, path: str, call_id: str | None = None) -> str:
    headers = {"X-Call-Id": call_id} if call_id else {}
    reply = daemon.request("POST", f"/async-function/{FN}{path}", b"x", headers=headers)
    assert reply.status == 202, (reply.status, reply.body)
    assert not call_id or reply.headers["X-Call-Id"] == call_id
    return reply.headers["X-Call-Id"]


def call(daemon: DaemonProcess, call_id: str) -> dict[str, Any]:
    reply = daemon.request("GET", f"/system/async/calls/{call_id}")
    assert reply.status == 200, (reply.status, reply.body)
    result: dict[str, Any] = reply.json()
    return result


def wait_calls(
    daemon: DaemonProcess,
    call_ids: Iterable[str],
    state: str,
    timeout_s: float,
    done: Callable[[dict[str, Any]], bool] = lambda _: True,
) -> dict[str, dict[str, Any]]:
    """Poll until every call is in ``state`` (and ``done`` holds); their statuses."""
    pending = list(call_ids)
    final: dict[str, dict[str, Any]] = {}
    deadline = time.monotonic() + timeout_s
    while pending:
        for call_id in list(pending):
            reply = daemon.request("GET", f"/system/async/calls/{call_id}")
            if reply.status == 503:  # NATS reconnecting: the status is unavailable for now
                break
            assert reply.status == 200, (reply.status, reply.body)
            status = reply.json()
            if status["state"] == state and done(status):
                final[call_id] = status
                pending.remove(call_id)
        if not pending:
            break
        if daemon.proc.poll() is not None:
            raise AssertionError(f"daemon exited ({daemon.proc.returncode}):\n{daemon.log()}")
        if time.monotonic() > deadline:
            states = Counter(call(daemon, c)["state"] for c in pending)
            raise AssertionError(
                f"{len(pending)} call(s) not {state} after {timeout_s:.0f}s: {dict(states)}; "
                f"e.g. {call(daemon, pending[0])}\n{daemon.log()[-4000:]}"
            )
        time.sleep(0.1)
    return final


def executions(daemon: DaemonProcess) -> Counter[str]:
    """Call ids the function recorded at /count, with how often each ran (sync read-back)."""
    reply = daemon.request("GET", f"/function/{FN}/counted")
    assert reply.status == 200, reply.body
    return Counter(reply.body.decode().split())


def function_attempts(daemon: DaemonProcess, call_id: str) -> int:
    reply = daemon.request("GET", f"/function/{FN}/attempts/{call_id}")
    assert reply.status == 200, reply.body
    return int(reply.body)


def nats_pid(daemon: DaemonProcess) -> int:
    """The embedded nats-server's pid (0 while its pid file is missing or being written)."""
    try:
        return int((daemon.state_dir / "nats" / "nats-server.pid").read_text().strip())
    except (FileNotFoundError, ValueError):
        return 0


def alive(pid: int) -> bool:
    try:
        return b"nats-server" in Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return False


def check_all_ran(call_ids: list[str], ran: Counter[str], what: str) -> dict[str, int]:
    """Every accepted call ran at least once; the duplicates (allowed) are returned."""
    missing = [c for c in call_ids if ran[c] == 0]
    duplicates = {c: n for c, n in ran.items() if n > 1}
    print(
        f"\n{what}: {len(call_ids)} calls, {sum(ran.values())} executions, duplicates={duplicates}"
    )
    assert not missing, (
        f"{what}: accepted calls never executed: {missing} (duplicates {duplicates})"
    )
    assert set(ran) <= set(call_ids), f"unexpected call ids executed: {set(ran) - set(call_ids)}"
    return duplicates


# -- crash safety -------------------------------------------------------------------------------

N_CALLS = 30
WORK = "/count?sleep=0.2"


def start_backlog(daemon: DaemonProcess, image: str) -> list[str]:
    """Deploy with 3 async calls at a time, enqueue N_CALLS, return once several have run (so
    some are running and most are still queued when the test pulls the plug)."""
    deploy(daemon, image, {CONCURRENCY: "3"})
    wait_async_ready(daemon)
    call_ids = [enqueue(daemon, WORK) for _ in range(N_CALLS)]
    assert len(set(call_ids)) == N_CALLS
    daemon.wait_for(lambda: len(executions(daemon)) >= 6, "6 calls to have run", 30)
    return call_ids


def test_no_accepted_call_lost_when_the_daemon_is_killed(
    daemon_factory: Factory, test_function_image: str
) -> None:
    daemon = daemon_factory()
    call_ids = start_backlog(daemon, test_function_image)
    pid = nats_pid(daemon)
    assert alive(pid), f"no nats-server with the pid {pid} of its pid file"
    ran_before = sum(executions(daemon).values())
    assert ran_before < N_CALLS, "the backlog finished before the kill: nothing was proven"
    assert daemon.stop(signal.SIGKILL) == -signal.SIGKILL
    # The embedded nats-server goes with its parent (PR_SET_PDEATHSIG).
    deadline = time.monotonic() + 15
    while alive(pid):
        assert time.monotonic() < deadline, f"nats-server pid {pid} outlived the killed daemon"
        time.sleep(0.05)
    assert docker_ids((daemon.state_dir / "instance-id").read_text().strip())  # replica kept

    again = daemon_factory(daemon.state_dir)
    wait_async_ready(again)
    statuses = wait_calls(again, call_ids, "succeeded", ACK_WAIT_S + 30)
    assert all(s["lastStatus"] == 200 for s in statuses.values())
    ran = executions(again)
    duplicates = check_all_ran(call_ids, ran, "daemon SIGKILL")
    print(f"daemon SIGKILL: {ran_before} executions before the kill")
    # A duplicate can only come from a call that was running at the kill (at most 3 at once).
    assert len(duplicates) <= 3, duplicates


def test_no_accepted_call_lost_when_nats_server_is_killed(
    daemon_factory: Factory, test_function_image: str
) -> None:
    daemon = daemon_factory()
    call_ids = start_backlog(daemon, test_function_image)
    pid = nats_pid(daemon)
    assert alive(pid), f"no nats-server with the pid {pid} of its pid file"
    ran_before = sum(executions(daemon).values())
    assert ran_before < N_CALLS, "the backlog finished before the kill: nothing was proven"
    os.kill(pid, signal.SIGKILL)
    daemon.wait_for(
        lambda: nats_pid(daemon) != pid and alive(nats_pid(daemon)),
        "the daemon to restart nats-server",
        30,
    )
    assert daemon.proc.poll() is None
    statuses = wait_calls(daemon, call_ids, "succeeded", ACK_WAIT_S + 30)
    assert all(s["lastStatus"] == 200 for s in statuses.values())
    duplicates = check_all_ran(call_ids, executions(daemon), "nats-server SIGKILL")
    print(f"nats-server SIGKILL: {ran_before} executions before the kill")
    assert len(duplicates) <= 3, duplicates
    assert "nats-server restarted" in daemon.log()
    # Still accepting and running new calls.
    wait_calls(daemon, [enqueue(daemon, "/count")], "succeeded", 30)


# -- retries, dead letters, dedupe ---------------------------------------------------------------

RETRY_LINE = re.compile(
    r"async call (?P<id>\S+) of " + re.escape(QUALIFIED) + r" attempt (?P<attempt>\d+)/\d+ "
    r"got (?P<status>\S+); retry in (?P<delay>[\d.]+)s"
)


def logged_delays(daemon: DaemonProcess, call_id: str) -> dict[int, float]:
    """The retry delays the worker chose, by attempt, from its log lines."""
    return {
        int(m["attempt"]): float(m["delay"])
        for m in RETRY_LINE.finditer(daemon.log())
        if m["id"] == call_id
    }


def test_retries_back_off_within_min_and_max_wait(
    daemon_factory: Factory, test_function_image: str
) -> None:
    min_wait_s, max_wait_s = 0.5, 2.0
    daemon = daemon_factory()
    deploy(daemon, test_function_image, {ATTEMPTS: "5", MIN_WAIT: "500ms", MAX_WAIT: "2s"})
    wait_async_ready(daemon)
    call_id = enqueue(daemon, "/flaky?fail=2")
    status = wait_calls(daemon, [call_id], "succeeded", 20)[call_id]
    assert status["attempts"] == 3 and status["lastStatus"] == 200, status
    history = status["history"]
    assert [h["attempt"] for h in history] == [1, 2, 3]
    assert [h["status"] for h in history] == [503, 503, 200], history
    assert function_attempts(daemon, call_id) == 3

    # The rule (runtime/queue/retry.py RetryPolicy.backoff_s, no Retry-After from the function):
    # retry n waits uniform in [min_wait, min(max_wait, min_wait * 2^(n-1))].
    delays = logged_delays(daemon, call_id)
    assert set(delays) == {1, 2}, daemon.log()[-3000:]
    gaps = {n: history[n]["startedAt"] - history[n - 1]["finishedAt"] for n in (1, 2)}
    shown = {n: round(g, 3) for n, g in gaps.items()}
    print(f"\nretry delays chosen {delays}, observed gaps {shown}")
    logged_precision = 0.005  # the log prints %.2f
    for retry, delay in delays.items():
        ceiling = min(max_wait_s, min_wait_s * 2 ** (retry - 1))
        assert min_wait_s - logged_precision <= delay <= ceiling + logged_precision, (retry, delay)
        # The wait really happened: nak(delay) goes out after finishedAt, the next attempt
        # starts after the server redelivers (plus one status write and one claim).
        gap = gaps[retry]
        assert delay - logged_precision <= gap <= delay + 0.4, (retry, delay, gap)
        assert min_wait_s - logged_precision <= gap <= max_wait_s + 0.4, (retry, gap)
    assert abs(delays[1] - min_wait_s) <= logged_precision  # the first retry's range is a point


def test_exhausted_call_is_dead_lettered_listed_and_replayed(
    daemon_factory: Factory, test_function_image: str
) -> None:
    daemon = daemon_factory()
    deploy(daemon, test_function_image, {ATTEMPTS: "2", MIN_WAIT: "200ms", MAX_WAIT: "500ms"})
    wait_async_ready(daemon)
    call_id = enqueue(daemon, "/flaky?fail=99")
    status = wait_calls(daemon, [call_id], "dead-lettered", 20)[call_id]
    assert status["attempts"] == 2 and status["lastStatus"] == 503, status
    assert [h["status"] for h in status["history"]] == [503, 503]
    assert function_attempts(daemon, call_id) == 2

    def letter() -> dict[str, Any] | None:
        reply = daemon.request("GET", f"/system/async/dead-letters?namespace=openfaas-fn&name={FN}")
        assert reply.status == 200, reply.body
        return next((d for d in reply.json() if d["callId"] == call_id), None)

    dead = letter()
    assert dead is not None, "the dead-lettered call is not listed"
    assert (dead["attempts"], dead["lastStatus"], dead["path"], dead["query"]) == (
        2,
        503,
        "/flaky",
        "fail=99",
    ), dead
    assert dead["replays"] == 0

    reply = daemon.request("POST", f"/system/async/dead-letters/{call_id}/replay")
    assert reply.status == 202, reply.body
    assert reply.headers["X-Call-Id"] == call_id
    assert reply.json()["state"] == "queued" and reply.json()["replays"] == 1
    # The old dead letter is gone (a new one, replays 1, may already exist if both attempts ran).
    after_replay = letter()
    assert after_replay is None or after_replay["replays"] == 1, after_replay

    # It runs again with a fresh set of attempts, and (still failing) ends dead-lettered again.
    replayed = wait_calls(daemon, [call_id], "dead-lettered", 20, done=lambda s: s["replays"] == 1)
    status = replayed[call_id]
    assert function_attempts(daemon, call_id) == 4
    assert status["attempts"] == 2
    again = letter()
    assert again is not None and again["replays"] == 1, again
    # Replaying something that is not a dead letter is refused.
    other = enqueue(daemon, "/flaky")
    wait_calls(daemon, [other], "succeeded", 20)
    assert daemon.request("POST", f"/system/async/dead-letters/{other}/replay").status == 404


def test_same_call_id_twice_runs_once(daemon_factory: Factory, test_function_image: str) -> None:
    daemon = daemon_factory()
    deploy(daemon, test_function_image)  # one replica: one async call at a time, in order
    wait_async_ready(daemon)
    twin = f"twin-{os.getpid()}-{time.monotonic_ns()}"
    enqueue(daemon, "/count", twin)
    enqueue(daemon, "/count", twin)  # a client retry: accepted again (202), stored once
    wait_calls(daemon, [twin], "succeeded", 20)
    enqueue(daemon, "/count", twin)  # and once more after it ran
    # Calls run in order: once a call sent after the twins succeeded, any second run of the
    # twin would already be on record.
    sentinel = enqueue(daemon, "/count")
    wait_calls(daemon, [sentinel], "succeeded", 20)
    ran = executions(daemon)
    assert ran[twin] == 1, f"{twin} ran {ran[twin]} times"
    assert ran[sentinel] == 1
    status = call(daemon, twin)
    assert status["attempts"] == 1 and len(status["history"]) == 1, status


# -- NATS down and back ---------------------------------------------------------------------------


class ExternalNats:
    """A nats-server this test owns (as `--nats-url` users run their own): stop and start it
    on the same port and store."""

    def __init__(self, root: Path, port: int) -> None:
        root.mkdir(parents=True, exist_ok=True)
        self.port = port
        self.config = root / "nats.conf"
        self.config.write_text(
            render_config(port=port, store_dir=root / "store", log_file=root / "nats.log")
        )
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"nats://127.0.0.1:{self.port}"

    def start(self) -> None:
        self.proc = subprocess.Popen([str(find_binary()), "-c", str(self.config)])
        deadline = time.monotonic() + 15
        while True:
            assert self.proc.poll() is None, f"nats-server exited {self.proc.returncode}"
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=1) as sock:
                    if sock.recv(4096).startswith(b"INFO "):
                        return
            except OSError:
                pass
            assert time.monotonic() < deadline, "nats-server did not accept clients"
            time.sleep(0.05)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


def test_nats_down_means_503_and_sync_calls_go_on(
    daemon_factory: Factory, test_function_image: str, tmp_path: Path
) -> None:
    nats = ExternalNats(tmp_path / "ext-nats", free_port())
    nats.start()
    daemon: DaemonProcess | None = None
    try:
        daemon = daemon_factory(extra_env={"LOCALFAAS_NATS_URL": nats.url})
        deploy(daemon, test_function_image)
        wait_async_ready(daemon)
        first = enqueue(daemon, "/count")
        wait_calls(daemon, [first], "succeeded", 20)

        nats.stop()  # returns once the process is gone
        for _ in range(3):  # never a 202 while the queue cannot store the call
            reply = daemon.request("POST", f"/async-function/{FN}/count", b"x")
            assert reply.status == 503, (reply.status, reply.body)
            assert int(reply.headers["Retry-After"]) > 0, reply.headers
        assert daemon.request("GET", f"/system/async/calls/{first}").status == 503
        sync = daemon.request("GET", f"/function/{FN}")
        assert sync.status == 200, sync.body
        assert daemon.request("POST", f"/function/{FN}/count", b"x").status == 200

        nats.start()
        accepted: list[str] = []

        def accepts() -> bool:
            reply = daemon.request("POST", f"/async-function/{FN}/count", b"x")
            assert reply.status in (202, 503), (reply.status, reply.body)
            if reply.status == 202:
                accepted.append(reply.headers["X-Call-Id"])
            return reply.status == 202

        daemon.wait_for(accepts, "enqueue to be accepted once NATS is back", 30)
        wait_calls(daemon, accepted, "succeeded", 30)
        assert call(daemon, first)["state"] == "succeeded"  # the status survived the restart
        ran = executions(daemon)
        assert ran[first] == 1 and ran[accepted[0]] == 1, ran
    finally:
        if daemon is not None:
            daemon.stop()
        nats.stop()
