"""Gateway application: routes, middlewares, health and metrics."""

from __future__ import annotations

from aiohttp import web

from runtime.gateway import async_api, connectors_api, proxy, routes_api, system, webhook_api
from runtime.gateway.middleware import BasicAuth, errors_middleware
from runtime.gateway.openapi import openapi_handler
from runtime.gateway.state import SERVICES, Services


async def healthz(request: web.Request) -> web.Response:
    services = request.app[SERVICES]
    problem = services.functions.backend_error
    if problem is not None:
        return web.Response(status=503, text=f"unhealthy: {problem}\n")
    return web.Response(text="OK\n")


async def metrics(request: web.Request) -> web.Response:
    services = request.app[SERVICES]
    for fn in services.functions.list():
        services.metrics.service_count.labels(fn.qualified_name).set(fn.pool.available_count())
    return web.Response(
        body=services.metrics.render(), headers={"Content-Type": "text/plain; version=0.0.4"}
    )


def build_app(services: Services, auth: BasicAuth) -> web.Application:
    # Auth runs first so an unauthenticated caller learns nothing, not even a 400.
    app = web.Application(
        middlewares=[errors_middleware, auth.middleware],
        client_max_size=services.settings.max_body_bytes,
    )
    app[SERVICES] = services
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/metrics", metrics)
    app.router.add_get("/system/openapi.json", openapi_handler)
    app.router.add_routes(system.routes)
    app.router.add_routes(proxy.routes)
    app.router.add_routes(async_api.routes)
    app.router.add_routes(connectors_api.routes)
    app.router.add_routes(webhook_api.routes)
    # Last: friendly paths of `com.localfaas.http.route`, for whatever no route above serves.
    app.router.add_route("*", "/{tail:.*}", routes_api.route)
    return app
