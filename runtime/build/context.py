"""Deterministic Docker build contexts.

Docker's classic builder keys its COPY cache on each file's name, content, mode and owner (not
its mtime). Everything that varies between hosts or checkouts is therefore normalised here:
entries are sorted, owners are 0:0, modes are 0644/0755, mtimes are one fixed value. So an
unchanged function yields the same bytes, and every step of its rebuild comes from the cache.
"""

from __future__ import annotations

import io
import os
import posixpath
import re
import stat
import tarfile
import tempfile
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import IO

# 2000-01-01T00:00:00Z: any constant works for Docker; a date after 1980 keeps zip-based
# tools that read these files inside the image happy.
FIXED_MTIME = 946_684_800
EXCLUDED_NAMES = frozenset({"__pycache__", ".git"})
EXCLUDED_SUFFIXES = (".pyc", ".pyo")
# Contexts this big stay in memory; larger ones spill to a temp file.
SPOOL_MAX_BYTES = 64 * 1024 * 1024

Exclude = Callable[[PurePosixPath], bool]


def default_exclude(rel_path: PurePosixPath) -> bool:
    """Bytecode caches and VCS metadata: never part of what a function *is*."""
    return rel_path.name in EXCLUDED_NAMES or rel_path.name.endswith(EXCLUDED_SUFFIXES)


@dataclass(frozen=True)
class _Entry:
    kind: str  # "file" | "dir" | "symlink"
    source: Path | None = None
    data: bytes | None = None
    executable: bool = False
    linkname: str = ""


class BuildContext:
    """A set of files to send as a build context, written as a reproducible tar."""

    def __init__(self) -> None:
        self._entries: dict[str, _Entry] = {}

    def add_bytes(self, arcname: str, data: bytes, *, executable: bool = False) -> None:
        self._entries[_clean(arcname)] = _Entry("file", data=data, executable=executable)

    def add_file(self, arcname: str, path: Path) -> None:
        mode = path.stat().st_mode
        self._entries[_clean(arcname)] = _Entry("file", source=path, executable=bool(mode & 0o111))

    def add_dir(self, arcname: str) -> None:
        self._entries.setdefault(_clean(arcname), _Entry("dir"))

    def add_tree(self, arcname: str, root: Path, *, exclude: Exclude = default_exclude) -> None:
        """Add `root`'s contents under `arcname` ("" for the context's top).

        Symlinks stay symlinks, as the docker CLI sends them; sockets and other special
        files are skipped.
        """
        prefix = _clean(arcname) if arcname else ""
        if prefix:
            self.add_dir(prefix)
        for dirpath, dirnames, filenames in os.walk(root):
            base = Path(dirpath)
            rel_dir = PurePosixPath(base.relative_to(root).as_posix())
            kept_dirs = []
            for name in sorted(dirnames):
                rel = rel_dir / name
                if exclude(rel):
                    continue
                full = base / name
                if full.is_symlink():  # os.walk does not descend into these
                    self._add_symlink(_join(prefix, rel), full)
                else:
                    self.add_dir(_join(prefix, rel))
                    kept_dirs.append(name)
            dirnames[:] = kept_dirs
            for name in sorted(filenames):
                rel = rel_dir / name
                if exclude(rel):
                    continue
                full = base / name
                st = full.lstat()
                if stat.S_ISLNK(st.st_mode):
                    self._add_symlink(_join(prefix, rel), full)
                elif stat.S_ISREG(st.st_mode):
                    self._entries[_join(prefix, rel)] = _Entry(
                        "file", source=full, executable=bool(st.st_mode & 0o111)
                    )

    def _add_symlink(self, arcname: str, path: Path) -> None:
        self._entries[arcname] = _Entry("symlink", linkname=os.readlink(path))

    def discard_matching(self, predicate: Exclude) -> None:
        """Drop every entry whose archive path `predicate` selects."""
        for name in [n for n in self._entries if predicate(PurePosixPath(n))]:
            del self._entries[name]

    def __contains__(self, arcname: str) -> bool:
        return _clean(arcname) in self._entries

    def names(self) -> list[str]:
        """Every entry, including implied parent folders, in the order they are written."""
        return [name for name, _ in self._ordered()]

    def write_to(self, fileobj: IO[bytes]) -> None:
        with tarfile.open(fileobj=fileobj, mode="w", format=tarfile.PAX_FORMAT) as tar:
            for name, entry in self._ordered():
                info = tarfile.TarInfo(name)
                info.mtime = FIXED_MTIME
                info.uid = info.gid = 0
                info.uname = info.gname = ""
                if entry.kind == "dir":
                    info.type = tarfile.DIRTYPE
                    info.mode = 0o755
                    tar.addfile(info)
                elif entry.kind == "symlink":
                    info.type = tarfile.SYMTYPE
                    info.mode = 0o777
                    info.linkname = entry.linkname
                    tar.addfile(info)
                else:
                    info.mode = 0o755 if entry.executable else 0o644
                    if entry.data is not None:
                        info.size = len(entry.data)
                        tar.addfile(info, io.BytesIO(entry.data))
                    else:
                        assert entry.source is not None
                        with entry.source.open("rb") as fh:
                            info.size = os.fstat(fh.fileno()).st_size
                            tar.addfile(info, fh)

    def to_bytes(self) -> bytes:
        buf = io.BytesIO()
        self.write_to(buf)
        return buf.getvalue()

    def to_spooled_file(self) -> IO[bytes]:
        """The tar, rewound, in memory unless it is large. The caller closes it."""
        spool = tempfile.SpooledTemporaryFile(max_size=SPOOL_MAX_BYTES, prefix="localfaas-ctx-")
        try:
            self.write_to(spool)
            spool.seek(0)
        except BaseException:
            spool.close()
            raise
        return spool

    def _ordered(self) -> Iterable[tuple[str, _Entry]]:
        entries = dict(self._entries)
        # Parents of every entry exist with a fixed mode, instead of whatever the daemon
        # would pick for a folder that only appears implicitly.
        for name in list(entries):
            for parent in PurePosixPath(name).parents:
                if str(parent) != ".":
                    entries.setdefault(str(parent), _Entry("dir"))
        return sorted(entries.items(), key=lambda item: item[0].split("/"))


