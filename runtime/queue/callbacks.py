"""Callback URLs: validated at enqueue, guarded again and pinned at send time, POSTed with retries.

The guard refuses non-http(s) URLs, unresolvable hosts, link-local / cloud-metadata addresses
(and anything on a configurable deny list unless on the allow list), and the daemon's own
``/system`` API. At send time the host is resolved again, every address is checked, and the
request goes to the checked address itself (Host header and TLS server name kept), so a DNS
answer that changes between check and connect cannot steer the callback elsewhere. Redirects
are never followed.
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import random
import socket
import time
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass, field
from urllib.parse import unquote

import aiohttp
from multidict import CIMultiDict
from yarl import URL

from runtime.errors import InvalidSpec

log = logging.getLogger("localfaas.queue")

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network
Resolver = Callable[[str, int], Awaitable[list[str]]]

DEFAULT_DENY: tuple[str, ...] = (
    "169.254.0.0/16",  # IPv4 link-local, incl. 169.254.169.254 (AWS/GCP/Azure metadata)
    "fe80::/10",  # IPv6 link-local
    "fd00:ec2::254/128",  # AWS IMDS over IPv6
    "0.0.0.0/8",  # "this host": connecting to it reaches local services
    "::/128",
    "224.0.0.0/4",  # multicast
    "ff00::/8",
    "255.255.255.255/32",
)

# Response headers that describe the function's connection, not its answer.
_NOT_FORWARDED = frozenset(
    {
        "connection",
        "keep-alive",
        "proxy-authenticate",
        "proxy-connection",
        "te",
        "trailer",
        "transfer-encoding",
        "upgrade",
        "content-length",
        "content-encoding",
        "date",
        "server",
    }
)


def _networks(items: Iterable[str]) -> tuple[IPNetwork, ...]:
    out: list[IPNetwork] = []
    for item in items:
        try:
            out.append(ipaddress.ip_network(item.strip(), strict=False))
        except ValueError:
            raise InvalidSpec(f"callback address list: {item!r} is not an IP network") from None
    return tuple(out)


def _plain(ip: IPAddress) -> IPAddress:
    """IPv4-mapped IPv6 (::ffff:169.254.169.254) is checked as the IPv4 address it reaches."""
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        return ip.ipv4_mapped
    return ip


def normalized_path(raw_path: str) -> str:
    """Percent-decoded, case-folded, dot segments and repeated slashes removed: what a router
    would match, so ``//SYSTEM/./%66unctions`` is seen as ``/system/functions``."""
    decoded = unquote(raw_path).lower().replace("\\", "/")
    parts: list[str] = []
    for segment in decoded.split("/"):
        if segment in ("", "."):
            continue
        if segment == "..":
            if parts:
                parts.pop()
            continue
        parts.append(segment)
    return "/" + "/".join(parts)


@dataclass(frozen=True)
class CallbackPolicy:
    """Where callbacks may go.

    ``deny``/``allow`` are IP networks (allow wins, so an operator can open one address of a
    denied range). ``system_api`` lists the daemon's own listen addresses (host, port): a
    callback to one of them (any loopback address counts for a loopback or wildcard listener)
    whose path is under ``/system`` is refused.
    """

    deny: tuple[IPNetwork, ...] = field(default_factory=lambda: _networks(DEFAULT_DENY))
    allow: tuple[IPNetwork, ...] = ()
    system_api: tuple[tuple[str, int], ...] = ()
    resolve_timeout_s: float = 2.0

    @classmethod
    def build(
        cls,
        *,
        extra_deny: Iterable[str] = (),
        allow: Iterable[str] = (),
        system_api: Iterable[tuple[str, int]] = (),
    ) -> CallbackPolicy:
        return cls(
            deny=_networks((*DEFAULT_DENY, *extra_deny)),
            allow=_networks(allow),
            system_api=tuple(system_api),
        )

    def refusal(self, address: str, port: int, path: str) -> str | None:
        """Why a callback to ``address:port`` + ``path`` is refused, or None. Pure."""
        try:
            ip = _plain(ipaddress.ip_address(address.split("%", 1)[0]))
        except ValueError:
            return f"{address!r} is not an IP address"
        if not any(ip in net for net in self.allow) and any(ip in net for net in self.deny):
            return f"address {ip} is in a denied range (link-local, metadata or deny list)"
        if self._is_system_api(ip, port) and normalized_path(path).startswith("/system"):
            return "the daemon's own /system API is not a callback target"
        return None

    def _is_system_api(self, ip: IPAddress, port: int) -> bool:
        for host, api_port in self.system_api:
            if api_port != port:
                continue
            try:
                listen = _plain(ipaddress.ip_address(host))
            except ValueError:
                listen = None
            if listen is None or listen.is_unspecified:
                return True  # a name or a wildcard listener: any address may reach it
            if listen.is_loopback and ip.is_loopback:
                return True
            if ip == listen:
                return True
        return False


