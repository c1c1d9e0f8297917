"""Friendly paths: requests on a prefix bound by `com.localfaas.http.route` go to its function
through the same proxy path as `/function/` (connectors/http_routes.py has the rules).

Registered last, as a catch-all: aiohttp tries every other route first. A path nothing serves
gets the answer it got before the catch-all existed: 405 with `Allow` when another route has
the path with other methods (e.g. `GET /async-function/x`), 404 otherwise.
"""

from __future__ import annotations

from aiohttp import web

from connectors.http_routes import NAME, HttpRoutes, forwarded_prefix, reserved_by
from runtime.errors import LocalFaasError
from runtime.gateway import proxy
from runtime.gateway.state import SERVICES


async def route(request: web.Request) -> web.StreamResponse:
    url = request.rel_url
    path = url.raw_path
    if "/." in path or "%2e" in path or "%2E" in path:
        path = proxy.remove_dot_segments(path)
    host = request.app[SERVICES].connectors
    routes = host.get(NAME) if host is not None else None
    if not isinstance(routes, HttpRoutes) or reserved_by(path) is not None:
        return await _not_routed(request, path)
    found = routes.match(path)
    if found is None:
        return await _not_routed(request, path)
    target, rest = found
    caller = proxy.CallerHeaders.of(request.headers)
    prior = request.headers.get("X-Forwarded-Prefix")
    if prior is not None:
        caller.forward[:] = [p for p in caller.forward if p[0].lower() != "x-forwarded-prefix"]
    if target.prefix != "/":
        caller.forward.append(("X-Forwarded-Prefix", forwarded_prefix(prior, target.prefix)))
    elif prior is not None:
        caller.forward.append(("X-Forwarded-Prefix", prior))
    routes.event(target)
    try:
        response = await proxy.forward(
            request, target.name, target.namespace, rest, url.raw_query_string, caller
        )
    except (LocalFaasError, OSError):
        routes.done(target, ok=False)
        raise
    routes.done(target, ok=True)
    return response


async def _not_routed(request: web.Request, path: str) -> web.StreamResponse:
    """What aiohttp's router answers for a path no other route serves."""
    own = request.match_info.route.resource
    allowed: set[str] = set()
    for resource in request.app.router.resources():
        if resource is not own:
            _, methods = await resource.resolve(request)
            allowed |= methods
    if allowed:
        raise web.HTTPMethodNotAllowed(request.method, allowed)
    if reserved_by(path) is not None:
        raise web.HTTPNotFound()
    raise web.HTTPNotFound(
        text=f"404: no function is routed at {path} (functions answer at /function/NAME)\n"
    )
