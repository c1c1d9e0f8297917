"""Secret values as files under the state dir, and per-function folders to bind-mount.

Layout:
  <state_dir>/secrets/<ns>/<name>     the values: root-only (dirs 0700, files 0600)
  <state_dir>/mounts/<ns>/<fn>/<name> what one function sees at /var/openfaas/secrets/<name>

The mount folder holds copies of exactly that function's secrets, owned root:<gid> with mode
0440 (folder 0750), and the replica runs with `GroupAdd <gid>`: the non-root function reads its
own secrets, and no other function has them mounted or is in that group. Copies are rewritten
in place (file by file, atomically) so running replicas see an updated value, like OpenFaaS.

Values are never logged; only names are.
"""

from __future__ import annotations

import logging
import os
import tempfile
from pathlib import Path

from runtime.errors import InvalidSpec
from runtime.models import FunctionSpec
from runtime.names import check_name

log = logging.getLogger(__name__)

SECRET_FILE_MODE = 0o600
PRIVATE_DIR_MODE = 0o700
MOUNT_FILE_MODE = 0o440
MOUNT_DIR_MODE = 0o750
# Without root we cannot hand files to another group, so the copies must be readable by the
# function's user through "other". They stay private on the host: every ancestor folder
# (`mounts/`, `mounts/<ns>/`) is 0700, so only the bind mount reaches them.
UNPRIVILEGED_MOUNT_FILE_MODE = 0o444
UNPRIVILEGED_MOUNT_DIR_MODE = 0o755


def _is_root() -> bool:
    return hasattr(os, "geteuid") and os.geteuid() == 0


def _private_dir(path: Path, mode: int = PRIVATE_DIR_MODE) -> None:
    path.mkdir(mode=mode, parents=False, exist_ok=True)
    os.chmod(path, mode)  # mkdir's mode is filtered by the umask; this one is not


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_atomic(path: Path, data: bytes, *, mode: int, gid: int | None = None) -> None:
    """Write ``data`` to ``path`` so readers see the old file or the new one, never a part.

    Temp file in the same folder (mkstemp creates it 0600, so the value is never readable by
    others even for a moment) → fsync → rename over the target → fsync the folder.
    """
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            if gid is not None:
                os.fchown(f.fileno(), 0, gid)
            os.fchmod(f.fileno(), mode)
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    _fsync_dir(path.parent)


class SecretFiles:
    """Secret values of every namespace, and the per-function mount folders."""

    def __init__(self, state_dir: Path | str) -> None:
        self.state_dir = Path(state_dir)
        self.values_root = self.state_dir / "secrets"
        self.mounts_root = self.state_dir / "mounts"

    def path(self, namespace: str, name: str) -> Path:
        # Both names pass the DNS-1123 check first: no '/', no '..', nothing outside the root.
        check_name(namespace, "namespace")
        check_name(name, "secret name")
        return self.values_root / namespace / name

    def put(self, namespace: str, name: str, value: bytes | str) -> None:
        path = self.path(namespace, name)
        self.state_dir.mkdir(parents=True, exist_ok=True)
        _private_dir(self.values_root)
        _private_dir(path.parent)
        data = value.encode() if isinstance(value, str) else value
        write_atomic(path, data, mode=SECRET_FILE_MODE)
        log.info("secret written %s.%s", name, namespace)

    def get(self, namespace: str, name: str) -> bytes | None:
        try:
            return self.path(namespace, name).read_bytes()
        except FileNotFoundError:
            return None

    def exists(self, namespace: str, name: str) -> bool:
        return self.path(namespace, name).is_file()

    def delete(self, namespace: str, name: str) -> bool:
        """True if it existed."""
        try:
            self.path(namespace, name).unlink()
        except FileNotFoundError:
            return False
        log.info("secret deleted %s.%s", name, namespace)
        return True

    def mount_path(self, namespace: str, function: str) -> Path:
        check_name(namespace, "namespace")
        check_name(function, "function name")
        return self.mounts_root / namespace / function

    def materialize(self, spec: FunctionSpec, gid: int) -> Path:
        """The folder to bind-mount for ``spec``: its secrets, readable by group ``gid`` only.

        InvalidSpec if a secret is missing (nothing is changed then). Files of secrets the
        spec no longer lists are removed. Callers bind it only when ``spec.secrets`` is set.
        """
        values: dict[str, bytes] = {}
        for name in spec.secrets:
            value = self.get(spec.namespace, name)
            if value is None:
                raise InvalidSpec(f"secret {name!r} not found in namespace {spec.namespace!r}")
            values[name] = value

        target = self.mount_path(spec.namespace, spec.name)
        self.state_dir.mkdir(parents=True, exist_ok=True)
        _private_dir(self.mounts_root)
        _private_dir(target.parent)
        if _is_root():
            file_mode, dir_mode, group = MOUNT_FILE_MODE, MOUNT_DIR_MODE, gid
        else:
            file_mode, dir_mode, group = (
                UNPRIVILEGED_MOUNT_FILE_MODE,
                UNPRIVILEGED_MOUNT_DIR_MODE,
                None,
            )
        target.mkdir(mode=PRIVATE_DIR_MODE, exist_ok=True)
        if group is not None:
            os.chown(target, 0, group)
        os.chmod(target, dir_mode)

        for name, value in values.items():
            write_atomic(target / name, value, mode=file_mode, gid=group)
        for entry in target.iterdir():
            if entry.name not in values:
                # A secret dropped from the spec (or a temp file left by a crash) must go.
                entry.unlink(missing_ok=True)
        return target

    def remove_mount(self, namespace: str, function: str) -> None:
        """Delete a function's mount folder (after the function is deleted)."""
        target = self.mount_path(namespace, function)
        if not target.exists():
            return
        for entry in target.iterdir():
            entry.unlink(missing_ok=True)
        target.rmdir()
