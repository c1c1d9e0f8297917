from __future__ import annotations

import asyncio
import functools
import json
import sqlite3
from collections.abc import Awaitable, Callable
from dataclasses import asdict, replace
from pathlib import Path
from typing import Any

import pytest

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


# --- group commit: the writes asked for in one round of the event loop share one transaction ---


def _bounded(test: Callable[..., Awaitable[None]]) -> Callable[..., Awaitable[None]]:
    """Fail a test that waits over 10 s: a group commit that breaks leaves its callers waiting on
    futures nobody resolves, which would otherwise hang the run instead of failing it."""

    @functools.wraps(test)
    async def run(*args: Any, **kwargs: Any) -> None:
        await asyncio.wait_for(test(*args, **kwargs), 10)

    return run


async def _gather(*writes: Awaitable[Any], return_exceptions: bool = False) -> list[Any]:
    """asyncio.gather: the writes start in this order, in the same round of the loop."""
    return list(await asyncio.gather(*writes, return_exceptions=return_exceptions))


def _trace(store: SqliteStatusStore) -> list[str]:
    """Every statement the store's connection runs from now on (BEGIN, COMMIT, ROLLBACK too)."""
    statements: list[str] = []
    store._db.set_trace_callback(statements.append)
    return statements


def _count(statements: list[str], keyword: str) -> int:
    return sum(1 for sql in statements if sql.strip().upper() == keyword)


def _writes(statements: list[str]) -> list[str]:
    return [sql for sql in statements if sql.lstrip().upper().startswith(("INSERT", "UPDATE"))]


def _read_elsewhere(path: Path, call_id: str) -> tuple[CallStatus, int] | None:
    """What another connection sees: only committed data."""
    db = sqlite3.connect(str(path))
    try:
        row = db.execute(
            "SELECT data, revision FROM call_status WHERE call_id = ?", (call_id,)
        ).fetchone()
    finally:
        db.close()
    return None if row is None else (CallStatus.decode(row[0]), int(row[1]))


@_bounded
async def test_concurrent_creates_commit_in_one_transaction(tmp_path: Path) -> None:
    store = SqliteStatusStore(tmp_path / "calls.db", ttl_s=60)
    statements = _trace(store)
    ids = [f"c-{i}" for i in range(50)]
    results = await _gather(*(store.create(_status(call_id)) for call_id in ids))
    assert results == [1] * 50
    assert _count(statements, "BEGIN") == 1
    assert _count(statements, "COMMIT") == 1
    assert _count(statements, "ROLLBACK") == 0
    assert len(_writes(statements)) == 50  # each write ran once: no fallback
    # The order in the transaction: BEGIN, the 50 writes, COMMIT.
    keywords = [sql.split()[0].upper() for sql in statements]
    assert keywords == ["BEGIN"] + ["INSERT"] * 50 + ["COMMIT"]
    for call_id in ids:
        assert await store.get(call_id) == (_status(call_id), 1)
        assert _read_elsewhere(tmp_path / "calls.db", call_id) == (_status(call_id), 1)
    store.close()


@_bounded
async def test_writes_of_separate_rounds_commit_separately(tmp_path: Path) -> None:
    store = SqliteStatusStore(tmp_path / "calls.db", ttl_s=60)
    statements = _trace(store)
    for i in range(3):
        assert await store.create(_status(f"c-{i}")) == 1
    assert _count(statements, "BEGIN") == 3
    assert _count(statements, "COMMIT") == 3
    store.close()


@_bounded
async def test_a_caller_resumes_only_once_its_write_is_committed(tmp_path: Path) -> None:
    path = tmp_path / "calls.db"
    store = SqliteStatusStore(path, ttl_s=60)
    statements = _trace(store)
    task = asyncio.create_task(store.create(_status()))
    await asyncio.sleep(0)  # the task asked for its write; the group commits at the round's end
    assert not task.done()
    assert _writes(statements) == []  # queued, not yet run
    assert _read_elsewhere(path, "c-1") is None
    assert await task == 1
    assert _count(statements, "COMMIT") == 1
    assert _read_elsewhere(path, "c-1") == (_status(), 1)  # committed by the time it resumed
    store.close()


