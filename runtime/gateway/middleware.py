"""Cross-cutting HTTP concerns: error → status mapping (one place) and basic auth on /system."""

from __future__ import annotations

import base64
import binascii
import hmac
import json
import logging
from collections.abc import Awaitable, Callable

from aiohttp import web

from runtime.errors import (
    BackendUnavailable,
    BuildFailed,
    Conflict,
    FunctionNotFound,
    InvalidSpec,
    LocalFaasError,
    NoReadyReplica,
    PayloadTooLarge,
    UpstreamFailed,
    UpstreamTimeout,
)
from runtime.queue.errors import CallNotFound

log = logging.getLogger("localfaas.gateway")

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

_STATUS: list[tuple[type[Exception], int]] = [
    (InvalidSpec, 400),
    (FunctionNotFound, 404),
    (CallNotFound, 404),
    (Conflict, 409),
    (PayloadTooLarge, 413),
    (BackendUnavailable, 503),
    (NoReadyReplica, 503),
    (UpstreamFailed, 502),
    (UpstreamTimeout, 504),
    (BuildFailed, 500),
]


def status_for(exc: LocalFaasError) -> int:
    for kind, status in _STATUS:
        if isinstance(exc, kind):
            return status
    return 500


def error_response(status: int, message: str, *, retry_after_s: int | None = None) -> web.Response:
    # OpenFaaS answers errors as plain text; faas-cli prints the body as the reason.
    headers = {"Retry-After": str(retry_after_s)} if retry_after_s is not None else None
    return web.Response(status=status, text=message + "\n", headers=headers)


@web.middleware
async def errors_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    try:
        return await handler(request)
    except LocalFaasError as exc:
        status = status_for(exc)
        retry_after = getattr(exc, "retry_after_s", None)
        if status == 503 and retry_after is None:
            retry_after = 5
        return error_response(status, str(exc), retry_after_s=retry_after)
    except json.JSONDecodeError as exc:
        return error_response(
            400, f"malformed JSON body: {exc.msg} at line {exc.lineno} column {exc.colno}"
        )
    except web.HTTPException:
        raise
    except Exception:
        log.exception("unhandled error on %s %s", request.method, request.path)
        return error_response(500, "internal error; see the daemon log")


class BasicAuth:
    """Basic auth for `/system/*`, compared in constant time."""

    def __init__(self, user: str, password: str) -> None:
        self._expected = f"{user}:{password}".encode()

    def check(self, header: str | None) -> bool:
        if not header or not header.startswith("Basic "):
            return False
        try:
            given = base64.b64decode(header[6:].strip(), validate=True)
        except (binascii.Error, ValueError):
            return False
        return hmac.compare_digest(given, self._expected)

    @web.middleware
    async def middleware(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        if request.path.startswith("/system/") and not self.check(
            request.headers.get("Authorization")
        ):
            return web.Response(
                status=401,
                text="unauthorized: valid basic auth credentials are required for /system\n",
                headers={"WWW-Authenticate": 'Basic realm="localfaas"'},
            )
        return await handler(request)
