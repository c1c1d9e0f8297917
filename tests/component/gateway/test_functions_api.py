from __future__ import annotations

import pytest

from tests.component.gateway.conftest import AUTH, GatewayFactory


async def test_deploy_list_invoke_delete(make_gateway: GatewayFactory) -> None:
    gw = await make_gateway()
    resp = await gw.deploy("hello", envProcess="python x.py", limits={"memory": "5Mi"})
    assert resp.status == 202, await resp.text()
    status = await gw.wait_available("hello")
    assert status["image"] == "fake/hello:1"
    assert status["envProcess"] == "python x.py"
    assert status["limits"] == {"memory": "5Mi"}
    assert status["labels"] == {} and status["annotations"] == {}
    assert "envVars" not in status and "requests" not in status

    resp = await gw.client.post(
        "/function/hello/sub/path?x=1",
        data=b"payload",
        headers={"X-Call-Id": "abc", "Connection": "keep-alive, X-Drop", "X-Drop": "1"},
    )
    assert resp.status == 200
    echo = await resp.json()
    assert echo["path"] == "/sub/path" and echo["query"] == "x=1" and echo["body"] == "payload"
    assert echo["headers"]["X-Call-Id"] == "abc"
    assert "X-Drop" not in echo["headers"]
    assert echo["headers"]["X-Forwarded-For"] == "127.0.0.1"
    assert int(echo["headers"]["X-Start-Time"]) > 0
    assert resp.headers["X-Call-Id"] == "abc"

    listed = await (await gw.client.get("/system/functions", headers=AUTH)).json()
    assert [f["name"] for f in listed] == ["hello"] and listed[0]["invocationCount"] == 1

    resp = await gw.client.delete("/system/functions", json={"functionName": "hello"}, headers=AUTH)
    assert resp.status == 202
    assert (await gw.client.post("/function/hello")).status == 404
    assert await gw.provider.list_replicas() == []


async def test_update_put_missing_is_404_and_post_existing_is_409(
    make_gateway: GatewayFactory,
) -> None:
    gw = await make_gateway()
    resp = await gw.client.put(
        "/system/functions", json={"service": "nope", "image": "x"}, headers=AUTH
    )
    assert resp.status == 404
    assert (await gw.deploy("a")).status == 202
    resp = await gw.deploy("a")
    assert resp.status == 409 and "PUT" in await resp.text()


async def test_rolling_update_replaces_replicas(make_gateway: GatewayFactory) -> None:
    gw = await make_gateway()
    await gw.deploy("a")
    await gw.wait_available("a")
    before = {r.container_id for r in await gw.provider.list_replicas("a", "openfaas-fn")}
    resp = await gw.client.put(
        "/system/functions", json={"service": "a", "image": "fake/hello:2"}, headers=AUTH
    )
    assert resp.status == 202
    import asyncio

    for _ in range(500):
        replicas = await gw.provider.list_replicas("a", "openfaas-fn")
        if (
            replicas
            and all(r.container_id not in before for r in replicas)
            and gw.functions.get("a", "openfaas-fn").pool.available_count() == 1
        ):
            break
        await asyncio.sleep(0.01)
    else:
        raise AssertionError("old replicas were not replaced")
    assert (await gw.client.get("/function/a")).status == 200


async def test_scale(make_gateway: GatewayFactory) -> None:
    gw = await make_gateway()
    await gw.deploy("a")
    resp = await gw.client.post(
        "/system/scale-function/a", json={"serviceName": "a", "replicas": 3}, headers=AUTH
    )
    assert resp.status == 202
    await gw.wait_available("a", 3)
    seen = set()
    for _ in range(9):
        seen.add((await gw.client.get("/function/a")).headers["X-Replica"])
    assert len(seen) == 3  # fewest-in-flight with ties broken by least served spreads requests
    resp = await gw.client.post(
        "/system/scale-function/a", json={"serviceName": "a", "replicas": 1}, headers=AUTH
    )
    await gw.wait_available("a", 1)


