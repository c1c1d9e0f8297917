"""Build real images on the real engine, run them, and call them."""

from __future__ import annotations

import time
import uuid
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import aiodocker
import aiohttp
import pytest

from runtime.build import (
    BuildProgress,
    FunctionBuild,
    build_function,
    create_function,
    ensure_watchdog_image,
    probe_target,
)
from runtime.errors import BuildFailed

# The `run_image` fixture (tests/integration/conftest.py): image → started, ready container.
RunImage = Callable[..., Awaitable[Any]]

pytestmark = pytest.mark.docker


def python_handler(root: Path, marker: str) -> Path:
    """An OpenFaaS python3-http handler folder, with a requirement and a relative import."""
    folder = root / "fn"
    folder.mkdir()
    (folder / "helper.py").write_text(f"MARKER = {marker!r}\n")
    (folder / "handler.py").write_text(
        "import os\n"
        "import six\n"
        "from .helper import MARKER\n\n\n"
        "def handle(event, context):\n"
        "    body = f'{MARKER} six={six.__version__} uid={os.getuid()} got={event.body!r}'\n"
        "    return {'statusCode': 200, 'body': body}\n"
    )
    (folder / "requirements.txt").write_text("six\n")
    # What `faas-cli new --lang python3-http` also leaves in the folder.
    (folder / "handler_test.py").write_text(
        "from .handler import handle\n\n\ndef test_handle():\n    pass\n"
    )
    (folder / "tox.ini").write_text("[tox]\nskipsdist = true\n")
    return folder


async def test_base_image_target(
    docker: aiodocker.Docker, base_image: str, build_cache_dir: Path
) -> None:
    target = await probe_target(docker, base_image, cache_dir=build_cache_dir)
    assert target.python_version.startswith("3.")
    assert target.glibc >= (2, 28)
    info = await docker.system.info()
    assert target.arch == {"amd64": "x86_64", "arm64": "aarch64"}.get(
        info["Architecture"], info["Architecture"]
    )
    assert (build_cache_dir / "targets.json").is_file()


async def test_python3_http_function_builds_and_serves(
    docker: aiodocker.Docker,
    base_image: str,
    build_cache_dir: Path,
    image_tag: Callable[[str], str],
    run_image: RunImage,
    tmp_path: Path,
) -> None:
    marker = uuid.uuid4().hex
    fn = FunctionBuild(
        "hello", "python3-http", python_handler(tmp_path, marker), image_tag("hello")
    )
    events: list[BuildProgress] = []
    built = await build_function(
        docker, fn, base_image=base_image, cache_dir=build_cache_dir, on_progress=events.append
    )
    assert built.image == fn.image and built.image_id.startswith("sha256:")
    steps = [e for e in events if e.subject == "hello" and e.total]
    assert steps and steps[-1].step == steps[-1].total == built.steps_total
    assert any(e.message.startswith("COPY function/") for e in steps)

    config = (await docker.images.inspect(fn.image))["Config"]
    assert config["User"] == "app"
    assert "/_/health" in " ".join(config["Healthcheck"]["Test"])
    assert config["Labels"]["com.localfaas.function"] == "hello"
    assert "mode=python" in config["Env"]

    running = await run_image(fn.image)
    async with aiohttp.ClientSession() as session:
        async with session.post(running.url + "/", data=b"ping") as resp:
            assert resp.status == 200
            assert await resp.text() == f"{marker} six=1.17.0 uid=10001 got=b'ping'"
        async with session.get(running.url + "/_/ready") as resp:
            assert resp.status == 200
        async with session.get(running.url + "/_/health") as resp:
            assert resp.status == 200

    # Bytecode was compiled at build time: a read-only root filesystem serves as well.
    read_only = await run_image(fn.image, read_only=True)
    async with aiohttp.ClientSession() as session:
        async with session.post(read_only.url + "/", data=b"ro") as resp:
            assert resp.status == 200
            assert (await resp.text()).startswith(marker)


