"""Webhooks: `POST /webhook/{name}[.{ns}]` runs a function for each authentic, fresh, first-seen
delivery from GitHub, Stripe, a Standard Webhooks (Svix) sender or any HMAC-SHA256 signer.

Annotations (validated at deploy; a bad one is a 400 naming it):
  com.localfaas.webhook.scheme     github | stripe | standard | hmac-sha256 (binds the function)
  com.localfaas.webhook.secret     a secret in the function's `secrets` holding the key(s)
  com.localfaas.webhook.mode       async (default: 202 once queued) | sync (the function's answer)
  com.localfaas.webhook.header     hmac-sha256 only: the signature header (X-Signature-256)
  com.localfaas.webhook.id-header  hmac-sha256 only: a header carrying the delivery id

Exactly once per delivery id, as far as the sender can tell: a verified delivery first claims
its id in the store (24 h, so provider retries within a day find it), then is dispatched. A
claim is released when the dispatch certainly failed (queue down, no replica, function error
5xx), so the provider's retry runs; a retry that arrives while the first attempt is still
running gets 409 + Retry-After instead of a "duplicate" that could hide a failure. The async
call id is derived from the delivery id, so JetStream's own de-duplication backs the claim.
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field

from multidict import CIMultiDict

from connectors.base import Binding
from connectors.registry import ConnectorContext
from connectors.webhook_signatures import (
    DEFAULT_HMAC_HEADER,
    SCHEMES,
    Rejected,
    SecretUnusable,
    verify,
)
from runtime.errors import FunctionNotFound, InvalidSpec, LocalFaasError, UpstreamTimeout
from runtime.invoker import Invocation
from runtime.models import FunctionSpec
from runtime.queue.message import Envelope, request_headers
from runtime.upstream import HOP_BY_HOP

log = logging.getLogger("localfaas.connectors.webhook")

CONNECTOR = "webhook"
PREFIX = "com.localfaas.webhook."
SCHEME = PREFIX + "scheme"
SECRET = PREFIX + "secret"
MODE = PREFIX + "mode"
HEADER = PREFIX + "header"
ID_HEADER = PREFIX + "id-header"
_KNOWN = {SCHEME, SECRET, MODE, HEADER, ID_HEADER}
MODES = ("async", "sync")

DEDUPE_TTL_S = 24 * 3600
IN_PROGRESS_RETRY_AFTER_S = 5
DUPLICATE_HEADER = "X-Webhook-Duplicate"

_TOKEN = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]{1,100}")
# Set by the connector; a sender's copies are replaced, not passed on.
_OURS = frozenset({"x-call-id", "x-connector", "x-webhook-scheme", "x-webhook-id"})
_RESPONSE_DROP = HOP_BY_HOP | {"content-length", "x-call-id", "x-webhook-id"}
_TEXT = ("Content-Type", "text/plain; charset=utf-8")


class WebhookMisconfigured(LocalFaasError):
    """The function's webhook secret is missing or unusable (→ 500, so the sender retries)."""


@dataclass(frozen=True)
class WebhookConfig:
    scheme: str
    secret: str
    mode: str = "async"
    header: str | None = None  # hmac-sha256 only
    id_header: str | None = None  # hmac-sha256 only

    def details(self) -> dict[str, str]:
        out = {"scheme": self.scheme, "secret": self.secret, "mode": self.mode}
        if self.scheme == "hmac-sha256":
            out["header"] = self.header or DEFAULT_HMAC_HEADER
        if self.id_header is not None:
            out["idHeader"] = self.id_header
        return out


def _header_name(annotations: Mapping[str, str], key: str) -> str | None:
    raw = annotations.get(key)
    if raw is None:
        return None
    value = raw.strip()
    if _TOKEN.fullmatch(value) is None or value.lower() in HOP_BY_HOP:
        raise InvalidSpec(f"annotation {key}: {raw!r} is not a usable HTTP header name")
    return value


def parse_config(spec: FunctionSpec) -> WebhookConfig | None:
    """The function's webhook binding, None without one; InvalidSpec naming the annotation."""
    annotations = spec.annotations
    ours = sorted(key for key in annotations if key.startswith(PREFIX))
    if not ours:
        return None
    for key in ours:
        if key not in _KNOWN:
            raise InvalidSpec(
                f"annotation {key} is unknown (webhook annotations: {', '.join(sorted(_KNOWN))})"
            )
    scheme = annotations.get(SCHEME, "").strip()
    if not scheme:
        raise InvalidSpec(
            f"annotation {SCHEME} is required with {', '.join(ours)} (one of {', '.join(SCHEMES)})"
        )
    if scheme not in SCHEMES:
        raise InvalidSpec(f"annotation {SCHEME}: {scheme!r} is not one of {', '.join(SCHEMES)}")
    secret = annotations.get(SECRET, "").strip()
    if not secret:
        raise InvalidSpec(f"annotation {SECRET} is required: the secret holding the key")
    if secret not in spec.secrets:
        raise InvalidSpec(
            f"annotation {SECRET}: secret {secret!r} is not in the function's secrets"
        )
    mode = annotations.get(MODE, "async").strip()
    if mode not in MODES:
        raise InvalidSpec(f"annotation {MODE}: {mode!r} is not one of {', '.join(MODES)}")
    header = _header_name(annotations, HEADER)
    id_header = _header_name(annotations, ID_HEADER)
    for key, value in ((HEADER, header), (ID_HEADER, id_header)):
        if value is not None and scheme != "hmac-sha256":
            raise InvalidSpec(
                f"annotation {key} only applies to {SCHEME}: hmac-sha256 (not {scheme})"
            )
    return WebhookConfig(scheme, secret, mode, header, id_header)


