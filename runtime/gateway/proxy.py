"""`/function/{name}[.{namespace}][/{path}]`: stream a request to a replica and its answer back."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator

import aiohttp
from aiohttp import web
from multidict import CIMultiDict

from runtime.errors import PayloadTooLarge
from runtime.gateway.state import SERVICES
from runtime.invoker import Invocation, new_call_id, strip_hop_by_hop
from runtime.names import split_qualified

routes = web.RouteTableDef()
CHUNK_BYTES = 64 * 1024


async def _limited(stream: aiohttp.StreamReader, limit: int) -> AsyncIterator[bytes]:
    """Pass the body through while counting it; over the limit the upload is abandoned."""
    seen = 0
    async for chunk in stream.iter_chunked(CHUNK_BYTES):
        seen += len(chunk)
        if seen > limit:
            raise PayloadTooLarge(f"request body is larger than the limit of {limit} bytes")
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
    body = _limited(request.content, limit) if request.body_exists else None
    tail = request.match_info.get("tail")
    inv = Invocation(
        name=name,
        namespace=namespace,
        method=request.method,
        path="/" + tail if tail else "/",
        query_string=request.query_string,
        headers=headers,
        body=body,
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
    except PayloadTooLarge:
        raise
    except aiohttp.ClientPayloadError as exc:
        # The body was cut off mid-stream; the status is gone already, so just end the stream.
        raise ConnectionResetError(f"upstream body broken: {exc}") from exc
