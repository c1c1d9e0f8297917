"""HTTP routes end to end: the real daemon, a real function container, a friendly path."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from tests.integration.daemon_fixtures import (
    DaemonProcess,
    daemon_factory,  # noqa: F401 - fixture
    test_function_image,  # noqa: F401 - fixture
)

pytestmark = [pytest.mark.docker]

ROUTE = "com.localfaas.http.route"


def test_friendly_path_follows_deploy_update_and_delete(
    daemon_factory: Callable[..., DaemonProcess],
    test_function_image: str,
) -> None:
    daemon = daemon_factory()

    def deploy(method: str, route: str) -> None:
        body = {"service": "probe", "image": test_function_image, "annotations": {ROUTE: route}}
        reply = daemon.request(method, "/system/functions", json_body=body)
        assert reply.status == 202, reply.body

    def status(path: str) -> int:
        return daemon.request("GET", path).status

    deploy("POST", "/api/probe")
    daemon.wait_available("probe", 1)
    reply = daemon.request("POST", "/api/probe/route-echo/7?x=1", b"{}")
    assert reply.status == 200, reply.body
    assert reply.json() == {
        "path": "/route-echo/7",
        "method": "POST",
        "x": "1",
        "prefix": "/api/probe",
    }
    assert reply.headers["X-Call-Id"] and reply.headers["X-Start-Time"]
    assert status("/api/probex") == 404

    # A taken route is refused; an update moves the route; a delete removes it.
    other = {"service": "other", "image": test_function_image, "annotations": {ROUTE: "/api/probe"}}
    assert daemon.request("POST", "/system/functions", json_body=other).status == 409
    deploy("PUT", "/v2/probe")
    daemon.wait_for(lambda: status("/v2/probe/route-echo") == 200, "the new route")
    assert status("/api/probe/route-echo") == 404
    reply = daemon.request("DELETE", "/system/functions", json_body={"functionName": "probe"})
    assert reply.status == 202
    daemon.wait_for(lambda: status("/v2/probe/route-echo") == 404, "the route to go", 10.0)