async def system_resolver(host: str, port: int) -> list[str]:
    loop = asyncio.get_running_loop()
    infos = await loop.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    return list(dict.fromkeys(str(info[4][0]) for info in infos))


def parse_callback_url(raw: str) -> URL:
    """Syntax checks only: absolute http(s) URL with a host, no credentials. Pure."""
    text = raw.strip()
    try:
        url = URL(text)
    except (ValueError, TypeError):
        raise InvalidSpec(f"X-Callback-Url {raw!r} is not a URL") from None
    if url.scheme not in ("http", "https"):
        raise InvalidSpec(f"X-Callback-Url {raw!r}: only http and https callbacks are allowed")
    if not url.host:
        raise InvalidSpec(f"X-Callback-Url {raw!r} has no host")
    if url.user is not None or url.password is not None:
        raise InvalidSpec(f"X-Callback-Url {raw!r}: credentials in the URL are not allowed")
    if url.port is None:
        raise InvalidSpec(f"X-Callback-Url {raw!r} has no usable port")
    return url


@dataclass(frozen=True)
class Target:
    url: URL
    addresses: tuple[str, ...]


class CallbackGuard:
    def __init__(self, policy: CallbackPolicy | None = None, resolver: Resolver = system_resolver):
        self.policy = policy or CallbackPolicy()
        self._resolve = resolver

    async def check(self, raw: str) -> Target:
        """The URL and its allowed addresses; InvalidSpec (→ 400) saying why not."""
        url = parse_callback_url(raw)
        host = url.raw_host or ""
        port = url.port
        assert port is not None
        try:
            async with asyncio.timeout(self.policy.resolve_timeout_s):
                addresses = await self._resolve(host.strip("[]"), port)
        except (OSError, TimeoutError, UnicodeError):
            raise InvalidSpec(f"X-Callback-Url {raw!r}: host {host!r} does not resolve") from None
        if not addresses:
            raise InvalidSpec(f"X-Callback-Url {raw!r}: host {host!r} does not resolve")
        for address in addresses:
            reason = self.policy.refusal(address, port, url.raw_path)
            if reason is not None:
                raise InvalidSpec(f"X-Callback-Url {raw!r} is refused: {reason}")
        return Target(url, tuple(addresses))

    async def validate(self, raw: str | None) -> str | None:
        """For the enqueue handler: None stays None, a bad URL raises InvalidSpec."""
        if raw is None or raw.strip() == "":
            return None
        return str((await self.check(raw)).url)


@dataclass(frozen=True)
class CallbackResult:
    delivered: bool
    attempts: int
    status: int | None = None
    error: str | None = None


@dataclass(frozen=True)
class CallbackRetry:
    attempts: int = 5
    min_wait_s: float = 0.5
    max_wait_s: float = 10.0
    timeout_s: float = 10.0
    retry_codes: frozenset[int] = frozenset({408, 425, 429, 500, 502, 503, 504})


