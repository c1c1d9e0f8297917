"""`com.localfaas.http.route` through a real gateway (fake replicas echo what reached them):
friendly paths forward like `/function/`, routes are refused at deploy when bad or taken,
follow updates and deletes, and the gateway's own 404/405 answers stay as they were."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import aiohttp
import pytest

from connectors.http_routes import ANNOTATION
from tests.component.gateway.conftest import (  # noqa: F401  (make_gateway is a fixture)
    AUTH,
    Gateway,
    GatewayFactory,
    make_gateway,
)

NS = "openfaas-fn"
NOT_ROUTED = "no function is routed at"


async def routed_gateway(make_gateway: GatewayFactory, **options: Any) -> Gateway:
    gw = await make_gateway(with_connectors=True, **options)
    await deploy(gw, "orders", "/api/orders")
    await gw.wait_available("orders")
    return gw


async def deploy(
    gw: Gateway, name: str, route: str | None, *, update: bool = False, namespace: str = NS
) -> aiohttp.ClientResponse:
    body = {
        "service": name,
        "image": "fake/hello:1",
        "namespace": namespace,
        "annotations": {ANNOTATION: route} if route is not None else {},
    }
    method = gw.client.put if update else gw.client.post
    resp = await method("/system/functions", json=body, headers=AUTH)
    assert gw.connectors is not None
    await gw.connectors.settle()
    return resp


async def echo(gw: Gateway, method: str, path: str, **kwargs: Any) -> dict[str, Any]:
    resp = await gw.client.request(method, path, **kwargs)
    text = await resp.text()
    assert resp.status == 200, text
    found: dict[str, Any] = json.loads(text)
    found["response_headers"] = resp.headers
    return found


async def raw_status(gw: Gateway, target: str) -> tuple[int, bytes]:
    """Send a request line exactly as given (clients normalise dot segments away)."""
    host, port = gw.url.removeprefix("http://").split(":")
    reader, writer = await asyncio.open_connection(host, int(port))
    try:
        writer.write(f"GET {target} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n".encode())
        data = await asyncio.wait_for(reader.read(), 5)
    finally:
        writer.close()
    head, _, body = data.partition(b"\r\n\r\n")
    return int(head.split()[1]), body


@pytest.mark.parametrize("front", [True, False], ids=["front", "aiohttp"])
async def test_friendly_path_forwards_like_function(
    make_gateway: GatewayFactory, front: bool
) -> None:
    gw = await routed_gateway(make_gateway, front=front)

    bare = await echo(gw, "GET", "/api/orders")
    assert (bare["method"], bare["path"], bare["query"]) == ("GET", "/", "")
    assert bare["replica"].startswith(f"lf-{NS}-orders-")
    headers = bare["headers"]
    assert headers["X-Forwarded-Prefix"] == "/api/orders"
    assert headers["X-Forwarded-For"] == "127.0.0.1"
    assert headers["X-Forwarded-Host"] == gw.url.removeprefix("http://")
    assert headers["X-Start-Time"].isdigit()
    assert bare["response_headers"]["X-Call-Id"] == headers["X-Call-Id"]
    assert bare["response_headers"]["X-Start-Time"] == headers["X-Start-Time"]

    post = await echo(
        gw,
        "POST",
        "/api/orders/42/items?x=1&y=a%20b",
        data=b"order body",
        headers={
            "X-Custom": "yes",
            "X-Call-Id": "call-123",
            "Connection": "X-Secret",
            "X-Secret": "hop",
            "X-Forwarded-Prefix": "/outer",
        },
    )
    assert (post["method"], post["raw_path"]) == ("POST", "/42/items?x=1&y=a%20b")
    assert post["body"] == "order body"
    headers = post["headers"]
    assert headers["X-Custom"] == "yes"
    assert "X-Secret" not in headers
    assert headers["X-Forwarded-Prefix"] == "/outer/api/orders"
    assert headers["X-Call-Id"] == "call-123"
    assert post["response_headers"]["X-Call-Id"] == "call-123"

    for method in ("PUT", "DELETE", "PATCH", "OPTIONS"):
        other = await echo(gw, method, "/api/orders/")
        assert (other["method"], other["path"]) == (method, "/")
    head = await gw.client.head("/api/orders/1")
    assert head.status == 200 and "X-Call-Id" in head.headers
    encoded = await echo(gw, "GET", "/api/orders/a%2Fb")
    assert encoded["raw_path"] == "/a%2Fb"

    for miss in ("/api/ordersX", "/api", "/API/orders", "/nothing/here"):
        resp = await gw.client.get(miss)
        assert resp.status == 404, miss
        assert (
            await resp.text() == f"404: {NOT_ROUTED} {miss} (functions answer at /function/NAME)\n"
        )

    # Dot segments are resolved before matching: no climbing out of a route into the API.
    status, body = await raw_status(gw, "/api/orders/../orders/7")
    assert status == 200 and json.loads(body)["path"] == "/7"
    status, _ = await raw_status(gw, "/api/orders/../../system/functions")
    assert status == 404

    metrics = await (await gw.client.get("/metrics")).text()
    fn = f'function_name="orders.{NS}"'
    assert f'gateway_function_invocation_total{{code="200",{fn}}} 9.0' in metrics
    assert f'localfaas_connector_events_total{{connector="http",{fn}}} 9.0' in metrics
    assert f'localfaas_connector_invocations_total{{connector="http",{fn}}} 9.0' in metrics


async def test_longest_prefix_wins_between_functions(make_gateway: GatewayFactory) -> None:
    gw = await routed_gateway(make_gateway)
    assert (await deploy(gw, "api", "/api")).status == 202
    assert (await deploy(gw, "eu", "/api/orders/eu/")).status == 202
    await gw.wait_available("api")
    await gw.wait_available("eu")
    for path, function, rest in [
        ("/api/orders/1", "orders", "/1"),
        ("/api/ordersX", "api", "/ordersX"),
        ("/api", "api", "/"),
        ("/api/orders/eu", "eu", "/"),
        ("/api/orders/eu/1?q=2", "eu", "/1"),
        ("/api/orders/europe", "orders", "/europe"),
    ]:
        found = await echo(gw, "GET", path)
        assert found["replica"].startswith(f"lf-{NS}-{function}-"), path
        assert found["path"] == rest, path
    listed = await (await gw.client.get("/system/connectors", headers=AUTH)).json()
    assert [
        (b["function"], b["trigger"]) for b in listed["bindings"] if b["connector"] == "http"
    ] == [
        ("api", "/api"),
        ("eu", "/api/orders/eu"),
        ("orders", "/api/orders"),
    ]


async def test_taken_route_is_409(make_gateway: GatewayFactory) -> None:
    gw = await routed_gateway(make_gateway)
    gw.store.create_namespace("dev")
    expected = (
        f"annotation {ANNOTATION}: route /api/orders is already taken by function orders.{NS}\n"
    )
    for namespace in (NS, "dev"):
        resp = await deploy(gw, "copy", "/api/orders/", namespace=namespace)
        assert resp.status == 409 and await resp.text() == expected
        missing = await gw.client.get(f"/system/function/copy?namespace={namespace}", headers=AUTH)
        assert missing.status == 404
    # An update onto a taken route is refused too, and the function keeps its own.
    assert (await deploy(gw, "other", "/other")).status == 202
    resp = await deploy(gw, "other", "/api/orders", update=True)
    assert resp.status == 409 and await resp.text() == expected
    await gw.wait_available("other")
    assert (await echo(gw, "GET", "/other/x"))["replica"].startswith(f"lf-{NS}-other-")
    # The holder redeploying its own route is fine.
    assert (await deploy(gw, "orders", "/api/orders", update=True)).status == 202
    assert (await echo(gw, "GET", "/api/orders/1"))["path"] == "/1"


@pytest.mark.parametrize(
    ("route", "words"),
    [
        ("api/orders", "is not an absolute path"),
        ("", "a route is an absolute path"),
        ("/api?x=1", "has a query or fragment"),
        ("/api#x", "has a query or fragment"),
        ("/api//x", "has an empty segment"),
        ("/api/../x", "has a '..' segment"),
        ("/api x", "has characters a route may not use"),
        ("/api/%41", "has characters a route may not use"),
        ("/system/orders", "is under /system, which the gateway serves itself"),
        ("/function/orders", "is under /function,"),
        ("/async-function", "is under /async-function,"),
        ("/webhook/x", "is under /webhook,"),
        ("/healthz", "is under /healthz,"),
        ("/metrics/", "is under /metrics,"),
        ("/_/ready", "is under /_,"),
    ],
)
async def test_bad_route_is_400(make_gateway: GatewayFactory, route: str, words: str) -> None:
    gw = await make_gateway(with_connectors=True)
    resp = await deploy(gw, "bad", route)
    text = await resp.text()
    assert resp.status == 400, text
    assert text.startswith(f"annotation {ANNOTATION}: ") and words in text
    assert (await gw.client.get("/system/function/bad", headers=AUTH)).status == 404


async def test_update_rebinds_and_delete_unbinds(make_gateway: GatewayFactory) -> None:
    gw = await routed_gateway(make_gateway)
    assert (await deploy(gw, "orders", "/v2/orders", update=True)).status == 202
    resp = await gw.client.get("/api/orders/1")
    assert resp.status == 404 and NOT_ROUTED in await resp.text()
    assert (await echo(gw, "GET", "/v2/orders/1"))["path"] == "/1"
    # The old prefix is free for another function at once.
    assert (await deploy(gw, "legacy", "/api/orders")).status == 202
    await gw.wait_available("legacy")
    assert (await echo(gw, "GET", "/api/orders"))["replica"].startswith(f"lf-{NS}-legacy-")

    # Annotation removed: no route, the function itself stays.
    assert (await deploy(gw, "orders", None, update=True)).status == 202
    assert (await gw.client.get("/v2/orders")).status == 404
    assert (await gw.client.get("/function/orders")).status == 200

    resp = await gw.client.delete(
        "/system/functions", json={"functionName": "legacy"}, headers=AUTH
    )
    assert resp.status == 202
    assert gw.connectors is not None
    await gw.connectors.settle()
    resp = await gw.client.get("/api/orders")
    assert resp.status == 404 and NOT_ROUTED in await resp.text()
    listed = await (await gw.client.get("/system/connectors", headers=AUTH)).json()
    assert [b for b in listed["bindings"] if b["connector"] == "http"] == []


async def test_streaming_response_passes_through(make_gateway: GatewayFactory) -> None:
    gw = await make_gateway(with_connectors=True)
    await deploy(gw, "x", "/api/x")
    await gw.wait_available("x")
    loop = asyncio.get_running_loop()
    started = loop.time()
    async with gw.client.get("/api/x/_fake/stream?n=3&delay_ms=300") as resp:
        assert resp.status == 200
        assert resp.headers["Transfer-Encoding"] == "chunked"
        first = await resp.content.readline()
        first_at = loop.time() - started
        rest = await resp.content.read()
    assert first == b"chunk 0\n" and rest == b"chunk 1\nchunk 2\n"
    assert first_at < 0.25, f"first chunk only after {first_at:.3f}s: buffered"


async def test_limits_and_failures_as_for_function(make_gateway: GatewayFactory) -> None:
    gw = await routed_gateway(make_gateway, max_body_bytes=1000, invoke_timeout_s=1.0)
    assert (await gw.client.post("/api/orders", data=b"x" * 2000)).status == 413

    async def chunks():  # no Content-Length: the limit holds while streaming
        for _ in range(4):
            yield b"y" * 400

    assert (await gw.client.post("/api/orders", data=chunks())).status == 413
    resp = await gw.client.get("/api/orders/_fake/sleep?ms=3000")
    assert resp.status == 504 and "did not answer within 1s" in await resp.text()
    redirect = await gw.client.get(
        "/api/orders/_fake/status?code=302&h=Location:/elsewhere", allow_redirects=False
    )
    assert redirect.status == 302 and redirect.headers["Location"] == "/elsewhere"
    metrics = await (await gw.client.get("/metrics")).text()
    assert (
        f'localfaas_connector_failures_total{{connector="http",function_name="orders.{NS}"}}'
        in (metrics)
    )


@pytest.mark.parametrize("root", [False, True], ids=["no-root-route", "root-route"])
async def test_gateway_paths_keep_their_answers(make_gateway: GatewayFactory, root: bool) -> None:
    gw = await make_gateway(with_connectors=True)
    if root:
        assert (await deploy(gw, "site", "/")).status == 202
        await gw.wait_available("site")
    cases = [
        ("GET", "/async-function/x", {}, 405, "405: Method Not Allowed"),
        ("PUT", "/async-function/x/y", {}, 405, "405: Method Not Allowed"),
        ("POST", "/healthz", {}, 405, "405: Method Not Allowed"),
        ("DELETE", "/metrics", {}, 405, "405: Method Not Allowed"),
        ("GET", "/system/nothing", AUTH, 404, "404: Not Found"),
        ("GET", "/system/functions", {}, 401, "unauthorized"),
        ("GET", "/function", {}, 404, "404: Not Found"),
        ("GET", "/function/", {}, 404, "404: Not Found"),
        ("GET", "/_/health", {}, 404, "404: Not Found"),
    ]
    for method, path, headers, status, text in cases:
        resp = await gw.client.request(method, path, headers=headers)
        assert resp.status == status, (method, path, resp.status)
        assert text in await resp.text(), (method, path)
        if status == 405:
            assert resp.headers["Allow"]
    assert (await gw.client.get("/healthz")).status == 200
    resp = await gw.client.get("/index.html")
    if root:
        assert (await resp.json())["path"] == "/index.html"
        assert "X-Forwarded-Prefix" not in (await echo(gw, "GET", "/"))["headers"]
    else:
        assert resp.status == 404 and NOT_ROUTED in await resp.text()


async def test_without_connectors_unknown_paths_are_404(make_gateway: GatewayFactory) -> None:
    gw = await make_gateway()
    resp = await gw.client.get("/api/orders")
    assert resp.status == 404 and NOT_ROUTED in await resp.text()
    assert (await gw.client.get("/async-function/x")).status == 405