async def test_dockerfile_function_runs_cat_in_fork_mode(
    docker: aiodocker.Docker,
    base_image: str,
    build_cache_dir: Path,
    image_tag: Callable[[str], str],
    run_image: RunImage,
    tmp_path: Path,
) -> None:
    folder = create_function("echo", "dockerfile", tmp_path)
    fn = FunctionBuild("echo", "dockerfile", folder, image_tag("echo"))
    await build_function(docker, fn, base_image=base_image, cache_dir=build_cache_dir)

    config = (await docker.images.inspect(fn.image))["Config"]
    # Inherited from the watchdog image.
    assert config["User"] == "app"
    assert config["Healthcheck"]["Test"][0] == "CMD"
    assert "fprocess=cat" in config["Env"]

    running = await run_image(fn.image)
    async with aiohttp.ClientSession() as session:
        async with session.post(running.url + "/", data=b"echo me") as resp:
            assert resp.status == 200
            assert await resp.read() == b"echo me"


async def test_unchanged_rebuild_is_fully_cached_and_faster(
    docker: aiodocker.Docker,
    base_image: str,
    build_cache_dir: Path,
    image_tag: Callable[[str], str],
    tmp_path: Path,
) -> None:
    # The watchdog image is shared by all builds; have it in place so both timings are
    # about the function.
    await ensure_watchdog_image(docker, base_image=base_image, cache_dir=build_cache_dir)
    fn = FunctionBuild(
        "cached", "python3-http", python_handler(tmp_path, uuid.uuid4().hex), image_tag("cached")
    )
    started = time.monotonic()
    first = await build_function(docker, fn, base_image=base_image, cache_dir=build_cache_dir)
    first_s = time.monotonic() - started
    assert "COPY function/ /home/app/function/" in first.uncached_steps

    started = time.monotonic()
    again = await build_function(docker, fn, base_image=base_image, cache_dir=build_cache_dir)
    again_s = time.monotonic() - started
    assert again.uncached_steps == ()
    assert again.fully_cached
    assert again.image_id == first.image_id
    assert again_s < first_s
    print(f"first build {first_s:.2f}s, cached rebuild {again_s:.2f}s")

    # Editing the handler rebuilds from its COPY on; the requirements layers stay cached.
    (fn.handler_dir / "helper.py").write_text("MARKER = 'edited'\n")
    edited = await build_function(docker, fn, base_image=base_image, cache_dir=build_cache_dir)
    assert edited.uncached_steps[0] == "COPY function/ /home/app/function/"
    assert not any("function-deps" in step for step in edited.uncached_steps)


async def test_failing_run_step_is_named(
    docker: aiodocker.Docker,
    base_image: str,
    build_cache_dir: Path,
    image_tag: Callable[[str], str],
    tmp_path: Path,
) -> None:
    marker = uuid.uuid4().hex
    (tmp_path / "Dockerfile").write_text(
        f"ARG WATCHDOG_IMAGE\nFROM ${{WATCHDOG_IMAGE}}\nRUN echo about to fail {marker} && exit 3\n"
    )
    fn = FunctionBuild("broken", "dockerfile", tmp_path, image_tag("broken"))
    with pytest.raises(BuildFailed) as info:
        await build_function(docker, fn, base_image=base_image, cache_dir=build_cache_dir)
    message = str(info.value)
    assert message.startswith("building broken failed at step 3/")
    assert f"(RUN echo about to fail {marker} && exit 3)" in message
    assert "returned a non-zero code: 3" in message
    assert message.endswith(f"about to fail {marker}")  # the step's own output
    # No intermediate container is left behind by the failed step.
    leftovers = [c for c in await docker.containers.list(all=True) if marker in str(c["Command"])]
    assert leftovers == []


async def test_dockerfile_syntax_error_is_reported(
    docker: aiodocker.Docker,
    base_image: str,
    build_cache_dir: Path,
    image_tag: Callable[[str], str],
    tmp_path: Path,
) -> None:
    (tmp_path / "Dockerfile").write_text("FROM scratch\nFROBNICATE now\n")
    fn = FunctionBuild("typo", "dockerfile", tmp_path, image_tag("typo"))
    with pytest.raises(BuildFailed, match=r"building typo failed: .*unknown instruction"):
        await build_function(docker, fn, base_image=base_image, cache_dir=build_cache_dir)


async def test_missing_base_image_is_a_clear_error(
    docker: aiodocker.Docker, build_cache_dir: Path, tmp_path: Path
) -> None:
    folder = create_function("hello", "python3-http", tmp_path)
    fn = FunctionBuild("hello", "python3-http", folder, "localfaas-test/never:1")
    with pytest.raises(
        BuildFailed, match="base image localfaas-test/no-such-base:1 is not present"
    ):
        await build_function(
            docker, fn, base_image="localfaas-test/no-such-base:1", cache_dir=build_cache_dir
        )
