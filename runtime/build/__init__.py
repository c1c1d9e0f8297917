"""Function images: templates, the watchdog image, wheels for the image's platform, builds.

Entry points: `build_function` / `ensure_watchdog_image` (builder), `create_function` (new),
`ProgressPrinter` (progress). Stack files live in `runtime.stack`.
"""

from __future__ import annotations

from runtime.build.builder import (
    KNOWN_LANGS,
    BuiltImage,
    FunctionBuild,
    WatchdogImage,
    build_function,
    ensure_watchdog_image,
)
from runtime.build.new import create_function
from runtime.build.progress import BuildProgress, ProgressCallback, ProgressPrinter
from runtime.build.target import ImageTarget, probe_target

__all__ = [
    "KNOWN_LANGS",
    "BuildProgress",
    "BuiltImage",
    "FunctionBuild",
    "ImageTarget",
    "ProgressCallback",
    "ProgressPrinter",
    "WatchdogImage",
    "build_function",
    "create_function",
    "ensure_watchdog_image",
    "probe_target",
]
