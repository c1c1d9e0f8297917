"""`/system/openapi.json`: the OpenFaaS gateway spec (MIT, openfaas/faas) plus our extensions."""

from __future__ import annotations

import functools
import json
from importlib import resources
from typing import Any

import yaml
from aiohttp import web

from runtime import __version__


def _merge(base: dict[str, Any], extra: dict[str, Any]) -> None:
    """Add ``extra`` into ``base``: mappings merge key by key, lists are extended, and any
    other value in ``extra`` wins."""
    for key, value in extra.items():
        current = base.get(key)
        if isinstance(current, dict) and isinstance(value, dict):
            _merge(current, value)
        elif isinstance(current, list) and isinstance(value, list):
            current.extend(item for item in value if item not in current)
        else:
            base[key] = value


def _load(name: str) -> dict[str, Any]:
    document: dict[str, Any] = yaml.safe_load(
        resources.files("runtime.gateway").joinpath(name).read_text()
    )
    return document


@functools.cache
def openapi_document() -> bytes:
    spec = _load("openapi.yml")
    spec["info"]["title"] = "localfaas gateway (OpenFaaS-compatible)"
    spec["info"]["version"] = __version__
    _merge(spec, _load("openapi-localfaas.yml"))
    return json.dumps(spec).encode()


async def openapi_handler(request: web.Request) -> web.Response:
    return web.Response(body=openapi_document(), content_type="application/json")
