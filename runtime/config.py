"""Settings: read once at the edge (flags > environment > defaults), frozen afterwards.

Nothing else in the daemon reads ``os.environ``; errors name the variable and the bad value.
"""

from __future__ import annotations

import ipaddress
import os
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from runtime.errors import InvalidSpec
from watchdog.durations import parse_duration

DEFAULT_BASE_IMAGE = "python:3.12-slim-bookworm"
OFFLINE_BASE_IMAGE = "localfaas/python-base:bookworm"


def default_state_dir(env: Mapping[str, str]) -> Path:
    """`/var/lib/localfaas` for root, else the XDG data dir, as faasd and friends do."""
    if hasattr(os, "geteuid") and os.geteuid() == 0:
        return Path("/var/lib/localfaas")
    data_home = env.get("XDG_DATA_HOME") or str(Path.home() / ".local" / "share")
    return Path(data_home) / "localfaas"


def default_cache_dir(env: Mapping[str, str]) -> Path:
    if hasattr(os, "geteuid") and os.geteuid() == 0:
        return Path("/var/cache/localfaas")
    cache_home = env.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(cache_home) / "localfaas"


def _port(name: str, raw: str) -> int:
    try:
        value = int(raw)
    except ValueError:
        raise InvalidSpec(f"{name}: invalid port {raw!r} (use a number from 1 to 65535)") from None
    if not 1 <= value <= 65535:
        raise InvalidSpec(f"{name}: invalid port {raw!r} (use a number from 1 to 65535)")
    return value


def _positive_int(name: str, raw: str) -> int:
    try:
        value = int(raw)
    except ValueError:
        value = 0
    if value <= 0:
        raise InvalidSpec(f"{name}: invalid value {raw!r} (use a whole number above 0)")
    return value


def _seconds(name: str, raw: str) -> float:
    try:
        value = parse_duration(raw)
    except ValueError:
        value = -1.0
    if value <= 0:
        raise InvalidSpec(f"{name}: invalid duration {raw!r} (use seconds like 30 or 30s, 2m)")
    return value


def _switch(name: str, raw: str) -> bool:
    lowered = raw.strip().lower()
    if lowered in ("1", "true", "yes", "on", "always"):
        return True
    if lowered in ("0", "false", "no", "off"):
        return False
    raise InvalidSpec(f"{name}: invalid value {raw!r} (use on or off)")


def _networks(name: str, raw: str) -> tuple[str, ...]:
    items = tuple(item.strip() for item in raw.split(",") if item.strip())
    for item in items:
        try:
            ipaddress.ip_network(item, strict=False)
        except ValueError:
            raise InvalidSpec(
                f"{name}: invalid network {item!r} in {raw!r} (use addresses or CIDRs, comma-separated)"
            ) from None
    return items


def _url(name: str, raw: str) -> str:
    if not raw.startswith(("nats://", "tls://", "ws://", "wss://")):
        raise InvalidSpec(f"{name}: invalid NATS URL {raw!r} (expected nats://host:port)")
    return raw


@dataclass(frozen=True)
class Settings:
    host: str = "127.0.0.1"
    port: int = 8080
    state_dir: Path = field(default_factory=lambda: default_state_dir(os.environ))
    cache_dir: Path = field(default_factory=lambda: default_cache_dir(os.environ))
    nats_url: str | None = None
    base_image: str = DEFAULT_BASE_IMAGE
    max_body_bytes: int = 10 * 1024 * 1024
    invoke_timeout_s: float = 60.0
    stop_functions: bool = False
    docker_url: str = "unix:///var/run/docker.sock"
    # Async invocations (embedded NATS unless nats_url is set).
    async_max_body_bytes: int = 1024 * 1024
    nats_port: int = 0  # embedded server: 0 picks a free port once and keeps it
    nats_fsync: bool = True  # fsync before ack; off only to measure what durability costs
    callback_allow: tuple[str, ...] = ()  # networks a callback may reach despite the deny list
    callback_deny: tuple[str, ...] = ()  # networks refused on top of link-local and metadata

    @classmethod
    def load(cls, env: Mapping[str, str], **flags: Any) -> Settings:
        """Build settings from the environment, then apply flags given on the command line.

        ``flags`` holding ``None`` mean "not given" and leave the environment's value in place.
        """
        values: dict[str, Any] = {
            "state_dir": default_state_dir(env),
            "cache_dir": default_cache_dir(env),
        }
        if raw := env.get("LOCALFAAS_HOST"):
            values["host"] = raw
        if raw := env.get("LOCALFAAS_PORT"):
            values["port"] = _port("LOCALFAAS_PORT", raw)
        if raw := env.get("LOCALFAAS_STATE_DIR"):
            values["state_dir"] = Path(raw)
        if raw := env.get("LOCALFAAS_CACHE_DIR"):
            values["cache_dir"] = Path(raw)
        if raw := env.get("LOCALFAAS_NATS_URL"):
            values["nats_url"] = _url("LOCALFAAS_NATS_URL", raw)
        if raw := env.get("LOCALFAAS_BASE_IMAGE"):
            values["base_image"] = raw
        if raw := env.get("DOCKER_HOST"):  # the Docker CLI's own variable, honoured as is
            values["docker_url"] = raw
        if raw := env.get("LOCALFAAS_MAX_BODY_BYTES"):
            values["max_body_bytes"] = _positive_int("LOCALFAAS_MAX_BODY_BYTES", raw)
        if raw := env.get("LOCALFAAS_INVOKE_TIMEOUT"):
            values["invoke_timeout_s"] = _seconds("LOCALFAAS_INVOKE_TIMEOUT", raw)
        if raw := env.get("LOCALFAAS_ASYNC_MAX_BODY_BYTES"):
            values["async_max_body_bytes"] = _positive_int("LOCALFAAS_ASYNC_MAX_BODY_BYTES", raw)
        if raw := env.get("LOCALFAAS_NATS_PORT"):
            values["nats_port"] = _port("LOCALFAAS_NATS_PORT", raw)
        if raw := env.get("LOCALFAAS_NATS_FSYNC"):
            values["nats_fsync"] = _switch("LOCALFAAS_NATS_FSYNC", raw)
        if raw := env.get("LOCALFAAS_CALLBACK_ALLOW"):
            values["callback_allow"] = _networks("LOCALFAAS_CALLBACK_ALLOW", raw)
        if raw := env.get("LOCALFAAS_CALLBACK_DENY"):
            values["callback_deny"] = _networks("LOCALFAAS_CALLBACK_DENY", raw)
        settings = cls(**values)
        given = {k: v for k, v in flags.items() if v is not None}
        if "port" in given:
            given["port"] = _port("--port", str(given["port"]))
        if "nats_url" in given:
            given["nats_url"] = _url("--nats-url", given["nats_url"])
        for key in ("state_dir", "cache_dir"):
            if key in given:
                given[key] = Path(given[key])
        return replace(settings, **given)
