"""Builds the daemon's own image (top-level Dockerfile) without network inside Docker.

The host installs requirements.lock plus a wheel of localfaas itself for the image's Python
and the engine's architecture into the context; the Dockerfile only copies them.
Run as `python -m runtime.build.daemon_image [TAG]` (what scripts/build-daemon-image.sh does).
"""

from __future__ import annotations

import asyncio
import os
import sys
import tempfile
from pathlib import Path

import aiodocker

from runtime.build.builder import docker_build
from runtime.build.context import BuildContext
from runtime.build.progress import ProgressPrinter
from runtime.build.target import probe_target
from runtime.build.wheels import install_requirements, requirement_lines
from runtime.config import Settings
from runtime.errors import BuildFailed

PROJECT_ROOT = Path(__file__).resolve().parents[2]
DEFAULT_TAG = "localfaas/daemon:latest"


async def _own_wheel(dest: Path) -> Path:
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "pip",
        "wheel",
        "--no-deps",
        "-q",
        "-w",
        str(dest),
        str(PROJECT_ROOT),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    output, _ = await proc.communicate()
    if proc.returncode != 0:
        raise BuildFailed("building the localfaas wheel failed:\n" + output.decode()[-2000:])
    (wheel,) = await asyncio.to_thread(lambda: list(dest.glob("localfaas-*.whl")))
    return wheel


async def build_daemon_image(
    docker: aiodocker.Docker, *, tag: str, base_image: str, cache_dir: Path
) -> None:
    printer = ProgressPrinter(sys.stderr)
    target = await probe_target(docker, base_image, cache_dir=cache_dir)
    with tempfile.TemporaryDirectory(prefix="localfaas-daemon-image-") as tmp:
        wheel = await _own_wheel(Path(tmp) / "dist")
        site = Path(tmp) / "site"
        requirements = [*requirement_lines(PROJECT_ROOT / "requirements.lock"), str(wheel)]
        await install_requirements(
            target=target, dest=site, cache_dir=cache_dir, requirements=requirements
        )
        context = BuildContext()
        context.add_file("Dockerfile", PROJECT_ROOT / "Dockerfile")
        context.add_tree("site", site)
        fileobj = await asyncio.to_thread(context.to_spooled_file)
    try:
        with fileobj:
            await docker_build(
                docker,
                fileobj,
                tag=tag,
                buildargs={"BASE_IMAGE": base_image},
                labels={"com.localfaas.component": "daemon"},
                subject="daemon image",
                on_progress=printer,
            )
    finally:
        printer.close()


async def _main(tag: str) -> None:
    settings = Settings.load(os.environ)
    async with aiodocker.Docker() as docker:
        await build_daemon_image(
            docker, tag=tag, base_image=settings.base_image, cache_dir=settings.cache_dir
        )
    print(f"built {tag} on {settings.base_image}", file=sys.stderr)


if __name__ == "__main__":
    asyncio.run(_main(sys.argv[1] if len(sys.argv) > 1 else DEFAULT_TAG))
