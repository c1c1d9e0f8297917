"""The handler thread pool: results, errors, and its thread cap."""

from __future__ import annotations

import asyncio
import sys
import threading

import pytest

from watchdog.modes.threads import ThreadPool


async def test_result_and_exception() -> None:
    pool = ThreadPool(asyncio.get_running_loop(), 4, "t")
    try:
        assert await pool.submit(lambda a, b: a + b, 2, 3) == 5
        with pytest.raises(ZeroDivisionError):
            await pool.submit(lambda: 1 / 0)
    finally:
        pool.close()


async def test_system_exit_does_not_escape_to_the_loop() -> None:
    pool = ThreadPool(asyncio.get_running_loop(), 1, "t")
    try:
        with pytest.raises(RuntimeError, match="handler raised SystemExit"):
            await pool.submit(sys.exit, 3)
    finally:
        pool.close()


async def test_blocking_calls_run_concurrently_up_to_the_cap() -> None:
    pool = ThreadPool(asyncio.get_running_loop(), 3, "t")
    barrier = threading.Barrier(3, timeout=10)
    try:
        # Three calls that only return once all three run at the same time.
        results = await asyncio.gather(*(pool.submit(barrier.wait) for _ in range(3)))
        assert sorted(results) == [0, 1, 2]
        assert sum(t.name.startswith("t-") for t in threading.enumerate()) <= 3
    finally:
        pool.close()


async def test_late_result_after_timeout_is_dropped() -> None:
    pool = ThreadPool(asyncio.get_running_loop(), 1, "t")
    release = threading.Event()
    try:
        future = pool.submit(release.wait, 10)
        future.cancel()  # as exec_timeout does for a sync handler
        release.set()
        assert await pool.submit(lambda: "next") == "next"  # the same thread, free again
    finally:
        pool.close()
