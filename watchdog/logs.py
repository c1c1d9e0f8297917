"""Watchdog log lines for people, and line-by-line relaying of a child's output.

The watchdog logs one stable line per state change on stderr (never request bodies). Child
output is relayed as bytes, split into lines of any length: we read fixed-size chunks and
split them ourselves, so a long line cannot hit ``StreamReader.readline``'s 64 KiB limit.
"""

from __future__ import annotations

import asyncio
import logging
import sys
from typing import BinaryIO

log = logging.getLogger("watchdog")

_CHUNK_BYTES = 64 * 1024
# A child that writes without ever ending a line must not grow our memory without bound;
# past this size the line is relayed in pieces of this size.
MAX_LINE_BYTES = 4 * 1024 * 1024


def setup_logging() -> None:
    """Send the watchdog's own log lines to stderr as ``watchdog <message>``."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("watchdog %(message)s"))
    log.addHandler(handler)
    log.setLevel(logging.INFO)
    # The handler's own logging (python mode) keeps Python's defaults, as under Flask.
    log.propagate = False
    # Container logs are read as they come: print() from a handler or our relayed lines must
    # not sit in a block buffer until exit.
    for stream in (sys.stdout, sys.stderr):
        reconfigure = getattr(stream, "reconfigure", None)
        if reconfigure is not None:
            reconfigure(line_buffering=True)


async def relay_lines(stream: asyncio.StreamReader, out: BinaryIO, prefix: bytes = b"") -> None:
    """Copy ``stream`` to ``out`` line by line, each line preceded by ``prefix``, until EOF."""
    pending = bytearray()  # an unfinished line; bytearray so long lines grow in place
    while chunk := await stream.read(_CHUNK_BYTES):
        lines: list[bytes] = []
        newline = chunk.find(b"\n")
        if newline < 0:
            pending += chunk
        else:
            pending += chunk[:newline]
            lines.append(bytes(pending))
            pending.clear()
            rest = chunk[newline + 1 :].split(b"\n")
            pending += rest.pop()
            lines.extend(rest)
        while len(pending) >= MAX_LINE_BYTES:
            lines.append(bytes(pending[:MAX_LINE_BYTES]))
            del pending[:MAX_LINE_BYTES]
        if lines:
            _write(out, prefix, lines)
    if pending:
        _write(out, prefix, [bytes(pending)])


def _write(out: BinaryIO, prefix: bytes, lines: list[bytes]) -> None:
    # One write per batch: lines relayed from stdout and stderr interleave only at line ends.
    try:
        out.write(b"".join(prefix + line + b"\n" for line in lines))
        out.flush()
    except OSError:
        # Our own stdout is gone; keep reading so the child never blocks on a full pipe.
        pass
