"""Start-up, configuration errors, malformed HTTP and the SIGTERM drain of the real process."""

from __future__ import annotations

import asyncio
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
from pathlib import Path
from typing import Any

import aiohttp
import pytest


@pytest.fixture
def function_dir(tmp_path: Path, helpers: Any) -> Path:
    target = tmp_path / "fn"
    shutil.copytree(helpers.fixtures / "python_fn", target)
    return target


@pytest.mark.parametrize(
    ("name", "value", "message"),
    [
        ("exec_timeout", "abc", "exec_timeout: invalid duration 'abc'"),
        ("max_inflight", "many", "max_inflight: invalid count 'many'"),
        ("mode", "serverless", "mode: invalid mode 'serverless'"),
        ("port", "99999", "port: invalid port '99999'"),
    ],
)
def test_invalid_env_exits_2_naming_the_variable(name: str, value: str, message: str) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "watchdog"],
        env={"PATH": os.environ.get("PATH", ""), name: value},
        capture_output=True,
        timeout=30,
    )
    assert result.returncode == 2
    lines = result.stderr.decode().splitlines()
    assert len(lines) == 1
    assert message in lines[0]


def test_importing_the_package_is_light() -> None:
    code = "import sys, watchdog; print(sorted(m for m in sys.modules if m.split('.')[0] in ('aiohttp', 'asyncio', 'watchdog')))"
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, timeout=30, check=True
    )
    assert result.stdout.decode().strip() == "['watchdog']"


def test_a_taken_port_exits_1(start_watchdog: Any, function_dir: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("0.0.0.0", 0))
        taken.listen()
        watchdog = start_watchdog(
            {"port": str(taken.getsockname()[1])}, cwd=function_dir, wait="nothing"
        )
        assert watchdog.wait_exit() == 1
    assert "cannot listen" in watchdog.stderr()


def test_malformed_http_is_400_and_the_server_keeps_serving(
    start_watchdog: Any, function_dir: Path, helpers: Any
) -> None:
    watchdog = start_watchdog(cwd=function_dir)
    garbage_requests = (
        b"\x16\x03\x01\x00\xa5\x01\x00\x00\xa1\x03\x03\r\n\r\n",  # a TLS hello
        b"NOT HTTP AT ALL\r\n\r\n",
        b"GET / HTTP/1.1\r\nBad Header\r\n\r\n",
        b"POST / HTTP/1.1\r\nContent-Length: nope\r\n\r\n",
    )
    for garbage in garbage_requests:
        with socket.create_connection(("127.0.0.1", watchdog.port), timeout=5) as conn:
            conn.sendall(garbage)
            reply = conn.recv(65536)
        assert re.match(rb"HTTP/1\.[01] 400 ", reply), reply[:80]
    assert helpers.http_status(watchdog.url("/hello")) == 200
    assert watchdog.process.poll() is None


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
async def test_signal_drains_in_flight_requests_then_exits_0(
    start_watchdog: Any, function_dir: Path, tmp_path: Path, helpers: Any, signum: int
) -> None:
    watchdog = start_watchdog(
        {"healthcheck_interval": "0.3", "write_timeout": "10"}, cwd=function_dir
    )
    gate, entered = tmp_path / "gate", tmp_path / "entered"
    async with aiohttp.ClientSession() as session:

        async def slow() -> tuple[int, str]:
            async with session.get(
                watchdog.url("/gate"), params={"gate": str(gate), "entered": str(entered)}
            ) as response:
                return response.status, await response.text()

        in_flight = asyncio.create_task(slow())
        await helpers.until(entered.exists, what="the slow request to start")
        watchdog.send_signal(signum)

        async def status(path: str) -> int:
            async with session.get(watchdog.url(path)) as response:
                return response.status

        await helpers.until(lambda: "draining:" in watchdog.stderr(), what="the drain to begin")
        assert await status("/_/ready") == 503
        assert await status("/_/health") == 503
        await helpers.until(
            lambda: "draining: 1 in flight" in watchdog.stderr(), what="drain step 3"
        )
        assert watchdog.process.poll() is None  # still waiting for the request
        gate.touch()
        assert await in_flight == (200, "gate passed")
    assert watchdog.wait_exit() == 0
    assert "stopped after" in watchdog.stderr()


async def test_drain_gives_up_on_requests_after_write_timeout(
    start_watchdog: Any, function_dir: Path, tmp_path: Path, helpers: Any
) -> None:
    watchdog = start_watchdog(
        {"healthcheck_interval": "0", "write_timeout": "0.5", "exec_timeout": "0"},
        cwd=function_dir,
    )
    gate, entered = tmp_path / "gate", tmp_path / "entered"
    async with aiohttp.ClientSession() as session:

        async def stuck() -> int:
            async with session.get(
                watchdog.url("/gate"), params={"gate": str(gate), "entered": str(entered)}
            ) as response:
                await response.read()
                return response.status

        request = asyncio.create_task(stuck())
        try:
            await helpers.until(entered.exists, what="the request to start")
            watchdog.send_signal()
            await helpers.until(lambda: watchdog.process.poll() is not None, what="the exit")
            assert watchdog.process.returncode == 0
            assert "write_timeout 0.5s passed with 1 in flight" in watchdog.stderr()
            # The request was cut off, not answered.
            with pytest.raises(aiohttp.ClientError):
                await request
        finally:
            gate.touch()
            request.cancel()
