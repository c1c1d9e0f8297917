"""Python mode end to end: a real ``python -m watchdog`` running python3-http handlers."""

from __future__ import annotations

import asyncio
import re
import shutil
from pathlib import Path
from typing import Any

import aiohttp
import pytest

ORIGIN = "X-Localfaas-Origin"


@pytest.fixture(scope="module")
def function_dir(tmp_path_factory: pytest.TempPathFactory, helpers: Any) -> Path:
    target = tmp_path_factory.mktemp("python_fn") / "fn"
    shutil.copytree(helpers.fixtures / "python_fn", target)
    return target


@pytest.fixture(scope="module")
def sync_watchdog(start_module_watchdog: Any, function_dir: Path) -> Any:
    # No `handler` variable: the default function.handler:handle, as the template lays it out.
    return start_module_watchdog({"max_body_bytes": "1024"}, cwd=function_dir)


@pytest.fixture(scope="module")
def async_watchdog(start_module_watchdog: Any, function_dir: Path) -> Any:
    return start_module_watchdog(
        {"handler": "function.async_handler:handle", "exec_timeout": "1s"}, cwd=function_dir
    )


@pytest.fixture(scope="module")
def limited_watchdog(start_module_watchdog: Any, function_dir: Path) -> Any:
    return start_module_watchdog({"max_inflight": "1", "exec_timeout": "2"}, cwd=function_dir)


async def test_the_python3_http_template_example_runs_unchanged(sync_watchdog: Any) -> None:
    async with (
        aiohttp.ClientSession() as session,
        session.get(sync_watchdog.url("/hello")) as response,
    ):
        assert response.status == 200
        assert await response.text() == "Hello from OpenFaaS!"
        assert ORIGIN not in response.headers


@pytest.mark.parametrize(
    ("path", "status", "body", "content_type"),
    [
        ("/none", 200, b"", None),
        ("/text", 200, b"plain text", "text/html; charset=utf-8"),
        ("/bytes", 200, b"\x00\x01raw", "text/html; charset=utf-8"),
        ("/json", 201, b'{"ok":true,"items":[1,2]}', "application/json"),
    ],
)
async def test_results_map_to_responses(
    sync_watchdog: Any, path: str, status: int, body: bytes, content_type: str | None
) -> None:
    async with aiohttp.ClientSession() as session, session.get(sync_watchdog.url(path)) as response:
        assert response.status == status
        assert await response.read() == body
        if content_type is not None:
            assert response.headers["Content-Type"] == content_type


async def test_handler_headers_reach_the_caller(sync_watchdog: Any) -> None:
    async with (
        aiohttp.ClientSession() as session,
        session.get(sync_watchdog.url("/json")) as response,
    ):
        assert response.headers["X-Custom"] == "yes"


async def test_event_and_context_carry_the_request(sync_watchdog: Any) -> None:
    async with (
        aiohttp.ClientSession() as session,
        session.post(
            sync_watchdog.url("/event?a=1&a=2&b=x"),
            data=b"payload",
            headers={"Content-Type": "text/plain", "X-Call-Id": "call-1"},
        ) as response,
    ):
        assert response.status == 200
        seen = await response.json()
    assert seen == {
        "method": "POST",
        "path": "/event",
        "query": {"a": ["1", "2"], "b": ["x"]},
        "content_type": "text/plain",
        "x_call_id": "call-1",
        "body": "payload",
        "body_type": "bytes",
        "hostname": seen["hostname"],
    }
    assert seen["hostname"]


async def test_every_function_response_has_a_duration(sync_watchdog: Any) -> None:
    async with aiohttp.ClientSession() as session:
        for path in ("/hello", "/raise", "/missing"):
            async with session.get(sync_watchdog.url(path)) as response:
                assert re.fullmatch(r"\d+\.\d{6}", response.headers["X-Duration-Seconds"]), path


