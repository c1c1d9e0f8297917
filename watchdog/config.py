"""The watchdog's settings, read once from of-watchdog environment variables.

``WatchdogConfig.from_env`` is the only place that looks at the environment; everything else
gets the frozen config. A bad value raises ``ConfigError`` whose message names the variable
and the value, and ``python -m watchdog`` turns that into exit status 2.
"""

from __future__ import annotations

import re
import socket
from collections.abc import Callable, Mapping
from types import MappingProxyType
from typing import TypeVar

from watchdog.durations import parse_duration

MODES = ("python", "http", "fork", "static")
MEBIBYTE = 1024 * 1024

_T = TypeVar("_T")
_HANDLER = re.compile(r"[A-Za-z_]\w*(?:\.[A-Za-z_]\w*)*:[A-Za-z_]\w*")
_SIZE = re.compile(r"(\d+)\s*(Ki|Mi|Gi)?")
_SIZE_FACTOR = {None: 1, "Ki": 1024, "Mi": MEBIBYTE, "Gi": 1024 * MEBIBYTE}
_TRUE = frozenset({"1", "t", "true", "yes", "y", "on"})
_FALSE = frozenset({"0", "f", "false", "no", "n", "off"})


class ConfigError(ValueError):
    """A watchdog variable has a bad value; the message is the one line shown to the user."""


class WatchdogConfig:
    """Everything the watchdog needs to know, with units in the names.

    Immutable and compared by value (``env`` aside), like the frozen dataclass it was:
    written out by hand because generating the dataclass cost ~3 ms of every cold start.
    """

    mode: str
    fprocess: str
    upstream_url: str
    read_timeout_s: float
    write_timeout_s: float
    exec_timeout_s: float  # 0 means no limit
    healthcheck_interval_s: float
    max_inflight: int  # 0 means unlimited
    prefix_logs: bool
    ready_path: str
    handler: str
    port: int
    metrics_port: int
    static_path: str
    max_body_bytes: int
    content_type: str  # fork mode: response Content-Type override
    hostname: str
    # The environment children get (fork mode adds Http_* to it); kept here so no other
    # module reads os.environ. Not part of equality or repr.
    env: Mapping[str, str]

    __slots__ = (
        "content_type",
        "env",
        "exec_timeout_s",
        "fprocess",
        "handler",
        "healthcheck_interval_s",
        "hostname",
        "max_body_bytes",
        "max_inflight",
        "metrics_port",
        "mode",
        "port",
        "prefix_logs",
        "read_timeout_s",
        "ready_path",
        "static_path",
        "upstream_url",
        "write_timeout_s",
    )

    def __init__(
        self,
        *,
        mode: str = "python",
        fprocess: str = "",
        upstream_url: str = "http://127.0.0.1:8082",
        read_timeout_s: float = 10.0,
        write_timeout_s: float = 10.0,
        exec_timeout_s: float = 10.0,
        # Not of-watchdog's default (it reuses write_timeout): 5 s leaves half of Docker's
        # default 10 s stop grace period for the requests still in flight.
        healthcheck_interval_s: float = 5.0,
        max_inflight: int = 100,
        prefix_logs: bool = True,
        ready_path: str = "",
        handler: str = "function.handler:handle",
        port: int = 8080,
        metrics_port: int = 8081,
        static_path: str = "/home/app/public",
        max_body_bytes: int = 10 * MEBIBYTE,
        content_type: str = "",
        hostname: str = "localhost",
        env: Mapping[str, str] | None = None,
    ) -> None:
        init = object.__setattr__
        init(self, "mode", mode)
        init(self, "fprocess", fprocess)
        init(self, "upstream_url", upstream_url)
        init(self, "read_timeout_s", read_timeout_s)
        init(self, "write_timeout_s", write_timeout_s)
        init(self, "exec_timeout_s", exec_timeout_s)
        init(self, "healthcheck_interval_s", healthcheck_interval_s)
        init(self, "max_inflight", max_inflight)
        init(self, "prefix_logs", prefix_logs)
        init(self, "ready_path", ready_path)
        init(self, "handler", handler)
        init(self, "port", port)
        init(self, "metrics_port", metrics_port)
        init(self, "static_path", static_path)
        init(self, "max_body_bytes", max_body_bytes)
        init(self, "content_type", content_type)
        init(self, "hostname", hostname)
        init(self, "env", MappingProxyType({}) if env is None else env)

    def _values(self) -> tuple[object, ...]:
        return tuple(getattr(self, name) for name in self.__slots__ if name != "env")

    def __eq__(self, other: object) -> bool:
        if other.__class__ is not self.__class__:
            return NotImplemented
        return self._values() == other._values()

    def __hash__(self) -> int:
        return hash(self._values())

    def __repr__(self) -> str:
        fields = ", ".join(
            f"{name}={getattr(self, name)!r}" for name in self.__slots__ if name != "env"
        )
        return f"WatchdogConfig({fields})"

    def __setattr__(self, name: str, value: object) -> None:
        raise AttributeError(f"WatchdogConfig is immutable: cannot set {name!r}")

    def __delattr__(self, name: str) -> None:
        raise AttributeError(f"WatchdogConfig is immutable: cannot delete {name!r}")

    @property
    def fprocess_argv(self) -> list[str]:
        """``fprocess`` split like a shell would (validated in ``from_env``)."""
        import shlex  # http and fork mode only: python mode's cold start skips it

        return shlex.split(self.fprocess)

    @property
    def handler_module(self) -> str:
        return self.handler.partition(":")[0]

    @property
    def handler_function(self) -> str:
        return self.handler.partition(":")[2]

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> WatchdogConfig:
        """Build the config from ``env``; raise ConfigError naming the first bad variable."""
        # An empty value means "unset", as in of-watchdog, which falls back to the default.
        values = {key: value.strip() for key, value in env.items() if value.strip()}
        defaults = cls()

        def get(name: str, parse: Callable[[str, str], _T], default: _T) -> _T:
            raw = values.get(name)
            return default if raw is None else parse(name, raw)

        mode = get("mode", _mode, defaults.mode)
        # of-watchdog lets the longer names win when both are set.
        fprocess = values.get("function_process", values.get("fprocess", ""))
        upstream_url = values.get("http_upstream_url", values.get("upstream_url"))
        write_timeout_s = get("write_timeout", _duration, defaults.write_timeout_s)
        if write_timeout_s <= 0:
            raise ConfigError(
                f"write_timeout: must be over 0s, got {values['write_timeout']!r} "
                "(it bounds how long a drain waits for requests in flight)"
            )
        config = cls(
            mode=mode,
            fprocess=fprocess,
            upstream_url=(
                _upstream("upstream_url", upstream_url)
                if upstream_url is not None
                else defaults.upstream_url
            ),
            read_timeout_s=get("read_timeout", _duration, defaults.read_timeout_s),
            write_timeout_s=write_timeout_s,
            exec_timeout_s=get("exec_timeout", _duration, defaults.exec_timeout_s),
            healthcheck_interval_s=get(
                "healthcheck_interval", _duration, defaults.healthcheck_interval_s
            ),
            max_inflight=get("max_inflight", _count, defaults.max_inflight),
            prefix_logs=get("prefix_logs", _bool, defaults.prefix_logs),
            ready_path=get("ready_path", _path, defaults.ready_path),
            handler=get("handler", _handler, defaults.handler),
            port=get("port", _port, defaults.port),
            metrics_port=get("metrics_port", _port, defaults.metrics_port),
            static_path=values.get("static_path", defaults.static_path),
            max_body_bytes=get("max_body_bytes", _size, defaults.max_body_bytes),
            content_type=values.get("content_type", ""),
            hostname=values.get("HOSTNAME") or socket.gethostname(),
            env=MappingProxyType(dict(env)),
        )
        config._check_combination()
        return config

    def _check_combination(self) -> None:
        if self.mode in ("http", "fork"):
            if not self.fprocess:
                raise ConfigError(
                    f"fprocess: required for mode={self.mode} (the command to run, "
                    "e.g. fprocess='node index.js')"
                )
            import shlex

            try:
                argv = shlex.split(self.fprocess)
            except ValueError as exc:
                raise ConfigError(f"fprocess: cannot split {self.fprocess!r}: {exc}") from None
            if not argv:
                raise ConfigError(f"fprocess: no command in {self.fprocess!r}")
        if self.port and self.port == self.metrics_port:
            raise ConfigError(
                f"metrics_port: {self.metrics_port} is also the function port "
                "(use a different port)"
            )


