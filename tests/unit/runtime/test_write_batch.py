"""Writes held for the end of the event loop's round (runtime/upstream/batch.py)."""

from __future__ import annotations

import asyncio

from runtime.upstream.batch import WriteBatch


class Writer:
    def __init__(self, log: list[str], name: str, fail: bool = False) -> None:
        self.log = log
        self.name = name
        self.fail = fail

    def flush(self) -> None:
        self.log.append(self.name)
        if self.fail:
            raise RuntimeError("broken")


async def test_held_writes_go_out_after_the_rounds_callbacks_in_order() -> None:
    loop = asyncio.get_running_loop()
    batch = WriteBatch.of(loop)
    assert WriteBatch.of(loop) is batch  # one per loop, shared
    log: list[str] = []
    loop.call_soon(log.append, "earlier callback")
    batch.add(Writer(log, "a"))
    batch.add(Writer(log, "broken", fail=True))  # logged; the others still go out
    batch.add(Writer(log, "b"))
    assert log == []
    await asyncio.sleep(0)
    assert log == ["earlier callback", "a", "broken", "b"]
    batch.add(Writer(log, "next round"))
    await asyncio.sleep(0)
    assert log[-1] == "next round"
