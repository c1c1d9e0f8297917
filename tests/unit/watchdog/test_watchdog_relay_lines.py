"""Relaying a child's output line by line, whatever the line length."""

from __future__ import annotations

import asyncio
import io

from watchdog.logs import MAX_LINE_BYTES, relay_lines


async def relay(chunks: list[bytes], prefix: bytes = b"") -> bytes:
    reader = asyncio.StreamReader()
    for chunk in chunks:
        reader.feed_data(chunk)
    reader.feed_eof()
    out = io.BytesIO()
    await relay_lines(reader, out, prefix)
    return out.getvalue()


async def test_lines_get_the_prefix() -> None:
    assert await relay([b"one\ntwo\n"], b"stdout: ") == b"stdout: one\nstdout: two\n"


async def test_line_split_across_chunks() -> None:
    assert await relay([b"he", b"llo\nwor", b"ld\n"]) == b"hello\nworld\n"


async def test_last_line_without_newline_is_kept() -> None:
    assert await relay([b"a\npartial"], b"> ") == b"> a\n> partial\n"


async def test_line_longer_than_readline_limit_arrives_whole() -> None:
    long_line = b"x" * (300 * 1024)
    pieces = [long_line[i : i + 1000] for i in range(0, len(long_line), 1000)]
    assert (
        await relay([*pieces, b"\nnext\n"], b"stderr: ")
        == b"stderr: " + long_line + b"\nstderr: next\n"
    )


async def test_endless_line_is_relayed_in_pieces() -> None:
    data = b"y" * (MAX_LINE_BYTES + 10)
    out = await relay([data])
    assert out == data[:MAX_LINE_BYTES] + b"\n" + data[MAX_LINE_BYTES:] + b"\n"


async def test_empty_lines_and_bytes_that_are_not_utf8() -> None:
    assert await relay([b"\n\xff\xfe\n"]) == b"\n\xff\xfe\n"
