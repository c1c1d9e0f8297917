"""Request body errors, and reading a body whole within ``max_body_bytes`` and ``read_timeout``.

Used by the modes that need the body in memory (python, fork); http mode streams instead.
The reading itself (Content-Length or chunked, ``Expect: 100-continue``) is the server's:
see ``watchdog.httpserver``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from watchdog.http11 import Request


class BodyError(Exception):
    """The body cannot be read; ``status`` and ``message`` make the refusal."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


def too_large(limit: int) -> BodyError:
    return BodyError(413, f"request body larger than max_body_bytes ({limit} bytes)")


async def read_body(request: Request, limit: int, timeout_s: float) -> bytes:
    """Return the request body; raise BodyError for 413 (too large), 408 (too slow) or 400.

    A declared Content-Length over ``limit`` is refused before any of the body is read (and
    before ``100 Continue`` is sent); a chunked body as soon as its chunk sizes pass it.
    """
    return await request.read(limit, timeout_s)
