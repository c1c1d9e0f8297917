"""Static mode path resolution: index files, and nothing outside the folder."""

from __future__ import annotations

from pathlib import Path

import pytest

from watchdog.config import WatchdogConfig
from watchdog.modes.static import StaticMode


@pytest.fixture
def mode(tmp_path: Path) -> StaticMode:
    public = tmp_path / "public"
    (public / "sub").mkdir(parents=True)
    (public / "index.html").write_text("i")
    (public / "a.txt").write_text("a")
    (public / "sub" / "index.html").write_text("s")
    (public / "empty").mkdir()
    (tmp_path / "secret").write_text("s")
    (public / "out").symlink_to(tmp_path / "secret")
    (public / "in").symlink_to(public / "a.txt")
    return StaticMode(WatchdogConfig.from_env({"mode": "static", "static_path": str(public)}))


@pytest.mark.parametrize(
    ("url_path", "relative"),
    [
        ("/", "index.html"),
        ("/a.txt", "a.txt"),
        ("/sub", "sub/index.html"),
        ("/sub/", "sub/index.html"),
        ("/in", "a.txt"),
    ],
)
def test_found(mode: StaticMode, tmp_path: Path, url_path: str, relative: str) -> None:
    assert mode.resolve(url_path) == str((tmp_path / "public" / relative).resolve())


@pytest.mark.parametrize(
    "url_path", ["/missing", "/empty", "/../secret", "/sub/../../secret", "/out", "/a.txt\x00.png"]
)
def test_not_found(mode: StaticMode, url_path: str) -> None:
    assert mode.resolve(url_path) is None


async def test_missing_folder_is_unready(tmp_path: Path) -> None:
    mode = StaticMode(
        WatchdogConfig.from_env({"mode": "static", "static_path": str(tmp_path / "nope")})
    )
    assert await mode.start(lambda reason: None) is False
    assert not mode.ready
