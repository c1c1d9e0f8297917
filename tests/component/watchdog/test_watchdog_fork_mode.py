"""Fork mode end to end: one process per request, as the classic OpenFaaS watchdog."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import aiohttp
import pytest

ORIGIN = "X-Localfaas-Origin"


@pytest.fixture(scope="module")
def state(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("fork_state")


@pytest.fixture(scope="module")
def cat(start_module_watchdog: Any) -> Any:
    return start_module_watchdog({"mode": "fork", "fprocess": "cat"})


@pytest.fixture(scope="module")
def forked(start_module_watchdog: Any, helpers: Any, state: Path) -> Any:
    return start_module_watchdog(
        {
            "mode": "fork",
            "fprocess": f"{sys.executable} {helpers.fixtures / 'forked.py'}",
            "exec_timeout": "2",
            "STATE_DIR": str(state),
        }
    )


async def test_cat_echoes_the_body(cat: Any) -> None:
    payload = bytes(range(256)) * 100
    async with (
        aiohttp.ClientSession() as session,
        session.post(
            cat.url("/"), data=payload, headers={"Content-Type": "application/x-test"}
        ) as response,
    ):
        assert response.status == 200
        assert await response.read() == payload
        # No content_type setting: the caller's Content-Type comes back, as in the classic watchdog.
        assert response.headers["Content-Type"] == "application/x-test"
        assert float(response.headers["X-Duration-Seconds"]) > 0


async def test_empty_body(cat: Any) -> None:
    async with aiohttp.ClientSession() as session, session.get(cat.url("/")) as response:
        assert response.status == 200
        assert await response.read() == b""


async def test_request_arrives_as_http_env_vars(forked: Any) -> None:
    async with (
        aiohttp.ClientSession() as session,
        session.post(
            forked.url("/env?a=1&b=2"),
            data=b"{}",
            headers={"Content-Type": "application/json", "x-call-id": "call-7"},
        ) as response,
    ):
        assert response.status == 200
        seen = await response.json(content_type=None)
    assert seen["Http_Method"] == "POST"
    assert seen["Http_Path"] == "/env"
    assert seen["Http_Query"] == "a=1&b=2"
    assert seen["Http_Content_Type"] == "application/json"
    assert seen["Http_X_Call_Id"] == "call-7"
    assert seen["Http_ContentLength"] == "2"


async def test_non_zero_exit_is_500_with_stderr_in_the_log_only(forked: Any) -> None:
    async with aiohttp.ClientSession() as session, session.get(forked.url("/fail")) as response:
        assert response.status == 500
        body = await response.text()
        assert response.headers[ORIGIN] == "watchdog"
    assert "exited with code 3" in body
    assert "fork-stderr-detail" not in body
    forked.wait_log(r"(?m)^stderr: fork-stderr-detail$")
    forked.wait_log(r"fprocess pid=\d+ exited with code 3")


async def test_long_stderr_line_arrives_intact(forked: Any) -> None:
    async with (
        aiohttp.ClientSession() as session,
        session.get(forked.url("/long-stderr")) as response,
    ):
        assert response.status == 200
        assert await response.read() == b"ok"
    line = forked.wait_log(r"(?m)^stderr: E+END$")[0]
    assert line == "stderr: " + "E" * 150_000 + "END"


async def test_exec_timeout_kills_the_whole_process_group(
    forked: Any, state: Path, helpers: Any
) -> None:
    async with (
        aiohttp.ClientSession() as session,
        session.get(forked.url("/sleep?pids=sleep-pids")) as response,
    ):
        assert response.status == 504
        assert response.headers[ORIGIN] == "watchdog"
    child_pid, grandchild_pid = map(int, (state / "sleep-pids").read_text().split())
    # The child was reaped by the watchdog; the grandchild (`sleep 60`) was killed with it.
    assert not helpers.pid_alive(child_pid)
    helpers.wait_until(lambda: not helpers.pid_alive(grandchild_pid), what="the grandchild to die")
    forked.wait_log(rf"killed fprocess pid={child_pid} and its process group")
