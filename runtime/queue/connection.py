"""The daemon's NATS connection: reconnecting for ever, logging state changes, and checked at
connect time for what the async queue needs (version, JetStream, max_payload)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import Any

from nats.aio.client import Client as NATS
from nats.errors import Error as NatsError
from nats.js.errors import APIError

from runtime.queue.errors import NatsServerError, QueueUnavailable
from runtime.queue.nats_server import check_version

log = logging.getLogger("localfaas.nats")


def redacted(url: str) -> str:
    """The URL without its credentials, for logs and API answers."""
    scheme, sep, rest = url.partition("://")
    if "@" in rest:
        rest = "***@" + rest.rsplit("@", 1)[1]
    return scheme + sep + rest


async def connect(
    url: str,
    *,
    name: str = "localfaas",
    connect_timeout_s: float = 2.0,
    reconnect_wait_s: float = 0.25,
    min_max_payload: int = 0,
) -> NATS:
    """Connect and check the server. QueueUnavailable if it cannot be reached now (within
    twice the connect timeout), NatsServerError (with what to do) if it lacks what localfaas
    needs."""
    shown = redacted(url)
    last_error: list[Exception] = []
    connected = False

    async def disconnected() -> None:
        # Not for closing a first connection that never came up, nor for our own close().
        if connected and not nc.is_closed:
            log.warning("nats %s disconnected from %s; reconnecting", name, shown)

    async def reconnected() -> None:
        log.info("nats %s reconnected to %s", name, shown)

    async def error(exc: Exception) -> None:
        # Reconnect attempts report every refused connection; the state lines above suffice.
        last_error[:] = [exc]
        log.debug("nats %s client error: %s", name, exc)

    nc = NATS()
    # nats-py annotates these as int; fractions of a second work (they go to asyncio).
    timing: dict[str, Any] = {
        "connect_timeout": connect_timeout_s,
        "reconnect_time_wait": reconnect_wait_s,
    }
    try:
        # With max_reconnect_attempts=-1 nats-py retries the *first* connection for ever too,
        # so without a bound an unreachable server would never be reported as such.
        async with asyncio.timeout(2 * connect_timeout_s):
            await nc.connect(
                url,
                name=name,
                max_reconnect_attempts=-1,
                allow_reconnect=True,
                disconnected_cb=disconnected,
                reconnected_cb=reconnected,
                error_cb=error,
                **timing,
            )
        connected = True
    except (NatsError, OSError, TimeoutError) as exc:
        with contextlib.suppress(Exception):
            await nc.close()
        reason: BaseException = exc
        if isinstance(exc, TimeoutError) and last_error:
            reason = last_error[-1]
        raise QueueUnavailable(
            f"cannot connect to NATS at {shown}: {str(reason) or type(reason).__name__}"
        ) from exc
    try:
        await check_server(nc, shown, min_max_payload=min_max_payload)
    except BaseException:
        await nc.close()
        raise
    log.info("nats %s connected to %s (server %s)", name, shown, server_version(nc))
    return nc


def server_version(nc: NATS) -> str:
    version = nc.connected_server_version
    return f"{version.major}.{version.minor}.{version.patch}"


async def check_server(nc: NATS, where: str, *, min_max_payload: int = 0) -> None:
    check_version(server_version(nc), f"the NATS server at {where}")
    try:
        await nc.jetstream().account_info()
    except APIError as exc:
        raise NatsServerError(
            f"the NATS server at {where} has no JetStream ({exc.description}); start it with "
            "-js (and a store dir), or drop --nats-url to use the embedded server"
        ) from exc
    except (NatsError, TimeoutError) as exc:
        raise NatsServerError(
            f"the NATS server at {where} did not answer a JetStream request ({exc}); is "
            "JetStream enabled?"
        ) from exc
    if min_max_payload and nc.max_payload < min_max_payload:
        raise NatsServerError(
            f"the NATS server at {where} allows messages of {nc.max_payload} bytes; async bodies "
            f"need {min_max_payload} (set max_payload in its config)"
        )