async def test_handler_exception_is_a_500_with_the_traceback_in_the_log_only(
    sync_watchdog: Any,
) -> None:
    async with (
        aiohttp.ClientSession() as session,
        session.get(sync_watchdog.url("/raise")) as response,
    ):
        assert response.status == 500
        body = await response.text()
        assert response.headers[ORIGIN] == "watchdog"
    assert body.strip() == "handler error: ValueError"
    assert "kaboom" not in body
    log = sync_watchdog.wait_log(
        r"(?s)handler error: ValueError: kaboom-detail-for-the-log\nTraceback"
    )
    assert 'in handle\n    raise ValueError("kaboom-detail-for-the-log")' in log.string


async def test_print_goes_to_stdout_as_is(sync_watchdog: Any) -> None:
    async with (
        aiohttp.ClientSession() as session,
        session.get(sync_watchdog.url("/print")) as response,
    ):
        assert response.status == 200
    sync_watchdog.wait_log(r"(?m)^printed-by-the-handler$", stream="stdout")


@pytest.mark.parametrize("chunked", [False, True])
async def test_body_over_max_body_bytes_is_413(sync_watchdog: Any, chunked: bool) -> None:
    async def chunks() -> Any:
        yield b"x" * 1000
        yield b"x" * 1000

    data: Any = chunks() if chunked else b"x" * 1025
    async with (
        aiohttp.ClientSession() as session,
        session.post(sync_watchdog.url("/event"), data=data) as response,
    ):
        assert response.status == 413
        assert response.headers[ORIGIN] == "watchdog"
    async with (
        aiohttp.ClientSession() as session,
        session.post(sync_watchdog.url("/event"), data=b"x" * 1024) as response,
    ):
        assert response.status == 200


async def test_metrics_count_requests_on_the_metrics_port(sync_watchdog: Any) -> None:
    async with aiohttp.ClientSession() as session:
        async with session.get(sync_watchdog.url("/hello")) as response:
            assert response.status == 200
        async with session.get(sync_watchdog.metrics_url()) as response:
            assert response.status == 200
            assert response.headers["Content-Type"].startswith("text/plain; version=0.0.4")
            text = await response.text()
    count = re.search(r'^http_requests_total\{code="200",method="get"\} (\d+)$', text, re.M)
    assert count is not None and int(count[1]) >= 1
    assert re.search(
        r'^http_request_duration_seconds_bucket\{code="200",method="get",le="0.005"\} \d+$',
        text,
        re.M,
    )
    assert re.search(
        r'^http_request_duration_seconds_bucket\{code="200",method="get",le="\+Inf"\} \d+$',
        text,
        re.M,
    )
    assert re.search(
        r'^http_request_duration_seconds_sum\{code="200",method="get"\} [0-9.e-]+$', text, re.M
    )
    assert re.search(
        r'^http_request_duration_seconds_count\{code="200",method="get"\} \d+$', text, re.M
    )
    assert re.search(r"^http_requests_in_flight 0$", text, re.M)
    # Probes are not function requests.
    assert "/_/" not in text


async def test_async_handler_runs_on_the_loop(async_watchdog: Any) -> None:
    async with (
        aiohttp.ClientSession() as session,
        session.get(async_watchdog.url("/hello")) as response,
    ):
        assert response.status == 200
        assert await response.text() == "hello from async"


async def test_async_handler_error_is_500(async_watchdog: Any) -> None:
    async with (
        aiohttp.ClientSession() as session,
        session.get(async_watchdog.url("/raise")) as response,
    ):
        assert response.status == 500
        assert (await response.text()).strip() == "handler error: KeyError"


async def test_async_handler_is_cancelled_at_exec_timeout(
    async_watchdog: Any, tmp_path: Path, helpers: Any
) -> None:
    marker = tmp_path / "cancelled"
    async with (
        aiohttp.ClientSession() as session,
        session.get(async_watchdog.url("/sleep"), params={"cancelled": str(marker)}) as response,
    ):
        assert response.status == 504
        assert response.headers[ORIGIN] == "watchdog"
        assert "exec_timeout" in await response.text()
    # The handler saw its cancellation: the work is gone, not left running.
    await helpers.until(marker.exists, what="the handler's cancellation marker")
    async_watchdog.wait_log(r"exec_timeout 1s reached: handler cancelled")


