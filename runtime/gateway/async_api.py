"""Async invocations: `POST /async-function/{name}[.{ns}][/path]` and the call-management API
under `/system/async/` (status, cancel, dead letters, replay, queue depths).

Both ways in — the gateway's front (front.py) for plain requests, this module's aiohttp route
for the rest (chunked or large uploads, HTTP/1.0, ...) — run the same two functions here,
`async_target` and `accept`, so one code path decides every answer. The checks run in the
order a caller can act on: unknown function (404), body too large (413),
bad call id or callback URL (400), then the queue itself (503 with Retry-After while NATS is
away). 202 only once JetStream acknowledged the stored message.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from aiohttp import web

from runtime.errors import InvalidSpec
from runtime.gateway.parsing import int_arg
from runtime.gateway.proxy import PREFIX, function_of, limited, split_target
from runtime.gateway.state import SERVICES, Services
from runtime.gateway.wire import ASYNC_PREFIX
from runtime.names import DEFAULT_NAMESPACE, check_name
from runtime.queue.errors import QueueUnavailable
from runtime.queue.message import Envelope, check_call_id, new_call_id, request_headers
from runtime.queue.service import AsyncQueue

routes = web.RouteTableDef()
MAX_LIST = 1000


def _queue(services: Services) -> AsyncQueue:
    if services.queue is None:
        raise QueueUnavailable("async invocations are not enabled in this gateway")
    return services.queue


@dataclass(frozen=True, slots=True)
class AsyncTarget:
    """Where an accepted call goes: the function, and the path and query it is replayed at."""

    queue: AsyncQueue
    name: str
    namespace: str
    path: str
    query: str


def async_target(services: Services, raw_target: str, content_length: int | None) -> AsyncTarget:
    """The checks before the body is read, for both ways in (this module's aiohttp route and
    the gateway's front): async enabled (503), function name (400), function deployed (404),
    declared body size (413). ``raw_target`` is the request target as sent."""
    queue = _queue(services)
    target, path, query = split_target(PREFIX + raw_target[len(ASYNC_PREFIX) :])
    name, namespace = function_of(target)
    services.functions.get(name, namespace)  # 404 for an unknown function
    queue.check_body_size(content_length)
    return AsyncTarget(queue, name, namespace, path, query)


async def accept(
    target: AsyncTarget, method: str, headers: list[tuple[str, str]], body: bytes
) -> str:
    """Store the call durably and return its id: the rest of the checks (X-Call-Id and
    X-Callback-Url: 400), then the publish (503 while the queue is away, 409 for an id taken
    by another function). ``headers`` are the caller's, as sent."""
    raw_id = raw_callback = None
    for key, value in headers:
        if len(key) == 9 and raw_id is None and key.lower() == "x-call-id":
            raw_id = value
        elif len(key) == 14 and raw_callback is None and key.lower() == "x-callback-url":
            raw_callback = value
    call_id = check_call_id(raw_id, "X-Call-Id") if raw_id is not None else new_call_id()
    queue = target.queue
    callback_url = await queue.guard.validate(raw_callback) if raw_callback else None
    env = Envelope(
        call_id=call_id,
        function=target.name,
        namespace=target.namespace,
        method=method,
        path=target.path,
        query=target.query,
        headers=request_headers(headers),
        body=body,
        callback_url=callback_url,
    )
    await queue.enqueue(env)
    return call_id


@routes.post("/async-function/{target}")
@routes.post("/async-function/{target}/{tail:.*}")
async def enqueue(request: web.Request) -> web.Response:
    target = async_target(request.app[SERVICES], request.raw_path, request.content_length)
    body = b""
    if request.body_exists:
        limit = target.queue.max_body_bytes
        body = b"".join([chunk async for chunk in limited(request.content, limit)])
    call_id = await accept(target, request.method, list(request.headers.items()), body)
    return web.Response(status=202, headers={"X-Call-Id": call_id})


@routes.get("/system/async/calls/{call_id}")
async def call_status(request: web.Request) -> web.Response:
    queue = _queue(request.app[SERVICES])
    call_id = check_call_id(request.match_info["call_id"])
    status = await queue.calls.status(call_id)
    return web.json_response(status.to_json())


@routes.delete("/system/async/calls/{call_id}")
async def cancel_call(request: web.Request) -> web.Response:
    queue = _queue(request.app[SERVICES])
    call_id = check_call_id(request.match_info["call_id"])
    status = await queue.calls.cancel(call_id)
    return web.json_response(status.to_json())


@routes.get("/system/async/dead-letters")
async def dead_letters(request: web.Request) -> web.Response:
    queue = _queue(request.app[SERVICES])
    query = request.query
    namespace = query.get("namespace") or None
    name = query.get("name") or None
    if name is not None:  # a function is named in a namespace, the default one if none given
        check_name(name, "function name")
        namespace = namespace or DEFAULT_NAMESPACE
    if namespace is not None:
        check_name(namespace, "namespace")
    after = int_arg(query, "after") or 0
    limit = int_arg(query, "limit")
    limit = 100 if limit is None else limit
    if after < 0:
        raise InvalidSpec(f"query parameter after: {after} is negative")
    if not 1 <= limit <= MAX_LIST:
        raise InvalidSpec(f"query parameter limit: {limit} is outside 1-{MAX_LIST}")
    letters = await queue.calls.dead_letters(
        namespace=namespace, function=name, after_seq=after, limit=limit
    )
    return web.json_response([letter.to_json() for letter in letters])


@routes.post("/system/async/dead-letters/{call_id}/replay")
async def replay(request: web.Request) -> web.Response:
    queue = _queue(request.app[SERVICES])
    call_id = check_call_id(request.match_info["call_id"])
    status = await queue.calls.replay(call_id)
    return web.json_response(status.to_json(), status=202, headers={"X-Call-Id": call_id})


@routes.get("/system/async/queues")
async def queues(request: web.Request) -> web.Response:
    services = request.app[SERVICES]
    queue = _queue(services)
    namespace = request.query.get("namespace") or None
    if namespace is not None:
        check_name(namespace, "namespace")
    out: list[dict[str, Any]] = []
    for fn in services.functions.list(namespace):
        depth, running, concurrency = await queue.depth(fn.spec.namespace, fn.spec.name)
        out.append(
            {
                "name": fn.spec.name,
                "namespace": fn.spec.namespace,
                "pending": depth.pending,
                "inFlight": depth.in_flight,
                "running": running,
                "concurrency": concurrency,
            }
        )
    return web.json_response(out)
