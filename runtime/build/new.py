"""`localfaas new`: a handler folder from a template, as `faas-cli new` makes one."""

from __future__ import annotations

import shutil
from pathlib import Path

from runtime.build.builder import KNOWN_LANGS, TEMPLATES_DIR
from runtime.errors import Conflict, InvalidSpec
from runtime.names import check_name


def template_dir(lang: str) -> Path:
    """The handler files `localfaas new --lang LANG` copies."""
    if lang not in KNOWN_LANGS:
        raise InvalidSpec(f"unknown lang {lang!r}; choose one of: " + ", ".join(KNOWN_LANGS))
    return TEMPLATES_DIR / lang / "function"


def create_function(name: str, lang: str, dest_dir: Path) -> Path:
    """Create `dest_dir/name/` with the template's handler files; return that folder.

    Refuses to touch an existing folder: a typo in the name must not overwrite someone's code.
    """
    check_name(name, "function name")
    source = template_dir(lang)
    folder = dest_dir / name
    if folder.exists() or folder.is_symlink():
        raise Conflict(f"{folder} already exists; choose another name or remove it first")
    dest_dir.mkdir(parents=True, exist_ok=True)
    shutil.copytree(source, folder, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    return folder


def stack_entry(name: str, lang: str) -> dict[str, str]:
    """The `functions:` entry faas-cli writes for a new function (handler path relative to
    the stack file, image `name:latest`)."""
    check_name(name, "function name")
    template_dir(lang)
    return {"lang": lang, "handler": f"./{name}", "image": f"{name}:latest"}
