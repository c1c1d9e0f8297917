"""`/system/*` handlers: parse → validate → one call → respond."""

from __future__ import annotations

import base64
import binascii
import json
import platform
from datetime import UTC, datetime
from typing import Any

from aiohttp import web

from runtime import __version__
from runtime.errors import Conflict, FunctionNotFound, InvalidSpec
from runtime.functions import FunctionRuntime
from runtime.gateway.parsing import bool_arg, int_arg, json_object, namespace_arg, time_arg
from runtime.gateway.state import SERVICES, Services
from runtime.models import FunctionSpec
from runtime.names import DEFAULT_NAMESPACE, check_name
from runtime.router import ReplicaState

MAX_MANUAL_REPLICAS = 100
routes = web.RouteTableDef()


def _rfc3339(value: datetime) -> str:
    return value.astimezone(UTC).isoformat().replace("+00:00", "Z")


def function_status(fn: FunctionRuntime) -> dict[str, Any]:
    status = fn.spec.to_json()
    status["replicas"] = fn.desired_replicas
    status["availableReplicas"] = fn.pool.available_count()
    # Ours: replicas in the paused idle tier (resume in milliseconds), not counted as available.
    status["pausedReplicas"] = len(fn.pool.in_state(ReplicaState.PAUSED))
    status["invocationCount"] = fn.invocation_count
    status["createdAt"] = _rfc3339(fn.created_at)
    return status


def _known_namespace(services: Services, namespace: str) -> str:
    if services.store.get_namespace(namespace) is None:
        raise FunctionNotFound(f"namespace {namespace!r} not found")
    return namespace


@routes.get("/system/functions")
async def list_functions(request: web.Request) -> web.Response:
    services = request.app[SERVICES]
    namespace = _known_namespace(services, namespace_arg(request.query))
    return web.json_response([function_status(fn) for fn in services.functions.list(namespace)])


@routes.get("/system/function/{name}")
async def get_function(request: web.Request) -> web.Response:
    services = request.app[SERVICES]
    name = check_name(request.match_info["name"], "function name")
    fn = services.functions.get(name, namespace_arg(request.query))
    return web.json_response(function_status(fn))


@routes.post("/system/functions")
async def deploy_function(request: web.Request) -> web.Response:
    services = request.app[SERVICES]
    spec = FunctionSpec.from_json(await json_object(request))
    try:
        services.functions.get(spec.name, spec.namespace)
    except FunctionNotFound:
        pass
    else:
        raise Conflict(
            f"function {spec.name!r} already exists in namespace {spec.namespace!r}; "
            "use PUT /system/functions to update it"
        )
    _known_namespace(services, spec.namespace)
    await services.functions.deploy(spec, update=False)
    return web.Response(status=202, text=f"deployed {spec.qualified_name}\n")


@routes.put("/system/functions")
async def update_function(request: web.Request) -> web.Response:
    services = request.app[SERVICES]
    spec = FunctionSpec.from_json(await json_object(request))
    await services.functions.deploy(spec, update=True)
    return web.Response(status=202, text=f"updated {spec.qualified_name}\n")


@routes.delete("/system/functions")
async def delete_function(request: web.Request) -> web.Response:
    services = request.app[SERVICES]
    body = await json_object(request)
    name = check_name(body.get("functionName"), "functionName")
    namespace = check_name(body.get("namespace") or DEFAULT_NAMESPACE, "namespace")
    await services.functions.delete(name, namespace)
    return web.Response(status=202, text=f"deleted {name}.{namespace}\n")


@routes.post("/system/scale-function/{name}")
async def scale_function(request: web.Request) -> web.Response:
    services = request.app[SERVICES]
    name = check_name(request.match_info["name"], "function name")
    body = await json_object(request)
    if body.get("serviceName") not in (None, "", name):
        raise InvalidSpec(f"serviceName {body['serviceName']!r} does not match the path ({name!r})")
    namespace = check_name(
        body.get("namespace") or request.query.get("namespace") or DEFAULT_NAMESPACE, "namespace"
    )
    replicas = body.get("replicas")
    if isinstance(replicas, bool) or not isinstance(replicas, int):
        raise InvalidSpec("replicas must be a whole number")
    if replicas < 0:
        raise InvalidSpec(f"replicas must not be negative (got {replicas})")
    fn = services.functions.get(name, namespace)
    limit = min(fn.scaling.max, MAX_MANUAL_REPLICAS)
    if replicas > limit:
        raise InvalidSpec(f"replicas {replicas} is above the maximum of {limit} for {name}")
    await services.functions.scale(name, namespace, replicas)
    return web.Response(status=202, text=f"scaling {name}.{namespace} to {replicas}\n")


# -- secrets -----------------------------------------------------------------------------------


def _secret_value(body: dict[str, Any]) -> bytes:
    if isinstance(body.get("value"), str) and body["value"] != "":
        return str(body["value"]).encode()
    raw = body.get("rawValue")
    if isinstance(raw, str) and raw:
        try:
            return base64.b64decode(raw, validate=True)
        except (binascii.Error, ValueError):
            raise InvalidSpec("rawValue must be base64") from None
    raise InvalidSpec("a secret needs a non-empty value or rawValue")


