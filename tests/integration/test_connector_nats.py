"""NATS subjects connector end to end: the real daemon (`localfaas up`), real Docker, a real
nats-server this test owns (`--nats-url`, so messages can be published while the daemon is down).

- request/reply through a real function container (output and an error status);
- a durable binding (JetStream consumer) keeps every message across a SIGTERM restart: the ones
  published while the daemon was down run after it is back, each exactly once here.
"""

from __future__ import annotations

import asyncio
import json
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import nats
import pytest
from nats.js.api import StreamConfig

from tests.integration.daemon_fixtures import (
    DaemonProcess,
    daemon_factory,  # noqa: F401 - fixture
    free_port,
    test_function_image,  # noqa: F401 - fixture
)
from tests.integration.test_async_daemon import ExternalNats

pytestmark = [pytest.mark.docker, pytest.mark.nats, pytest.mark.slow]
Factory = Callable[..., DaemonProcess]


def deploy(daemon: DaemonProcess, name: str, image: str, annotations: dict[str, str]) -> None:
    body = {"service": name, "image": image, "annotations": annotations}
    reply = daemon.request("POST", "/system/functions", json_body=body)
    assert reply.status == 202, reply.body


def wait_bound(daemon: DaemonProcess, name: str, state: str) -> None:
    def bound() -> bool:
        reply = daemon.request("GET", f"/system/connectors?name={name}")
        found = [b for b in reply.json()["bindings"] if b["connector"] == "nats"]
        return bool(found) and all(b["details"]["state"] == state for b in found)

    daemon.wait_for(bound, f"{name} bound ({state})")


def nats_log(daemon: DaemonProcess, name: str) -> Counter[str]:
    reply = daemon.request("GET", f"/function/{name}/nats-log")
    assert reply.status == 200, reply.body
    return Counter(line for line in reply.body.decode().splitlines() if line)


async def _request(url: str, subject: str, headers: dict[str, str]) -> tuple[dict[str, str], bytes]:
    nc = await nats.connect(url)
    try:
        msg = await nc.request(subject, b"hello", timeout=10, headers=headers)
        return dict(msg.headers or {}), msg.data
    finally:
        await nc.close()


async def _publish(url: str, subject: str, ids: list[str], stream: bool = False) -> None:
    nc = await nats.connect(url)
    try:
        js = nc.jetstream()
        if stream:
            await js.add_stream(StreamConfig(name="ORDERS", subjects=["orders.>"]))
        for msg_id in ids:
            await js.publish(subject, msg_id.encode(), headers={"X-Msg": msg_id})
    finally:
        await nc.close()


def test_nats_request_reply_and_durable_restart(
    daemon_factory: Factory, test_function_image: str, tmp_path: Path
) -> None:
    server = ExternalNats(tmp_path / "nats", free_port())
    server.start()
    try:
        asyncio.run(_publish(server.url, "orders.eu", [], stream=True))
        env = {"LOCALFAAS_NATS_URL": server.url}
        daemon = daemon_factory(extra_env=env)
        deploy(daemon, "api", test_function_image, {"topic": "api.*"})
        deploy(
            daemon,
            "orders",
            test_function_image,
            {"topic": "orders.*", "com.localfaas.nats.durable": "true"},
        )
        daemon.wait_available("api", 1)
        daemon.wait_available("orders", 1)
        wait_bound(daemon, "api", "subscribed")
        wait_bound(daemon, "orders", "consuming")

        headers, body = asyncio.run(_request(server.url, "api.get", {"X-Msg": "r1"}))
        assert headers["X-Function-Status"] == "200", (headers, body)
        assert json.loads(body) == {"topic": "api.get", "body": "hello"}
        headers, body = asyncio.run(_request(server.url, "api.get", {"X-Fail": "1"}))
        assert headers["X-Function-Status"] == "500" and headers["Nats-Service-Error-Code"] == "500"

        asyncio.run(_publish(server.url, "orders.eu", ["m0", "m1", "m2"]))
        daemon.wait_for(lambda: len(nats_log(daemon, "orders")) == 3, "3 durable messages run")

        assert daemon.stop() == 0  # SIGTERM
        later = [f"m{i}" for i in range(3, 13)]
        asyncio.run(_publish(server.url, "orders.us", later))
        daemon = daemon_factory(extra_env=env)
        daemon.wait_for(
            lambda: len(nats_log(daemon, "orders")) == 13, "messages published while down"
        )
        seen = nats_log(daemon, "orders")
        assert set(seen) == {f"m{i}" for i in range(13)}
        assert set(seen.values()) == {1}, seen
        assert "nats: orders.openfaas-fn bound to orders.*" in daemon.log()
    finally:
        server.stop()