def callback_headers(
    response_headers: Mapping[str, str] | Iterable[tuple[str, str]],
    *,
    call_id: str,
    function_name: str,
    status: int,
    duration_s: float,
    attempt: int,
) -> CIMultiDict[str]:
    """What the receiver gets: the function's headers plus ours (OpenFaaS queue-worker names,
    and ``X-Call-Attempt``)."""
    pairs = response_headers.items() if isinstance(response_headers, Mapping) else response_headers
    headers: CIMultiDict[str] = CIMultiDict(
        (k, v) for k, v in pairs if k.lower() not in _NOT_FORWARDED
    )
    headers["X-Call-Id"] = call_id
    headers["X-Function-Name"] = function_name
    headers["X-Function-Status"] = str(status)
    headers["X-Duration-Seconds"] = f"{duration_s:.6f}"
    headers["X-Call-Attempt"] = str(attempt)
    return headers


class CallbackSender:
    """POSTs results to callback URLs: guarded, pinned to the checked address, no redirects,
    retried with jittered exponential back-off while the receiver fails."""

    def __init__(
        self,
        session: aiohttp.ClientSession,
        guard: CallbackGuard,
        retry: CallbackRetry | None = None,
        *,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
        rand: Callable[[], float] = random.random,
    ) -> None:
        self._session = session
        self._guard = guard
        self._retry = retry or CallbackRetry()
        self._sleep = sleep
        self._rand = rand

    async def send(self, raw_url: str, headers: CIMultiDict[str], body: bytes) -> CallbackResult:
        retry = self._retry
        status: int | None = None
        error: str | None = None
        for attempt in range(1, retry.attempts + 1):
            if attempt > 1:
                ceiling = min(retry.max_wait_s, retry.min_wait_s * 2 ** (attempt - 2))
                await self._sleep(retry.min_wait_s + self._rand() * (ceiling - retry.min_wait_s))
            try:
                target = await self._guard.check(raw_url)
            except InvalidSpec as exc:
                return CallbackResult(False, attempt, None, str(exc))  # never worth retrying
            started = time.monotonic()
            try:
                status = await self._post(target, headers, body)
                error = None
            except (aiohttp.ClientError, OSError, TimeoutError) as exc:
                status, error = None, f"{type(exc).__name__}: {exc}".rstrip(": ")
            elapsed_s = time.monotonic() - started
            if status is not None and status < 400:
                return CallbackResult(True, attempt, status)
            if status is not None and status not in retry.retry_codes:
                return CallbackResult(False, attempt, status, f"receiver answered {status}")
            log.info(
                "callback attempt %d to %s failed: %s (%.3fs)",
                attempt,
                target.url.host,
                error or f"status {status}",
                elapsed_s,
            )
        return CallbackResult(False, retry.attempts, status, error or f"receiver answered {status}")

    async def _post(self, target: Target, headers: CIMultiDict[str], body: bytes) -> int:
        url = target.url
        address = target.addresses[0]
        pinned = URL.build(
            scheme=url.scheme,
            host=f"[{address}]" if ":" in address else address,
            port=url.port,
            path=url.raw_path,
            query_string=url.raw_query_string,
            encoded=True,
        )
        name = url.raw_host or ""
        host = f"[{name}]" if ":" in name else name
        out = CIMultiDict(headers)
        out["Host"] = host if url.is_default_port() else f"{host}:{url.port}"
        kwargs: dict[str, object] = {}
        if url.scheme == "https":
            kwargs["server_hostname"] = name
        async with self._session.post(
            pinned,
            data=body,
            headers=out,
            allow_redirects=False,
            timeout=aiohttp.ClientTimeout(total=self._retry.timeout_s),
            **kwargs,  # type: ignore[arg-type]
        ) as resp:
            await resp.read()
            return resp.status