def _secret_target(services: Services, body: dict[str, Any]) -> tuple[str, str]:
    name = check_name(body.get("name"), "secret name")
    namespace = _known_namespace(
        services, check_name(body.get("namespace") or DEFAULT_NAMESPACE, "namespace")
    )
    return name, namespace


@routes.get("/system/secrets")
async def list_secrets(request: web.Request) -> web.Response:
    services = request.app[SERVICES]
    namespace = _known_namespace(services, namespace_arg(request.query))
    return web.json_response(
        [{"name": s.name, "namespace": s.namespace} for s in services.store.list_secrets(namespace)]
    )


@routes.post("/system/secrets")
async def create_secret(request: web.Request) -> web.Response:
    services = request.app[SERVICES]
    body = await json_object(request)
    name, namespace = _secret_target(services, body)
    value = _secret_value(body)
    services.store.create_secret(name, namespace)  # Conflict when it exists
    try:
        services.secrets.put(namespace, name, value)
    except BaseException:
        services.store.delete_secret(name, namespace)
        raise
    return web.Response(status=201, text=f"created secret {name}\n")


@routes.put("/system/secrets")
async def update_secret(request: web.Request) -> web.Response:
    services = request.app[SERVICES]
    body = await json_object(request)
    name, namespace = _secret_target(services, body)
    value = _secret_value(body)
    if services.store.get_secret(name, namespace) is None:
        raise FunctionNotFound(f"secret {name!r} not found in namespace {namespace!r}")
    services.secrets.put(namespace, name, value)
    services.store.update_secret(name, namespace)
    services.functions.secret_changed(namespace, name)
    return web.Response(status=200, text=f"updated secret {name}\n")


@routes.delete("/system/secrets")
async def delete_secret(request: web.Request) -> web.Response:
    services = request.app[SERVICES]
    body = await json_object(request)
    name, namespace = _secret_target(services, body)
    if not services.store.delete_secret(name, namespace):
        raise FunctionNotFound(f"secret {name!r} not found in namespace {namespace!r}")
    services.secrets.delete(namespace, name)
    return web.Response(status=204)


# -- logs, namespaces, info ----------------------------------------------------------------------


@routes.get("/system/logs")
async def function_logs(request: web.Request) -> web.StreamResponse:
    services = request.app[SERVICES]
    query = request.query
    name = check_name(query.get("name"), "name")
    namespace = namespace_arg(query)
    services.functions.get(name, namespace)
    tail = int_arg(query, "tail")
    follow = bool_arg(query, "follow")
    since = time_arg(query, "since")
    instance = query.get("instance") or None
    replicas = await services.provider.list_replicas(name, namespace)
    if instance is not None:
        replicas = [r for r in replicas if instance in (r.container_name, r.container_id)]
        if not replicas:
            raise FunctionNotFound(f"instance {instance!r} of {name}.{namespace} not found")
    response = web.StreamResponse(headers={"Content-Type": "application/x-ndjson"})
    await response.prepare(request)
    lines = services.provider.logs(
        replicas, tail=tail if tail and tail > 0 else None, since=since, follow=follow
    )
    # Closed explicitly: when a following client leaves, the Docker log streams end with it.
    try:
        async for line in lines:
            entry = {
                "name": line.function,
                "namespace": line.namespace,
                "instance": line.instance,
                "timestamp": _rfc3339(line.timestamp),
                "text": line.text,
            }
            await response.write(json.dumps(entry).encode() + b"\n")
    finally:
        aclose = getattr(lines, "aclose", None)
        if aclose is not None:
            await aclose()
    await response.write_eof()
    return response


@routes.get("/system/namespaces")
async def list_namespaces(request: web.Request) -> web.Response:
    return web.json_response([ns.name for ns in request.app[SERVICES].store.list_namespaces()])


@routes.post("/system/namespace/{name}")
async def create_namespace(request: web.Request) -> web.Response:
    services = request.app[SERVICES]
    name = check_name(request.match_info["name"], "namespace")
    services.store.create_namespace(name)  # Conflict when it exists
    return web.Response(status=201, text=f"created namespace {name}\n")


@routes.delete("/system/namespace/{name}")
async def delete_namespace(request: web.Request) -> web.Response:
    services = request.app[SERVICES]
    name = _known_namespace(services, check_name(request.match_info["name"], "namespace"))
    services.store.delete_namespace(name)  # Conflict for the default or a non-empty one
    return web.Response(status=202, text=f"deleted namespace {name}\n")


@routes.get("/system/info")
async def info(request: web.Request) -> web.Response:
    version = {"release": __version__, "sha": "", "commit_message": ""}
    return web.json_response(
        {
            "provider": {
                "provider": "localfaas",
                "orchestration": "docker",
                "version": {"release": __version__, "sha": ""},
            },
            "version": version,
            "arch": platform.machine(),
        }
    )
