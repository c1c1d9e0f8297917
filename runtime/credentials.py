"""Gateway credentials in the state dir: user `admin`, a random password made once (0600)."""

from __future__ import annotations

import os
import secrets
from dataclasses import dataclass
from pathlib import Path

USER_FILE = "basic-auth-user"
PASSWORD_FILE = "basic-auth-password"


@dataclass(frozen=True)
class Credentials:
    user: str
    password: str
    created: bool = False  # True when this call generated them (first start)


def _write_private(path: Path, text: str) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as handle:
        handle.write(text)
    os.chmod(path, 0o600)


def ensure_credentials(state_dir: Path) -> Credentials:
    state_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    user_path, password_path = state_dir / USER_FILE, state_dir / PASSWORD_FILE
    created = False
    if not password_path.exists():
        _write_private(user_path, "admin")
        _write_private(password_path, secrets.token_urlsafe(24))
        created = True
    return Credentials(read_user(state_dir), password_path.read_text().strip(), created)


def read_user(state_dir: Path) -> str:
    path = state_dir / USER_FILE
    return path.read_text().strip() if path.exists() else "admin"


def read_credentials(state_dir: Path) -> Credentials | None:
    """For client verbs: None when the state dir holds no password (or is not readable)."""
    try:
        password = (state_dir / PASSWORD_FILE).read_text().strip()
    except OSError:
        return None
    return Credentials(read_user(state_dir), password)


def instance_id(state_dir: Path) -> str:
    """A stable id of this state dir: replicas are labelled with it so that two daemons (or a
    test run beside a dev daemon) never adopt or remove each other's containers."""
    path = state_dir / "instance-id"
    if not path.exists():
        _write_private(path, secrets.token_hex(6))
    return path.read_text().strip()
