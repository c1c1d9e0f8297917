"""Route annotations: validation, matching on segment boundaries, and the table a connector
keeps through deploys, updates, deletes and races past validation."""

from __future__ import annotations

from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry

from connectors.http_routes import (
    ANNOTATION,
    CLAIM_S,
    HttpRoutes,
    Route,
    forwarded_prefix,
    match,
    parse_route,
    reserved_by,
)
from connectors.metrics import ConnectorMetrics
from connectors.registry import ConnectorContext
from runtime.config import Settings
from runtime.errors import Conflict, InvalidSpec
from runtime.models import FunctionSpec


@pytest.mark.parametrize(
    ("value", "prefix"),
    [
        ("/api/orders", "/api/orders"),
        ("/api/orders/", "/api/orders"),
        ("/", "/"),
        ("/v1", "/v1"),
        ("/a-b/c_d/e.f/~g/h:i@j", "/a-b/c_d/e.f/~g/h:i@j"),
        ("/systems", "/systems"),  # not /system: segment boundaries
        ("/functions/x", "/functions/x"),
        ("/metricsx", "/metricsx"),
        ("/__", "/__"),
        ("/api/_/x", "/api/_/x"),
        ("/..a/b..", "/..a/b.."),
    ],
)
def test_good_routes(value: str, prefix: str) -> None:
    assert parse_route(value) == prefix


@pytest.mark.parametrize(
    ("value", "words"),
    [
        ("", "absolute path"),
        (7, "absolute path"),
        ("api/orders", "not an absolute path"),
        ("http://x/api", "not an absolute path"),
        ("/api?x=1", "query or fragment"),
        ("/api#top", "query or fragment"),
        ("/api//orders", "empty segment"),
        ("//", "empty segment"),
        ("/api/../system", "'..' segment"),
        ("/api/./x", "'.' segment"),
        ("/..", "'..' segment"),
        ("/api orders", "characters a route may not use"),
        ("/api/%2e%2e", "characters a route may not use"),
        ("/api/ördér", "characters a route may not use"),
        ("/api\\x", "characters a route may not use"),
        ("/" + "a" * 300, "at most 256"),
        ("/system", "under /system"),
        ("/system/", "under /system"),
        ("/system/functions", "under /system"),
        ("/function", "under /function"),
        ("/function/hello", "under /function"),
        ("/async-function/x", "under /async-function"),
        ("/webhook", "under /webhook"),
        ("/webhook/hook", "under /webhook"),
        ("/healthz", "under /healthz"),
        ("/metrics", "under /metrics"),
        ("/_", "under /_"),
        ("/_/health", "under /_"),
    ],
)
def test_bad_routes_name_the_annotation(value: object, words: str) -> None:
    with pytest.raises(InvalidSpec) as info:
        parse_route(value)
    assert ANNOTATION in str(info.value)
    assert words in str(info.value)


def test_reserved_by() -> None:
    assert reserved_by("/system/functions") == "/system"
    assert reserved_by("/function") == "/function"
    assert reserved_by("/_/x") == "/_"
    assert reserved_by("/functionx") is None
    assert reserved_by("/") is None
    assert reserved_by("/api") is None


TABLE = {
    p: Route(p, n, "openfaas-fn")
    for p, n in [("/api", "api"), ("/api/orders", "orders"), ("/api/orders/eu", "eu")]
}


@pytest.mark.parametrize(
    ("path", "function", "rest"),
    [
        ("/api/orders", "orders", "/"),
        ("/api/orders/", "orders", "/"),
        ("/api/orders/42", "orders", "/42"),
        ("/api/orders/42/", "orders", "/42/"),
        ("/api/orders/42/items", "orders", "/42/items"),
        ("/api/ordersX", "api", "/ordersX"),  # segment boundary: /api takes it
        ("/api/orders/eu", "eu", "/"),  # longest prefix wins
        ("/api/orders/eu/1", "eu", "/1"),
        ("/api/orders/europe", "orders", "/europe"),
        ("/api", "api", "/"),
        ("/api/", "api", "/"),
        ("/api/x%2Fy", "api", "/x%2Fy"),  # an encoded slash is no separator
        ("/apix", None, None),
        ("/ap", None, None),
        ("/", None, None),
        ("/other/api/orders", None, None),
        ("/API/orders", None, None),  # paths are case-sensitive
    ],
)
def test_match(path: str, function: str | None, rest: str | None) -> None:
    found = match(TABLE, path)
    if function is None:
        assert found is None
    else:
        assert found is not None
        assert (found[0].name, found[1]) == (function, rest)


