"""Shared request parsing for gateway handlers: JSON bodies, query values, names."""

from __future__ import annotations

import json
from collections.abc import Mapping
from datetime import datetime
from typing import Any

from aiohttp import web

from runtime.errors import InvalidSpec
from runtime.names import DEFAULT_NAMESPACE, check_name

MAX_JSON_BYTES = 1024 * 1024


async def json_object(request: web.Request) -> dict[str, Any]:
    """The request body as a JSON object; InvalidSpec / JSONDecodeError otherwise."""
    if request.content_length is not None and request.content_length > MAX_JSON_BYTES:
        raise InvalidSpec(f"request body is larger than {MAX_JSON_BYTES} bytes")
    raw = await request.read()
    if not raw.strip():
        raise InvalidSpec("request body is empty; a JSON object is required")
    body = json.loads(raw)
    if not isinstance(body, dict):
        raise InvalidSpec("request body must be a JSON object")
    return body


def namespace_arg(query: Mapping[str, str], default: str = DEFAULT_NAMESPACE) -> str:
    return check_name(query.get("namespace") or default, "namespace")


def int_arg(query: Mapping[str, str], name: str) -> int | None:
    raw = query.get(name)
    if raw is None or raw == "":
        return None
    try:
        return int(raw)
    except ValueError:
        raise InvalidSpec(f"query parameter {name}: {raw!r} is not a whole number") from None


def bool_arg(query: Mapping[str, str], name: str) -> bool:
    raw = (query.get(name) or "").lower()
    if raw in ("", "0", "false", "no"):
        return False
    if raw in ("1", "true", "yes"):
        return True
    raise InvalidSpec(f"query parameter {name}: {raw!r} is not true or false")


def time_arg(query: Mapping[str, str], name: str) -> datetime | None:
    raw = query.get(name)
    if not raw:
        return None
    try:
        value = datetime.fromisoformat(raw.replace("Z", "+00:00"))
    except ValueError:
        raise InvalidSpec(f"query parameter {name}: {raw!r} is not an RFC 3339 time") from None
    if value.tzinfo is None:
        raise InvalidSpec(f"query parameter {name}: {raw!r} needs a time zone (e.g. Z)")
    return value
