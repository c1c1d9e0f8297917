from __future__ import annotations

import io
import os
import tarfile
from pathlib import Path, PurePosixPath

import pytest

from runtime.build import builder
from runtime.build.builder import FunctionBuild
from runtime.build.context import FIXED_MTIME, BuildContext
from runtime.build.progress import BuildProgress
from runtime.build.target import ImageTarget


def make_handler(root: Path) -> Path:
    (root / "lib").mkdir(parents=True)
    (root / "handler.py").write_text("def handle(event, context):\n    return 'hi'\n")
    (root / "requirements.txt").write_text("")
    (root / "lib" / "util.py").write_text("X = 1\n")
    (root / "run.sh").write_text("#!/bin/sh\n")
    (root / "run.sh").chmod(0o775)
    # What must never reach an image:
    (root / "__pycache__").mkdir()
    (root / "__pycache__" / "handler.cpython-311.pyc").write_bytes(b"\0")
    (root / "lib" / "util.pyc").write_bytes(b"\0")
    (root / ".git").mkdir()
    (root / ".git" / "HEAD").write_text("ref: refs/heads/main\n")
    return root


def members(data: bytes) -> dict[str, tarfile.TarInfo]:
    with tarfile.open(fileobj=io.BytesIO(data)) as tar:
        return {m.name: m for m in tar.getmembers()}


def test_tree_excludes_caches_and_vcs_and_orders_entries(tmp_path: Path) -> None:
    ctx = BuildContext()
    ctx.add_bytes("Dockerfile", b"FROM scratch\n")
    ctx.add_tree("function", make_handler(tmp_path / "fn"))
    assert ctx.names() == [
        "Dockerfile",
        "function",
        "function/handler.py",
        "function/lib",
        "function/lib/util.py",
        "function/requirements.txt",
        "function/run.sh",
    ]


def test_tar_metadata_is_normalised(tmp_path: Path) -> None:
    ctx = BuildContext()
    ctx.add_tree("function", make_handler(tmp_path / "fn"))
    ctx.add_bytes("deep/new/file.txt", b"x")
    got = members(ctx.to_bytes())
    assert {m.mtime for m in got.values()} == {FIXED_MTIME}
    assert {(m.uid, m.gid, m.uname, m.gname) for m in got.values()} == {(0, 0, "", "")}
    assert got["function/run.sh"].mode == 0o755
    assert got["function/handler.py"].mode == 0o644
    assert got["function/lib"].isdir() and got["function/lib"].mode == 0o755
    # Implied parents get explicit, fixed entries too.
    assert got["deep"].isdir() and got["deep/new"].isdir()


def test_unchanged_input_gives_identical_bytes(tmp_path: Path) -> None:
    handler = make_handler(tmp_path / "fn")

    def build() -> bytes:
        ctx = BuildContext()
        ctx.add_bytes("Dockerfile", b"FROM scratch\n")
        ctx.add_tree("function", handler)
        return ctx.to_bytes()

    first = build()
    # Touching files (new mtimes) or a umask-dependent mode change must not matter.
    os.utime(handler / "handler.py", (1, 1))
    (handler / "lib" / "util.py").chmod(0o600)
    assert build() == first
    (handler / "handler.py").write_text("def handle(event, context):\n    return 'bye'\n")
    assert build() != first


def test_symlinks_stay_symlinks(tmp_path: Path) -> None:
    handler = make_handler(tmp_path / "fn")
    (handler / "link.py").symlink_to("handler.py")
    (handler / "libdir").symlink_to("lib")
    ctx = BuildContext()
    ctx.add_tree("", handler)
    got = members(ctx.to_bytes())
    assert got["link.py"].issym() and got["link.py"].linkname == "handler.py"
    assert got["libdir"].issym() and got["libdir"].linkname == "lib"


def test_spooled_file_is_rewound_and_matches_bytes(tmp_path: Path) -> None:
    ctx = BuildContext()
    ctx.add_tree("function", make_handler(tmp_path / "fn"))
    with ctx.to_spooled_file() as fh:
        assert fh.read() == ctx.to_bytes()


@pytest.mark.parametrize("name", ["/etc/passwd", "../x", "a/../../b", "", "."])
def test_archive_names_cannot_escape(name: str) -> None:
    with pytest.raises(ValueError):
        BuildContext().add_bytes(name, b"")