def _clean(arcname: str) -> str:
    path = PurePosixPath(arcname)
    if path.is_absolute() or ".." in path.parts or str(path) in ("", "."):
        raise ValueError(f"bad archive name {arcname!r}")
    return str(path)


def _join(prefix: str, rel: PurePosixPath) -> str:
    return str(PurePosixPath(prefix) / rel) if prefix else str(rel)


class DockerIgnore:
    """`.dockerignore` rules, matched the way the docker CLI matches them (the daemon does
    not: the CLI filters the context before sending it, so we must too).

    Patterns are Go-style globs on slash-separated paths relative to the context root (`*`
    and `?` stop at `/`, `**` spans folders); a pattern matching a folder excludes what is in
    it; `!pattern` re-includes; the last matching rule wins. The Dockerfile and the
    .dockerignore itself are always sent, as the docker CLI does.
    """

    ALWAYS_SENT = frozenset({"Dockerfile", ".dockerignore"})

    def __init__(self, text: str) -> None:
        self._rules: list[tuple[bool, re.Pattern[str]]] = []
        for raw in text.splitlines():
            line = raw.strip()
            if not line or line.startswith("#"):
                continue
            negated = line.startswith("!")
            if negated:
                line = line[1:].strip()
            pattern = posixpath.normpath(line).lstrip("/")
            if pattern in ("", "."):
                continue
            self._rules.append((negated, _glob_regex(pattern)))
        # With re-includes, an excluded folder may still hold files to send, so folders
        # cannot be skipped wholesale while walking.
        self.has_exceptions = any(negated for negated, _ in self._rules)

    @classmethod
    def from_folder(cls, folder: Path) -> DockerIgnore | None:
        path = folder / ".dockerignore"
        return cls(path.read_text(encoding="utf-8", errors="replace")) if path.is_file() else None

    def __call__(self, rel_path: PurePosixPath) -> bool:
        """True when `rel_path` is excluded from the context."""
        name = str(rel_path)
        if name in self.ALWAYS_SENT:
            return False
        parts = rel_path.parts
        candidates = [name] + ["/".join(parts[:i]) for i in range(1, len(parts))]
        excluded = False
        for negated, regex in self._rules:
            if any(regex.fullmatch(candidate) for candidate in candidates):
                excluded = not negated
        return excluded


def _glob_regex(pattern: str) -> re.Pattern[str]:
    out = []
    i = 0
    while i < len(pattern):
        ch = pattern[i]
        if ch == "*":
            if pattern.startswith("**", i):
                i += 1
                if pattern.startswith("/", i + 1):
                    i += 1
                    out.append("(?:.*/)?")
                else:
                    out.append(".*")
            else:
                out.append("[^/]*")
        elif ch == "?":
            out.append("[^/]")
        elif ch == "[":
            end = pattern.find("]", i + 1)
            if end == -1:
                out.append(re.escape(ch))
            else:
                body = pattern[i + 1 : end]
                if body.startswith("!"):  # shell spelling of Go's `[^...]`
                    body = "^" + body[1:]
                out.append("[" + body + "]")
                i = end
        elif ch == "\\" and i + 1 < len(pattern):
            i += 1
            out.append(re.escape(pattern[i]))
        else:
            out.append(re.escape(ch))
        i += 1
    try:
        return re.compile("".join(out), re.DOTALL)
    except re.error:  # a malformed class like `[]`: match the text literally
        return re.compile(re.escape(pattern))