@_bounded
async def test_compare_and_set_inside_one_group(tmp_path: Path) -> None:
    store = SqliteStatusStore(tmp_path / "calls.db", ttl_s=60)
    statements = _trace(store)

    # The same call created twice in one round: one wins, the other lost the race.
    first = await _gather(store.create(_status(state=CallState.QUEUED)), store.create(_status()))
    assert sorted(first, key=lambda r: r is None) == [1, None]
    winner = _status(state=CallState.QUEUED) if first[0] == 1 else _status()
    assert await store.get("c-1") == (winner, 1)

    # A stale revision next to a good one in the same round: only the good one applies.
    good = replace(_status(), state=CallState.SUCCEEDED, attempts=1)
    stale = replace(_status(), state=CallState.FAILED, attempts=9)
    assert await _gather(store.update(good, revision=1), store.update(stale, 5)) == [
        2,
        None,
    ]
    assert await store.get("c-1") == (good, 2)
    assert await _gather(store.update(stale, revision=1), store.update(good, 2)) == [
        None,
        3,
    ]
    assert await store.get("c-1") == (good, 3)

    # Two writers racing from the same revision: exactly one wins, and its data is stored.
    a = replace(_status(), state=CallState.SUCCEEDED, attempts=2)
    b = replace(_status(), state=CallState.FAILED, attempts=2)
    raced = await _gather(store.update(a, revision=3), store.update(b, revision=3))
    assert sorted(raced, key=lambda r: r is None) == [4, None]
    assert await store.get("c-1") == ((a if raced[0] == 4 else b), 4)

    # Writes of one group see the ones before them: create then update of a new call.
    new = _status("c-2", state=CallState.QUEUED)
    then = replace(new, state=CallState.RUNNING)
    assert await _gather(store.create(new), store.update(then, revision=1)) == [1, 2]
    assert await store.get("c-2") == (then, 2)

    # A lost race is a result, not a failure: every round was one transaction, none rolled back.
    assert _count(statements, "COMMIT") == 5
    assert _count(statements, "ROLLBACK") == 0
    store.close()


@_bounded
async def test_sequential_create_and_updates_count_revisions(tmp_path: Path) -> None:
    store = SqliteStatusStore(tmp_path / "calls.db", ttl_s=60)
    queued = _status(state=CallState.QUEUED)
    running = replace(queued, state=CallState.RUNNING, attempts=1)
    done = replace(running, state=CallState.SUCCEEDED, updated_at=101.0)
    assert await store.create(queued) == 1
    assert await store.get("c-1") == (queued, 1)
    assert await store.update(running, revision=1) == 2
    assert await store.get("c-1") == (running, 2)
    assert await store.update(done, revision=2) == 3
    assert await store.get("c-1") == (done, 3)
    assert await store.update(queued, revision=2) is None  # the old revision is stale now
    assert await store.get("c-1") == (done, 3)
    store.close()


def _refuse(path: Path, call_id: str, action: str) -> None:
    """Make every insert or update of ``call_id`` fail (a trigger raising ``action``)."""
    db = sqlite3.connect(str(path))
    for event in ("INSERT", "UPDATE"):
        db.execute(
            f"CREATE TRIGGER refuse_{event.lower()} BEFORE {event} ON call_status "
            f"WHEN NEW.call_id = '{call_id}' BEGIN SELECT RAISE({action}, 'refused'); END"
        )
    db.commit()
    db.close()


@pytest.mark.parametrize("action", ["ABORT", "FAIL", "ROLLBACK"])
@_bounded
async def test_a_failing_write_fails_only_itself(tmp_path: Path, action: str) -> None:
    path = tmp_path / "calls.db"
    store = SqliteStatusStore(path, ttl_s=60)
    assert await store.create(_status("c-old")) == 1
    _refuse(path, "c-bad", action)
    statements = _trace(store)
    updated = replace(_status("c-old"), state=CallState.SUCCEEDED, attempts=1)
    # Writes before the failing one ran inside the group (then rolled back): were that not
    # undone, the create would rerun as "exists" and the update as "stale revision".
    results = await _gather(
        store.create(_status("c-0")),
        store.update(updated, revision=1),
        store.put(_status("c-put")),
        store.create(_status("c-bad")),
        store.create(_status("c-0")),  # loses to the first, as it would have in the group
        store.put(_status("c-put")),
        store.create(_status("c-2")),
        return_exceptions=True,
    )
    assert results[:3] == [1, 2, 1]
    assert isinstance(results[3], sqlite3.Error)
    assert "refused" in str(results[3])
    assert results[4:] == [None, 2, 1]
    assert _count(statements, "BEGIN") == 1
    assert _count(statements, "COMMIT") == 0
    assert not store._db.in_transaction
    for call_id, expected in (
        ("c-0", (_status("c-0"), 1)),
        ("c-old", (updated, 2)),
        ("c-put", (_status("c-put"), 2)),
        ("c-2", (_status("c-2"), 1)),
        ("c-bad", None),
    ):
        assert await store.get(call_id) == expected
        assert _read_elsewhere(path, call_id) == expected
    # The store goes on grouping afterwards.
    statements.clear()
    assert await _gather(store.create(_status("c-3")), store.create(_status("c-4"))) == [
        1,
        1,
    ]
    assert _count(statements, "COMMIT") == 1
    with pytest.raises(sqlite3.Error, match="refused"):  # alone in its round, too
        await store.create(_status("c-bad"))
    store.close()