def call_id_for(namespace: str, name: str, delivery_id: str) -> str:
    """A call id that is the same for every retry of a delivery (and fits NATS and the KV)."""
    digest = hashlib.sha256(f"{namespace}/{name}/{delivery_id}".encode()).hexdigest()
    return "wh-" + digest[:40]


@dataclass(frozen=True)
class Reply:
    status: int
    headers: list[tuple[str, str]] = field(default_factory=list)
    body: bytes = b""


class WebhookConnector:
    name = CONNECTOR

    def __init__(
        self,
        ctx: ConnectorContext,
        *,
        clock: Callable[[], float] = time.time,
        dedupe_ttl_s: float = DEDUPE_TTL_S,
    ) -> None:
        self._ctx = ctx
        self._clock = clock
        self._ttl_s = dedupe_ttl_s
        self._bound: dict[tuple[str, str], WebhookConfig] = {}

    # -- Connector protocol ---------------------------------------------------------------

    def validate(self, spec: FunctionSpec) -> None:
        parse_config(spec)

    async def start(self) -> None:
        pass

    async def bind(self, spec: FunctionSpec) -> None:
        key = (spec.namespace, spec.name)
        config = parse_config(spec)
        before = self._bound.get(key)
        if config is None:
            if self._bound.pop(key, None) is not None:
                log.info("webhook unbound from %s", spec.qualified_name)
            return
        self._bound[key] = config
        if before != config:
            log.info(
                "webhook bound to %s scheme=%s mode=%s",
                spec.qualified_name,
                config.scheme,
                config.mode,
            )

    async def unbind(self, namespace: str, name: str) -> None:
        if self._bound.pop((namespace, name), None) is not None:
            log.info("webhook unbound from %s.%s", name, namespace)

    def bindings(self) -> list[Binding]:
        return [
            Binding(
                CONNECTOR,
                name,
                namespace,
                f"/webhook/{name}.{namespace} ({config.scheme}, {config.mode})",
                config.details(),
            )
            for (namespace, name), config in sorted(self._bound.items())
        ]

    async def close(self) -> None:
        self._bound.clear()

    # -- deliveries -----------------------------------------------------------------------

    def config_for(self, spec: FunctionSpec) -> WebhookConfig:
        """The function's webhook, read from the spec being served (never a stale binding);
        FunctionNotFound (404) when it has none."""
        config = parse_config(spec)
        if config is None:
            raise FunctionNotFound(
                f"function {spec.qualified_name} has no webhook (annotation {SCHEME})"
            )
        return config

    def body_limit(self, config: WebhookConfig) -> int:
        settings = self._ctx.settings
        return settings.max_body_bytes if config.mode == "sync" else settings.async_max_body_bytes

    async def deliver(
        self,
        spec: FunctionSpec,
        config: WebhookConfig,
        headers: CIMultiDict[str] | Mapping[str, str],
        pairs: Iterable[tuple[str, str]],
        body: bytes,
        *,
        query: str = "",
    ) -> Reply:
        """Verify, de-duplicate and dispatch one delivery. ``headers`` is the request's
        case-insensitive view, ``pairs`` the same headers in order (what the function gets).
        Raises Rejected (401), WebhookMisconfigured (500) or the dispatch's own errors."""
        fn = spec.qualified_name
        metrics = self._ctx.metrics
        metrics.event(CONNECTOR, fn)
        secret = self._ctx.secrets.get(spec.namespace, config.secret)
        if secret is None:
            metrics.failed(CONNECTOR, fn)
            raise WebhookMisconfigured(
                f"webhook secret {config.secret!r} of function {fn} does not exist"
            )
        try:
            delivery_id = verify(
                config.scheme,
                headers,
                body,
                secret,
                self._clock(),
                header=config.header,
                id_header=config.id_header,
            )
        except SecretUnusable as exc:
            metrics.failed(CONNECTOR, fn)
            raise WebhookMisconfigured(
                f"webhook secret {config.secret!r} of function {fn}: {exc}"
            ) from None
        except Rejected as exc:
            metrics.skip(CONNECTOR, fn, "unauthorized")
            log.warning("webhook delivery to %s refused: %s", fn, exc)
            raise
        call_id = call_id_for(spec.namespace, spec.name, delivery_id)
        ids = [("X-Call-Id", call_id), ("X-Webhook-Id", delivery_id)]
        scope = f"webhook/{spec.namespace}/{spec.name}"
        claim = self._claim(scope, delivery_id, call_id)
        if claim != "claimed":
            metrics.skip(CONNECTOR, fn, "duplicate" if claim == "done" else "in-progress")
            log.info("webhook delivery %s to %s is a duplicate (%s)", delivery_id, fn, claim)
            if claim == "pending":
                return Reply(
                    409,
                    [*ids, _TEXT, ("Retry-After", str(IN_PROGRESS_RETRY_AFTER_S))],
                    f"delivery {delivery_id} is being processed; retry later\n".encode(),
                )
            return Reply(
                200 if config.mode == "sync" else 202,
                [*ids, _TEXT, (DUPLICATE_HEADER, "true")],
                f"duplicate delivery {delivery_id}: already accepted\n".encode(),
            )
        forward = [
            (key, value) for key, value in request_headers(pairs) if key.lower() not in _OURS
        ]
        forward += [
            ("X-Connector", CONNECTOR),
            ("X-Webhook-Scheme", config.scheme),
            ("X-Webhook-Id", delivery_id),
        ]
        try:
            if config.mode == "sync":
                reply = await self._invoke(spec, call_id, forward, body, query)
            else:
                reply = await self._enqueue(spec, call_id, forward, body, query)
            reply.headers.append(("X-Webhook-Id", delivery_id))
        except UpstreamTimeout:
            # The function may still be running: a retry must not run it again.
            self._done(scope, delivery_id, call_id)
            metrics.failed(CONNECTOR, fn)
            raise
        except BaseException:
            self._ctx.store.kv_delete(scope, delivery_id)
            metrics.failed(CONNECTOR, fn)
            raise
        if reply.status >= 500:
            self._ctx.store.kv_delete(scope, delivery_id)  # let the sender's retry run it
            metrics.failed(CONNECTOR, fn)
        else:
            self._done(scope, delivery_id, call_id)
            metrics.invoked(CONNECTOR, fn)
        return reply

    async def _invoke(
        self,
        spec: FunctionSpec,
        call_id: str,
        headers: list[tuple[str, str]],
        body: bytes,
        query: str,
    ) -> Reply:
        dispatch = self._ctx.dispatch
        result = await dispatch.invoke(
            Invocation(
                name=spec.name,
                namespace=spec.namespace,
                path="/",
                query_string=query,
                headers=headers,
                body=body,
                body_length=len(body),
                call_id=call_id,
                timeout_s=dispatch.invoke_timeout_s,
            )
        )
        out = [(k, v) for k, v in result.headers.items() if k.lower() not in _RESPONSE_DROP]
        out.append(("X-Call-Id", call_id))
        return Reply(result.status, out, result.body)

    async def _enqueue(
        self,
        spec: FunctionSpec,
        call_id: str,
        headers: list[tuple[str, str]],
        body: bytes,
        query: str,
    ) -> Reply:
        env = Envelope(
            call_id=call_id,
            function=spec.name,
            namespace=spec.namespace,
            path="/",
            query=query,
            headers=tuple(headers),
            body=body,
        )
        await self._ctx.dispatch.enqueue(env)
        return Reply(202, [("X-Call-Id", call_id)])

    # -- delivery-id claims (no await in here: atomic within the daemon's event loop, and
    # kv_add is atomic in SQLite besides) ------------------------------------------------------

    def _claim(self, scope: str, delivery_id: str, call_id: str) -> str:
        """'claimed' (go ahead), 'done' (a duplicate) or 'pending' (another attempt runs)."""
        store = self._ctx.store
        now = self._clock()
        pending = json.dumps({"state": "pending", "at": now, "call": call_id})
        if store.kv_add(scope, delivery_id, pending, ttl_s=self._ttl_s):
            return "claimed"
        raw = store.kv_get(scope, delivery_id)
        try:
            held = json.loads(raw) if raw is not None else {}
        except ValueError:
            held = {}
        if held.get("state") == "done":
            return "done"
        # A pending claim older than any attempt can last was left by a daemon that stopped
        # mid-delivery: take it over rather than refusing the delivery for a day.
        stale_after_s = self._ctx.dispatch.invoke_timeout_s + 30
        if raw is None or now - float(held.get("at", 0)) > stale_after_s:
            store.kv_put(scope, delivery_id, pending, ttl_s=self._ttl_s)
            return "claimed"
        return "pending"

    def _done(self, scope: str, delivery_id: str, call_id: str) -> None:
        done = json.dumps({"state": "done", "at": self._clock(), "call": call_id})
        self._ctx.store.kv_put(scope, delivery_id, done, ttl_s=self._ttl_s)
