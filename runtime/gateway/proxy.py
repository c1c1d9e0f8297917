"""`/function/{name}[.{namespace}][/{path}]`: stream a request to a replica and its answer back.

Two ways in share the rules here: the gateway's front (front.py) serves plain requests itself,
and this module's aiohttp route serves the rest (chunked or large uploads, `Expect`, HTTP/1.0,
anything unusual) on connections the front handed over.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from urllib.parse import unquote

import aiohttp
from aiohttp import web
from multidict import MultiMapping

from runtime.errors import PayloadTooLarge, UpstreamFailed, UpstreamTimeout
from runtime.gateway.state import SERVICES, Services
from runtime.invoker import Body, Invocation, new_call_id
from runtime.names import split_qualified
from runtime.upstream import HOP_BY_HOP, UpstreamResponse

routes = web.RouteTableDef()
PREFIX = "/function/"
# Request bodies up to this size are read whole and go out with the request head in one write;
# responses up to this size go out with their head in one write. Larger ones stream.
INLINE_BYTES = 64 * 1024

# Set by the gateway itself; the caller's copies are replaced, not passed on.
REQUEST_DROP = HOP_BY_HOP | {"host", "x-forwarded-for", "x-forwarded-host", "x-start-time"}
RESPONSE_DROP = HOP_BY_HOP | {"x-call-id", "x-start-time"}
# `name[.namespace]` → (name, namespace) for targets that passed validation: the same few
# names come in on every request. Bounded: cleared when full.
_TARGETS: dict[str, tuple[str, str]] = {}
_TARGETS_MAX = 4096


def connection_named(headers: MultiMapping[str]) -> frozenset[str]:
    """Header names listed in Connection: hop-by-hop for this message only (RFC 9110 §7.6.1)."""
    return frozenset(
        token.strip().lower()
        for value in headers.getall("Connection", ())
        for token in value.split(",")
    )


def forwarded_pairs(headers: MultiMapping[str], drop: frozenset[str]) -> list[tuple[str, str]]:
    """``headers`` without hop-by-hop ones (including those named in Connection) or ``drop``."""
    if "Connection" in headers:
        drop = drop | connection_named(headers)
    return [(name, value) for name, value in headers.items() if name.lower() not in drop]


@dataclass(frozen=True, slots=True)
class CallerHeaders:
    """What the proxy takes from a caller's headers."""

    forward: list[tuple[str, str]]  # end-to-end ones (no hop-by-hop, none the gateway sets)
    call_id: str | None
    forwarded_for: str | None
    forwarded_host: str | None

    @classmethod
    def of(cls, headers: MultiMapping[str]) -> CallerHeaders:
        return cls(
            forwarded_pairs(headers, REQUEST_DROP),
            headers.get("X-Call-Id"),
            headers.get("X-Forwarded-For"),
            headers.get("X-Forwarded-Host"),
        )


def response_headers(
    upstream: UpstreamResponse, call_id: str, start_ns: str
) -> list[tuple[str, str]]:
    drop = RESPONSE_DROP
    if upstream.content_length is None:
        # A chunked or read-to-close body goes out chunked: a stray length would contradict it.
        drop = drop | {"content-length"}
    pairs = forwarded_pairs(upstream.headers, drop)
    pairs.append(("X-Call-Id", call_id))
    pairs.append(("X-Start-Time", start_ns))
    return pairs


def split_target(raw: str) -> tuple[str, str, str]:
    """`/function/{target}[/tail][?query]` → (target, "/tail", query), path and query still
    percent-encoded as the caller sent them, so `a%2Fb` stays one segment on its way."""
    path, _, query = raw.partition("?")
    target, _, tail = path[len(PREFIX) :].partition("/")
    if "%" in target:
        target = unquote(target)
    tail = "/" + tail
    if "/." in tail or "%2e" in tail or "%2E" in tail:
        tail = remove_dot_segments(tail)
    return target, tail, query


def remove_dot_segments(path: str) -> str:
    """RFC 3986 §5.2.4 for an absolute path: `/a/./b/../c` → `/a/c`, as yarl did when the
    upstream URL was built from the path (so `..` never climbs above the function's root)."""
    out: list[str] = []
    segments = path.split("/")[1:]
    for i, segment in enumerate(segments):
        last = i == len(segments) - 1
        if "%" in segment and len(segment) <= 6:  # `%2e` is a dot too (RFC 3986 §2.3)
            decoded = segment.replace("%2e", ".").replace("%2E", ".")
            if decoded in (".", ".."):
                segment = decoded
        if segment == "..":
            if out:
                out.pop()
            if last:
                out.append("")
        elif segment == ".":
            if last:
                out.append("")
        else:
            out.append(segment)
    return "/" + "/".join(out)


def function_of(target: str) -> tuple[str, str]:
    """(name, namespace) of a checked `name[.namespace]`; InvalidSpec (400) otherwise."""
    found = _TARGETS.get(target)
    if found is None:
        found = split_qualified(target)
        if len(_TARGETS) >= _TARGETS_MAX:
            _TARGETS.clear()
        _TARGETS[target] = found
    return found


