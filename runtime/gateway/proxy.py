"""`/function/{name}[.{namespace}][/{path}]`: stream a request to a replica and its answer back."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator

import aiohttp
from aiohttp import web
from multidict import CIMultiDict

from runtime.errors import PayloadTooLarge, UpstreamFailed
from runtime.gateway.state import SERVICES
from runtime.invoker import Invocation, new_call_id, strip_hop_by_hop
from runtime.names import split_qualified

routes = web.RouteTableDef()
CHUNK_BYTES = 64 * 1024


class LimitedBody:
    """Passes a request body through while counting it; over the limit the upload is abandoned.

    aiohttp's client wraps an error raised by a body generator into a connection error, so the
    overflow is also remembered here for the handler to answer 413, not 502.
    """

    def __init__(self, stream: aiohttp.StreamReader, limit: int) -> None:
        self._stream = stream
        self._limit = limit
        self.exceeded = False

    def error(self) -> PayloadTooLarge:
        return PayloadTooLarge(f"request body is larger than the limit of {self._limit} bytes")

    async def __aiter__(self) -> AsyncIterator[bytes]:
        seen = 0
        async for chunk in self._stream.iter_chunked(CHUNK_BYTES):
            seen += len(chunk)
            if seen > self._limit:
                self.exceeded = True
                raise self.error()
            yield chunk


def upstream_headers(request: web.Request, call_id: str) -> CIMultiDict[str]:
    headers = strip_hop_by_hop(request.headers)
    headers.pop("Host", None)
    peer = request.remote or ""
    prior = request.headers.get("X-Forwarded-For")
    headers["X-Forwarded-For"] = f"{prior}, {peer}" if prior else peer
    headers["X-Forwarded-Host"] = request.headers.get("X-Forwarded-Host") or request.host
    headers["X-Call-Id"] = call_id
    headers["X-Start-Time"] = str(time.time_ns())
    return headers


@routes.route("*", "/function/{target}")
@routes.route("*", "/function/{target}/{tail:.*}")
async def invoke(request: web.Request) -> web.StreamResponse:
    services = request.app[SERVICES]
    name, namespace = split_qualified(request.match_info["target"])
    limit = services.settings.max_body_bytes
    if request.content_length is not None and request.content_length > limit:
        raise PayloadTooLarge(f"request body is larger than the limit of {limit} bytes")
    call_id = request.headers.get("X-Call-Id") or new_call_id()
    headers = upstream_headers(request, call_id)
    body = LimitedBody(request.content, limit) if request.body_exists else None
    tail = request.match_info.get("tail")
    inv = Invocation(
        name=name,
        namespace=namespace,
        method=request.method,
        path="/" + tail if tail else "/",
        query_string=request.query_string,
        headers=headers,
        body=body.__aiter__() if body is not None else None,
        call_id=call_id,
        timeout_s=services.settings.invoke_timeout_s,
    )
    try:
        async with services.invoker.call(inv) as upstream:
            out_headers = strip_hop_by_hop(upstream.headers)
            out_headers["X-Call-Id"] = call_id
            out_headers["X-Start-Time"] = headers["X-Start-Time"]
            response = web.StreamResponse(
                status=upstream.status, reason=upstream.reason, headers=out_headers
            )
            if upstream.content_length is None:
                # Chunked from the function (SSE, NDJSON): pass each piece on as it arrives.
                response.enable_chunked_encoding()
            await response.prepare(request)
            async for chunk in upstream.content.iter_any():
                await response.write(chunk)
            await response.write_eof()
            return response
    except UpstreamFailed:
        if body is not None and body.exceeded:
            raise body.error() from None
        raise
    except aiohttp.ClientPayloadError as exc:
        # The body was cut off mid-stream; the status is gone already, so just end the stream.
        raise ConnectionResetError(f"upstream body broken: {exc}") from exc