def _mode(name: str, raw: str) -> str:
    if raw not in MODES:
        raise ConfigError(f"{name}: invalid mode {raw!r} (use one of {', '.join(MODES)})")
    return raw


def _duration(name: str, raw: str) -> float:
    try:
        return parse_duration(raw)
    except ValueError:
        raise ConfigError(
            f"{name}: invalid duration {raw!r} (use seconds like 10 or a duration like 30s)"
        ) from None


def _is_number(raw: str) -> bool:
    return raw.isascii() and raw.isdigit()


def _count(name: str, raw: str) -> int:
    if not _is_number(raw):
        raise ConfigError(f"{name}: invalid count {raw!r} (use a whole number, 0 for unlimited)")
    return int(raw)


def _port(name: str, raw: str) -> int:
    if not _is_number(raw) or int(raw) > 65535:
        raise ConfigError(f"{name}: invalid port {raw!r} (use a number from 0 to 65535)")
    return int(raw)


def _size(name: str, raw: str) -> int:
    match = _SIZE.fullmatch(raw)
    size = int(match[1]) * _SIZE_FACTOR[match[2]] if match else 0
    if size <= 0:
        raise ConfigError(f"{name}: invalid size {raw!r} (use bytes like 1048576 or 10Mi)")
    return size


def _bool(name: str, raw: str) -> bool:
    lowered = raw.lower()
    if lowered in _TRUE:
        return True
    if lowered in _FALSE:
        return False
    raise ConfigError(f"{name}: invalid boolean {raw!r} (use true or false)")


def _path(name: str, raw: str) -> str:
    if any(char.isspace() for char in raw):
        raise ConfigError(f"{name}: invalid path {raw!r} (use a URL path like /ready)")
    return raw if raw.startswith("/") else "/" + raw


def _handler(name: str, raw: str) -> str:
    if not _HANDLER.fullmatch(raw):
        raise ConfigError(
            f"{name}: invalid handler {raw!r} (use module:function, e.g. function.handler:handle)"
        )
    return raw


def _upstream(name: str, raw: str) -> str:
    # Imported here: urllib.parse (with ipaddress) costs ~3 ms of a cold start, and only an
    # explicit upstream_url needs it.
    from urllib.parse import urlsplit

    try:
        parts = urlsplit(raw)
        _ = parts.port  # raises ValueError on a port that is not a number in range
    except ValueError:
        parts = None
    if (
        parts is None
        or parts.scheme != "http"
        or not parts.hostname
        or parts.query
        or parts.fragment
    ):
        raise ConfigError(
            f"{name}: invalid URL {raw!r} (use http://host:port, e.g. http://127.0.0.1:8082)"
        )
    return raw.rstrip("/")
