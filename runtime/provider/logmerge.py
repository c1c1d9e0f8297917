"""Merging the logs of several replicas into one stream, for every provider alike.

Past lines are merged by timestamp, with `tail` meaning the last N overall (Docker applies it per
container). Live lines are merged as they arrive, each replica read by a task that lives exactly
as long as the consumer's generator.
"""

from __future__ import annotations

import asyncio
import heapq
from collections.abc import AsyncIterator, Iterable, Sequence

from runtime.provider.base import LogLine

LIVE_QUEUE_SIZE = 1000


def merge_past(per_replica: Iterable[Sequence[LogLine]], tail: int | None) -> list[LogLine]:
    merged = list(heapq.merge(*per_replica, key=lambda line: line.timestamp))
    if tail is not None:
        merged = merged[-tail:] if tail > 0 else []
    return merged


async def merge_live(
    sources: Sequence[tuple[str, AsyncIterator[LogLine]]],
) -> AsyncIterator[LogLine]:
    """Lines from every ``(name, stream)`` as they come; a stream's error is re-raised here."""
    queue: asyncio.Queue[LogLine | Exception | None] = asyncio.Queue(LIVE_QUEUE_SIZE)

    async def pump(stream: AsyncIterator[LogLine]) -> None:
        # Cancellation (the consumer closed the generator) ends a pump without a word;
        # anything else is handed to the consumer, which re-raises it.
        end: Exception | None = None
        try:
            async for line in stream:
                await queue.put(line)
        except Exception as exc:
            end = exc
        await queue.put(end)

    # One owner: these tasks live exactly as long as this generator.
    tasks = [
        asyncio.create_task(pump(stream), name=f"localfaas-logs-{name}") for name, stream in sources
    ]
    try:
        running = len(tasks)
        while running:
            item = await queue.get()
            if item is None:
                running -= 1
            elif isinstance(item, Exception):
                raise item
            else:
                yield item
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
