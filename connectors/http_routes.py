"""HTTP routes: `com.localfaas.http.route: /api/orders` exposes a function at a friendly path
prefix on the gateway, next to `/function/{name}`.

Forwarding rule (what Knative/Traefik/ingress `PathPrefix` + strip-prefix users expect):
- a prefix matches on segment boundaries: `/api/orders` serves `/api/orders` and
  `/api/orders/...`, never `/api/ordersX`; the longest matching prefix wins; any method;
- the function sees the remainder after the prefix as its path (`/api/orders/42?x=1` → `/42?x=1`,
  the bare prefix and `/api/orders/` → `/`), with `X-Forwarded-Prefix: /api/orders`;
- a route's trailing slash is ignored (`/api/orders/` is `/api/orders`); `/` routes every path
  the gateway does not serve itself;
- one prefix, one function: a second function claiming it is refused at deploy (409), across
  namespaces too, since the gateway's path space is shared.

The gateway's own paths (RESERVED) can never be routed, so a route cannot shadow the API.
Requests go through the same proxy path as `/function/` (runtime/gateway/routes_api.py).
"""

from __future__ import annotations

import logging
import re
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass

from connectors.base import Binding
from connectors.registry import ConnectorContext
from runtime.errors import Conflict, InvalidSpec
from runtime.models import FunctionSpec

log = logging.getLogger("localfaas.connectors.http")

NAME = "http"
ANNOTATION = "com.localfaas.http.route"
# Paths the gateway serves itself (each with everything under it). `/_/` is kept free for the
# gateway's own future endpoints, as the watchdog keeps it for its own.
RESERVED = ("/system", "/function", "/async-function", "/webhook", "/healthz", "/metrics", "/_")
MAX_ROUTE_CHARS = 256
# RFC 3986 path characters without percent-encoding: what a prefix may be made of, so the path
# the caller sends is the one the table holds (no decoding questions).
_SEGMENT = re.compile(r"[A-Za-z0-9\-._~!$&'()*+,;=:@]+")
# How long a route validated for a deploy stays claimed before its function binds it, so two
# deploys racing for the same prefix cannot both pass validation. A deploy that failed after
# validation stops blocking other functions after this.
CLAIM_S = 30.0

Key = tuple[str, str]  # (namespace, name)


@dataclass(frozen=True, slots=True)
class Route:
    prefix: str
    name: str
    namespace: str

    @property
    def function_name(self) -> str:
        return f"{self.name}.{self.namespace}"


def parse_route(value: object) -> str:
    """The normalised prefix of a route annotation; InvalidSpec (400) naming the annotation."""
    where = f"annotation {ANNOTATION}"
    if not isinstance(value, str) or not value:
        raise InvalidSpec(f"{where}: a route is an absolute path like /api/orders")
    if len(value) > MAX_ROUTE_CHARS:
        raise InvalidSpec(f"{where}: a route has at most {MAX_ROUTE_CHARS} characters")
    if not value.startswith("/"):
        raise InvalidSpec(f"{where}: {value!r} is not an absolute path (it must start with /)")
    if "?" in value or "#" in value:
        raise InvalidSpec(f"{where}: {value!r} has a query or fragment; a route is a path only")
    if "//" in value:
        raise InvalidSpec(f"{where}: {value!r} has an empty segment (//)")
    prefix = value.rstrip("/") or "/"
    if prefix == "/":
        return prefix
    for segment in prefix[1:].split("/"):
        if segment in (".", ".."):
            raise InvalidSpec(f"{where}: {value!r} has a {segment!r} segment")
        if not _SEGMENT.fullmatch(segment):
            raise InvalidSpec(
                f"{where}: {value!r} has characters a route may not use "
                "(letters, digits and -._~!$&'()*+,;=:@ only, no %-escapes or spaces)"
            )
    reserved = reserved_by(prefix)
    if reserved is not None:
        raise InvalidSpec(
            f"{where}: {value!r} is under {reserved}, which the gateway serves itself"
        )
    return prefix


def reserved_by(path: str) -> str | None:
    """The reserved prefix ``path`` falls under (segment-wise), if any."""
    for reserved in RESERVED:
        if path.startswith(reserved) and (len(path) == len(reserved) or path[len(reserved)] == "/"):
            return reserved
    return None


def match(table: Mapping[str, Route], path: str) -> tuple[Route, str] | None:
    """The route serving ``path`` (an absolute path, dot segments removed) and the remainder
    the function sees; None if no prefix matches. Longest prefix first: one lookup per segment."""
    probe = path
    while True:
        route = table.get(probe)
        if route is not None:
            rest = path if probe == "/" else path[len(probe) :]
            return route, rest or "/"
        if probe == "/" or not probe:
            return None
        probe = probe.rpartition("/")[0] or "/"


