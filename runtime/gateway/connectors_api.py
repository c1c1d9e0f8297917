"""`GET /system/connectors`: every binding of every connector (cron schedules, NATS subjects,
webhooks, HTTP routes), optionally for one namespace or function."""

from __future__ import annotations

from aiohttp import web

from runtime.gateway.state import SERVICES
from runtime.names import DEFAULT_NAMESPACE, check_name

routes = web.RouteTableDef()


@routes.get("/system/connectors")
async def list_bindings(request: web.Request) -> web.Response:
    host = request.app[SERVICES].connectors
    query = request.query
    name = query.get("name") or None
    namespace = query.get("namespace") or None
    if name is not None:
        check_name(name, "function name")
        namespace = namespace or DEFAULT_NAMESPACE
    if namespace is not None:
        check_name(namespace, "namespace")
    bindings = host.bindings(namespace, name) if host is not None else []
    return web.json_response(
        {
            "connectors": sorted(host.connectors) if host is not None else [],
            "bindings": [binding.to_json() for binding in bindings],
        }
    )
