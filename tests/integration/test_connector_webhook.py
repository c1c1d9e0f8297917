"""Webhooks end to end: the real daemon, real Docker containers and the embedded nats-server.
A signed GitHub-style delivery reaches a real function (sync and async modes) exactly once; a
tampered one gets 401 and runs nothing; a replay is de-duplicated."""

from __future__ import annotations

import hashlib
import hmac
import json
from collections.abc import Callable

import pytest

from tests.integration.daemon_fixtures import (
    DaemonProcess,
    daemon_factory,  # noqa: F401 - fixture
    test_function_image,  # noqa: F401 - fixture
)

pytestmark = [pytest.mark.docker, pytest.mark.nats]

KEY = "integration-webhook-key"
S = "com.localfaas.webhook."


def signed(body: bytes, delivery: str, key: str = KEY) -> dict[str, str]:
    sig = hmac.new(key.encode(), body, hashlib.sha256).hexdigest()
    return {
        "X-Hub-Signature-256": f"sha256={sig}",
        "X-GitHub-Delivery": delivery,
        "X-GitHub-Event": "push",
        "Content-Type": "application/json",
    }


def deploy(daemon: DaemonProcess, image: str, name: str, mode: str) -> None:
    annotations = {S + "scheme": "github", S + "secret": "gh-key", S + "mode": mode}
    body = {"service": name, "image": image, "secrets": ["gh-key"], "annotations": annotations}
    reply = daemon.request("POST", "/system/functions", json_body=body)
    assert reply.status == 202, reply.body


def runs(daemon: DaemonProcess, name: str) -> list[str]:
    reply = daemon.request("GET", f"/function/{name}/webhook-log")
    assert reply.status == 200, reply.body
    return reply.body.decode().split()


def test_signed_github_deliveries_reach_real_functions_once(
    daemon_factory: Callable[..., DaemonProcess],
    test_function_image: str,
) -> None:
    daemon = daemon_factory()
    reply = daemon.request("POST", "/system/secrets", json_body={"name": "gh-key", "value": KEY})
    assert reply.status in (200, 201, 202), reply.body
    deploy(daemon, test_function_image, "wh-sync", "sync")
    deploy(daemon, test_function_image, "wh-async", "async")
    daemon.wait_available("wh-sync", 1)
    daemon.wait_available("wh-async", 1)
    body = json.dumps({"ref": "refs/heads/main", "commits": [{"id": "abc"}]}).encode()

    # Sync: the function's own answer comes back; a replay is answered without running it.
    reply = daemon.request("POST", "/webhook/wh-sync", body, headers=signed(body, "s-1"))
    assert reply.status == 200, reply.body
    assert reply.json() == {"id": "s-1", "size": len(body)}
    assert reply.headers["X-Call-Id"].startswith("wh-")
    tampered = body.replace(b"main", b"evil")
    reply = daemon.request("POST", "/webhook/wh-sync", tampered, headers=signed(body, "s-2"))
    assert reply.status == 401 and b"does not match" in reply.body
    assert KEY.encode() not in reply.body
    reply = daemon.request("POST", "/webhook/wh-sync", body, headers=signed(body, "s-1"))
    assert reply.status == 200 and reply.headers["X-Webhook-Duplicate"] == "true"
    assert runs(daemon, "wh-sync") == ["s-1"]

    # Async: 202 once stored, run by a worker; a replay is not queued again.
    daemon.wait_for(
        lambda: daemon.request("GET", "/system/async/queues").status == 200,
        "async invocations to be ready",
    )
    reply = daemon.request(
        "POST", "/webhook/wh-async.openfaas-fn", body, headers=signed(body, "a-1")
    )
    assert reply.status == 202, reply.body
    call_id = reply.headers["X-Call-Id"]
    daemon.wait_for(lambda: runs(daemon, "wh-async") == ["a-1"], "the queued delivery to run")
    reply = daemon.request("POST", "/webhook/wh-async", body, headers=signed(body, "a-1"))
    assert reply.status == 202 and reply.headers["X-Webhook-Duplicate"] == "true"
    assert reply.headers["X-Call-Id"] == call_id
    reply = daemon.request("POST", "/webhook/wh-async", tampered, headers=signed(body, "a-3"))
    assert reply.status == 401
    # One worker runs this function's calls in order: had the replay (or the tampered one)
    # been queued, it would have run before a-2.
    assert (
        daemon.request("POST", "/webhook/wh-async", body, headers=signed(body, "a-2")).status == 202
    )
    daemon.wait_for(lambda: len(runs(daemon, "wh-async")) >= 2, "the second delivery to run")
    status = daemon.request("GET", f"/system/async/calls/{call_id}").json()
    assert status["state"] == "succeeded"
    assert runs(daemon, "wh-async") == ["a-1", "a-2"]

    listed = daemon.request("GET", "/system/connectors").json()
    triggers = sorted(b["trigger"] for b in listed["bindings"] if b["connector"] == "webhook")
    assert triggers == [
        "/webhook/wh-async.openfaas-fn (github, async)",
        "/webhook/wh-sync.openfaas-fn (github, sync)",
    ]
