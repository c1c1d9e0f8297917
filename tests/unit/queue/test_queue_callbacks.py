"""Callback URL guard: scheme, resolution, denied ranges, allow list, the daemon's /system API."""

from __future__ import annotations

import pytest
from multidict import CIMultiDict

from runtime.errors import InvalidSpec
from runtime.queue.callbacks import (
    CallbackGuard,
    CallbackPolicy,
    callback_headers,
    normalized_path,
    parse_callback_url,
)

DNS = {
    "receiver.example": ["203.0.113.10"],
    "localhost": ["127.0.0.1", "::1"],
    "metadata.example": ["169.254.169.254"],
    "mixed.example": ["203.0.113.10", "169.254.169.254"],
    "mapped.example": ["::ffff:169.254.169.254"],
    "gateway": ["172.17.0.1"],
}


async def fake_resolve(host: str, port: int) -> list[str]:
    if host in DNS:
        return DNS[host]
    try:
        import ipaddress

        return [str(ipaddress.ip_address(host))]
    except ValueError:
        raise OSError(f"cannot resolve {host}") from None


def guard(**kwargs: object) -> CallbackGuard:
    policy = CallbackPolicy.build(
        system_api=[("127.0.0.1", 8080), ("172.17.0.1", 8080)],
        **kwargs,  # type: ignore[arg-type]
    )
    return CallbackGuard(policy, fake_resolve)


@pytest.mark.parametrize(
    "url",
    [
        "http://receiver.example/cb",
        "https://receiver.example:8443/cb?x=1",
        "http://localhost:9000/cb",
        "http://127.0.0.1:8080/function/next",  # chaining through the gateway is fine
        "http://gateway:8080/async-function/next",
        "http://127.0.0.1:9000/system/anything",  # another service's /system
        "http://[::1]:9000/cb",
    ],
)
async def test_allowed(url: str) -> None:
    assert await guard().validate(url) is not None


@pytest.mark.parametrize(
    ("url", "why"),
    [
        ("ftp://receiver.example/x", "only http and https"),
        ("file:///etc/passwd", "only http and https"),
        ("receiver.example/cb", "only http and https"),
        ("http:///nohost", "no host"),
        ("http://user:pw@receiver.example/", "credentials"),
        ("http://nowhere.invalid/", "does not resolve"),
        ("http://169.254.169.254/latest/meta-data", "denied range"),
        ("http://metadata.example/", "denied range"),
        ("http://mixed.example/", "denied range"),  # one bad address is enough
        ("http://mapped.example/", "denied range"),
        ("http://[fd00:ec2::254]/", "denied range"),
        ("http://[fe80::1]/", "denied range"),
        ("http://0.0.0.0:8080/", "denied range"),
        ("http://127.0.0.1:8080/system/functions", "/system API"),
        ("http://localhost:8080/system/secrets", "/system API"),
        ("http://127.0.0.2:8080/system/info", "/system API"),
        ("http://[::1]:8080/system/info", "/system API"),
        ("http://gateway:8080/system/functions", "/system API"),
        ("http://127.0.0.1:8080//SYSTEM/./functions", "/system API"),
        ("http://127.0.0.1:8080/%73ystem/functions", "/system API"),
        ("http://127.0.0.1:8080/function/../system/functions", "/system API"),
    ],
)
async def test_refused(url: str, why: str) -> None:
    with pytest.raises(InvalidSpec, match=why.replace("/", "/")):
        await guard().validate(url)


async def test_allow_list_opens_a_denied_address_and_deny_list_closes_more() -> None:
    opened = guard(allow=["169.254.10.0/24"])
    assert await opened.validate("http://169.254.10.5/cb")
    with pytest.raises(InvalidSpec):
        await opened.validate("http://169.254.169.254/")
    closed = guard(extra_deny=["203.0.113.0/24"])
    with pytest.raises(InvalidSpec, match="denied range"):
        await closed.validate("http://receiver.example/cb")


async def test_wildcard_listener_guards_every_address() -> None:
    policy = CallbackPolicy.build(system_api=[("0.0.0.0", 8080)])
    g = CallbackGuard(policy, fake_resolve)
    with pytest.raises(InvalidSpec, match="/system"):
        await g.validate("http://receiver.example:8080/system/info")
    assert await g.validate("http://receiver.example:8081/system/info")


async def test_empty_callback_is_none() -> None:
    assert await guard().validate(None) is None
    assert await guard().validate("  ") is None


async def test_slow_resolver_is_refused() -> None:
    import asyncio

    async def slow(host: str, port: int) -> list[str]:
        await asyncio.sleep(10)
        return []

    g = CallbackGuard(CallbackPolicy(resolve_timeout_s=0.05), slow)
    with pytest.raises(InvalidSpec, match="does not resolve"):
        await g.validate("http://receiver.example/")


def test_bad_network_in_settings_is_named() -> None:
    with pytest.raises(InvalidSpec, match="not-a-net"):
        CallbackPolicy.build(extra_deny=["not-a-net"])


@pytest.mark.parametrize(
    ("raw", "path"),
    [
        ("/system", "/system"),
        ("//System//functions", "/system/functions"),
        ("/a/../system", "/system"),
        ("/%2e%2e/system", "/system"),
        ("/./x/./", "/x"),
        ("\\system", "/system"),
    ],
)
def test_normalized_path(raw: str, path: str) -> None:
    assert normalized_path(raw) == path


def test_parse_callback_url_default_port() -> None:
    assert parse_callback_url("https://x.example/cb").port == 443


def test_callback_headers() -> None:
    headers = callback_headers(
        CIMultiDict(
            [
                ("Content-Type", "application/json"),
                ("X-A", "1"),
                ("X-A", "2"),
                ("Content-Length", "9"),
                ("Transfer-Encoding", "chunked"),
                ("Connection", "close"),
            ]
        ),
        call_id="c1",
        function_name="fn.ns",
        status=201,
        duration_s=0.25,
        attempt=3,
    )
    assert headers.getall("X-A") == ["1", "2"]
    assert headers["Content-Type"] == "application/json"
    assert "Content-Length" not in headers and "Transfer-Encoding" not in headers
    assert "Connection" not in headers
    assert headers["X-Call-Id"] == "c1"
    assert headers["X-Function-Name"] == "fn.ns"
    assert headers["X-Function-Status"] == "201"
    assert headers["X-Duration-Seconds"] == "0.250000"
    assert headers["X-Call-Attempt"] == "3"
