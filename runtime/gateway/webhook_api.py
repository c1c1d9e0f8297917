"""`POST /webhook/{name}[.{ns}]`: signed deliveries from GitHub, Stripe, Standard Webhooks
senders or any HMAC signer (connectors/webhook.py). No basic auth: the signature is the
authentication.

Checks in order: webhooks enabled and the function known with a webhook (404), body size for
its mode (413, from Content-Length before reading, then counted), signature and freshness
(401), delivery id (duplicate → 200/202 with X-Webhook-Duplicate), then the dispatch.
"""

from __future__ import annotations

from aiohttp import web

from connectors.webhook import WebhookConnector
from connectors.webhook_signatures import Rejected
from runtime.errors import FunctionNotFound, PayloadTooLarge
from runtime.gateway.middleware import error_response
from runtime.gateway.proxy import function_of, limited
from runtime.gateway.state import SERVICES, Services

routes = web.RouteTableDef()


def _connector(services: Services) -> WebhookConnector:
    host = services.connectors
    connector = host.get("webhook") if host is not None else None
    if not isinstance(connector, WebhookConnector):
        raise FunctionNotFound("webhooks are not enabled in this gateway")
    return connector


@routes.post("/webhook/{target}")
async def receive(request: web.Request) -> web.Response:
    services = request.app[SERVICES]
    connector = _connector(services)
    name, namespace = function_of(request.match_info["target"])
    spec = services.functions.get(name, namespace).spec
    config = connector.config_for(spec)
    limit = connector.body_limit(config)
    if request.content_length is not None and request.content_length > limit:
        raise PayloadTooLarge(
            f"request body of {request.content_length} bytes is larger than the "
            f"{config.mode} webhook limit of {limit} bytes"
        )
    body = b"".join([chunk async for chunk in limited(request.content, limit)])
    try:
        reply = await connector.deliver(
            spec,
            config,
            request.headers,
            request.headers.items(),
            body,
            query=request.rel_url.raw_query_string,
        )
    except Rejected as exc:
        response = error_response(401, f"webhook signature rejected: {exc}")
        response.headers["WWW-Authenticate"] = f'Webhook scheme="{config.scheme}"'
        return response
    return web.Response(status=reply.status, headers=reply.headers, body=reply.body)
