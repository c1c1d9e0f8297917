"""Read a request body whole, within ``max_body_bytes`` and ``read_timeout``.

Used by the modes that need the body in memory (python, fork); http mode streams instead.
"""

from __future__ import annotations

import asyncio

from aiohttp import HttpVersion11
from aiohttp.web import BaseRequest
from aiohttp.web_protocol import RequestPayloadError


class BodyError(Exception):
    """The body cannot be read; ``status`` and ``message`` make the refusal."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


async def send_continue(request: BaseRequest) -> None:
    """Answer ``Expect: 100-continue``, so the client sends its body now, not after a wait.

    aiohttp's low-level server leaves this to the handler (web.Application's router does it).
    Call it only once the request is accepted: a client told 413 should not send the body.
    """
    if (
        request.version >= HttpVersion11
        and request.headers.get("Expect", "").lower() == "100-continue"
    ):
        await request.writer.write(b"HTTP/1.1 100 Continue\r\n\r\n")
        request.writer.output_size = 0  # the interim response is not part of the reply's size


def too_large(limit: int) -> BodyError:
    return BodyError(413, f"request body larger than max_body_bytes ({limit} bytes)")


async def read_body(request: BaseRequest, limit: int, timeout_s: float) -> bytes:
    """Return the request body; raise BodyError for 413 (too large) or 408 (too slow)."""
    if not request.body_exists:
        return b""
    length = request.content_length
    if length is not None and length > limit:
        raise too_large(limit)
    content = request.content
    if not content.is_eof():
        await send_continue(request)
    # Small bodies usually arrive with the headers: skip the timer when nothing is left to wait
    # for (the parser has seen the end of a body whose length it knew).
    if length is not None and content.is_eof():
        return await content.read()
    try:
        async with asyncio.timeout(timeout_s or None):
            if length is not None:
                return await content.read()
            return await _read_chunked(request, limit)
    except TimeoutError:
        raise BodyError(
            408, f"request body not received within read_timeout ({timeout_s:g}s)"
        ) from None
    except (ConnectionError, RequestPayloadError):
        # The client went away or sent a broken body (e.g. bad chunk framing).
        raise BodyError(400, "request body could not be read") from None


async def _read_chunked(request: BaseRequest, limit: int) -> bytes:
    parts: list[bytes] = []
    size = 0
    while chunk := await request.content.readany():
        size += len(chunk)
        if size > limit:
            raise too_large(limit)
        parts.append(chunk)
    return b"".join(parts)
