from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from runtime.build import builder
from runtime.build.builder import (
    FunctionBuild,
    build_function,
    ensure_watchdog_image,
    watchdog_digest,
)
from runtime.errors import BuildFailed, InvalidSpec


def handler_dir(tmp_path: Path, *files: str) -> Path:
    folder = tmp_path / "fn"
    folder.mkdir(exist_ok=True)
    for name in files:
        (folder / name).write_text("")
    return folder


@pytest.mark.parametrize(
    ("fn", "message"),
    [
        (
            FunctionBuild("hello", "node18", Path("."), "hello:latest"),
            "function 'hello': unknown lang 'node18'; localfaas builds 'python3-http' and "
            "'dockerfile' (use skip_build with a prebuilt image for anything else)",
        ),
        (
            FunctionBuild("Hello", "python3-http", Path("."), "hello:latest"),
            "cannot build: function name 'Hello' is invalid",
        ),
        (
            FunctionBuild("hello", "python3-http", Path("/nonexistent/fn"), "hello:latest"),
            "function 'hello': handler folder /nonexistent/fn does not exist",
        ),
        (
            FunctionBuild("hello", "python3-http", Path("."), "my image"),
            "function 'hello': image 'my image' is not a valid image name",
        ),
    ],
)
async def test_bad_builds_are_refused_before_docker(fn: FunctionBuild, message: str) -> None:
    docker: Any = object()  # any use of Docker would fail loudly
    with pytest.raises(InvalidSpec) as info:
        await build_function(docker, fn, base_image="base", cache_dir=Path("/tmp"))
    assert str(info.value).startswith(message)


async def test_handler_folder_must_hold_the_langs_entry_file(tmp_path: Path) -> None:
    docker: Any = object()
    folder = handler_dir(tmp_path, "requirements.txt")
    with pytest.raises(InvalidSpec, match=r"has no handler.py \(lang: python3-http\)"):
        await build_function(
            docker,
            FunctionBuild("a", "python3-http", folder, "a:1"),
            base_image="b",
            cache_dir=tmp_path,
        )
    with pytest.raises(InvalidSpec, match=r"has no Dockerfile \(lang: dockerfile\)"):
        await build_function(
            docker,
            FunctionBuild("a", "dockerfile", folder, "a:1"),
            base_image="b",
            cache_dir=tmp_path,
        )


async def test_missing_watchdog_source_is_reported(tmp_path: Path) -> None:
    docker: Any = object()
    with pytest.raises(BuildFailed, match="watchdog source not found"):
        await ensure_watchdog_image(
            docker, base_image="b", cache_dir=tmp_path, watchdog_src=tmp_path
        )


def test_watchdog_digest_changes_exactly_with_its_inputs(tmp_path: Path) -> None:
    src = tmp_path / "watchdog"
    src.mkdir()
    (src / "__main__.py").write_text("print('hi')\n")
    (src / "__pycache__").mkdir()
    args: dict[str, Any] = {
        "base_id": "sha256:a",
        "dockerfile": b"FROM x",
        "requirements": ("aiohttp",),
        "src": src,
    }
    first = watchdog_digest(**args)
    assert len(first) == 12 and int(first, 16) >= 0
    (src / "__pycache__" / "__main__.cpython-311.pyc").write_bytes(b"junk")
    assert watchdog_digest(**args) == first  # bytecode is not source
    for key, value in [
        ("base_id", "sha256:b"),
        ("dockerfile", b"FROM y"),
        ("requirements", ("aiohttp", "uvloop")),
    ]:
        assert watchdog_digest(**{**args, key: value}) != first
    (src / "modes.py").write_text("")
    assert watchdog_digest(**args) != first


def test_default_watchdog_source_is_the_repos_package() -> None:
    assert builder.DEFAULT_WATCHDOG_SRC == Path(__file__).resolve().parents[3] / "watchdog"


def test_templates_are_shipped() -> None:
    for rel in [
        "watchdog/Dockerfile",
        "python3-http/Dockerfile",
        "python3-http/function/handler.py",
        "python3-http/function/requirements.txt",
        "dockerfile/function/Dockerfile",
    ]:
        assert (builder.TEMPLATES_DIR / rel).is_file(), rel


def test_watchdog_template_runs_as_app_with_a_healthcheck() -> None:
    text = (builder.TEMPLATES_DIR / "watchdog" / "Dockerfile").read_text()
    assert "useradd --uid 10001" in text and "\nUSER app\n" in text
    assert "HEALTHCHECK" in text and "/_/health" in text
    assert 'CMD ["python3", "-m", "watchdog"]' in text
    sample = (builder.TEMPLATES_DIR / "dockerfile" / "function" / "Dockerfile").read_text()
    assert "ARG WATCHDOG_IMAGE=localfaas/watchdog:latest\nFROM ${WATCHDOG_IMAGE}" in sample
    assert "ENV mode=fork fprocess=cat" in sample
