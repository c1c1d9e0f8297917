"""The body of one upstream response, handed to its reader piece by piece as it arrives."""

from __future__ import annotations

import asyncio
from typing import Protocol

# Above this many unread bytes the connection stops reading from the replica (TCP then pushes
# back on it), so a slow caller never makes the gateway buffer a large response.
HIGH_WATER_BYTES = 256 * 1024
LOW_WATER_BYTES = 64 * 1024


class ReadFlow(Protocol):
    def pause_reading(self) -> None: ...
    def resume_reading(self) -> None: ...


class BodyStream:
    """Fed by the connection, read by one consumer (`readany`, `read`, `iter_any`).

    Bytes received before an error are still handed out; the error is raised after them.
    """

    __slots__ = ("_chunks", "_eof", "_exc", "_flow", "_loop", "_paused", "_size", "_waiter")

    def __init__(self, loop: asyncio.AbstractEventLoop, flow: ReadFlow) -> None:
        self._loop = loop
        self._flow = flow
        self._chunks: list[bytes] = []
        self._size = 0
        self._eof = False
        self._exc: BaseException | None = None
        self._waiter: asyncio.Future[None] | None = None
        self._paused = False

    # -- producer side (the connection) ----------------------------------------------------

    def feed(self, data: bytes) -> None:
        self._chunks.append(data)
        self._size += len(data)
        if self._size > HIGH_WATER_BYTES and not self._paused:
            self._paused = True
            self._flow.pause_reading()
        if self._waiter is not None:
            self._wake()

    def feed_eof(self, last: bytes = b"") -> None:
        """The end of the body, after ``last`` (its final piece, if any)."""
        if last:
            self._chunks.append(last)
            self._size += len(last)
        self._eof = True
        if self._waiter is not None:
            self._wake()

    def set_exception(self, exc: BaseException) -> None:
        if not self._eof and self._exc is None:
            self._exc = exc
            self._wake()

    def _wake(self) -> None:
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    # -- consumer side ---------------------------------------------------------------------

    @property
    def complete(self) -> bool:
        """Every byte of the body has arrived (some may be unread)."""
        return self._eof

    def at_eof(self) -> bool:
        return self._eof and not self._chunks

    async def _wait(self) -> None:
        waiter = self._waiter = self._loop.create_future()
        try:
            await waiter
        finally:
            self._waiter = None

    def _take(self) -> bytes:
        chunks = self._chunks
        data = chunks[0] if len(chunks) == 1 else b"".join(chunks)
        chunks.clear()
        self._size = 0
        if self._paused:
            self._paused = False
            self._flow.resume_reading()
        return data

    def take_all(self) -> bytes | None:
        """The whole body, if it has all arrived (and no error came): without waiting."""
        if not self._eof:
            return None
        chunks = self._chunks
        if len(chunks) == 1 and not self._paused:
            self._size = 0
            return chunks.pop()
        return self._take() if chunks else b""

    async def readany(self) -> bytes:
        """Whatever has arrived (waiting for something); b"" at the end of the body."""
        while not self._chunks:
            if self._exc is not None:
                raise self._exc
            if self._eof:
                return b""
            await self._wait()
        return self._take()

    async def read(self, n: int = -1) -> bytes:
        """Up to ``n`` bytes as they arrive; ``n`` < 0: the whole rest of the body."""
        if n < 0:
            parts = []
            while True:
                if self._chunks:
                    parts.append(self._take())  # taking resumes a paused connection
                if self._eof:
                    return b"".join(parts)
                if self._exc is not None:
                    raise self._exc
                await self._wait()
        data = await self.readany()
        if len(data) > n:
            rest = data[n:]
            self._chunks.insert(0, rest)
            self._size += len(rest)
            data = data[:n]
        return data

    def iter_any(self) -> _Pieces:
        """``async for piece in body.iter_any()``: pieces as they arrive."""
        return _Pieces(self, -1)

    def iter_chunked(self, n: int) -> _Pieces:
        return _Pieces(self, n)


class _Pieces:
    __slots__ = ("_body", "_n")

    def __init__(self, body: BodyStream, n: int) -> None:
        self._body = body
        self._n = n

    def __aiter__(self) -> _Pieces:
        return self

    async def __anext__(self) -> bytes:
        data = await (self._body.readany() if self._n < 0 else self._body.read(self._n))
        if not data:
            raise StopAsyncIteration
        return data
