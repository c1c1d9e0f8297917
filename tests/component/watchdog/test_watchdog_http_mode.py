"""HTTP mode end to end: the watchdog starts a small upstream server as its child and proxies."""

from __future__ import annotations

import asyncio
import re
import socket
import sys
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from yarl import URL

ORIGIN = "X-Localfaas-Origin"


def upstream_env(helpers: Any, state: Path, **extra: str) -> dict[str, str]:
    state.mkdir(parents=True, exist_ok=True)
    port = helpers.free_port()
    return {
        "mode": "http",
        "fprocess": f"{sys.executable} {helpers.fixtures / 'upstream.py'} {port} {state}",
        "upstream_url": f"http://127.0.0.1:{port}",
        **extra,
    }


@pytest.fixture(scope="module")
def state(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("upstream_state")


@pytest.fixture(scope="module")
def proxy(start_module_watchdog: Any, helpers: Any, state: Path) -> Any:
    return start_module_watchdog(
        upstream_env(helpers, state, exec_timeout="2s", max_body_bytes="4096")
    )


async def test_requests_are_proxied_with_method_target_headers_and_body(proxy: Any) -> None:
    async with (
        aiohttp.ClientSession() as session,
        session.put(
            # encoded=True: send the target exactly as written, %2F included.
            URL(proxy.url("/echo?x=1&y=a%2Fb"), encoded=True),
            data=b"hello body",
            headers={"X-Call-Id": "abc", "Connection": "keep-alive, X-Drop-Me", "X-Drop-Me": "1"},
        ) as response,
    ):
        assert response.status == 200
        seen = await response.json()
        assert re.fullmatch(r"\d+\.\d{6}", response.headers["X-Duration-Seconds"])
    assert seen["method"] == "PUT"
    assert seen["target"] == "/echo?x=1&y=a%2Fb"
    assert seen["body"] == "hello body"
    assert seen["headers"]["x-call-id"] == "abc"
    assert seen["headers"]["content-length"] == "10"
    assert "x-drop-me" not in seen["headers"]  # named in Connection: hop-by-hop


async def test_upstream_status_and_redirects_pass_through(proxy: Any) -> None:
    async with (
        aiohttp.ClientSession() as session,
        session.get(proxy.url("/status?code=302"), allow_redirects=False) as response,
    ):
        assert response.status == 302
        assert response.headers["Location"] == "/elsewhere"
        assert ORIGIN not in response.headers


async def test_response_body_streams(proxy: Any, state: Path) -> None:
    gate = "stream-gate"
    async with (
        aiohttp.ClientSession() as session,
        session.get(proxy.url(f"/stream?gate={gate}")) as response,
    ):
        assert response.status == 200
        # The upstream sends "second" only after this gate opens, and we open it only after
        # "first" arrived: a buffering proxy would hang here.
        first = await asyncio.wait_for(response.content.readline(), timeout=10)
        assert first == b"first\n"
        (state / gate).touch()
        assert await response.content.read() == b"second\n"


async def test_request_body_streams(proxy: Any, state: Path, helpers: Any) -> None:
    marker = state / "upload-first-chunk"

    async def body() -> Any:
        yield b"a" * 100
        # The upstream writes the marker once it has the first chunk; a buffering proxy would
        # hold it back until the whole body had arrived.
        await helpers.until(marker.exists, what="the upstream to get the first chunk")
        yield b"b" * 100

    async with (
        aiohttp.ClientSession() as session,
        session.post(proxy.url("/upload?marker=upload-first-chunk"), data=body()) as response,
    ):
        assert response.status == 200
        assert await response.text() == "received 200 bytes"


@pytest.mark.parametrize("chunked", [False, True])
async def test_body_over_max_body_bytes_is_413(proxy: Any, chunked: bool) -> None:
    async def chunks() -> Any:
        for _ in range(5):
            yield b"x" * 1000

    data: Any = chunks() if chunked else b"x" * 5000
    async with (
        aiohttp.ClientSession() as session,
        session.post(proxy.url("/echo"), data=data) as response,
    ):
        assert response.status == 413
        assert response.headers[ORIGIN] == "watchdog"


async def test_exec_timeout_is_504_and_aborts_the_upstream_request(
    proxy: Any, state: Path, helpers: Any
) -> None:
    async with aiohttp.ClientSession() as session, session.get(proxy.url("/hang")) as response:
        assert response.status == 504
        assert response.headers[ORIGIN] == "watchdog"
    await helpers.until((state / "hang-aborted").exists, what="the upstream to see the abort")


async def test_long_child_log_line_arrives_intact(proxy: Any) -> None:
    async with aiohttp.ClientSession() as session, session.get(proxy.url("/log-long")) as response:
        assert response.status == 200
    line = proxy.wait_log(r"(?m)^stdout: L+END$", stream="stdout")[0]
    assert line == "stdout: " + "L" * 150_000 + "END"


async def test_metrics_count_proxied_requests(proxy: Any) -> None:
    async with aiohttp.ClientSession() as session:
        async with session.post(proxy.url("/echo"), data=b"x") as response:
            assert response.status == 200
        async with session.get(proxy.metrics_url()) as response:
            text = await response.text()
    assert re.search(r'^http_requests_total\{code="200",method="post"\} \d+$', text, re.M)


async def test_ready_only_after_the_upstream_answers_its_ready_path(
    start_watchdog: Any, helpers: Any, tmp_path: Path
) -> None:
    state = tmp_path / "state"
    env = upstream_env(helpers, state, ready_path="/healthz", UPSTREAM_WAIT_FOR_LISTEN_GATE="1")
    watchdog = start_watchdog(env, wait="listening")
    async with aiohttp.ClientSession() as session:

        async def status(path: str) -> int:
            async with session.get(watchdog.url(path)) as response:
                return response.status

        assert await status("/_/health") == 200
        assert await status("/_/ready") == 503  # the upstream does not even listen yet
        (state / "listen").touch()
        await helpers.until((state / "listening").exists, what="the upstream to listen")
        # Listening, but its ready_path still says 503.
        assert await status("/_/ready") == 503
        (state / "healthy").touch()

        async def ready() -> bool:
            return await status("/_/ready") == 200

        await helpers.until(ready, what="/_/ready 200")
        (state / "healthy").unlink()
        # With ready_path set, /_/ready keeps asking the upstream.
        assert await status("/_/ready") == 503
    watchdog.wait_log(r"ready mode=http upstream=http://127.0.0.1:\d+ in \d+ ms")


async def test_child_exit_makes_the_watchdog_exit_non_zero(
    start_watchdog: Any, helpers: Any, tmp_path: Path
) -> None:
    watchdog = start_watchdog(upstream_env(helpers, tmp_path / "state"))
    async with aiohttp.ClientSession() as session, session.get(watchdog.url("/exit")) as response:
        assert response.status == 200
    assert watchdog.wait_exit() != 0
    assert "fprocess exited with code 3" in watchdog.stderr()


async def test_sigterm_drains_before_stopping_the_child(
    start_watchdog: Any, helpers: Any, tmp_path: Path
) -> None:
    state = tmp_path / "state"
    watchdog = start_watchdog(upstream_env(helpers, state, write_timeout="10s"))
    async with aiohttp.ClientSession() as session:

        async def slow() -> tuple[int, str]:
            async with session.get(watchdog.url("/slow?gate=slow-gate")) as response:
                return response.status, await response.text()

        in_flight = asyncio.create_task(slow())
        await helpers.until((state / "slow-started").exists, what="the slow request to start")
        watchdog.send_signal()
        await helpers.until(lambda: "draining:" in watchdog.stderr(), what="the drain to begin")
        async with session.get(watchdog.url("/_/ready")) as response:
            assert response.status == 503
        # Past the healthcheck interval and waiting for the request in flight ...
        await helpers.until(
            lambda: "draining: 1 in flight" in watchdog.stderr(), what="drain step 3"
        )
        # ... and the child has not been signalled.
        assert not (state / "sigterm").exists()
        (state / "slow-gate").touch()
        assert await in_flight == (200, "slow done")
    assert watchdog.wait_exit() == 0
    signalled_at = float((state / "sigterm").read_text())
    finished_at = float((state / "slow-done").read_text())
    assert signalled_at >= finished_at


async def test_expect_100_continue_is_answered(proxy: Any) -> None:
    async with (
        aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10)) as session,
        session.post(proxy.url("/echo"), data=b"y" * 900, expect100=True) as response,
    ):
        assert response.status == 200
        seen = await response.json()
    assert seen["body"] == "y" * 900
    assert "expect" not in seen["headers"]


def test_http_1_0_client_gets_a_streamed_body_ended_by_close(proxy: Any, state: Path) -> None:
    # The upstream streams chunked; HTTP/1.0 has no chunked encoding, so the body runs until
    # the watchdog closes the connection.
    (state / "open-gate").touch()
    with socket.create_connection(("127.0.0.1", proxy.port), timeout=10) as conn:
        conn.sendall(b"GET /stream?gate=open-gate HTTP/1.0\r\n\r\n")
        reply = b""
        while chunk := conn.recv(65536):
            reply += chunk
    head, _, body = reply.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200 ")
    assert b"\r\nConnection: close" in head
    assert b"Transfer-Encoding" not in head
    assert body == b"first\nsecond\n"
