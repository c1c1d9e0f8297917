"""`/system/openapi.json`: the OpenFaaS gateway spec (MIT, openfaas/faas) plus our extensions."""

from __future__ import annotations

import functools
import json
from importlib import resources
from typing import Any

import yaml
from aiohttp import web

from runtime import __version__


@functools.cache
def openapi_document() -> bytes:
    text = resources.files("runtime.gateway").joinpath("openapi.yml").read_text()
    spec: dict[str, Any] = yaml.safe_load(text)
    spec["info"]["title"] = "localfaas gateway (OpenFaaS-compatible)"
    spec["info"]["version"] = __version__
    paths = spec.setdefault("paths", {})
    for path, summary in (
        ("/system/namespace/{name}", "Create (POST) or delete (DELETE) a namespace"),
    ):
        paths[path] = {
            "post": {
                "summary": summary,
                "responses": {"201": {"description": "Created"}, "409": {"description": "Exists"}},
            },
            "delete": {
                "summary": summary,
                "responses": {
                    "202": {"description": "Deleted"},
                    "404": {"description": "Not Found"},
                },
            },
        }
    return json.dumps(spec).encode()


async def openapi_handler(request: web.Request) -> web.Response:
    return web.Response(body=openapi_document(), content_type="application/json")