async def test_python3_http_context_layout(tmp_path: Path) -> None:
    fn = FunctionBuild("hello", "python3-http", make_handler(tmp_path / "fn"), "hello:latest")
    events: list[BuildProgress] = []
    target = ImageTarget("3.11", "x86_64", (2, 36))
    ctx = await builder._python3_http_context(
        fn, target, tmp_path / "cache", tmp_path, events.append
    )
    names = ctx.names()
    assert names[:4] == ["Dockerfile", "function", "function/__init__.py", "function/handler.py"]
    assert "function-deps" in names
    assert not any("__pycache__" in n or n.endswith(".pyc") or ".git" in n for n in names)
    assert events == []  # nothing to install, nothing to report
    dockerfile = members(ctx.to_bytes())["Dockerfile"]
    assert dockerfile.size == len(
        (builder.TEMPLATES_DIR / "python3-http" / "Dockerfile").read_bytes()
    )


async def test_python3_http_keeps_the_handlers_own_init(tmp_path: Path) -> None:
    handler = make_handler(tmp_path / "fn")
    (handler / "__init__.py").write_text("VERSION = 2\n")
    fn = FunctionBuild("hello", "python3-http", handler, "hello:latest")
    target = ImageTarget("3.11", "x86_64", (2, 36))
    ctx = await builder._python3_http_context(fn, target, tmp_path / "c", tmp_path, lambda p: None)
    with tarfile.open(fileobj=io.BytesIO(ctx.to_bytes())) as tar:
        init = tar.extractfile("function/__init__.py")
        assert init is not None and init.read() == b"VERSION = 2\n"


def test_dockerfile_context_is_the_handler_folder(tmp_path: Path) -> None:
    handler = make_handler(tmp_path / "fn")
    (handler / "Dockerfile").write_text("FROM scratch\n")
    ctx = builder._dockerfile_context(FunctionBuild("x", "dockerfile", handler, "x:1"))
    assert ctx.names()[0] == "Dockerfile"
    assert "handler.py" in ctx.names() and "function/handler.py" not in ctx.names()


@pytest.mark.parametrize(
    ("rules", "path", "excluded"),
    [
        ("node_modules", "node_modules/a/b.js", True),
        ("node_modules", "src/node_modules/a.js", False),
        ("**/node_modules", "src/node_modules/a.js", True),
        ("*.log", "debug.log", True),
        ("*.log", "logs/debug.log", False),
        ("**/*.log", "logs/deep/debug.log", True),
        ("*.log\n!keep.log", "keep.log", False),
        ("*.log\n!keep.log\nkeep.log", "keep.log", True),
        ("/build/", "build/out.bin", True),
        ("doc?", "docs/x", True),
        ("doc?", "doc/x", False),
        ("[a-c].txt", "b.txt", True),
        ("[!a-c].txt", "b.txt", False),
        ("# comment\n\n*", "Dockerfile", False),
        ("*", ".dockerignore", False),
        ("*", "anything", True),
        ("./tmp", "tmp/x", True),
    ],
)
def test_dockerignore_rules(rules: str, path: str, excluded: bool) -> None:
    from runtime.build.context import DockerIgnore

    assert DockerIgnore(rules)(PurePosixPath(path)) is excluded


@pytest.mark.parametrize("rules", ["node_modules\n*.log\n", "node_modules\n*.log\n!keep.log\n"])
def test_dockerfile_context_honours_dockerignore(tmp_path: Path, rules: str) -> None:
    handler = tmp_path / "fn"
    (handler / "node_modules" / "pkg").mkdir(parents=True)
    (handler / "node_modules" / "pkg" / "index.js").write_text("")
    (handler / "Dockerfile").write_text("FROM scratch\n")
    (handler / ".dockerignore").write_text(rules + "Dockerfile\n")
    (handler / "app.js").write_text("")
    (handler / "debug.log").write_text("")
    (handler / "keep.log").write_text("")
    ctx = builder._dockerfile_context(FunctionBuild("x", "dockerfile", handler, "x:1"))
    expected = [".dockerignore", "Dockerfile", "app.js"]
    if "!keep.log" in rules:
        expected.append("keep.log")
    assert ctx.names() == expected
