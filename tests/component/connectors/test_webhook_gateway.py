"""Webhooks through a real gateway (FakeProvider replicas echoing requests, real Invoker, real
SQLite, the embedded nats-server for async mode): POST /webhook/{name}[.{ns}]."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import json
import time
from collections.abc import Callable

import aiohttp

from tests.component.gateway.conftest import AUTH, Gateway, GatewayFactory
from tests.component.gateway.conftest import make_gateway as make_gateway  # the fixture

S = "com.localfaas.webhook."
KEY = "gh-secret-value"
BODY = json.dumps({"action": "opened", "zen": "Design for failure."}).encode()
FN = "hook.openfaas-fn"


async def eventually(check: Callable[[], bool], what: str, timeout_s: float = 10.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not check():
        assert time.monotonic() < deadline, f"{what} not reached in {timeout_s}s"
        await asyncio.sleep(0.01)


def github(body: bytes = BODY, delivery: str = "d-1", key: str = KEY) -> dict[str, str]:
    sig = hmac.new(key.encode(), body, hashlib.sha256).hexdigest()
    return {
        "X-Hub-Signature-256": f"sha256={sig}",
        "X-GitHub-Delivery": delivery,
        "X-GitHub-Event": "issues",
        "Content-Type": "application/json",
    }


def stripe(body: bytes, key: str, t: int | None = None) -> dict[str, str]:
    t = int(time.time()) if t is None else t
    sig = hmac.new(key.encode(), f"{t}.".encode() + body, hashlib.sha256).hexdigest()
    return {"Stripe-Signature": f"t={t},v1={sig}"}


def standard(body: bytes, secret: str, msg_id: str, t: int | None = None) -> dict[str, str]:
    t = int(time.time()) if t is None else t
    raw = base64.b64decode(secret.removeprefix("whsec_"))
    sig = hmac.new(raw, f"{msg_id}.{t}.".encode() + body, hashlib.sha256).digest()
    return {
        "webhook-id": msg_id,
        "webhook-timestamp": str(t),
        "webhook-signature": "v1," + base64.b64encode(sig).decode(),
    }


async def setup(
    gw: Gateway, mode: str = "async", scheme: str = "github", key: str = KEY, **extra: str
) -> None:
    resp = await gw.client.post(
        "/system/secrets", json={"name": "hook-key", "value": key}, headers=AUTH
    )
    assert resp.status in (200, 201, 202), await resp.text()
    annotations = {S + "scheme": scheme, S + "secret": "hook-key", S + "mode": mode, **extra}
    resp = await gw.deploy("hook", secrets=["hook-key"], annotations=annotations)
    assert resp.status == 202, await resp.text()
    await gw.wait_available("hook")


def started(gw: Gateway, fn: str = FN) -> float:
    value = gw.metrics.registry.get_sample_value(
        "gateway_function_invocation_started", {"function_name": fn}
    )
    return value or 0.0


async def post(
    gw: Gateway, headers: dict[str, str], body: bytes = BODY, target: str = "hook"
) -> aiohttp.ClientResponse:
    return await gw.client.post(f"/webhook/{target}", data=body, headers=headers)


async def test_github_sync_answers_with_the_function_and_runs_a_delivery_once(
    make_gateway: GatewayFactory,
) -> None:
    gw = await make_gateway(with_connectors=True)
    await setup(gw, "sync")
    resp = await post(gw, github())
    assert resp.status == 200, await resp.text()
    echo = await resp.json()
    seen = echo["headers"]
    assert echo["body"] == BODY.decode() and echo["method"] == "POST"
    assert seen["X-Connector"] == "webhook"
    assert seen["X-Webhook-Scheme"] == "github"
    assert seen["X-Webhook-Id"] == "d-1"
    assert seen["X-GitHub-Event"] == "issues"
    assert seen["X-Hub-Signature-256"].startswith("sha256=")
    call_id = resp.headers["X-Call-Id"]
    assert seen["X-Call-Id"] == call_id and call_id.startswith("wh-")
    assert resp.headers["X-Replica"]  # the function's own headers come back
    assert resp.headers["X-Webhook-Id"] == "d-1"
    assert started(gw) == 1

    again = await post(gw, github())
    assert again.status == 200
    assert again.headers["X-Webhook-Duplicate"] == "true"
    assert again.headers["X-Call-Id"] == call_id
    assert "duplicate delivery d-1" in await again.text()
    assert again.headers["Content-Type"].startswith("text/plain")
    assert started(gw) == 1
    # A new delivery id runs again; the query string reaches the function.
    resp = await gw.client.post(
        "/webhook/hook.openfaas-fn?x=1", data=BODY, headers=github(delivery="d-2")
    )
    assert resp.status == 200 and (await resp.json())["query"] == "x=1"
    assert started(gw) == 2


async def test_github_async_is_queued_and_runs_once(make_gateway: GatewayFactory) -> None:
    gw = await make_gateway(with_connectors=True, with_async=True)
    await setup(gw)
    resp = await post(gw, github())
    assert resp.status == 202, await resp.text()
    call_id = resp.headers["X-Call-Id"]
    await eventually(lambda: started(gw) == 1, "the queued delivery ran")
    again = await post(gw, github())
    assert again.status == 202
    assert again.headers["X-Webhook-Duplicate"] == "true"
    assert again.headers["X-Call-Id"] == call_id
    second = await post(gw, github(delivery="d-2"))
    assert second.status == 202
    second_id = second.headers["X-Call-Id"]
    assert second_id != call_id

    async def succeeded(cid: str) -> bool:
        resp = await gw.client.get(f"/system/async/calls/{cid}", headers=AUTH)
        return resp.status == 200 and (await resp.json())["state"] == "succeeded"

    deadline = time.monotonic() + 10
    while not (await succeeded(call_id) and await succeeded(second_id)):
        assert time.monotonic() < deadline, "the queued deliveries did not finish"
        await asyncio.sleep(0.02)
    # One worker per replica runs calls in order: a wrongly queued duplicate of d-1 would
    # have run before d-2 finished.
    assert started(gw) == 2


async def test_stripe_and_standard_webhooks_are_accepted(make_gateway: GatewayFactory) -> None:
    gw = await make_gateway(with_connectors=True)
    await setup(gw, "sync", "stripe", "whsec_stripe_test_key")
    event = json.dumps({"id": "evt_1", "type": "charge.succeeded"}).encode()
    resp = await post(gw, stripe(event, "whsec_stripe_test_key"), event)
    assert resp.status == 200, await resp.text()
    assert (await resp.json())["headers"]["X-Webhook-Id"] == "evt_1"
    # Stripe's retry: a new timestamp and signature, the same event id → de-duplicated.
    resp = await post(gw, stripe(event, "whsec_stripe_test_key", int(time.time()) - 5), event)
    assert resp.headers.get("X-Webhook-Duplicate") == "true"
    assert started(gw) == 1

    secret = "whsec_" + base64.b64encode(b"standard-webhooks-key-32-bytes!!").decode()
    body = b'{"type":"invoice.paid"}'
    resp = await gw.client.post(
        "/system/secrets", json={"name": "std", "value": secret}, headers=AUTH
    )
    assert resp.status in (200, 201, 202)
    annotations = {S + "scheme": "standard", S + "secret": "std", S + "mode": "sync"}
    assert (await gw.deploy("std", secrets=["std"], annotations=annotations)).status == 202
    await gw.wait_available("std")
    resp = await post(gw, standard(body, secret, "msg_1"), body, "std")
    assert resp.status == 200, await resp.text()
    assert (await resp.json())["headers"]["X-Webhook-Scheme"] == "standard"


async def test_refused_deliveries_invoke_nothing(make_gateway: GatewayFactory) -> None:
    gw = await make_gateway(with_connectors=True)
    await setup(gw, "sync")
    tampered = BODY.replace(b"opened", b"closed")
    cases = [
        (github(), tampered, "does not match the body"),
        (github(key="wrong-secret"), BODY, "does not match the body"),
        ({"X-GitHub-Delivery": "d-1"}, BODY, "missing X-Hub-Signature-256"),
        ({**github(), "X-Hub-Signature-256": "sha256=zz"}, BODY, "malformed"),
        (
            {k: v for k, v in github().items() if k != "X-GitHub-Delivery"},
            BODY,
            "missing X-GitHub-Delivery",
        ),
    ]
    expected_sig = hmac.new(KEY.encode(), tampered, hashlib.sha256).hexdigest()
    for headers, body, reason in cases:
        resp = await post(gw, headers, body)
        text = await resp.text()
        assert resp.status == 401, (reason, text)
        assert reason in text and text.startswith("webhook signature rejected")
        assert resp.headers["WWW-Authenticate"] == 'Webhook scheme="github"'
        assert KEY not in text and expected_sig not in text
    assert started(gw) == 0
    skipped = gw.metrics.registry.get_sample_value(
        "localfaas_connector_skipped_total",
        {"connector": "webhook", "function_name": FN, "reason": "unauthorized"},
    )
    assert skipped == len(cases)
    # The refused attempts claimed nothing: the genuine delivery d-1 still runs.
    assert (await post(gw, github())).status == 200
    assert started(gw) == 1


async def test_stale_timestamps_are_refused(make_gateway: GatewayFactory) -> None:
    gw = await make_gateway(with_connectors=True)
    await setup(gw, "sync", "stripe", "whsec_k")
    now = int(time.time())
    for t, word in ((now - 600, "stale"), (now + 600, "in the future")):
        resp = await post(gw, stripe(BODY, "whsec_k", t))
        assert resp.status == 401 and word in await resp.text()
    assert started(gw) == 0


async def test_not_found_and_bad_targets(make_gateway: GatewayFactory) -> None:
    gw = await make_gateway(with_connectors=True)
    assert (await gw.deploy("plain")).status == 202
    for target, status, words in (
        ("nope", 404, "not found"),
        ("plain", 404, "has no webhook"),
        ("hook.other-ns", 404, "not found"),
        ("Bad_Name", 400, "invalid"),
    ):
        resp = await post(gw, github(), target=target)
        assert resp.status == status and words in (await resp.text()), (target, await resp.text())
    assert (await gw.client.get("/webhook/plain")).status == 405


async def test_webhooks_disabled_without_connectors(make_gateway: GatewayFactory) -> None:
    gw = await make_gateway()
    resp = await post(gw, github())
    assert resp.status == 404 and "not enabled" in await resp.text()


async def test_oversized_bodies_get_413(make_gateway: GatewayFactory) -> None:
    gw = await make_gateway(
        with_connectors=True, with_async=True, async_max_body_bytes=1000, max_body_bytes=4000
    )
    await setup(gw)  # async: the async limit applies
    big = b"x" * 2000
    resp = await post(gw, github(big), big)
    assert resp.status == 413 and "1000 bytes" in await resp.text()

    async def chunks() -> object:
        for _ in range(4):
            yield b"y" * 500

    resp = await gw.client.post("/webhook/hook", data=chunks(), headers=github(b"y" * 2000))
    assert resp.status == 413
    # sync mode: the (larger) sync limit applies.
    body = {
        "service": "hook",
        "image": "fake/hello:1",
        "secrets": ["hook-key"],
        "annotations": {S + "scheme": "github", S + "secret": "hook-key", S + "mode": "sync"},
    }
    assert (await gw.client.put("/system/functions", json=body, headers=AUTH)).status == 202
    await gw.wait_available("hook")
    resp = await post(gw, github(big, "d-big"), big)
    assert resp.status == 200, await resp.text()
    huge = b"z" * 5000
    assert (await post(gw, github(huge, "d-huge"), huge)).status == 413
    assert started(gw) == 1


async def test_bad_annotations_are_refused_at_deploy(make_gateway: GatewayFactory) -> None:
    gw = await make_gateway(with_connectors=True)
    await gw.client.post("/system/secrets", json={"name": "k", "value": "v"}, headers=AUTH)
    ok = {S + "scheme": "github", S + "secret": "k"}
    cases = [
        ({**ok, S + "scheme": "gitlab"}, S + "scheme"),
        ({S + "scheme": "github"}, S + "secret"),
        ({**ok, S + "secret": "other"}, S + "secret"),
        ({**ok, S + "mode": "later"}, S + "mode"),
        ({**ok, S + "scheme": "hmac-sha256", S + "header": "bad header"}, S + "header"),
        ({**ok, S + "id-header": "X-Id"}, S + "id-header"),
    ]
    for given, named in cases:
        resp = await gw.deploy("bad", secrets=["k"], annotations=given)
        assert resp.status == 400, given
        assert f"annotation {named}" in await resp.text()
    assert (await gw.client.get("/system/function/bad", headers=AUTH)).status == 404


async def test_bindings_rebind_and_secret_updates_apply(make_gateway: GatewayFactory) -> None:
    gw = await make_gateway(with_connectors=True)
    await setup(gw, "sync")
    assert gw.connectors is not None
    await gw.connectors.settle()
    listed = await (await gw.client.get("/system/connectors?name=hook", headers=AUTH)).json()
    assert [b["trigger"] for b in listed["bindings"] if b["connector"] == "webhook"] == [
        "/webhook/hook.openfaas-fn (github, sync)"
    ]
    # A new secret value applies at once; the old key no longer verifies.
    resp = await gw.client.put(
        "/system/secrets", json={"name": "hook-key", "value": "new-key"}, headers=AUTH
    )
    assert resp.status in (200, 202)
    assert (await post(gw, github(delivery="d-old"))).status == 401
    assert (await post(gw, github(delivery="d-new", key="new-key"))).status == 200
    # Redeploy without the annotations: unbound, and no longer a webhook.
    body = {"service": "hook", "image": "fake/hello:1", "secrets": ["hook-key"]}
    assert (await gw.client.put("/system/functions", json=body, headers=AUTH)).status == 202
    await gw.connectors.settle()
    listed = await (await gw.client.get("/system/connectors?name=hook", headers=AUTH)).json()
    assert [b for b in listed["bindings"] if b["connector"] == "webhook"] == []
    assert (await post(gw, github(delivery="d-3", key="new-key"))).status == 404


async def test_queue_down_is_503_and_the_retry_runs(make_gateway: GatewayFactory) -> None:
    gw = await make_gateway(with_connectors=True)  # no async queue: enqueue → 503
    await setup(gw)
    resp = await post(gw, github())
    assert resp.status == 503 and resp.headers["Retry-After"]
    assert started(gw) == 0
    # The claim was released: the provider's retry of d-1 runs (here once sync mode is on).
    body = {
        "service": "hook",
        "image": "fake/hello:1",
        "secrets": ["hook-key"],
        "annotations": {S + "scheme": "github", S + "secret": "hook-key", S + "mode": "sync"},
    }
    assert (await gw.client.put("/system/functions", json=body, headers=AUTH)).status == 202
    await gw.wait_available("hook")
    resp = await post(gw, github())
    assert resp.status == 200 and "X-Webhook-Duplicate" not in resp.headers
    assert started(gw) == 1
