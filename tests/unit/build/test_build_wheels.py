from __future__ import annotations

from pathlib import Path

import pytest

from runtime.build import wheels
from runtime.build.target import ImageTarget
from runtime.build.wheels import (
    install_requirements,
    is_pure_python_wheel,
    platform_tags,
    requirements_file_is_empty,
    target_pip_args,
    wheel_cache_dir,
)
from runtime.errors import BuildFailed

X86 = ImageTarget("3.11", "x86_64", (2, 36))


def test_platform_tags_cover_every_glibc_down_to_2_5_with_aliases_in_place() -> None:
    tags = platform_tags(X86)
    assert tags[0] == "manylinux_2_36_x86_64"
    assert tags[-2:] == ["manylinux_2_5_x86_64", "manylinux1_x86_64"]
    assert [f"manylinux_2_{n}_x86_64" for n in range(36, 4, -1)] == [
        t for t in tags if t.startswith("manylinux_2_")
    ]
    # Each legacy alias sits right after the glibc version it stands for.
    assert tags[tags.index("manylinux_2_17_x86_64") + 1] == "manylinux2014_x86_64"
    assert tags[tags.index("manylinux_2_12_x86_64") + 1] == "manylinux2010_x86_64"
    assert len(tags) == len(set(tags)) == 32 + 3


def test_platform_tags_only_use_aliases_the_architecture_had() -> None:
    tags = platform_tags(ImageTarget("3.12", "aarch64", (2, 31)))
    assert "manylinux2014_aarch64" in tags
    assert not any(t.startswith(("manylinux2010", "manylinux1_")) for t in tags)


def test_platform_tags_for_an_old_glibc_stop_at_its_version() -> None:
    tags = platform_tags(ImageTarget("3.11", "x86_64", (2, 12)))
    assert tags[0] == "manylinux_2_12_x86_64"
    assert "manylinux2014_x86_64" not in tags
    assert "manylinux2010_x86_64" in tags


def test_target_pip_args_select_the_image_interpreter() -> None:
    args = target_pip_args(ImageTarget("3.12", "aarch64", (2, 36)))
    assert args[:5] == ["--only-binary=:all:", "--python-version", "3.12", "--implementation", "cp"]
    assert args.count("--platform") == len(platform_tags(ImageTarget("3.12", "aarch64", (2, 36))))


def test_wheel_cache_is_per_python_and_arch(tmp_path: Path) -> None:
    assert wheel_cache_dir(tmp_path, X86) == tmp_path / "wheels" / "cp311-manylinux-x86_64"


@pytest.mark.parametrize(
    ("filename", "pure"),
    [
        ("six-1.17.0-py2.py3-none-any.whl", True),
        ("docopt-0.6.2-py3-none-any.whl", True),
        ("pkg-1.0-1-py3-none-any.whl", True),  # with a build tag
        ("pkg-1.0-py2-none-any.whl", False),
        ("pkg-1.0-cp311-cp311-linux_x86_64.whl", False),
        ("pkg-1.0-cp311-abi3-manylinux_2_17_x86_64.whl", False),
        ("pkg-1.0.tar.gz", False),
    ],
)
def test_is_pure_python_wheel(filename: str, pure: bool) -> None:
    assert is_pure_python_wheel(filename) is pure


def test_requirements_file_is_empty(tmp_path: Path) -> None:
    req = tmp_path / "requirements.txt"
    assert requirements_file_is_empty(req)  # missing
    req.write_text("\n# just a comment\n   \n")
    assert requirements_file_is_empty(req)
    req.write_text("six  # pinned later\n")
    assert not requirements_file_is_empty(req)


class FakePip:
    """Stands in for the host's pip: answers each call from a script, records the calls."""

    def __init__(self, *results: wheels._PipResult) -> None:
        self.results = list(results)
        self.calls: list[tuple[str, ...]] = []

    async def __call__(self, command: str, *args: str) -> wheels._PipResult:
        self.calls.append((command, *args))
        if command == "wheel":
            wheel_dir = Path(args[args.index("--wheel-dir") + 1])
            (wheel_dir / self.wheel_name).write_bytes(b"wheel")
        return self.results.pop(0)

    wheel_name = "docopt-0.6.2-py2.py3-none-any.whl"

    @property
    def commands(self) -> list[str]:
        return [call[0] for call in self.calls]