@_bounded
async def test_awaited_writes_survive_a_reopen(tmp_path: Path) -> None:
    path = tmp_path / "calls.db"
    store = SqliteStatusStore(path, ttl_s=60)
    done = replace(_status("c-1"), state=CallState.SUCCEEDED, attempts=1)
    assert await _gather(store.create(_status("c-1")), store.put(_status("c-2"))) == [1, 1]
    assert await store.update(done, revision=1) == 2
    store.close()
    again = SqliteStatusStore(path, ttl_s=60)
    assert await again.get("c-1") == (done, 2)
    assert await again.get("c-2") == (_status("c-2"), 1)
    again.close()


@_bounded
async def test_close_commits_the_writes_still_pending(tmp_path: Path) -> None:
    path = tmp_path / "calls.db"
    store = SqliteStatusStore(path, ttl_s=60)
    assert await store.create(_status("c-0")) == 1
    done = replace(_status("c-0"), state=CallState.SUCCEEDED, attempts=1)
    tasks = [
        asyncio.create_task(store.create(_status("c-1"))),
        asyncio.create_task(store.put(_status("c-2"))),
        asyncio.create_task(store.update(done, revision=1)),
        asyncio.create_task(store.create(_status("c-1"))),  # loses to the first
    ]
    await asyncio.sleep(0)  # the tasks asked for their writes; the round has not ended yet
    assert not any(task.done() for task in tasks)
    assert store._writes  # really pending: this is what close() must commit
    assert _read_elsewhere(path, "c-1") is None
    store.close()
    assert _read_elsewhere(path, "c-1") == (_status("c-1"), 1)  # committed by close itself
    assert await _gather(*tasks) == [1, 1, 2, None]  # and the callers learn the results
    again = SqliteStatusStore(path, ttl_s=60)
    assert await again.get("c-0") == (done, 2)
    assert await again.get("c-1") == (_status("c-1"), 1)
    assert await again.get("c-2") == (_status("c-2"), 1)
    again.close()


@_bounded
async def test_put_counts_revisions_across_rounds_and_inside_a_group(tmp_path: Path) -> None:
    store = SqliteStatusStore(tmp_path / "calls.db", ttl_s=60)
    statements = _trace(store)
    states = [CallState.QUEUED, CallState.RUNNING, CallState.FAILED]
    for revision, state in enumerate(states, start=1):
        assert await store.put(_status(state=state)) == revision
        assert await store.get("c-1") == (_status(state=state), revision)
    assert _count(statements, "COMMIT") == 3  # one round each
    count = len(states)
    statements.clear()
    last = _status(state=CallState.SUCCEEDED)
    results = await _gather(
        store.put(_status()),
        store.put(_status("c-2")),
        store.put(_status()),
        store.create(_status()),  # exists: lost the race, also inside the group
        store.put(last),
        store.update(_status("c-2"), revision=1),
    )
    assert results == [count + 1, 1, count + 2, None, count + 3, 2]
    assert _count(statements, "COMMIT") == 1
    assert _count(statements, "ROLLBACK") == 0
    assert await store.get("c-1") == (last, count + 3)
    assert await store.get("c-2") == (_status("c-2"), 2)
    store.close()


@_bounded
async def test_a_cancelled_caller_does_not_break_its_group(tmp_path: Path) -> None:
    store = SqliteStatusStore(tmp_path / "calls.db", ttl_s=60)
    statements = _trace(store)
    tasks = [asyncio.create_task(store.create(_status(f"c-{i}"))) for i in range(3)]
    await asyncio.sleep(0)  # all three writes are queued
    tasks[1].cancel()  # its caller stops waiting; the others still learn their results
    assert await tasks[0] == 1
    assert await tasks[2] == 1
    assert tasks[1].cancelled()
    assert _count(statements, "COMMIT") == 1
    assert await store.get("c-0") == (_status("c-0"), 1)
    assert await store.get("c-2") == (_status("c-2"), 1)
    store.close()


async def test_a_write_after_close_fails_instead_of_hanging(tmp_path: Path) -> None:
    store = SqliteStatusStore(tmp_path / "calls.db", ttl_s=60)
    store.close()
    with pytest.raises(sqlite3.ProgrammingError):
        await asyncio.wait_for(store.create(_status()), 2)
