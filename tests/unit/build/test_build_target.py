from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import aiodocker
import pytest

from runtime.build import target as target_mod
from runtime.build.target import ImageTarget, _parse_probe, probe_target
from runtime.errors import BuildFailed


def test_image_target_names() -> None:
    t = ImageTarget("3.11", "x86_64", (2, 36))
    assert t.python_tag == "cp311"
    assert t.wheel_cache_key == "cp311-manylinux-x86_64"
    assert str(t) == "cp311-manylinux_2_36_x86_64"


def test_parse_probe_of_a_debian_image() -> None:
    raw = {
        "python_version": "3.12",
        "implementation": "cpython",
        "arch": "aarch64",
        "libc": "glibc 2.36",
    }
    assert _parse_probe("img", raw) == ImageTarget("3.12", "aarch64", (2, 36))


def test_parse_probe_refuses_musl_and_pypy() -> None:
    musl = {"python_version": "3.12", "implementation": "cpython", "arch": "x86_64", "libc": ""}
    with pytest.raises(BuildFailed, match=r"python:3\.12-alpine is not glibc-based"):
        _parse_probe("python:3.12-alpine", musl)
    pypy = {
        "python_version": "3.10",
        "implementation": "pypy",
        "arch": "x86_64",
        "libc": "glibc 2.36",
    }
    with pytest.raises(BuildFailed, match="runs pypy, not CPython"):
        _parse_probe("pypy:3", pypy)


class FakeImages:
    def __init__(self, ids: dict[str, str]) -> None:
        self.ids = ids

    async def inspect(self, name: str) -> dict[str, Any]:
        if name not in self.ids:
            raise aiodocker.DockerError(404, f"No such image: {name}")
        return {"Id": self.ids[name]}


class FakeContainers:
    def __init__(self) -> None:
        self.created = 0

    async def create(self, config: dict[str, Any]) -> Any:
        self.created += 1
        raise AssertionError("the cache should have answered")


class FakeDocker:
    def __init__(self, ids: dict[str, str]) -> None:
        self.images = FakeImages(ids)
        self.containers = FakeContainers()


async def test_missing_base_image_says_how_to_get_it(tmp_path: Path) -> None:
    docker: Any = FakeDocker({})
    with pytest.raises(BuildFailed) as info:
        await probe_target(docker, "localfaas/python-base:bookworm", cache_dir=tmp_path)
    assert str(info.value) == (
        "base image localfaas/python-base:bookworm is not present; build it with "
        "scripts/build-base-image.sh or pull it (docker pull localfaas/python-base:bookworm)"
    )


async def test_probe_results_are_cached_by_image_id(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    probes: list[str] = []

    async def fake_probe(docker: Any, image: str, ident: str) -> dict[str, Any]:
        probes.append(ident)
        return {
            "python_version": "3.11",
            "implementation": "cpython",
            "arch": "x86_64",
            "libc": "glibc 2.36",
        }

    monkeypatch.setattr(target_mod, "_run_probe", fake_probe)
    docker: Any = FakeDocker({"base:1": "sha256:aaa"})
    first = await probe_target(docker, "base:1", cache_dir=tmp_path)
    again = await probe_target(docker, "base:1", cache_dir=tmp_path)
    assert first == again == ImageTarget("3.11", "x86_64", (2, 36))
    assert probes == ["sha256:aaa"]
    saved = json.loads((tmp_path / "targets.json").read_text())
    assert saved == {"sha256:aaa": {"python_version": "3.11", "arch": "x86_64", "glibc": "2.36"}}

    # The tag now points at a rebuilt image: probed again.
    docker.images.ids["base:1"] = "sha256:bbb"
    await probe_target(docker, "base:1", cache_dir=tmp_path)
    assert probes == ["sha256:aaa", "sha256:bbb"]


async def test_damaged_cache_is_ignored(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    async def fake_probe(docker: Any, image: str, ident: str) -> dict[str, Any]:
        return {
            "python_version": "3.12",
            "implementation": "cpython",
            "arch": "x86_64",
            "libc": "glibc 2.41",
        }

    monkeypatch.setattr(target_mod, "_run_probe", fake_probe)
    (tmp_path / "targets.json").write_text("{not json")
    docker: Any = FakeDocker({"base:1": "sha256:aaa"})
    assert (await probe_target(docker, "base:1", cache_dir=tmp_path)).glibc == (2, 41)