OK = wheels._PipResult(0, "Successfully installed")
NO_WHEEL = wheels._PipResult(
    1,
    "ERROR: Could not find a version that satisfies the requirement docopt==0.6.2 "
    "(from versions: none)\nERROR: No matching distribution found for docopt==0.6.2\n",
)


@pytest.fixture
def fake_pip(monkeypatch: pytest.MonkeyPatch) -> FakePip:
    fake = FakePip()
    monkeypatch.setattr(wheels, "_run_pip", fake)
    return fake


async def test_empty_requirements_do_not_run_pip(tmp_path: Path, fake_pip: FakePip) -> None:
    (tmp_path / "requirements.txt").write_text("# nothing yet\n")
    dest = tmp_path / "deps"
    await install_requirements(
        target=X86, dest=dest, cache_dir=tmp_path, requirements_file=tmp_path / "requirements.txt"
    )
    assert dest.is_dir() and not any(dest.iterdir())
    assert fake_pip.calls == []


async def test_cached_wheels_install_without_downloading(tmp_path: Path, fake_pip: FakePip) -> None:
    fake_pip.results = [OK]
    statuses: list[str] = []
    await install_requirements(
        target=X86,
        dest=tmp_path / "deps",
        cache_dir=tmp_path,
        requirements=["six"],
        on_status=statuses.append,
    )
    assert fake_pip.commands == ["install"]
    install = fake_pip.calls[0]
    assert "--no-index" in install and "--isolated" in install and "--no-compile" in install
    assert install[install.index("--find-links") + 1] == str(wheel_cache_dir(tmp_path, X86))
    assert install[install.index("--target") + 1] == str(tmp_path / "deps")
    assert statuses == []


async def test_missing_wheels_are_downloaded_then_installed(
    tmp_path: Path, fake_pip: FakePip
) -> None:
    fake_pip.results = [wheels._PipResult(1, "no such wheel"), OK, OK]
    statuses: list[str] = []
    dest = tmp_path / "deps"
    await install_requirements(
        target=X86, dest=dest, cache_dir=tmp_path, requirements=["six"], on_status=statuses.append
    )
    assert fake_pip.commands == ["install", "download", "install"]
    download = fake_pip.calls[1]
    assert download[download.index("--dest") + 1] == str(wheel_cache_dir(tmp_path, X86))
    assert "--only-binary=:all:" in download and download[-1] == "six"
    assert statuses == ["downloading wheels for cp311-manylinux_2_36_x86_64"]


