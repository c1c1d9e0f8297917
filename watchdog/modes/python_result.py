"""Turn what an OpenFaaS python3-http ``handle()`` returns into an HTTP response.

The contract of the python3-http template: ``None`` → 200 with an empty body; ``str`` or
``bytes`` → 200 with that body; a dict with ``statusCode`` (default 200), ``body`` and
``headers``. A dict or list body becomes JSON. Like the template (Flask), text bodies default
to ``text/html; charset=utf-8`` unless the handler sets ``Content-Type``.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from watchdog.http11 import Headers, Response

DEFAULT_CONTENT_TYPE = "text/html; charset=utf-8"
JSON_CONTENT_TYPE = "application/json"
_DEFAULT_HEADERS = [("Content-Type", DEFAULT_CONTENT_TYPE)]
_DEFAULT_INDEX = {"content-type": DEFAULT_CONTENT_TYPE}
# The server frames the body itself; a handler's own framing headers would corrupt the
# connection.
_BAD_NAME = frozenset(":\r\n \t")
_FRAMING = frozenset({"content-length", "transfer-encoding", "connection", "keep-alive"})


class ResultError(Exception):
    """The handler returned something that is not a valid python3-http result."""


def to_response(result: object) -> Response:
    """Map a handler result to a response; raise ResultError for an unsupported result."""
    if isinstance(result, str):
        return _text_response(200, result.encode())
    if result is None:
        return Response(200)
    if isinstance(result, bytes | bytearray | memoryview):
        return _text_response(200, bytes(result))
    if isinstance(result, Mapping):
        return _dict_response(result)
    raise ResultError(
        f"unsupported return type {type(result).__name__} (return None, str, bytes or dict)"
    )


def _text_response(status: int, body: bytes) -> Response:
    return Response(status, body, Headers._trusted(list(_DEFAULT_HEADERS), dict(_DEFAULT_INDEX)))


def _dict_response(result: Mapping[Any, Any]) -> Response:
    status = _status(result.get("statusCode", 200))
    body, content_type = _body(result.get("body"))
    raw_headers = result.get("headers")
    if content_type is DEFAULT_CONTENT_TYPE and raw_headers is None:
        return Response(
            status, body, Headers._trusted(list(_DEFAULT_HEADERS), dict(_DEFAULT_INDEX))
        )
    headers = Headers()
    if content_type:
        headers.add("Content-Type", content_type)
    for name, value in _header_items(raw_headers):
        if name.lower() not in _FRAMING:
            headers[name] = value  # the handler's Content-Type wins over ours
    return Response(status, body, headers)


def _status(raw: object) -> int:
    try:
        status: int = int(raw)  # type: ignore[call-overload]
    except (TypeError, ValueError):
        raise ResultError(f"statusCode {raw!r} is not a number") from None
    if isinstance(raw, bool) or not 100 <= status <= 599:
        raise ResultError(f"statusCode {raw!r} is not an HTTP status")
    return status


def _body(raw: object) -> tuple[bytes, str | None]:
    if raw is None:
        return b"", None
    if isinstance(raw, str):
        return raw.encode(), DEFAULT_CONTENT_TYPE
    if isinstance(raw, bytes | bytearray | memoryview):
        return bytes(raw), DEFAULT_CONTENT_TYPE
    if isinstance(raw, dict | list):
        import json  # only handlers that return JSON bodies pay for the import

        try:
            text = json.dumps(raw, separators=(",", ":"), ensure_ascii=False)
        except (TypeError, ValueError) as exc:
            raise ResultError(f"body is not JSON serialisable: {exc}") from None
        return text.encode(), JSON_CONTENT_TYPE
    return str(raw).encode(), DEFAULT_CONTENT_TYPE


def _header_items(raw: object) -> list[tuple[str, str]]:
    if raw is None:
        return []
    pairs: Iterable[Any] = raw.items() if isinstance(raw, Mapping) else raw  # type: ignore[assignment]
    try:
        # Besides a dict, the template passes a list of (name, value) pairs through to Flask.
        items = [(str(name), str(value)) for name, value in pairs]
    except (TypeError, ValueError):
        raise ResultError(f"headers {raw!r} are not a dict of name: value") from None
    for name, value in items:
        if not name or any(char in name for char in _BAD_NAME) or "\r" in value or "\n" in value:
            raise ResultError(f"header {name!r}: {value!r} cannot be sent")
    return items
