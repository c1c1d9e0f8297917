from __future__ import annotations

import logging
import os
import stat
from collections.abc import Iterator
from pathlib import Path

import pytest

from runtime.errors import InvalidSpec
from runtime.models import FunctionSpec
from runtime.secrets import SecretFiles, write_atomic

ROOT = os.geteuid() == 0


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


@pytest.fixture
def files(tmp_path: Path) -> Iterator[SecretFiles]:
    previous = os.umask(0o077)  # a strict umask: our modes must not depend on it
    try:
        yield SecretFiles(tmp_path / "state")
    finally:
        os.umask(previous)


def test_put_get_exists_delete(files: SecretFiles) -> None:
    assert files.get("openfaas-fn", "api-key") is None
    assert not files.exists("openfaas-fn", "api-key")
    files.put("openfaas-fn", "api-key", "s3cret")
    assert files.get("openfaas-fn", "api-key") == b"s3cret"
    assert files.exists("openfaas-fn", "api-key")
    files.put("openfaas-fn", "api-key", b"\x00binary\xff")  # replace, raw bytes kept
    assert files.get("openfaas-fn", "api-key") == b"\x00binary\xff"
    assert files.delete("openfaas-fn", "api-key") is True
    assert files.delete("openfaas-fn", "api-key") is False
    assert files.get("openfaas-fn", "api-key") is None


def test_value_files_and_folders_are_private(files: SecretFiles) -> None:
    files.put("openfaas-fn", "api-key", "s3cret")
    path = files.path("openfaas-fn", "api-key")
    assert _mode(path) == 0o600
    assert _mode(path.parent) == 0o700
    assert _mode(files.values_root) == 0o700
    # Nothing but the value is left in the folder (no temp files).
    assert [p.name for p in path.parent.iterdir()] == ["api-key"]


@pytest.mark.parametrize(
    ("namespace", "name"), [("..", "x"), ("openfaas-fn", "../x"), ("a/b", "x")]
)
def test_names_cannot_escape_the_folder(files: SecretFiles, namespace: str, name: str) -> None:
    with pytest.raises(InvalidSpec):
        files.put(namespace, name, "v")


def test_write_is_atomic_a_failed_write_keeps_the_old_value(
    files: SecretFiles, monkeypatch: pytest.MonkeyPatch
) -> None:
    files.put("openfaas-fn", "api-key", "old")

    def broken_fsync(fd: int) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "fsync", broken_fsync)
    with pytest.raises(OSError, match="No space left"):
        files.put("openfaas-fn", "api-key", "new")
    monkeypatch.undo()
    assert files.get("openfaas-fn", "api-key") == b"old"
    folder = files.path("openfaas-fn", "api-key").parent
    assert [p.name for p in folder.iterdir()] == ["api-key"]  # the temp file was cleaned up


def test_write_atomic_replaces_by_rename(tmp_path: Path) -> None:
    target = tmp_path / "value"
    target.write_bytes(b"old")
    old_inode = target.stat().st_ino
    write_atomic(target, b"new", mode=0o600)
    assert target.read_bytes() == b"new"
    assert target.stat().st_ino != old_inode  # a new file renamed over, not rewritten in place
    assert _mode(target) == 0o600


def test_values_never_reach_the_log(files: SecretFiles, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    spec = FunctionSpec(name="fn", image="img", secrets=("api-key",))
    files.put("openfaas-fn", "api-key", "TOPSECRET-VALUE")
    files.materialize(spec, 23456)
    files.delete("openfaas-fn", "api-key")
    assert "api-key" in caplog.text
    assert "TOPSECRET-VALUE" not in caplog.text


def test_materialize_copies_exactly_the_functions_secrets(files: SecretFiles) -> None:
    files.put("openfaas-fn", "api-key", "k")
    files.put("openfaas-fn", "db-password", "p")
    files.put("openfaas-fn", "not-mine", "n")
    spec = FunctionSpec(name="fn", image="img", secrets=("api-key", "db-password"))
    mount = files.materialize(spec, 23456)
    assert mount == files.state_dir / "mounts" / "openfaas-fn" / "fn"
    assert sorted(p.name for p in mount.iterdir()) == ["api-key", "db-password"]
    assert (mount / "api-key").read_bytes() == b"k"

    # The host side stays private whatever the function's folder allows.
    assert _mode(files.mounts_root) == 0o700
    assert _mode(mount.parent) == 0o700


@pytest.mark.skipif(not ROOT, reason="handing files to another group needs root")
def test_materialized_files_are_root_group_readable_only(files: SecretFiles) -> None:
    files.put("openfaas-fn", "api-key", "k")
    spec = FunctionSpec(name="fn", image="img", secrets=("api-key",))
    mount = files.materialize(spec, 23456)
    for path, mode in ((mount, 0o750), (mount / "api-key", 0o440)):
        info = path.stat()
        assert (info.st_uid, info.st_gid, _mode(path)) == (0, 23456, mode)


def test_materialize_updates_in_place_and_drops_removed_secrets(files: SecretFiles) -> None:
    files.put("openfaas-fn", "a", "1")
    files.put("openfaas-fn", "b", "2")
    spec = FunctionSpec(name="fn", image="img", secrets=("a", "b"))
    mount = files.materialize(spec, 23456)
    folder_inode = mount.stat().st_ino
    (mount / ".a.leftover.tmp").write_bytes(b"crash debris")

    files.put("openfaas-fn", "a", "1-new")
    again = files.materialize(FunctionSpec(name="fn", image="img", secrets=("a",)), 23456)
    assert again == mount
    # Same folder (running replicas keep their bind mount and see the new value) ...
    assert mount.stat().st_ino == folder_inode
    assert (mount / "a").read_bytes() == b"1-new"
    # ... and a secret the spec no longer lists is gone, with any debris.
    assert [p.name for p in mount.iterdir()] == ["a"]


def test_missing_secret_is_an_invalid_spec_and_changes_nothing(files: SecretFiles) -> None:
    files.put("team-a", "api-key", "k")  # same name, other namespace: does not count
    spec = FunctionSpec(name="fn", image="img", secrets=("api-key",))
    with pytest.raises(InvalidSpec) as failure:
        files.materialize(spec, 23456)
    assert str(failure.value) == "secret 'api-key' not found in namespace 'openfaas-fn'"
    assert not files.mount_path("openfaas-fn", "fn").exists()


def test_remove_mount(files: SecretFiles) -> None:
    files.put("openfaas-fn", "a", "1")
    spec = FunctionSpec(name="fn", image="img", secrets=("a",))
    mount = files.materialize(spec, 23456)
    files.remove_mount("openfaas-fn", "fn")
    assert not mount.exists()
    files.remove_mount("openfaas-fn", "fn")  # already gone: fine