@pytest.mark.parametrize(
    ("method", "path", "body", "status", "message"),
    [
        ("post", "/system/functions", {"service": "Hello", "image": "x"}, 400, "invalid"),
        ("post", "/system/functions", {"service": "a.b", "image": "x"}, 400, "invalid"),
        ("post", "/system/functions", {"service": "../x", "image": "x"}, 400, "invalid"),
        ("post", "/system/functions", {"service": "x" * 64, "image": "x"}, 400, "invalid"),
        ("post", "/system/functions", {"image": "x"}, 400, "service is required"),
        ("post", "/system/functions", {"service": "a"}, 400, "image is required"),
        (
            "post",
            "/system/functions",
            {"service": "a", "image": "x", "namespace": "nope"},
            404,
            "namespace 'nope' not found",
        ),
        (
            "post",
            "/system/functions",
            {"service": "a", "image": "x", "secrets": ["missing"]},
            400,
            "secret 'missing' not found",
        ),
        (
            "post",
            "/system/functions",
            {"service": "a", "image": "x", "labels": {"com.openfaas.scale.min": "-1"}},
            400,
            "com.openfaas.scale.min",
        ),
        ("delete", "/system/functions", {"functionName": "ghost"}, 404, "not found"),
        (
            "post",
            "/system/scale-function/ghost",
            {"serviceName": "ghost", "replicas": 1},
            404,
            "not found",
        ),
        ("get", "/system/function/ghost", None, 404, "not found"),
        ("get", "/system/functions?namespace=nope", None, 404, "namespace"),
    ],
)
async def test_bad_input(
    make_gateway: GatewayFactory, method: str, path: str, body: object, status: int, message: str
) -> None:
    gw = await make_gateway()
    resp = (
        await getattr(gw.client, method)(path, json=body, headers=AUTH)
        if body is not None
        else await getattr(gw.client, method)(path, headers=AUTH)
    )
    assert resp.status == status, await resp.text()
    assert message in await resp.text()


async def test_scale_negative_and_malformed_json(make_gateway: GatewayFactory) -> None:
    gw = await make_gateway()
    await gw.deploy("a")
    resp = await gw.client.post(
        "/system/scale-function/a", json={"serviceName": "a", "replicas": -1}, headers=AUTH
    )
    assert resp.status == 400 and "negative" in await resp.text()
    resp = await gw.client.post(
        "/system/functions", data=b"{not json", headers={**AUTH, "Content-Type": "application/json"}
    )
    assert resp.status == 400 and "malformed JSON" in await resp.text()
    resp = await gw.client.post("/system/functions", data=b"", headers=AUTH)
    assert resp.status == 400 and "empty" in await resp.text()


async def test_image_missing_is_400(make_gateway: GatewayFactory) -> None:
    from runtime.provider.fake import FakeProvider

    gw = await make_gateway(provider=FakeProvider(images=["present:1"]))
    resp = await gw.client.post(
        "/system/functions", json={"service": "a", "image": "absent:1"}, headers=AUTH
    )
    assert resp.status == 400 and "absent:1" in await resp.text()


async def test_auth(make_gateway: GatewayFactory) -> None:
    gw = await make_gateway()
    resp = await gw.client.get("/system/functions")
    assert resp.status == 401 and resp.headers["WWW-Authenticate"].startswith("Basic")
    resp = await gw.client.get(
        "/system/functions", headers={"Authorization": "Basic " + "YWRtaW46d3Jvbmc="}
    )
    assert resp.status == 401
    resp = await gw.client.get("/system/functions", headers={"Authorization": "Basic !!!"})
    assert resp.status == 401
    assert (await gw.client.get("/healthz")).status == 200


async def test_unknown_function_and_body_limit(make_gateway: GatewayFactory) -> None:
    gw = await make_gateway(max_body_bytes=1000)
    resp = await gw.client.post("/function/ghost", data=b"x")
    assert resp.status == 404
    resp = await gw.client.post("/function/Bad.Name")
    assert resp.status == 400
    await gw.deploy("a")
    await gw.wait_available("a")
    resp = await gw.client.post("/function/a", data=b"x" * 2000)
    assert resp.status == 413

    async def chunks():  # no Content-Length: the limit is enforced while streaming
        for _ in range(4):
            yield b"y" * 400

    resp = await gw.client.post("/function/a", data=chunks())
    assert resp.status == 413