async def test_sync_handler_gets_504_at_exec_timeout(
    limited_watchdog: Any, tmp_path: Path, helpers: Any
) -> None:
    gate, finished = tmp_path / "gate", tmp_path / "finished"
    try:
        async with (
            aiohttp.ClientSession() as session,
            session.get(
                limited_watchdog.url("/gate"), params={"gate": str(gate), "finished": str(finished)}
            ) as response,
        ):
            assert response.status == 504
            assert response.headers[ORIGIN] == "watchdog"
        limited_watchdog.wait_log(r"exec_timeout 2s reached: .*thread")
        assert not finished.exists()
    finally:
        gate.touch()  # let the thread end: it holds the only pool thread of this watchdog
    await helpers.until(finished.exists, what="the sync handler to finish")


async def test_over_max_inflight_is_429_at_once(
    limited_watchdog: Any, tmp_path: Path, helpers: Any
) -> None:
    gate, entered = tmp_path / "gate", tmp_path / "entered"
    async with aiohttp.ClientSession() as session:

        async def first_request() -> tuple[int, str]:
            async with session.get(
                limited_watchdog.url("/gate"), params={"gate": str(gate), "entered": str(entered)}
            ) as response:
                return response.status, await response.text()

        first = asyncio.create_task(first_request())
        try:
            await helpers.until(entered.exists, what="the first request to be in the handler")
            async with session.get(limited_watchdog.url("/hello")) as response:
                assert response.status == 429
                assert response.headers[ORIGIN] == "watchdog"
                assert "max_inflight=1" in await response.text()
                assert "X-Duration-Seconds" in response.headers
            async with session.get(limited_watchdog.url("/_/ready")) as response:
                assert response.status == 429
            async with session.get(limited_watchdog.url("/_/health")) as response:
                assert response.status == 200
        finally:
            gate.touch()
        assert await first == (200, "gate passed")
        async with session.get(limited_watchdog.url("/hello")) as response:
            assert response.status == 200


async def test_handler_that_fails_to_import_keeps_the_watchdog_up_but_unready(
    start_watchdog: Any, tmp_path: Path, helpers: Any
) -> None:
    function = tmp_path / "broken" / "function"
    function.mkdir(parents=True)
    (function / "handler.py").write_text(
        "import json\nraise RuntimeError('import-time failure marker')\n"
    )
    watchdog = start_watchdog(cwd=function.parent, wait="listening")
    watchdog.wait_log(
        r"(?s)handler import failed: function.handler:handle.*Traceback.*import-time failure marker"
    )
    async with aiohttp.ClientSession() as session:
        async with session.get(watchdog.url("/_/health")) as response:
            assert response.status == 200
        async with session.get(watchdog.url("/_/ready")) as response:
            assert response.status == 503
        async with session.get(watchdog.url("/anything")) as response:
            assert response.status == 503
            assert response.headers[ORIGIN] == "watchdog"
            assert "failed to import" in await response.text()
    assert watchdog.process.poll() is None


async def test_missing_handler_function_is_reported(start_watchdog: Any, tmp_path: Path) -> None:
    function = tmp_path / "nofunc" / "function"
    function.mkdir(parents=True)
    (function / "handler.py").write_text("def other(event, context):\n    return 'x'\n")
    watchdog = start_watchdog(cwd=function.parent, wait="listening")
    watchdog.wait_log(r"handler import failed: .*has no attribute 'handle'")
    async with (
        aiohttp.ClientSession() as session,
        session.get(watchdog.url("/_/ready")) as response,
    ):
        assert response.status == 503


async def test_expect_100_continue_is_answered(sync_watchdog: Any) -> None:
    # aiohttp's client waits for "100 Continue" before sending the body: without the interim
    # response both sides would wait on each other.
    async with (
        aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10)) as session,
        session.post(sync_watchdog.url("/event"), data=b"x" * 900, expect100=True) as response,
    ):
        assert response.status == 200
        assert (await response.json())["body"] == "x" * 900
