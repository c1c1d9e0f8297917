"""What a base image runs: its Python version, CPU architecture and glibc.

Wheels for a function image must match the *image's* interpreter and the *engine's* machine,
not the host's, so the builder asks the image itself: one throwaway container running
`python3 -c`, about a second. The answer is cached by image ID, so a rebuilt base image (new ID)
is probed again and an unchanged one never is.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiodocker

from runtime.errors import BuildFailed

log = logging.getLogger(__name__)

PROBE_TIMEOUT_S = 60.0
_CACHE_FILE = "targets.json"

# Run inside the base image. 32-bit userlands on 64-bit kernels report the kernel's machine,
# so correct it the way `packaging` does; glibc comes from confstr (libc_ver() guesses).
_PROBE_SCRIPT = """\
import json, os, platform, sys
machine = platform.machine()
if sys.maxsize <= 2**32:
    machine = {"x86_64": "i686", "aarch64": "armv7l"}.get(machine, machine)
try:
    libc = os.confstr("CS_GNU_LIBC_VERSION") or ""
except (AttributeError, ValueError, OSError):
    libc = ""
print(json.dumps({
    "python_version": "%d.%d" % sys.version_info[:2],
    "implementation": sys.implementation.name,
    "arch": machine,
    "libc": libc,
}))
"""


@dataclass(frozen=True)
class ImageTarget:
    """The platform wheels must be built for."""

    python_version: str  # "3.11"
    arch: str  # manylinux spelling: x86_64, aarch64, i686, armv7l, ppc64le, s390x
    glibc: tuple[int, int]  # (2, 36)

    @property
    def python_tag(self) -> str:
        """`cp311` for 3.11."""
        return "cp" + self.python_version.replace(".", "")

    @property
    def wheel_cache_key(self) -> str:
        """Folder name of this target's wheel cache. glibc is left out on purpose: wheels for
        older glibc suit newer images too, and `pip install --platform` picks the right ones."""
        return f"{self.python_tag}-manylinux-{self.arch}"

    def __str__(self) -> str:
        major, minor = self.glibc
        return f"{self.python_tag}-manylinux_{major}_{minor}_{self.arch}"


async def image_id(docker: aiodocker.Docker, image: str) -> str:
    """The local image's ID; BuildFailed with what to do when it is not present."""
    try:
        info = await docker.images.inspect(image)
    except aiodocker.DockerError as exc:
        if exc.status == 404:
            raise BuildFailed(
                f"base image {image} is not present; build it with "
                f"scripts/build-base-image.sh or pull it (docker pull {image})"
            ) from None
        raise BuildFailed(f"cannot inspect base image {image}: {exc.message}") from exc
    return str(info["Id"])


async def probe_target(docker: aiodocker.Docker, image: str, *, cache_dir: Path) -> ImageTarget:
    """Return the ImageTarget of `image`, from the cache when this image ID was probed before."""
    ident = await image_id(docker, image)
    cache_file = cache_dir / _CACHE_FILE
    cached = _read_cache(cache_file).get(ident)
    if cached is not None:
        try:
            return _target_from_json(cached)
        except (KeyError, TypeError, ValueError):
            pass  # an old or damaged entry: probe again and overwrite it
    raw = await _run_probe(docker, image, ident)
    target = _parse_probe(image, raw)
    _write_cache_entry(cache_file, ident, _target_to_json(target))
    log.info("probed base image %s (%s): %s", image, ident[7:19], target)
    return target


def _parse_probe(image: str, raw: dict[str, Any]) -> ImageTarget:
    impl = raw.get("implementation")
    if impl != "cpython":
        raise BuildFailed(f"base image {image} runs {impl}, not CPython; use a CPython image")
    libc = str(raw.get("libc", ""))
    name, _, version = libc.partition(" ")
    if name != "glibc":
        raise BuildFailed(
            f"base image {image} is not glibc-based (musl/Alpine?); localfaas installs "
            "manylinux wheels and needs a glibc image such as python:3.12-slim-bookworm"
        )
    major, _, minor = version.partition(".")
    return ImageTarget(
        python_version=str(raw["python_version"]),
        arch=str(raw["arch"]),
        glibc=(int(major), int(minor.split(".")[0])),
    )


async def _run_probe(docker: aiodocker.Docker, image: str, ident: str) -> dict[str, Any]:
    config: dict[str, Any] = {
        "Image": ident,
        # Entrypoint replaces whatever the image starts; Cmd=[] stops the image's CMD being
        # appended as arguments.
        "Entrypoint": ["python3", "-c", _PROBE_SCRIPT],
        "Cmd": [],
        "NetworkDisabled": True,
        "Labels": {"com.localfaas.role": "probe"},
    }
    container = await docker.containers.create(config)
    try:
        try:
            await container.start()
        except aiodocker.DockerError as exc:
            if "executable file not found" in exc.message or "no such file" in exc.message:
                raise BuildFailed(
                    f"base image {image} has no python3 on its PATH; "
                    "use an image with Python 3 installed"
                ) from None
            raise BuildFailed(f"cannot start a probe container of {image}: {exc.message}") from exc
        try:
            async with asyncio.timeout(PROBE_TIMEOUT_S):
                result = await container.wait()
        except TimeoutError:
            raise BuildFailed(
                f"probing base image {image} took over {PROBE_TIMEOUT_S:.0f}s"
            ) from None
        lines = await container.log(stdout=True, stderr=True)
        output = "".join(lines).strip()
        if result.get("StatusCode") != 0:
            raise BuildFailed(
                f"probing base image {image} failed (python3 exited "
                f"{result.get('StatusCode')}): {output[-500:]}"
            )
        try:
            parsed = json.loads(output.splitlines()[-1])
        except (IndexError, ValueError):
            raise BuildFailed(
                f"probing base image {image}: unexpected output {output[-200:]!r}"
            ) from None
        if not isinstance(parsed, dict):
            raise BuildFailed(f"probing base image {image}: unexpected output {output[-200:]!r}")
        return parsed
    finally:
        await container.delete(force=True)


def _target_to_json(target: ImageTarget) -> dict[str, str]:
    major, minor = target.glibc
    return {
        "python_version": target.python_version,
        "arch": target.arch,
        "glibc": f"{major}.{minor}",
    }


def _target_from_json(raw: Any) -> ImageTarget:
    major, minor = str(raw["glibc"]).split(".")
    return ImageTarget(
        python_version=str(raw["python_version"]),
        arch=str(raw["arch"]),
        glibc=(int(major), int(minor)),
    )


def _read_cache(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def _write_cache_entry(path: Path, ident: str, entry: dict[str, str]) -> None:
    data = _read_cache(path)
    data[ident] = entry
    path.parent.mkdir(parents=True, exist_ok=True)
    # Write-then-rename so a concurrent reader never sees half a file.
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".targets.", suffix=".json")
    try:
        with os.fdopen(fd, "w") as fh:
            json.dump(data, fh, indent=1, sort_keys=True)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
