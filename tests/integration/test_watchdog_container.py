"""The watchdog's guarantees inside real containers built by our builder: the in-flight limit,
exec timeouts that really stop the work, a graceful drain on `docker stop`, and logs."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import aiodocker
import aiohttp
import pytest

from runtime.build import FunctionBuild, build_function

RunImage = Callable[..., Awaitable[Any]]
pytestmark = pytest.mark.docker

SLOW_HANDLER = """import time


def handle(event, context):
    seconds = float(event.query.get("sleep", "0"))
    print(f"handling sleep={seconds}", flush=True)
    time.sleep(seconds)
    return f"slept {seconds}"
"""


async def build_python(
    docker: aiodocker.Docker, base_image: str, cache: Path, tag: str, tmp: Path
) -> str:
    folder = tmp / "slow"
    folder.mkdir()
    (folder / "handler.py").write_text(SLOW_HANDLER)
    await build_function(
        docker,
        FunctionBuild("slow", "python3-http", folder, tag),
        base_image=base_image,
        cache_dir=cache,
    )
    return tag


async def test_in_flight_limit_timeout_and_logs(
    docker: aiodocker.Docker,
    base_image: str,
    build_cache_dir: Path,
    image_tag: Callable[[str], str],
    run_image: RunImage,
    tmp_path: Path,
) -> None:
    image = await build_python(docker, base_image, build_cache_dir, image_tag("slow"), tmp_path)
    running = await run_image(image, env={"max_inflight": "1", "exec_timeout": "2s"})
    async with aiohttp.ClientSession() as session:
        slow = asyncio.create_task(session.get(running.url + "/?sleep=1.0"))
        # Wait (bounded) until the slow request is in flight, then the next one is refused.
        for _ in range(200):
            async with session.get(running.url + "/_/ready") as ready:
                if ready.status == 429:
                    break
            await asyncio.sleep(0.01)
        else:
            raise AssertionError("/_/ready never reported the in-flight limit")
        async with session.get(running.url + "/?sleep=0") as refused:
            assert refused.status == 429
            assert refused.headers["X-Localfaas-Origin"] == "watchdog"
        async with await slow as done:
            assert done.status == 200 and await done.text() == "slept 1.0"
        async with session.get(running.url + "/?sleep=5") as timed_out:
            assert timed_out.status == 504
            assert float(timed_out.headers["X-Duration-Seconds"]) < 4
    logs = await running.logs()
    assert "handling sleep=1.0" in logs and "handling sleep=5" in logs


async def test_fork_mode_timeout_kills_the_process(
    docker: aiodocker.Docker,
    base_image: str,
    build_cache_dir: Path,
    image_tag: Callable[[str], str],
    run_image: RunImage,
    tmp_path: Path,
) -> None:
    folder = tmp_path / "sleeper"
    folder.mkdir()
    (folder / "Dockerfile").write_text(
        "ARG WATCHDOG_IMAGE=localfaas/watchdog:latest\nFROM ${WATCHDOG_IMAGE}\n"
        'ENV mode=fork fprocess="sleep 30" exec_timeout=1s\n'
    )
    fn = FunctionBuild("sleeper", "dockerfile", folder, image_tag("sleeper"))
    await build_function(docker, fn, base_image=base_image, cache_dir=build_cache_dir)
    running = await run_image(fn.image)
    async with (
        aiohttp.ClientSession() as session,
        session.post(running.url + "/", data=b"") as resp,
    ):
        assert resp.status == 504
    # The whole process group is gone, not left running in the container.
    for _ in range(100):
        top = await running.container.top()
        commands = [row[-1] for row in top["Processes"]]
        if not any("sleep 30" in command for command in commands):
            break
        await asyncio.sleep(0.05)
    else:
        raise AssertionError(f"sleep 30 still running after the timeout: {commands}")


async def test_docker_stop_drains_in_flight_then_exits_0(
    docker: aiodocker.Docker,
    base_image: str,
    build_cache_dir: Path,
    image_tag: Callable[[str], str],
    run_image: RunImage,
    tmp_path: Path,
) -> None:
    image = await build_python(docker, base_image, build_cache_dir, image_tag("slow"), tmp_path)
    running = await run_image(image, env={"healthcheck_interval": "0.2s", "write_timeout": "10s"})
    async with aiohttp.ClientSession() as session:
        slow = asyncio.create_task(session.get(running.url + "/?sleep=1.5"))
        for _ in range(200):  # until the handler has started
            if "handling sleep=1.5" in await running.logs():
                break
            await asyncio.sleep(0.01)
        stop = asyncio.create_task(running.container.stop(t=20))
        async with await slow as resp:
            assert resp.status == 200 and await resp.text() == "slept 1.5"
        await stop
    state = (await running.container.show())["State"]
    assert state["Running"] is False and state["ExitCode"] == 0, state
