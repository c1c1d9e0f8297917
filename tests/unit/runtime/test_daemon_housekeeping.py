from __future__ import annotations

import asyncio
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

from runtime.daemon import purge_expired_kv
from runtime.store import Store


async def test_expired_entries_are_purged_and_live_ones_kept(tmp_path: Path) -> None:
    now = [datetime(2026, 1, 1, tzinfo=UTC)]
    store = Store(tmp_path / "state.db", clock=lambda: now[0])
    store.kv_put("webhook", "old", "x", ttl_s=60)
    store.kv_put("webhook", "live", "y", ttl_s=3600)
    now[0] += timedelta(minutes=5)
    task = asyncio.create_task(purge_expired_kv(store, every_s=0.01))
    try:
        deadline = time.monotonic() + 5
        while store._db.execute("SELECT COUNT(*) FROM kv").fetchone()[0] != 1:
            assert time.monotonic() < deadline, "expired entry never purged"
            await asyncio.sleep(0.01)
    finally:
        task.cancel()
    assert store.kv_get("webhook", "live") == "y"
    store.close()