async def test_bin_folder_is_dropped(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    dest = tmp_path / "deps"

    async def install_with_script(command: str, *args: str) -> wheels._PipResult:
        (dest / "bin").mkdir()
        (dest / "bin" / "tool").write_text("#!/host/python\n")
        (dest / "pkg.py").write_text("")
        return OK

    monkeypatch.setattr(wheels, "_run_pip", install_with_script)
    await install_requirements(target=X86, dest=dest, cache_dir=tmp_path, requirements=["pkg"])
    assert sorted(p.name for p in dest.iterdir()) == ["pkg.py"]


async def test_sdist_only_requirement_is_built_as_pure_wheel(
    tmp_path: Path, fake_pip: FakePip
) -> None:
    fake_pip.results = [NO_WHEEL, NO_WHEEL, OK, OK, OK]
    await install_requirements(
        target=X86, dest=tmp_path / "deps", cache_dir=tmp_path, requirements=["docopt==0.6.2"]
    )
    assert fake_pip.commands == ["install", "download", "wheel", "download", "install"]
    assert fake_pip.calls[2][-1] == "docopt==0.6.2" and "--no-deps" in fake_pip.calls[2]
    assert (wheel_cache_dir(tmp_path, X86) / FakePip.wheel_name).is_file()


async def test_compiled_source_build_is_refused_naming_requirement_and_target(
    tmp_path: Path, fake_pip: FakePip
) -> None:
    fake_pip.results = [NO_WHEEL, NO_WHEEL, OK]
    fake_pip.wheel_name = "docopt-0.6.2-cp311-cp311-linux_x86_64.whl"
    with pytest.raises(BuildFailed) as info:
        await install_requirements(
            target=X86, dest=tmp_path / "deps", cache_dir=tmp_path, requirements=["docopt==0.6.2"]
        )
    message = str(info.value)
    assert "'docopt==0.6.2'" in message
    assert "cp311-manylinux_2_36_x86_64" in message
    assert "pure-Python" in message and "linux_x86_64.whl" in message


async def test_unknown_requirement_fails_with_pip_output(tmp_path: Path, fake_pip: FakePip) -> None:
    fake_pip.results = [NO_WHEEL, NO_WHEEL, NO_WHEEL]
    with pytest.raises(BuildFailed) as info:
        await install_requirements(
            target=X86, dest=tmp_path / "deps", cache_dir=tmp_path, requirements=["docopt==0.6.2"]
        )
    assert "neither a wheel" in str(info.value)
    assert "No matching distribution found" in str(info.value)


async def test_download_failure_shows_the_tail_of_pip_output(
    tmp_path: Path, fake_pip: FakePip
) -> None:
    noisy = "\n".join(f"line {n}" for n in range(100)) + "\nERROR: network is unreachable"
    fake_pip.results = [wheels._PipResult(1, ""), wheels._PipResult(1, noisy)]
    with pytest.raises(BuildFailed) as info:
        await install_requirements(
            target=X86, dest=tmp_path / "deps", cache_dir=tmp_path, requirements=["six"]
        )
    message = str(info.value)
    assert message.startswith("downloading wheels for cp311-manylinux_2_36_x86_64 failed")
    assert "network is unreachable" in message and "line 50\n" not in message


async def test_run_pip_runs_the_host_pip_with_quiet_defaults() -> None:
    result = await wheels._run_pip("download", "--help")
    assert result.ok, result.output
    assert "Usage:" in result.output and "download" in result.output


def test_requirement_lines_drop_comments_like_pip(tmp_path: Path) -> None:
    req = tmp_path / "requirements.txt"
    req.write_text("# header\nsix  # why\n\npkg @ https://h/pkg.zip#egg=pkg\n  requests>=2 \n")
    assert wheels.requirement_lines(req) == [
        "six",
        "pkg @ https://h/pkg.zip#egg=pkg",
        "requests>=2",
    ]


async def test_plain_requirements_install_once_and_are_reused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls: list[str] = []

    async def fake_install(**kwargs: object) -> None:
        calls.append(str(kwargs["dest"]))
        dest = kwargs["dest"]
        assert isinstance(dest, Path)
        (dest / "six.py").write_text("")

    monkeypatch.setattr(wheels, "install_requirements", fake_install)
    req = tmp_path / "requirements.txt"
    req.write_text("six>=1.16  # pinned\nattrs[tests]==23.1 ; python_version >= '3.8'\n")
    cache = tmp_path / "cache"

    async def install() -> Path:
        return await wheels.install_requirements_file(
            target=X86, requirements_file=req, cache_dir=cache, scratch=tmp_path / "scratch"
        )

    first = await install()
    assert first.parent == cache / "installs" and (first / "six.py").is_file()
    assert await install() == first
    assert len(calls) == 1
    assert [p.name for p in (cache / "installs").iterdir()] == [first.name]  # no temp left

    # New wheels in the cache (another function downloaded some): installed again.
    wheel_cache_dir(cache, X86).mkdir(parents=True)
    (wheel_cache_dir(cache, X86) / "six-1.17.0-py2.py3-none-any.whl").write_bytes(b"")
    assert await install() != first
    assert len(calls) == 2


@pytest.mark.parametrize(
    "line", ["-r base.txt", "./libs/mine", "pkg @ https://example.invalid/pkg.zip", "-e ."]
)
async def test_requirements_pointing_elsewhere_are_installed_every_time(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, line: str
) -> None:
    calls: list[object] = []

    async def fake_install(**kwargs: object) -> None:
        calls.append(kwargs["dest"])

    monkeypatch.setattr(wheels, "install_requirements", fake_install)
    req = tmp_path / "requirements.txt"
    req.write_text(f"six\n{line}\n")
    for _ in range(2):
        got = await wheels.install_requirements_file(
            target=X86, requirements_file=req, cache_dir=tmp_path, scratch=tmp_path / "s"
        )
        assert got == tmp_path / "s"
    assert calls == [tmp_path / "s", tmp_path / "s"]