async def test_secrets_crud(make_gateway: GatewayFactory) -> None:
    gw = await make_gateway()
    c = gw.client
    assert (
        await c.post("/system/secrets", json={"name": "db", "value": "s3cret"}, headers=AUTH)
    ).status == 201
    assert (
        await c.post("/system/secrets", json={"name": "db", "value": "x"}, headers=AUTH)
    ).status == 409
    listed = await (await c.get("/system/secrets", headers=AUTH)).json()
    assert listed == [{"name": "db", "namespace": "openfaas-fn"}]
    assert "s3cret" not in str(listed)
    assert (
        await c.put("/system/secrets", json={"name": "db", "rawValue": "bmV3"}, headers=AUTH)
    ).status == 200
    assert (
        await c.put("/system/secrets", json={"name": "zz", "value": "v"}, headers=AUTH)
    ).status == 404
    assert (
        await c.post("/system/secrets", json={"name": "Bad", "value": "v"}, headers=AUTH)
    ).status == 400
    assert (await c.post("/system/secrets", json={"name": "e"}, headers=AUTH)).status == 400
    assert (await c.delete("/system/secrets", json={"name": "db"}, headers=AUTH)).status == 204
    assert (await c.delete("/system/secrets", json={"name": "db"}, headers=AUTH)).status == 404


async def test_info_namespaces_metrics_openapi(make_gateway: GatewayFactory) -> None:
    gw = await make_gateway()
    c = gw.client
    info = await (await c.get("/system/info", headers=AUTH)).json()
    assert info["provider"]["provider"] == "localfaas" and info["arch"]
    assert await (await c.get("/system/namespaces", headers=AUTH)).json() == ["openfaas-fn"]
    assert (await c.post("/system/namespace/dev", headers=AUTH)).status == 201
    assert await (await c.get("/system/namespaces", headers=AUTH)).json() == ["dev", "openfaas-fn"]
    await gw.deploy("a", namespace="dev")
    await gw.wait_available("a", namespace="dev")
    assert (await c.get("/function/a.dev")).status == 200
    text = await (await c.get("/metrics")).text()
    assert 'gateway_function_invocation_total{code="200",function_name="a.dev"} 1.0' in text
    assert 'gateway_function_invocation_started{function_name="a.dev"} 1.0' in text
    assert 'gateway_service_count{function_name="a.dev"} 1.0' in text
    spec = await (await c.get("/system/openapi.json", headers=AUTH)).json()
    assert "/system/functions" in spec["paths"]


async def test_logs_ndjson(make_gateway: GatewayFactory) -> None:
    gw = await make_gateway()
    await gw.deploy("a")
    await gw.wait_available("a")
    (replica,) = await gw.provider.list_replicas("a", "openfaas-fn")
    gw.provider.emit_log(replica.container_id, "first line")
    gw.provider.emit_log(replica.container_id, "second line")
    resp = await gw.client.get("/system/logs?name=a&tail=1", headers=AUTH)
    assert resp.status == 200 and resp.headers["Content-Type"].startswith("application/x-ndjson")
    import json

    lines = [json.loads(line) for line in (await resp.text()).splitlines()]
    assert [entry["text"] for entry in lines] == ["second line"]
    assert set(lines[0]) == {"name", "namespace", "instance", "timestamp", "text"}
    resp = await gw.client.get("/system/logs?name=ghost", headers=AUTH)
    assert resp.status == 404
    resp = await gw.client.get("/system/logs?name=a&since=yesterday", headers=AUTH)
    assert resp.status == 400


async def test_faas_cli_shaped_requests(make_gateway: GatewayFactory) -> None:
    """The bodies faas-cli (Go) sends: nil slices and maps marshal as null, empty strings for
    unset fields, deprecated fields present; PUT first, POST after a 404."""
    gw = await make_gateway()
    body = {
        "service": "cli",
        "image": "fake/cli:latest",
        "network": "",
        "envProcess": "",
        "envVars": None,
        "constraints": None,
        "secrets": None,
        "labels": None,
        "annotations": None,
        "limits": None,
        "requests": None,
        "readOnlyRootFilesystem": False,
        "registryAuth": "",
        "namespace": "",
    }
    resp = await gw.client.put("/system/functions", json=body, headers=AUTH)
    assert resp.status == 404
    resp = await gw.client.post("/system/functions", json=body, headers=AUTH)
    assert resp.status == 202, await resp.text()
    status = await gw.wait_available("cli")
    assert status["labels"] == {} and status["annotations"] == {}
    assert "envProcess" not in status and "envVars" not in status and "limits" not in status
    resp = await gw.client.put("/system/functions", json=body, headers=AUTH)
    assert resp.status == 202
    resp = await gw.client.get(
        "/system/logs?name=cli&namespace=openfaas-fn&follow=false&tail=-1", headers=AUTH
    )
    assert resp.status == 200
