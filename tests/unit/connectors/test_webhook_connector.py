"""Webhook annotations (deploy-time table) and the connector's delivery logic with a fake
dispatch: claims, duplicates, in-progress retries, released claims, stale claims."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
from pathlib import Path
from typing import Any

import pytest
from multidict import CIMultiDict, CIMultiDictProxy
from prometheus_client import CollectorRegistry

from connectors.metrics import ConnectorMetrics
from connectors.registry import ConnectorContext
from connectors.webhook import (
    DUPLICATE_HEADER,
    WebhookConfig,
    WebhookConnector,
    WebhookMisconfigured,
    call_id_for,
    parse_config,
)
from connectors.webhook_signatures import Rejected
from runtime.config import Settings
from runtime.errors import InvalidSpec, NoReadyReplica, UpstreamTimeout
from runtime.invoker import BufferedResult, Invocation
from runtime.models import FunctionSpec
from runtime.queue.enqueue import Enqueued
from runtime.queue.errors import QueueUnavailable
from runtime.queue.message import Envelope, is_valid_call_id
from runtime.secrets import SecretFiles
from runtime.store import Store

S = "com.localfaas.webhook."


def spec(annotations: dict[str, str], secrets: tuple[str, ...] = ("hook-key",)) -> FunctionSpec:
    return FunctionSpec(name="hook", image="x", secrets=secrets, annotations=annotations)


OK = {S + "scheme": "github", S + "secret": "hook-key"}

GOOD = [
    ({}, None),
    ({"topic": "x"}, None),
    (OK, WebhookConfig("github", "hook-key")),
    ({**OK, S + "mode": "sync"}, WebhookConfig("github", "hook-key", "sync")),
    ({**OK, S + "scheme": "stripe", S + "mode": "async"}, WebhookConfig("stripe", "hook-key")),
    ({**OK, S + "scheme": "standard"}, WebhookConfig("standard", "hook-key")),
    (
        {**OK, S + "scheme": "hmac-sha256", S + "header": "X-Sig", S + "id-header": "X-Id"},
        WebhookConfig("hmac-sha256", "hook-key", "async", "X-Sig", "X-Id"),
    ),
]


@pytest.mark.parametrize(("annotations", "expected"), GOOD)
def test_parse_good(annotations: dict[str, str], expected: WebhookConfig | None) -> None:
    assert parse_config(spec(annotations)) == expected


BAD = [
    ({**OK, S + "scheme": "gitlab"}, S + "scheme", "not one of"),
    ({S + "secret": "hook-key"}, S + "scheme", "required"),
    ({S + "scheme": "github"}, S + "secret", "required"),
    ({**OK, S + "secret": "other"}, S + "secret", "not in the function's secrets"),
    ({**OK, S + "mode": "later"}, S + "mode", "not one of"),
    ({**OK, S + "scheme": "hmac-sha256", S + "header": "X Sig"}, S + "header", "header name"),
    ({**OK, S + "scheme": "hmac-sha256", S + "header": "Connection"}, S + "header", "header"),
    ({**OK, S + "scheme": "hmac-sha256", S + "id-header": "X:Id"}, S + "id-header", "header"),
    ({**OK, S + "header": "X-Sig"}, S + "header", "only applies"),
    ({**OK, S + "id-header": "X-Id"}, S + "id-header", "only applies"),
    ({**OK, S + "mod": "sync"}, S + "mod", "unknown"),
]


@pytest.mark.parametrize(("annotations", "named", "words"), BAD)
def test_parse_bad(annotations: dict[str, str], named: str, words: str) -> None:
    with pytest.raises(InvalidSpec) as caught:
        parse_config(spec(annotations))
    assert f"annotation {named}" in str(caught.value)
    assert words in str(caught.value)


def test_call_id_is_stable_valid_and_per_function() -> None:
    a = call_id_for("openfaas-fn", "hook", "d-1")
    assert a == call_id_for("openfaas-fn", "hook", "d-1")
    assert is_valid_call_id(a)
    assert a != call_id_for("openfaas-fn", "other", "d-1")
    assert a != call_id_for("openfaas-fn", "hook", "d-2")


class FakeDispatch:
    def __init__(self) -> None:
        self.invoked: list[Invocation] = []
        self.enqueued: list[Envelope] = []
        self.fail: Exception | None = None
        self.status = 200
        self.gate: asyncio.Event | None = None
        self.entered = asyncio.Event()

    @property
    def invoke_timeout_s(self) -> float:
        return 10.0

    async def invoke(self, inv: Invocation) -> BufferedResult:
        self.invoked.append(inv)
        self.entered.set()
        if self.gate is not None:
            await self.gate.wait()
        if self.fail is not None:
            raise self.fail
        headers = CIMultiDictProxy(CIMultiDict({"X-Out": "1", "Content-Length": "2"}))
        return BufferedResult(self.status, headers, b"ok")

    async def enqueue(self, env: Envelope) -> Enqueued:
        self.enqueued.append(env)
        if self.fail is not None:
            raise self.fail
        return Enqueued(env.call_id, len(self.enqueued), False)


KEY = b"k3y"
BODY = b'{"zen":"Keep it logically awesome."}'


def signed(delivery: str = "d-1", body: bytes = BODY) -> CIMultiDict[str]:
    sig = hmac.new(KEY, body, hashlib.sha256).hexdigest()
    return CIMultiDict(
        {
            "X-Hub-Signature-256": "sha256=" + sig,
            "X-GitHub-Delivery": delivery,
            "X-GitHub-Event": "push",
            "Connection": "keep-alive",
            "X-Connector": "spoofed",
            "Content-Length": str(len(body)),
        }
    )


class Rig:
    def __init__(self, tmp_path: Path) -> None:
        self.now = 1_700_000_000.0
        self.dispatch = FakeDispatch()
        self.store = Store(tmp_path / "state.db")
        secrets = SecretFiles(tmp_path / "state")
        secrets.put("openfaas-fn", "hook-key", KEY)
        self.registry = CollectorRegistry()
        ctx = ConnectorContext(
            settings=Settings(state_dir=tmp_path / "state", cache_dir=tmp_path / "cache"),
            dispatch=self.dispatch,
            store=self.store,
            secrets=secrets,
            metrics=ConnectorMetrics(self.registry),
            nats_url=lambda: None,
        )
        self.hook = WebhookConnector(ctx, clock=lambda: self.now)

    async def send(self, mode: str = "async", delivery: str = "d-1", **kw: Any) -> Any:
        fn = spec({**OK, S + "mode": mode})
        config = self.hook.config_for(fn)
        headers = kw.pop("headers", None) or signed(delivery)
        return await self.hook.deliver(fn, config, headers, headers.items(), BODY, **kw)

    def metric(self, name: str, **labels: str) -> float:
        value = self.registry.get_sample_value(
            name, {"connector": "webhook", "function_name": "hook.openfaas-fn", **labels}
        )
        return value or 0.0


@pytest.fixture
def rig(tmp_path: Path) -> Rig:
    return Rig(tmp_path)


async def test_async_delivery_is_queued_once(rig: Rig) -> None:
    reply = await rig.send(query="a=1")
    assert reply.status == 202
    (env,) = rig.dispatch.enqueued
    assert (
        dict(reply.headers)["X-Call-Id"] == env.call_id == call_id_for("openfaas-fn", "hook", "d-1")
    )
    assert env.query == "a=1" and env.body == BODY
    names = [k.lower() for k, _ in env.headers]
    assert "connection" not in names and "content-length" not in names
    assert env.header("X-Connector") == "webhook" and names.count("x-connector") == 1
    assert env.header("X-Webhook-Scheme") == "github"
    assert env.header("X-Webhook-Id") == "d-1"
    assert env.header("X-GitHub-Event") == "push"

    again = await rig.send()
    assert again.status == 202
    assert (DUPLICATE_HEADER, "true") in again.headers
    assert len(rig.dispatch.enqueued) == 1
    assert rig.metric("localfaas_connector_skipped_total", reason="duplicate") == 1
    assert rig.metric("localfaas_connector_invocations_total") == 1
    assert rig.metric("localfaas_connector_events_total") == 2


async def test_sync_delivery_returns_the_function_answer(rig: Rig) -> None:
    rig.dispatch.status = 201
    reply = await rig.send("sync")
    assert (reply.status, reply.body) == (201, b"ok")
    headers = dict(reply.headers)
    assert headers["X-Out"] == "1" and "Content-Length" not in headers
    (inv,) = rig.dispatch.invoked
    assert headers["X-Call-Id"] == inv.call_id
    dup = await rig.send("sync")
    assert dup.status == 200 and (DUPLICATE_HEADER, "true") in dup.headers
    assert len(rig.dispatch.invoked) == 1


async def test_refused_delivery_invokes_nothing_and_claims_nothing(rig: Rig) -> None:
    bad = signed()
    bad["X-Hub-Signature-256"] = "sha256=" + "0" * 64
    with pytest.raises(Rejected):
        await rig.send(headers=bad)
    assert rig.dispatch.enqueued == []
    assert rig.store.kv_get("webhook/openfaas-fn/hook", "d-1") is None
    assert rig.metric("localfaas_connector_skipped_total", reason="unauthorized") == 1
    assert (await rig.send()).status == 202  # the genuine one still runs


@pytest.mark.parametrize(
    "error", [QueueUnavailable("nats is away"), NoReadyReplica("none"), RuntimeError("boom")]
)
async def test_failed_dispatch_releases_the_claim(rig: Rig, error: Exception) -> None:
    rig.dispatch.fail = error
    with pytest.raises(type(error)):
        await rig.send()
    rig.dispatch.fail = None
    assert (await rig.send()).status == 202
    assert len(rig.dispatch.enqueued) == 2
    assert rig.metric("localfaas_connector_failures_total") == 1


async def test_function_5xx_releases_the_claim_in_sync_mode(rig: Rig) -> None:
    rig.dispatch.status = 503
    assert (await rig.send("sync")).status == 503
    rig.dispatch.status = 200
    assert (await rig.send("sync")).status == 200
    assert len(rig.dispatch.invoked) == 2


async def test_timeout_keeps_the_claim(rig: Rig) -> None:
    rig.dispatch.fail = UpstreamTimeout("slow")
    with pytest.raises(UpstreamTimeout):
        await rig.send("sync")
    dup = await rig.send("sync")
    assert (DUPLICATE_HEADER, "true") in dup.headers
    assert len(rig.dispatch.invoked) == 1


async def test_concurrent_duplicate_waits_for_the_first_attempt(rig: Rig) -> None:
    rig.dispatch.gate = asyncio.Event()
    first = asyncio.create_task(rig.send("sync"))
    await asyncio.wait_for(rig.dispatch.entered.wait(), 5)
    second = await rig.send("sync")
    assert second.status == 409 and ("Retry-After", "5") in second.headers
    assert rig.metric("localfaas_connector_skipped_total", reason="in-progress") == 1
    rig.dispatch.fail = NoReadyReplica("gone")
    rig.dispatch.gate.set()
    with pytest.raises(NoReadyReplica):
        await first
    # The first attempt failed, so the sender's retry runs.
    rig.dispatch.fail = None
    assert (await rig.send("sync")).status == 200
    assert len(rig.dispatch.invoked) == 2


async def test_claim_left_by_a_stopped_daemon_is_taken_over(rig: Rig) -> None:
    rig.store.kv_put(
        "webhook/openfaas-fn/hook",
        "d-1",
        json.dumps({"state": "pending", "at": rig.now}),
        ttl_s=86400,
    )
    assert (await rig.send()).status == 409
    rig.now += 41  # past invoke timeout (10 s) + 30 s
    # The signature has no timestamp (github), so the same delivery is still authentic.
    assert (await rig.send()).status == 202
    assert len(rig.dispatch.enqueued) == 1


async def test_dedupe_lasts_24_hours(rig: Rig) -> None:
    assert (await rig.send()).status == 202
    rig.now += 23 * 3600
    assert (DUPLICATE_HEADER, "true") in (await rig.send()).headers


async def test_missing_secret_is_a_server_error_that_names_it(rig: Rig, tmp_path: Path) -> None:
    SecretFiles(tmp_path / "state").delete("openfaas-fn", "hook-key")
    with pytest.raises(WebhookMisconfigured, match="'hook-key'"):
        await rig.send()
    assert rig.dispatch.enqueued == []


async def test_bindings_follow_bind_and_unbind(rig: Rig) -> None:
    await rig.hook.bind(spec({**OK, S + "mode": "sync"}))
    (binding,) = rig.hook.bindings()
    assert binding.trigger == "/webhook/hook.openfaas-fn (github, sync)"
    assert binding.details == {"scheme": "github", "secret": "hook-key", "mode": "sync"}
    await rig.hook.bind(spec({}))
    assert rig.hook.bindings() == []
    await rig.hook.bind(spec(OK))
    await rig.hook.unbind("openfaas-fn", "hook")
    assert rig.hook.bindings() == []
