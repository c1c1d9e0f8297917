"""Build function images: the shared watchdog image, then one image per function on top of it.

Everything a build needs is assembled on the host (wheels for the image's platform, the
watchdog source, the handler folder) into a reproducible tar, so `docker build` needs neither
a registry nor a package index, and an unchanged function rebuilds entirely from Docker's
cache.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import tempfile
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import IO

import aiodocker
from aiodocker.exceptions import DockerStreamError

from runtime.build.context import BuildContext, DockerIgnore, default_exclude
from runtime.build.progress import BuildProgress, BuildStreamParser, ProgressCallback
from runtime.build.target import ImageTarget, image_id, probe_target
from runtime.build.wheels import (
    install_requirements,
    install_requirements_file,
    requirements_file_is_empty,
)
from runtime.errors import BuildFailed, InvalidSpec
from runtime.names import check_name

log = logging.getLogger(__name__)

KNOWN_LANGS = ("python3-http", "dockerfile")
TEMPLATES_DIR = Path(__file__).parent / "templates"
# The `watchdog` package ships next to `runtime` (repo checkout and installed wheel alike).
DEFAULT_WATCHDOG_SRC = Path(__file__).resolve().parents[2] / "watchdog"
WATCHDOG_REPOSITORY = "localfaas/watchdog"
WATCHDOG_REQUIREMENTS = ("aiohttp>=3.9",)
# The watchdog uses uvloop when importable; an image whose platform has no uvloop wheel
# still gets a working watchdog.
WATCHDOG_OPTIONAL_REQUIREMENTS = ("uvloop>=0.19",)
WATCHDOG_DIGEST_CHARS = 12
LABEL_FUNCTION = "com.localfaas.function"
LABEL_LANG = "com.localfaas.lang"
LABEL_WATCHDOG_DIGEST = "com.localfaas.watchdog.digest"
LABEL_BASE_IMAGE = "com.localfaas.base-image"


@dataclass(frozen=True)
class FunctionBuild:
    """What to build: a handler folder in one of KNOWN_LANGS, tagged `image`."""

    name: str
    lang: str
    handler_dir: Path
    image: str
    build_args: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class WatchdogImage:
    tag: str  # localfaas/watchdog:<content digest>
    image_id: str
    built: bool  # False when an image with this digest already existed


@dataclass(frozen=True)
class BuiltImage:
    name: str
    image: str
    image_id: str
    watchdog_image: str
    duration_s: float
    steps_total: int
    # Instructions that ran instead of coming from Docker's cache (FROM is not counted).
    uncached_steps: tuple[str, ...]

    @property
    def fully_cached(self) -> bool:
        return not self.uncached_steps


def _noop(progress: BuildProgress) -> None:
    pass


async def build_function(
    docker: aiodocker.Docker,
    fn: FunctionBuild,
    *,
    base_image: str,
    cache_dir: Path,
    on_progress: ProgressCallback | None = None,
    watchdog_src: Path | None = None,
    nocache: bool = False,
) -> BuiltImage:
    """Build `fn` into the image `fn.image`, building the watchdog image first if needed."""
    _check_function(fn)
    emit = on_progress or _noop
    started = time.monotonic()
    watchdog = await ensure_watchdog_image(
        docker,
        base_image=base_image,
        cache_dir=cache_dir,
        on_progress=on_progress,
        watchdog_src=watchdog_src,
    )
    with tempfile.TemporaryDirectory(prefix="localfaas-build-") as tmp:
        if fn.lang == "python3-http":
            target = await probe_target(docker, base_image, cache_dir=cache_dir)
            context = await _python3_http_context(fn, target, cache_dir, Path(tmp), emit)
        else:
            context = await asyncio.to_thread(_dockerfile_context, fn)
        fileobj = await asyncio.to_thread(context.to_spooled_file)
    # The user's build args first: WATCHDOG_IMAGE must be the one this build just ensured.
    buildargs = {**fn.build_args, "WATCHDOG_IMAGE": watchdog.tag}
    with fileobj:
        parser = await docker_build(
            docker,
            fileobj,
            tag=fn.image,
            buildargs=buildargs,
            labels={LABEL_FUNCTION: fn.name, LABEL_LANG: fn.lang},
            subject=fn.name,
            on_progress=emit,
            nocache=nocache,
        )
    built = BuiltImage(
        name=fn.name,
        image=fn.image,
        image_id=await _inspect_id(docker, fn.image),
        watchdog_image=watchdog.tag,
        duration_s=time.monotonic() - started,
        steps_total=parser.steps_total,
        uncached_steps=tuple(parser.uncached_steps),
    )
    log.info(
        "built function %s as %s (%s) in %.1fs, %d step(s) rebuilt",
        fn.name,
        fn.image,
        built.image_id[7:19],
        built.duration_s,
        len(built.uncached_steps),
    )
    return built


async def ensure_watchdog_image(
    docker: aiodocker.Docker,
    *,
    base_image: str,
    cache_dir: Path,
    on_progress: ProgressCallback | None = None,
    watchdog_src: Path | None = None,
    nocache: bool = False,
) -> WatchdogImage:
    """The watchdog image for `base_image`, built only when no image has its content digest.

    The digest covers the base image ID, the Dockerfile template, the watchdog's source files
    and its requirements, so the image is rebuilt exactly when one of them changes. The
    result is also tagged `localfaas/watchdog:latest` (the default of dockerfile-lang
    templates). `nocache` applies only when the image is missing and gets built.
    """
    emit = on_progress or _noop
    src = watchdog_src or DEFAULT_WATCHDOG_SRC
    if not (src / "__main__.py").is_file():
        raise BuildFailed(
            f"watchdog source not found at {src} (expected the localfaas `watchdog` package "
            "with a __main__.py)"
        )
    base_id = await image_id(docker, base_image)
    dockerfile = (TEMPLATES_DIR / "watchdog" / "Dockerfile").read_bytes()
    requirements = WATCHDOG_REQUIREMENTS + WATCHDOG_OPTIONAL_REQUIREMENTS
    digest = await asyncio.to_thread(
        watchdog_digest, base_id=base_id, dockerfile=dockerfile, requirements=requirements, src=src
    )
    tag = f"{WATCHDOG_REPOSITORY}:{digest}"
    existing = await _inspect_id_or_none(docker, tag)
    if existing is not None:
        await docker.images.tag(tag, WATCHDOG_REPOSITORY, tag="latest")
        return WatchdogImage(tag=tag, image_id=existing, built=False)

    subject = "watchdog image"
    started = time.monotonic()
    emit(BuildProgress(0, 0, f"probing base image {base_image}", subject))
    target = await probe_target(docker, base_image, cache_dir=cache_dir)
    with tempfile.TemporaryDirectory(prefix="localfaas-watchdog-") as tmp:
        deps = Path(tmp) / "deps"
        emit(BuildProgress(0, 0, f"installing watchdog dependencies for {target}", subject))
        await _install_watchdog_deps(target, deps, cache_dir, subject, emit)
        context = BuildContext()
        context.add_bytes("Dockerfile", dockerfile)
        context.add_tree("deps", deps)
        context.add_tree("watchdog", src)
        fileobj = await asyncio.to_thread(context.to_spooled_file)
    with fileobj:
        await docker_build(
            docker,
            fileobj,
            tag=tag,
            buildargs={"BASE_IMAGE": base_image},
            labels={LABEL_WATCHDOG_DIGEST: digest, LABEL_BASE_IMAGE: base_image},
            subject=subject,
            on_progress=emit,
            nocache=nocache,
        )
    await docker.images.tag(tag, WATCHDOG_REPOSITORY, tag="latest")
    ident = await _inspect_id(docker, tag)
    log.info(
        "built watchdog image %s on %s (%s) in %.1fs",
        tag,
        base_image,
        target,
        time.monotonic() - started,
    )
    return WatchdogImage(tag=tag, image_id=ident, built=True)


def watchdog_digest(
    *, base_id: str, dockerfile: bytes, requirements: Sequence[str], src: Path
) -> str:
    """Content digest naming the watchdog image (see ensure_watchdog_image)."""
    h = hashlib.sha256(b"localfaas-watchdog-image\0")
    for part in (base_id.encode(), dockerfile, "\n".join(requirements).encode()):
        h.update(len(part).to_bytes(8, "big"))
        h.update(part)
    for rel, path in _source_files(src):
        data = path.read_bytes()
        h.update(f"\0{rel}\0{len(data)}\0".encode())
        h.update(data)
    return h.hexdigest()[:WATCHDOG_DIGEST_CHARS]


def _source_files(root: Path) -> list[tuple[str, Path]]:
    files = []
    for path in root.rglob("*"):
        rel = PurePosixPath(path.relative_to(root).as_posix())
        if any(default_exclude(PurePosixPath(*rel.parts[: i + 1])) for i in range(len(rel.parts))):
            continue
        if path.is_file():
            files.append((str(rel), path))
    return sorted(files)


async def _install_watchdog_deps(
    target: ImageTarget, dest: Path, cache_dir: Path, subject: str, emit: ProgressCallback
) -> None:
    def status(text: str) -> None:
        emit(BuildProgress(0, 0, text, subject))

    try:
        await install_requirements(
            target=target,
            dest=dest,
            cache_dir=cache_dir,
            requirements=WATCHDOG_REQUIREMENTS + WATCHDOG_OPTIONAL_REQUIREMENTS,
            on_status=status,
        )
    except BuildFailed as exc:
        try:
            await install_requirements(
                target=target,
                dest=dest,
                cache_dir=cache_dir,
                requirements=WATCHDOG_REQUIREMENTS,
                on_status=status,
            )
        except BuildFailed:
            raise exc from None
        log.warning(
            "watchdog image for %s: %s unavailable, the watchdog will use asyncio's own loop",
            target,
            ", ".join(WATCHDOG_OPTIONAL_REQUIREMENTS),
        )


def _check_function(fn: FunctionBuild) -> None:
    try:
        check_name(fn.name, "function name")
    except InvalidSpec as exc:
        raise InvalidSpec(f"cannot build: {exc}") from None
    if fn.lang not in KNOWN_LANGS:
        raise InvalidSpec(
            f"function {fn.name!r}: unknown lang {fn.lang!r}; localfaas builds "
            + " and ".join(repr(lang) for lang in KNOWN_LANGS)
            + " (use skip_build with a prebuilt image for anything else)"
        )
    if not fn.image or any(c.isspace() for c in fn.image):
        raise InvalidSpec(f"function {fn.name!r}: image {fn.image!r} is not a valid image name")
    if not fn.handler_dir.is_dir():
        raise InvalidSpec(f"function {fn.name!r}: handler folder {fn.handler_dir} does not exist")
    required = "handler.py" if fn.lang == "python3-http" else "Dockerfile"
    if not (fn.handler_dir / required).is_file():
        raise InvalidSpec(
            f"function {fn.name!r}: handler folder {fn.handler_dir} has no {required} "
            f"(lang: {fn.lang})"
        )


async def _python3_http_context(
    fn: FunctionBuild, target: ImageTarget, cache_dir: Path, tmp: Path, emit: ProgressCallback
) -> BuildContext:
    requirements = fn.handler_dir / "requirements.txt"
    if not requirements_file_is_empty(requirements):
        emit(BuildProgress(0, 0, f"installing requirements.txt for {target}", fn.name))
    deps = await install_requirements_file(
        target=target,
        requirements_file=requirements,
        cache_dir=cache_dir,
        scratch=tmp / "function-deps",
        on_status=lambda text: emit(BuildProgress(0, 0, text, fn.name)),
    )
    if (deps / "watchdog").exists() or (deps / "watchdog.py").exists():
        # The function's requirements come first on PYTHONPATH; this one would replace the
        # watchdog that serves the function, and the container would never answer.
        raise BuildFailed(
            f"function {fn.name!r}: requirements.txt installs a top-level package named "
            "'watchdog' (the filesystem-events library?), which would shadow the localfaas "
            "watchdog that runs the function; remove it from requirements.txt"
        )

    def assemble() -> BuildContext:
        context = BuildContext()
        context.add_bytes(
            "Dockerfile", (TEMPLATES_DIR / "python3-http" / "Dockerfile").read_bytes()
        )
        context.add_tree("function-deps", deps)
        context.add_tree("function", fn.handler_dir)
        # OpenFaaS imports `function.handler`; a real package makes relative imports inside
        # the handler folder work the same way.
        if "function/__init__.py" not in context:
            context.add_bytes("function/__init__.py", b"")
        return context

    return await asyncio.to_thread(assemble)


def _dockerfile_context(fn: FunctionBuild) -> BuildContext:
    context = BuildContext()
    ignore = DockerIgnore.from_folder(fn.handler_dir)
    if ignore is None:
        context.add_tree("", fn.handler_dir)
        return context
    if ignore.has_exceptions:
        context.add_tree("", fn.handler_dir)
    else:  # no re-includes: excluded folders need not even be walked
        context.add_tree(
            "", fn.handler_dir, exclude=lambda rel: default_exclude(rel) or ignore(rel)
        )
    context.discard_matching(ignore)
    return context


async def docker_build(
    docker: aiodocker.Docker,
    fileobj: IO[bytes],
    *,
    tag: str,
    buildargs: Mapping[str, str],
    labels: Mapping[str, str],
    subject: str,
    on_progress: ProgressCallback,
    nocache: bool = False,
) -> BuildStreamParser:
    parser = BuildStreamParser(subject)
    try:
        stream = docker.images.build(
            fileobj=fileobj,
            encoding="identity",
            tag=tag,
            buildargs=dict(buildargs),
            labels=dict(labels),
            nocache=nocache,
            forcerm=True,  # no intermediate containers left behind by a failed step
            stream=True,
        )
        async for chunk in stream:
            for progress in parser.feed(chunk):
                on_progress(progress)
    except aiodocker.DockerError as exc:
        if isinstance(exc, DockerStreamError) or parser.current is not None:
            raise BuildFailed(parser.failure_message(exc.message)) from None
        # Refused before any step ran: a Dockerfile syntax error, a bad build arg, ...
        raise BuildFailed(f"building {subject} failed: {exc.message}") from None
    parser.finish()
    return parser


async def _inspect_id_or_none(docker: aiodocker.Docker, ref: str) -> str | None:
    try:
        info = await docker.images.inspect(ref)
    except aiodocker.DockerError as exc:
        if exc.status == 404:
            return None
        raise
    return str(info["Id"])


async def _inspect_id(docker: aiodocker.Docker, ref: str) -> str:
    ident = await _inspect_id_or_none(docker, ref)
    if ident is None:
        raise BuildFailed(f"the build reported success but image {ref} is not present")
    return ident