def test_root_route_takes_everything_else() -> None:
    table = {"/": Route("/", "site", "openfaas-fn"), "/api": Route("/api", "api", "openfaas-fn")}
    assert match(table, "/") == (table["/"], "/")
    assert match(table, "/index.html") == (table["/"], "/index.html")
    assert match(table, "/a/b/") == (table["/"], "/a/b/")
    assert match(table, "/api/x") == (table["/api"], "/x")


def test_forwarded_prefix() -> None:
    assert forwarded_prefix(None, "/api/orders") == "/api/orders"
    assert forwarded_prefix("", "/api/orders") == "/api/orders"
    assert forwarded_prefix("/outer", "/api") == "/outer/api"
    assert forwarded_prefix("/outer/", "/api") == "/outer/api"


# -- the connector's table ------------------------------------------------------------------


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def routes(tmp_path: Path, clock: Clock) -> HttpRoutes:
    ctx = ConnectorContext(
        settings=Settings(state_dir=tmp_path),
        dispatch=None,  # type: ignore[arg-type]  # the route table never dispatches
        store=None,  # type: ignore[arg-type]
        secrets=None,  # type: ignore[arg-type]
        metrics=ConnectorMetrics(CollectorRegistry()),
        nats_url=lambda: None,
    )
    return HttpRoutes(ctx, clock=clock)


def spec(name: str, route: str | None, namespace: str = "openfaas-fn") -> FunctionSpec:
    annotations = {ANNOTATION: route} if route is not None else {}
    return FunctionSpec(name=name, image="x", namespace=namespace, annotations=annotations)


def holder(routes: HttpRoutes, path: str) -> str | None:
    found = routes.match(path)
    return found[0].function_name if found else None


async def deploy(routes: HttpRoutes, s: FunctionSpec) -> None:
    routes.validate(s)
    await routes.bind(s)


async def test_bind_rebind_unbind(routes: HttpRoutes) -> None:
    await deploy(routes, spec("orders", "/api/orders/"))
    assert holder(routes, "/api/orders/1") == "orders.openfaas-fn"
    [binding] = routes.bindings()
    assert (binding.connector, binding.function, binding.trigger) == (
        "http",
        "orders",
        "/api/orders",
    )
    assert binding.details == {"prefix": "/api/orders", "active": True}

    await deploy(routes, spec("orders", "/api/orders"))  # redeploy, same route: fine
    await deploy(routes, spec("orders", "/v2/orders"))  # new route: the old one is gone
    assert holder(routes, "/api/orders/1") is None
    assert holder(routes, "/v2/orders/1") == "orders.openfaas-fn"
    await deploy(routes, spec("orders", None))  # annotation removed: unbound
    assert holder(routes, "/v2/orders") is None and routes.bindings() == []

    await deploy(routes, spec("orders", "/api/orders"))
    await routes.unbind("openfaas-fn", "orders")
    assert holder(routes, "/api/orders") is None and routes.bindings() == []
    await deploy(routes, spec("other", "/api/orders"))  # free again after the delete
    assert holder(routes, "/api/orders") == "other.openfaas-fn"


async def test_conflicts_across_namespaces(routes: HttpRoutes) -> None:
    await deploy(routes, spec("a", "/api/orders"))
    for other in (spec("b", "/api/orders/"), spec("a", "/api/orders", namespace="dev")):
        with pytest.raises(Conflict) as info:
            routes.validate(other)
        assert ANNOTATION in str(info.value) and "a.openfaas-fn" in str(info.value)
    routes.validate(spec("b", "/api/orders/eu"))  # a longer prefix is another route
    routes.validate(spec("b", "/api"))
    routes.validate(spec("a", "/api/orders"))  # its own route again


async def test_racing_deploys_are_refused_before_either_binds(
    routes: HttpRoutes, clock: Clock
) -> None:
    routes.validate(spec("a", "/x"))
    with pytest.raises(Conflict, match=r"a\.openfaas-fn"):
        routes.validate(spec("b", "/x"))
    # A deploy that failed after validation stops blocking others after CLAIM_S.
    clock.now += CLAIM_S + 1
    routes.validate(spec("b", "/x"))
    # Binding settles the claim: a's later bind does not take b's route away.
    await routes.bind(spec("b", "/x"))
    await routes.bind(spec("a", "/x"))
    assert holder(routes, "/x") == "b.openfaas-fn"
    by_function = {b.function: b.details for b in routes.bindings()}
    assert by_function["a"] == {"prefix": "/x", "active": False, "held_by": "b.openfaas-fn"}
    # The holder goes: the other one takes over.
    await routes.unbind("openfaas-fn", "b")
    assert holder(routes, "/x") == "a.openfaas-fn"


async def test_unusable_stored_route_is_left_unbound(routes: HttpRoutes) -> None:
    await routes.bind(spec("a", "/system/x"))
    assert routes.bindings() == [] and holder(routes, "/system/x") is None
