"""Fixtures that run the real watchdog (``python -m watchdog``) as a subprocess.

Every watchdog listens on ephemeral ports (``port=0``) and logs the ports it got; output goes
to files the tests read. Waits poll a condition with a deadline; nothing sleeps in its place.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import os
import re
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

STARTUP_TIMEOUT_S = 20.0  # a loaded CI machine starts Python slowly
_LISTENING = re.compile(r"listening port=(\d+) metrics_port=(\d+)")


def wait_until(condition: Callable[[], object], timeout_s: float = 10.0, what: str = "") -> object:
    """Poll ``condition`` until it returns something truthy; fail after ``timeout_s``."""
    deadline = time.monotonic() + timeout_s
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout_s}s waiting for {what or condition}")
        time.sleep(0.01)


def http_status(url: str, timeout_s: float = 5.0) -> int | None:
    """GET ``url`` and return the status, or None when nothing answers."""
    try:
        with urllib.request.urlopen(url, timeout=timeout_s) as response:
            return int(response.status)
    except urllib.error.HTTPError as exc:
        return exc.code
    except OSError:
        return None


class WatchdogProcess:
    """A running ``python -m watchdog`` and its output."""

    def __init__(self, process: subprocess.Popen[bytes], workdir: Path) -> None:
        self.process = process
        self.workdir = workdir
        self.stdout_path = workdir / "watchdog.stdout"
        self.stderr_path = workdir / "watchdog.stderr"
        self.port = 0
        self.metrics_port = 0

    @property
    def pid(self) -> int:
        return self.process.pid

    def url(self, path: str = "/") -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def metrics_url(self) -> str:
        return f"http://127.0.0.1:{self.metrics_port}/metrics"

    def stdout(self) -> str:
        return self.stdout_path.read_bytes().decode(errors="replace")

    def stderr(self) -> str:
        return self.stderr_path.read_bytes().decode(errors="replace")

    def wait_log(
        self, pattern: str, timeout_s: float = 10.0, stream: str = "stderr"
    ) -> re.Match[str]:
        """Wait until ``pattern`` (a regex) appears in the watchdog's stderr (or stdout)."""
        read = self.stderr if stream == "stderr" else self.stdout
        match = wait_until(lambda: re.search(pattern, read()), timeout_s, f"log {pattern!r}")
        assert isinstance(match, re.Match)
        return match

    def wait_listening(self) -> None:
        def listening() -> re.Match[str] | None:
            if self.process.poll() is not None:
                raise AssertionError(f"watchdog exited early:\n{self.stderr()}")
            return _LISTENING.search(self.stderr())

        match = wait_until(listening, STARTUP_TIMEOUT_S, "the watchdog to listen")
        assert isinstance(match, re.Match)
        self.port, self.metrics_port = int(match[1]), int(match[2])

    def wait_ready(self, timeout_s: float = STARTUP_TIMEOUT_S) -> None:
        wait_until(lambda: http_status(self.url("/_/ready")) == 200, timeout_s, "/_/ready 200")

    def send_signal(self, signum: int = signal.SIGTERM) -> None:
        self.process.send_signal(signum)

    def wait_exit(self, timeout_s: float = 15.0) -> int:
        return self.process.wait(timeout=timeout_s)

    def kill(self) -> None:
        """Kill the watchdog and everything it started. Its children run in sessions of their
        own (so a signal to the watchdog's group never reaches them first), so they are found
        by parent pid and killed too: an http-mode upstream must not outlive the test."""
        if self.process.poll() is None:
            children = _children(self.process.pid)
            try:
                os.killpg(self.process.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            for child in children:
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.killpg(child, signal.SIGKILL)
        self.process.wait(timeout=10)


def _children(pid: int) -> list[int]:
    """Direct children of ``pid`` (from /proc), which lead their own process groups."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        # Field 4 (ppid) follows the parenthesised command, which may contain spaces.
        if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
            found.append(int(entry.name))
    return found


def _spawn(workdir: Path, env: dict[str, str], cwd: Path | None) -> WatchdogProcess:
    workdir.mkdir(parents=True, exist_ok=True)
    full_env = {
        "PATH": os.environ.get("PATH", os.defpath),
        "HOME": os.environ.get("HOME", "/tmp"),
        "port": "0",
        "metrics_port": "0",
        "healthcheck_interval": "0.2",
        **env,
    }
    with (
        (workdir / "watchdog.stdout").open("wb") as out,
        (workdir / "watchdog.stderr").open("wb") as err,
    ):
        process = subprocess.Popen(
            [sys.executable, "-m", "watchdog"],
            cwd=cwd or workdir,
            env=full_env,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=err,
            start_new_session=True,  # so kill() reaches the watchdog's children too
        )
    return WatchdogProcess(process, workdir)


StartWatchdog = Callable[..., WatchdogProcess]


def _factory(base: Path) -> Iterator[StartWatchdog]:
    started: list[WatchdogProcess] = []
    counter = iter(range(1_000_000))

    def start(
        env: dict[str, str] | None = None,
        cwd: Path | None = None,
        wait: str = "ready",
    ) -> WatchdogProcess:
        """Start a watchdog; ``wait`` is "ready", "listening" or "nothing"."""
        watchdog = _spawn(base / f"watchdog-{next(counter)}", env or {}, cwd)
        started.append(watchdog)
        if wait in ("ready", "listening"):
            watchdog.wait_listening()
        if wait == "ready":
            watchdog.wait_ready()
        return watchdog

    yield start
    for watchdog in started:
        watchdog.kill()


@pytest.fixture
def start_watchdog(tmp_path: Path) -> Iterator[StartWatchdog]:
    """Start watchdog subprocesses for one test; all are killed afterwards."""
    yield from _factory(tmp_path)


@pytest.fixture(scope="module")
def start_module_watchdog(tmp_path_factory: pytest.TempPathFactory) -> Iterator[StartWatchdog]:
    """Like start_watchdog, for watchdogs shared by the tests of one module."""
    yield from _factory(tmp_path_factory.mktemp("watchdogs"))


def pid_alive(pid: int) -> bool:
    """True if ``pid`` runs (a zombie waiting to be reaped by someone else counts as gone)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return False
    return stat.rpartition(")")[2].split()[0] != "Z"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


async def until(condition: Callable[[], object], timeout_s: float = 10.0, what: str = "") -> object:
    """``wait_until`` for async tests: polls without blocking the event loop.

    ``condition`` may also return an awaitable (e.g. be an async function); its result counts.
    """
    deadline = time.monotonic() + timeout_s
    while True:
        value = condition()
        if inspect.isawaitable(value):
            value = await value
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout_s}s waiting for {what or condition}")
        await asyncio.sleep(0.01)


class Helpers:
    """Plain helpers for the tests of this folder (a fixture, as conftest is not importable)."""

    fixtures = Path(__file__).parent / "fixtures"
    wait_until = staticmethod(wait_until)
    until = staticmethod(until)
    pid_alive = staticmethod(pid_alive)
    free_port = staticmethod(free_port)
    http_status = staticmethod(http_status)


@pytest.fixture(scope="session")
def helpers() -> type[Helpers]:
    return Helpers