def forwarded_prefix(prior: str | None, prefix: str) -> str:
    """`X-Forwarded-Prefix` for the function: ours after any a proxy in front already set."""
    if not prior:
        return prefix
    return prior.rstrip("/") + prefix


class HttpRoutes:
    """The route table as a connector: validated at deploy, bound on every change."""

    name = NAME

    def __init__(self, ctx: ConnectorContext, clock: Callable[[], float] = time.monotonic) -> None:
        self._metrics = ctx.metrics
        self._clock = clock
        # Every function's route, in the order they were first bound with it: for a prefix
        # wanted twice (only after a race past validation) the earlier one keeps it.
        self._wanted: dict[Key, str] = {}
        self._table: dict[str, Route] = {}
        self._claims: dict[str, tuple[Key, float]] = {}

    # -- Connector ---------------------------------------------------------------------------

    def validate(self, spec: FunctionSpec) -> None:
        value = spec.annotations.get(ANNOTATION)
        if value is None:
            return
        prefix = parse_route(value)
        key = (spec.namespace, spec.name)
        now = self._clock()
        self._claims = {p: c for p, c in self._claims.items() if c[1] > now}
        holder = self._holder(prefix)
        if holder is None:
            claim = self._claims.get(prefix)
            holder = claim[0] if claim is not None else None
        if holder is not None and holder != key:
            raise Conflict(
                f"annotation {ANNOTATION}: route {prefix} is already taken by function "
                f"{holder[1]}.{holder[0]}"
            )
        self._claims[prefix] = (key, now + CLAIM_S)

    async def start(self) -> None:
        return None

    async def bind(self, spec: FunctionSpec) -> None:
        key = (spec.namespace, spec.name)
        self._drop_claims(key)
        value = spec.annotations.get(ANNOTATION)
        if value is None:
            self._set(key, None)
            return
        try:
            prefix = parse_route(value)
        except InvalidSpec as exc:  # stored before the rules changed: leave it unrouted
            log.warning("route of %s.%s not bound: %s", spec.name, spec.namespace, exc)
            self._set(key, None)
            return
        self._set(key, prefix)

    async def unbind(self, namespace: str, name: str) -> None:
        key = (namespace, name)
        self._drop_claims(key)
        self._set(key, None)

    def bindings(self) -> list[Binding]:
        found = []
        for (namespace, name), prefix in self._wanted.items():
            route = self._table.get(prefix)
            details: dict[str, object] = {"prefix": prefix}
            if route is not None and (route.namespace, route.name) != (namespace, name):
                details["active"] = False
                details["held_by"] = route.function_name
            else:
                details["active"] = True
            found.append(Binding(NAME, name, namespace, prefix, details))
        return found

    async def close(self) -> None:
        return None

    # -- requests ----------------------------------------------------------------------------

    def match(self, path: str) -> tuple[Route, str] | None:
        return match(self._table, path)

    def event(self, route: Route) -> None:
        self._metrics.event(NAME, route.function_name)

    def done(self, route: Route, ok: bool) -> None:
        if ok:
            self._metrics.invoked(NAME, route.function_name)
        else:
            self._metrics.failed(NAME, route.function_name)

    # -- table -------------------------------------------------------------------------------

    def _holder(self, prefix: str) -> Key | None:
        route = self._table.get(prefix)
        if route is not None:
            return (route.namespace, route.name)
        return None

    def _drop_claims(self, key: Key) -> None:
        self._claims = {p: c for p, c in self._claims.items() if c[0] != key}

    def _set(self, key: Key, prefix: str | None) -> None:
        before = self._wanted.get(key)
        if before == prefix:
            return
        if before is not None:
            del self._wanted[key]
        if prefix is not None:
            self._wanted[key] = prefix
        table: dict[str, Route] = {}
        for (namespace, name), wanted in self._wanted.items():
            table.setdefault(wanted, Route(wanted, name, namespace))
        self._table = table
        function = f"{key[1]}.{key[0]}"
        if prefix is None:
            log.info("route %s of %s unbound", before, function)
        elif table[prefix].function_name != function:
            log.warning(
                "route %s of %s not active: held by %s",
                prefix,
                function,
                table[prefix].function_name,
            )
        else:
            log.info(
                "route %s bound to %s%s", prefix, function, f" (was {before})" if before else ""
            )