def invocation(
    services: Services,
    method: str,
    raw_target: str,
    caller: CallerHeaders,
    *,
    peer: str,
    host: str,
    body: Body,
    body_length: int | None,
) -> tuple[Invocation, str]:
    """The Invocation for a `/function/` request, and its X-Start-Time (unix ns)."""
    target, path, query = split_target(raw_target)
    name, namespace = function_of(target)
    return function_invocation(
        services,
        method,
        name,
        namespace,
        path,
        query,
        caller,
        peer=peer,
        host=host,
        body=body,
        body_length=body_length,
    )


def function_invocation(
    services: Services,
    method: str,
    name: str,
    namespace: str,
    path: str,
    query: str,
    caller: CallerHeaders,
    *,
    peer: str,
    host: str,
    body: Body,
    body_length: int | None,
) -> tuple[Invocation, str]:
    """The Invocation of ``name.namespace`` at ``path``?``query`` (both still percent-encoded),
    and its X-Start-Time (unix ns). The function gets the caller's end-to-end headers plus
    the gateway's own."""
    start_ns = str(time.time_ns())
    headers = caller.forward
    prior = caller.forwarded_for
    headers.append(("X-Forwarded-For", f"{prior}, {peer}" if prior else peer))
    headers.append(("X-Forwarded-Host", caller.forwarded_host or host))
    headers.append(("X-Start-Time", start_ns))
    inv = Invocation(
        name=name,
        namespace=namespace,
        method=method,
        path=path,
        query_string=query,
        headers=headers,
        body=body,
        body_length=body_length,
        call_id=caller.call_id or new_call_id(),
        timeout_s=services.settings.invoke_timeout_s,
    )
    return inv, start_ns


def inline_size(upstream: UpstreamResponse) -> bool:
    """Whether the answer goes out in one write: small and of known length (or all in)."""
    size = upstream.content_length
    return size is not None and (size <= INLINE_BYTES or upstream.content.complete)


async def read_inline(upstream: UpstreamResponse, function: str) -> bytes:
    """The whole (small) body; nothing is sent yet, so a broken body still gets a 502/504."""
    try:
        return await upstream.read()
    except TimeoutError as exc:
        raise UpstreamTimeout(f"function {function} did not finish its answer") from exc
    except OSError as exc:
        raise UpstreamFailed(f"function {function} broke off its answer: {exc}") from exc


async def limited(stream: aiohttp.StreamReader, limit: int) -> AsyncIterator[bytes]:
    """Pass a request body through while counting it; over the limit the upload is abandoned
    (the replica never sees a complete request) and the caller gets 413."""
    seen = 0
    async for chunk in stream.iter_any():
        seen += len(chunk)
        if seen > limit:
            raise PayloadTooLarge(f"request body is larger than the limit of {limit} bytes")
        yield chunk


@routes.route("*", "/function/{target}")
@routes.route("*", "/function/{target}/{tail:.*}")
async def invoke(request: web.Request) -> web.StreamResponse:
    raw = request.raw_path
    if not raw.startswith(PREFIX):  # absolute-form request target (`GET http://host/...`)
        url = request.rel_url
        raw = url.raw_path + ("?" + url.raw_query_string if url.raw_query_string else "")
    target, path, query = split_target(raw)
    name, namespace = function_of(target)
    return await forward(request, name, namespace, path, query, CallerHeaders.of(request.headers))


async def forward(
    request: web.Request,
    name: str,
    namespace: str,
    path: str,
    query: str,
    caller: CallerHeaders,
) -> web.StreamResponse:
    """Proxy ``request`` to ``name.namespace`` at ``path``?``query`` and stream the answer back
    (the `/function/` route and routed friendly paths, see routes_api.py)."""
    services = request.app[SERVICES]
    limit = services.settings.max_body_bytes
    length = request.content_length
    if length is not None and length > limit:
        raise PayloadTooLarge(f"request body is larger than the limit of {limit} bytes")
    body: Body = None
    if request.body_exists:
        if length is not None and length <= INLINE_BYTES:
            body = await request.read()
        else:
            body = limited(request.content, limit)
    inv, start_ns = function_invocation(
        services,
        request.method,
        name,
        namespace,
        path,
        query,
        caller,
        peer=request.remote or "",
        host=request.host,
        body=body,
        body_length=length,
    )
    async with services.invoker.call(inv) as upstream:
        out_headers = response_headers(upstream, inv.call_id, start_ns)
        if inline_size(upstream):
            data = await read_inline(upstream, inv.function_name)
            response = web.Response(
                status=upstream.status, reason=upstream.reason, headers=out_headers, body=data
            )
            # Sent inside the block: the replica stays leased until the caller has it all.
            await response.prepare(request)
            await response.write_eof()
            return response
        stream = web.StreamResponse(
            status=upstream.status, reason=upstream.reason, headers=out_headers
        )
        if upstream.content_length is None:
            # Chunked from the function (SSE, NDJSON): pass each piece on as it arrives.
            stream.enable_chunked_encoding()
        await stream.prepare(request)
        content = upstream.content
        while True:
            try:
                chunk = await content.readany()
            except OSError as exc:
                # The status is gone already: all that is left is to cut the caller off.
                raise ConnectionResetError(
                    f"function {inv.function_name} broke off its answer: {exc}"
                ) from exc
            if not chunk:
                break
            await stream.write(chunk)
        await stream.write_eof()
        return stream
