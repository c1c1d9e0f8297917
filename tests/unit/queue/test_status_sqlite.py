from __future__ import annotations

import json
from dataclasses import asdict, replace
from pathlib import Path

from runtime.queue.status import AttemptRecord, CallState, CallStatus
from runtime.queue.status_sqlite import SqliteStatusStore


def _status(call_id: str = "c-1", state: CallState = CallState.RUNNING) -> CallStatus:
    return CallStatus(call_id, "hello", "openfaas-fn", state, 100.0, 100.0)


async def test_compare_and_set(tmp_path: Path) -> None:
    store = SqliteStatusStore(tmp_path / "calls.db", ttl_s=60)
    assert await store.get("c-1") is None
    assert await store.create(_status()) == 1
    assert await store.create(_status()) is None  # exists: lost the race
    done = replace(_status(), state=CallState.SUCCEEDED, attempts=1)
    assert await store.update(done, revision=2) is None  # stale revision
    assert await store.update(done, revision=1) == 2
    found = await store.get("c-1")
    assert found is not None and found == (done, 2)
    assert await store.put(_status(state=CallState.QUEUED)) == 3
    assert await store.put(_status("c-2")) == 1
    store.close()


async def test_records_survive_a_restart_and_expire(tmp_path: Path) -> None:
    now = [1000.0]
    store = SqliteStatusStore(tmp_path / "calls.db", ttl_s=60, clock=lambda: now[0])
    await store.create(_status())
    store.close()
    again = SqliteStatusStore(tmp_path / "calls.db", ttl_s=60, clock=lambda: now[0])
    assert (await again.get("c-1")) == (_status(), 1)
    now[0] += 61
    assert await again.get("c-1") is None
    assert await again.update(_status(), revision=1) is None  # expired records are absent
    assert await again.create(_status()) == 1  # and can be created afresh
    now[0] += 61
    assert again.purge_expired() == 1
    again.close()


def test_stored_form_is_unchanged() -> None:
    # encode() builds the record from the fields directly; it must read as the dataclasses
    # `asdict` form earlier versions stored (records outlive a daemon upgrade).
    status = replace(
        _status(),
        history=(AttemptRecord(1, 1.0, 2.0, 500, "boom"), AttemptRecord(2, 3.0, 4.0, 200)),
        callback_url="http://127.0.0.1/cb",
        seq=7,
    )
    legacy = asdict(status)
    legacy["state"] = status.state.value
    assert status.encode() == json.dumps(legacy, separators=(",", ":")).encode()
    assert CallStatus.decode(status.encode()) == status
