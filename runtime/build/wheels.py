"""Install Python requirements for an image's platform, on the host, from a wheel cache.

`docker build` cannot reach package indexes (and should not need to: builds stay reproducible
and fast), so the host's pip downloads wheels for the image's Python/arch/glibc into a
per-target cache, then installs them with `pip install --target` into a folder that goes into
the build context. The offline install is tried first, so an unchanged function makes no index
call on rebuild. A requirement with no wheel at all is built on the host with `pip wheel`, and
accepted only when that yields a pure-Python (`py3-none-any`) wheel.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import os
import re
import shutil
import sys
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from runtime.build.target import ImageTarget
from runtime.errors import BuildFailed

log = logging.getLogger(__name__)

OUTPUT_TAIL_LINES = 25
# Each round lets one more sdist-only requirement through; a requirements file needing more
# than this is better served by pre-built wheels.
MAX_SOURCE_BUILDS = 20

# Legacy manylinux aliases: (glibc minor, tag prefix, architectures the old PEPs defined).
_LEGACY_ALIASES = {
    17: (
        "manylinux2014",
        frozenset({"x86_64", "i686", "aarch64", "armv7l", "ppc64", "ppc64le", "s390x"}),
    ),
    12: ("manylinux2010", frozenset({"x86_64", "i686"})),
    5: ("manylinux1", frozenset({"x86_64", "i686"})),
}
_OLDEST_GLIBC_MINOR = 5
_UNSATISFIED = re.compile(r"Could not find a version that satisfies the requirement (\S+)")
# `name[extras] <specifiers> ; marker`: lines whose meaning is fully in their text. Options
# (-r, -e, --index-url), paths and URLs point elsewhere, so installs using them are not reused.
_PLAIN_REQUIREMENT = re.compile(
    r"^[A-Za-z0-9][A-Za-z0-9._-]*(\[[A-Za-z0-9._,\s-]*\])?\s*([<>=!~][^;@]*)?(;[^@]*)?$"
)

StatusCallback = Callable[[str], None]


def platform_tags(target: ImageTarget) -> list[str]:
    """Every manylinux tag the image accepts, most specific first.

    pip does not expand `manylinux_2_36_x86_64` to older glibc versions by itself, so list
    them all, with the legacy aliases where the glibc version and architecture allow.
    """
    major, minor = target.glibc
    tags: list[str] = []
    if major != 2:
        return [f"manylinux_{major}_{minor}_{target.arch}"]
    for glibc_minor in range(minor, _OLDEST_GLIBC_MINOR - 1, -1):
        tags.append(f"manylinux_2_{glibc_minor}_{target.arch}")
        alias = _LEGACY_ALIASES.get(glibc_minor)
        if alias is not None and target.arch in alias[1]:
            tags.append(f"{alias[0]}_{target.arch}")
    return tags


def target_pip_args(target: ImageTarget) -> list[str]:
    """pip options that select wheels for `target` instead of for the host."""
    args = [
        "--only-binary=:all:",
        "--python-version",
        target.python_version,
        "--implementation",
        "cp",
    ]
    for tag in platform_tags(target):
        args += ["--platform", tag]
    return args


def wheel_cache_dir(cache_dir: Path, target: ImageTarget) -> Path:
    return cache_dir / "wheels" / target.wheel_cache_key


def requirement_lines(path: Path) -> list[str]:
    """The requirement lines of a requirements file, without comments and blanks; [] when
    the file is missing."""
    try:
        text = path.read_text()
    except FileNotFoundError:
        return []
    # pip's comment rule: `#` at the start or after white space.
    lines = (re.sub(r"(^|\s)#.*$", "", line).strip() for line in text.splitlines())
    return [line for line in lines if line]


def requirements_file_is_empty(path: Path) -> bool:
    """True when a requirements file names nothing (only blanks and comments), so pip
    need not run at all: the common case of a fresh python3-http function."""
    return not requirement_lines(path)


async def install_requirements_file(
    *,
    target: ImageTarget,
    requirements_file: Path,
    cache_dir: Path,
    scratch: Path,
    on_status: StatusCallback | None = None,
) -> Path:
    """Install a function's requirements.txt for `target`; return the folder holding them.

    A file of plain specifiers is installed once per (target, lines, wheel cache contents)
    under `<cache_dir>/installs/`, and that folder is returned as is on later builds: the
    rebuild of an unchanged function does not even run pip. Anything else (options, paths,
    URLs) is installed into `scratch` every time.
    """
    lines = requirement_lines(requirements_file)
    if not lines or not all(_PLAIN_REQUIREMENT.match(line) for line in lines):
        await install_requirements(
            target=target,
            dest=scratch,
            cache_dir=cache_dir,
            requirements_file=requirements_file,
            on_status=on_status,
        )
        return scratch
    installs = cache_dir / "installs"
    found = installs / _install_key(target, lines, wheel_cache_dir(cache_dir, target))
    if found.is_dir():
        return found
    installs.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=installs, prefix=".tmp-"))
    try:
        await install_requirements(
            target=target, dest=tmp, cache_dir=cache_dir, requirements=lines, on_status=on_status
        )
        # Keyed after installing: a download changed what the wheel cache holds.
        final = installs / _install_key(target, lines, wheel_cache_dir(cache_dir, target))
        try:
            os.rename(tmp, final)  # atomic: a concurrent build sees all of it or nothing
        except OSError:
            if not final.is_dir():
                raise
            # Another build installed the same set meanwhile: use theirs.
        return final
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _install_key(target: ImageTarget, lines: Sequence[str], wheel_dir: Path) -> str:
    h = hashlib.sha256(str(target).encode())
    for line in lines:
        h.update(b"\0" + line.encode())
    h.update(b"\1")
    try:
        names = sorted(os.listdir(wheel_dir))
    except FileNotFoundError:
        names = []
    for name in names:
        h.update(b"\0" + name.encode())
    return h.hexdigest()[:24]


@dataclass(frozen=True)
class _PipResult:
    returncode: int
    output: str

    @property
    def ok(self) -> bool:
        return self.returncode == 0

    def tail(self, lines: int = OUTPUT_TAIL_LINES) -> str:
        return "\n".join(self.output.rstrip().splitlines()[-lines:])


async def install_requirements(
    *,
    target: ImageTarget,
    dest: Path,
    cache_dir: Path,
    requirements: Sequence[str] = (),
    requirements_file: Path | None = None,
    on_status: StatusCallback | None = None,
) -> None:
    """Install `requirements` (specifiers) and/or `requirements_file` for `target` into `dest`.

    `dest` ends up holding importable packages (a `--target` tree, no `bin/`, no bytecode) and
    exists even when there is nothing to install.
    """
    reqs = list(requirements)
    if requirements_file is not None and not requirements_file_is_empty(requirements_file):
        reqs += ["-r", str(requirements_file)]
    _reset_dir(dest)
    if not reqs:
        return
    cache = wheel_cache_dir(cache_dir, target)
    cache.mkdir(parents=True, exist_ok=True)

    if (await _install_offline(reqs, target, dest, cache)).ok:
        log.debug("requirements for %s installed from the wheel cache", target)
    else:
        if on_status is not None:
            on_status(f"downloading wheels for {target}")
        await _download(reqs, target, cache)
        _reset_dir(dest)
        result = await _install_offline(reqs, target, dest, cache)
        if not result.ok:
            raise BuildFailed(f"installing requirements for {target} failed:\n{result.tail()}")
        log.info("downloaded wheels for %s into %s", target, cache)
    # Console scripts carry the host interpreter's path in their shebang: useless in the
    # image, and a function imports its requirements rather than running their scripts.
    shutil.rmtree(dest / "bin", ignore_errors=True)


async def _install_offline(
    reqs: list[str], target: ImageTarget, dest: Path, cache: Path
) -> _PipResult:
    # --isolated: only our cache feeds the install (no find-links or indexes from the user's
    # pip environment), so what gets installed is exactly what the cache holds.
    return await _run_pip(
        "install",
        "--isolated",
        "--no-index",
        "--find-links",
        str(cache),
        "--target",
        str(dest),
        *target_pip_args(target),
        "--no-compile",
        "--no-warn-script-location",
        *reqs,
    )


async def _download(reqs: list[str], target: ImageTarget, cache: Path) -> None:
    built: set[str] = set()
    for _ in range(MAX_SOURCE_BUILDS + 1):
        # The user's pip configuration (index, certificates, proxies) applies here: this is
        # the one step that talks to an index.
        result = await _run_pip(
            "download",
            "--dest",
            str(cache),
            "--find-links",
            str(cache),
            *target_pip_args(target),
            *reqs,
        )
        if result.ok:
            return
        match = _UNSATISFIED.search(result.output)
        if match is None:
            raise BuildFailed(f"downloading wheels for {target} failed:\n{result.tail()}")
        missing = match.group(1)
        if missing in built:
            raise BuildFailed(
                f"requirement {missing!r}: no version matches for {target}, "
                f"even after building it from source:\n{result.tail()}"
            )
        await _build_pure_wheel(missing, target, cache)
        built.add(missing)
    raise BuildFailed(
        f"more than {MAX_SOURCE_BUILDS} requirements have no wheel for {target}; "
        "provide wheels for them"
    )


async def _build_pure_wheel(requirement: str, target: ImageTarget, cache: Path) -> None:
    log.info("requirement %s has no wheel for %s: trying a pure-Python build", requirement, target)
    with tempfile.TemporaryDirectory(prefix="localfaas-wheel-") as tmp:
        result = await _run_pip("wheel", "--no-deps", "--wheel-dir", tmp, requirement)
        if not result.ok:
            if _UNSATISFIED.search(result.output):
                raise BuildFailed(
                    f"requirement {requirement!r}: the package index has neither a wheel for "
                    f"{target} nor a source distribution that matches:\n{result.tail()}"
                )
            raise BuildFailed(
                f"requirement {requirement!r} has no wheel for {target}, and building one "
                f"from source failed:\n{result.tail()}"
            )
        built, kept = _keep_pure_wheels(Path(tmp), cache)
        if not kept:
            raise BuildFailed(
                f"requirement {requirement!r} has no wheel for {target}, and it does not "
                f"build as a pure-Python wheel (got {', '.join(built) or 'nothing'}); it "
                f"needs a wheel built for {target}, or a base image where it is installed"
            )


def _keep_pure_wheels(built_dir: Path, cache: Path) -> tuple[list[str], list[str]]:
    """Move the pure-Python wheels of `built_dir` into `cache`; return (all names, moved)."""
    wheels = sorted(built_dir.glob("*.whl"))
    kept = []
    for wheel in wheels:
        if is_pure_python_wheel(wheel.name):
            shutil.move(str(wheel), cache / wheel.name)
            kept.append(wheel.name)
    return [w.name for w in wheels], kept


def is_pure_python_wheel(filename: str) -> bool:
    """`six-1.17.0-py2.py3-none-any.whl` → True; anything compiled or Python-2-only → False."""
    if not filename.endswith(".whl"):
        return False
    parts = filename[: -len(".whl")].split("-")
    if len(parts) not in (5, 6):  # name-version[-build]-python-abi-platform
        return False
    python, abi, plat = parts[-3:]
    return abi == "none" and plat == "any" and "py3" in python.split(".")


async def _run_pip(command: str, *args: str) -> _PipResult:
    """Run the host's pip without blocking the loop; output (stdout+stderr) is captured."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "pip",
        command,
        "--disable-pip-version-check",
        "--no-input",
        "--progress-bar",
        "off",
        *args,
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    try:
        stdout, _ = await proc.communicate()
    finally:
        # Cancelled mid-download: don't leave pip running behind us.
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
    output = stdout.decode(errors="replace")
    if proc.returncode != 0 and "No module named pip" in output:
        raise BuildFailed(
            f"pip is not available to {sys.executable}; localfaas downloads wheels with the "
            "host's pip (install pip into localfaas's environment)"
        )
    return _PipResult(proc.returncode if proc.returncode is not None else -1, output)


def _reset_dir(path: Path) -> None:
    shutil.rmtree(path, ignore_errors=True)
    path.mkdir(parents=True)
