"""HTTP/1.1 wire pieces: upstream request heads, response heads, the chunked decoder, the
front's request parser and the proxy's path handling (pure functions, table tests)."""

from __future__ import annotations

import pytest

from runtime.gateway.proxy import remove_dot_segments, split_target
from runtime.gateway.wire import parse_function_request, response_head
from runtime.upstream.http1 import (
    ChunkedDecoder,
    Framing,
    ProtocolError,
    encode_request_head,
    parse_response_head,
)


def head(method: str = "GET", **kwargs: object) -> bytes:
    args: dict[str, object] = {
        "target": "/p?q=1",
        "authority": "127.0.0.1:9",
        "headers": [("X-A", "1"), ("Connection", "x"), ("Host", "evil"), ("X-Call-Id", "old")],
        "extra": [("X-Call-Id", "new")],
        "skip": frozenset({"x-call-id"}),
        "body_length": None,
        "has_body": False,
    }
    args.update(kwargs)
    return encode_request_head(method, **args)  # type: ignore[arg-type]


def test_request_head_owns_framing_and_host() -> None:
    assert head() == (
        b"GET /p?q=1 HTTP/1.1\r\nHost: 127.0.0.1:9\r\nX-A: 1\r\nX-Call-Id: new\r\n\r\n"
    )
    assert b"Content-Length: 0\r\n" in head("POST")
    assert b"Content-Length: 5\r\n\r\n" in head("PUT", body_length=5, has_body=True)
    assert b"Transfer-Encoding: chunked\r\n\r\n" in head("POST", has_body=True)
    for owned in ("Content-Length", "Transfer-Encoding", "Expect", "TE", "Upgrade"):
        assert owned.encode() + b":" not in head(headers=[(owned, "9")])


def test_request_head_defaults_only_when_missing() -> None:
    given = head(headers=[("x-start-time", "1")], defaults=[("X-Start-Time", "2")])
    assert b"x-start-time: 1\r\n" in given and b"X-Start-Time: 2" not in given
    assert b"X-Start-Time: 2\r\n" in head(headers=[], defaults=[("X-Start-Time", "2")])


@pytest.mark.parametrize(
    "kwargs",
    [
        {"headers": [("X-A", "1\r\nX-Injected: 1")]},
        {"headers": [("X-A", "1\nX-Injected: 1")]},
        {"extra": [("X-B", "a\rb")]},
        {"target": "/a b"},
        {"target": "/a\r\nX: y"},
    ],
)
def test_request_head_rejects_line_breaks_and_spaces(kwargs: dict[str, object]) -> None:
    with pytest.raises(ValueError):
        head(**kwargs)


def test_request_head_keeps_utf8_values_byte_for_byte() -> None:
    raw = "caf\u00e9 \udcff".encode("utf-8", "surrogateescape")
    value = raw.decode("utf-8", "surrogateescape")
    assert b"X-V: " + raw + b"\r\n" in head(headers=[("X-V", value)])


@pytest.mark.parametrize(
    ("raw", "method", "framing", "length", "keep_alive"),
    [
        (b"HTTP/1.1 200 OK\r\nContent-Length: 13", "GET", Framing.LENGTH, 13, True),
        (b"HTTP/1.1 200 OK\r\ncontent-length: 2, 2", "GET", Framing.LENGTH, 2, True),
        (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked", "GET", Framing.CHUNKED, None, True),
        (
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip, chunked\r\nContent-Length: 9",
            "GET",
            Framing.CHUNKED,
            None,
            True,
        ),
        (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip", "GET", Framing.UNTIL_CLOSE, None, False),
        (b"HTTP/1.1 200 OK", "GET", Framing.UNTIL_CLOSE, None, False),
        (b"HTTP/1.1 200 OK\r\nContent-Length: 5", "HEAD", Framing.NONE, None, True),
        (b"HTTP/1.1 204 No Content", "GET", Framing.NONE, None, True),
        (b"HTTP/1.1 304 Not Modified\r\nContent-Length: 5", "GET", Framing.NONE, None, True),
        (
            b"HTTP/1.1 200 OK\r\nConnection: Close\r\nContent-Length: 0",
            "GET",
            Framing.LENGTH,
            0,
            False,
        ),
        (b"HTTP/1.0 200 OK\r\nContent-Length: 1", "GET", Framing.LENGTH, 1, False),
    ],
)
def test_response_framing(
    raw: bytes, method: str, framing: Framing, length: int | None, keep_alive: bool
) -> None:
    parsed = parse_response_head(raw, request_method=method)
    assert (parsed.framing, parsed.length, parsed.keep_alive) == (framing, length, keep_alive)


def test_response_head_fields() -> None:
    parsed = parse_response_head(
        b"HTTP/1.1 302 Found It\r\nLocation: /x\r\nSet-Cookie: a\r\nset-cookie: b\r\n"
        b"X-Empty:\r\nX-Pad: \t v \t\r\nX-Utf8: caf\xc3\xa9\xff",
        request_method="GET",
    )
    assert (parsed.status, parsed.reason) == (302, "Found It")
    assert parsed.headers.getall("Set-Cookie") == ["a", "b"]
    assert parsed.headers["X-Empty"] == "" and parsed.headers["X-Pad"] == "v"
    assert parsed.headers["X-Utf8"].encode("utf-8", "surrogateescape") == b"caf\xc3\xa9\xff"
    assert parse_response_head(b"HTTP/1.1 200", request_method="GET").reason == ""


@pytest.mark.parametrize(
    "raw",
    [
        b"HTTP/2 200 OK",
        b"HTTP/1.1 20 OK",
        b"HTTP/1.1 200 OK\nX: y",
        b"HTTP/1.1 200 OK\r\nX: a\rb",
        b"HTTP/1.1 200 OK\r\nBad Name: x",
        b"HTTP/1.1 200 OK\r\nName : x",
        b"HTTP/1.1 200 OK\r\n folded: x",
        b"HTTP/1.1 200 OK\r\nX: \x00",
        b"HTTP/1.1 200 OK\r\nContent-Length: 1\r\nContent-Length: 2",
        b"HTTP/1.1 200 OK\r\nContent-Length: -1",
        b"HTTP/1.1 200 OK\r\nContent-Length: 0x10",
        b"garbage",
    ],
)
def test_bad_response_heads(raw: bytes) -> None:
    with pytest.raises(ProtocolError):
        parse_response_head(raw, request_method="GET")


CHUNKED = b"5;ext=1\r\nhello\r\n1\r\n \r\nA\r\n0123456789\r\n0\r\nTrailer: x\r\n\r\nNEXT"


@pytest.mark.parametrize("step", [1, 2, 3, 7, len(CHUNKED)])
def test_chunked_decoder_any_split(step: int) -> None:
    decoder = ChunkedDecoder()
    body = b""
    extra = b""
    for i in range(0, len(CHUNKED), step):
        pieces, rest = decoder.feed(CHUNKED[i : i + step])
        body += b"".join(pieces)
        extra += rest
        if decoder.done:
            extra += CHUNKED[i + step :]
            break
    assert decoder.done
    assert body == b"hello 0123456789"
    assert extra == b"NEXT"


@pytest.mark.parametrize(
    "raw", [b"x\r\n", b"-1\r\n", b"0x1\r\n", b"1_0\r\n", b"+1\r\n", b"\r\n", b"2\r\nabc\r\n"]
)
def test_chunked_decoder_rejects(raw: bytes) -> None:
    with pytest.raises(ProtocolError):
        ChunkedDecoder().feed(raw)


def test_chunked_decoder_bounds_lines() -> None:
    with pytest.raises(ProtocolError):
        ChunkedDecoder().feed(b"1" * 5000)


@pytest.mark.parametrize(
    ("raw", "served"),
    [
        (b"GET /function/a HTTP/1.1\r\nHost: h", True),
        (b"POST /function/a.ns/x?y=1 HTTP/1.1\r\nHost: h\r\nContent-Length: 3", True),
        (b"GET /function/a HTTP/1.1\r\nHost: h\r\nConnection: close, X-Y", True),
        (b"GET /function/a HTTP/1.0\r\nHost: h", False),
        (b"GET /function/a HTTP/1.1", False),  # no Host
        (b"GET /function/a HTTP/1.1\r\nHost: h\r\nHost: i", False),
        (b"GET /system/functions HTTP/1.1\r\nHost: h", False),
        (b"GET /function/ HTTP/1.1\r\nHost: h", False),
        (b"GET /function/%61 HTTP/1.1\r\nHost: h", False),
        (b"GET http://h/function/a HTTP/1.1\r\nHost: h", False),
        (b"CONNECT /function/a HTTP/1.1\r\nHost: h", False),
        (b"M-SEARCH /function/a HTTP/1.1\r\nHost: h", False),
        (b"GET /function/a HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked", False),
        (b"GET /function/a HTTP/1.1\r\nHost: h\r\nExpect: 100-continue", False),
        (b"GET /function/a HTTP/1.1\r\nHost: h\r\nUpgrade: websocket", False),
        (b"GET /function/a HTTP/1.1\r\nHost: h\r\nContent-Length: 1\r\nContent-Length: 1", False),
        (b"GET /function/a HTTP/1.1\r\nHost: h\r\nContent-Length: 1e3", False),
        (b"GET /function/a HTTP/1.1\r\nHost: h\r\nBad Name: x", False),
        (b"GET /function/a HTTP/1.1\r\nHost: h\r\n folded", False),
        (b"GET /function/a HTTP/1.1\r\nHost: h\r\nX: a\x01", False),
        (b"GET /function/a HTTP/1.1\nHost: h", False),
    ],
)
def test_front_takes_only_plain_function_requests(raw: bytes, served: bool) -> None:
    assert (parse_function_request(raw) is not None) is served


def test_front_request_fields() -> None:
    request = parse_function_request(
        b"POST /function/a/b?c=d HTTP/1.1\r\nHost: gw:8080\r\nContent-Length: 12\r\n"
        b"Connection: keep-alive, X-Hop\r\nX-Hop: 1\r\nX-Val:  spaced  \r\n"
        b"X-Call-Id: abc\r\nx-forwarded-for: 1.2.3.4\r\nX-Forwarded-For: 5.6.7.8\r\n"
        b"X-Forwarded-Host: outside\r\nTE: trailers\r\nX-Start-Time: 1\r\nAccept: */*"
    )
    assert request is not None
    assert (request.method, request.target, request.host) == (
        "POST",
        "/function/a/b?c=d",
        b"gw:8080",
    )
    assert request.content_length == 12 and not request.close
    # End-to-end fields only, as sent: not Connection, what it names, other hop-by-hop ones,
    # or what the gateway sets itself (X-Call-Id too: the Invoker adds the call's own).
    assert request.forward == b"X-Val:  spaced  \r\nAccept: */*\r\n"
    assert (request.call_id, request.forwarded_for, request.forwarded_host) == (
        b"abc",
        b"1.2.3.4",
        b"outside",
    )
    closing = parse_function_request(b"GET /function/a HTTP/1.1\r\nHost: h\r\nConnection: Close")
    assert closing is not None and closing.close


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("/function/a", ("a", "/", "")),
        ("/function/a/", ("a", "/", "")),
        ("/function/a.ns?x=1&y=%20", ("a.ns", "/", "x=1&y=%20")),
        ("/function/a/b%2Fc/d?q", ("a", "/b%2Fc/d", "q")),
        ("/function/a//b", ("a", "//b", "")),
        ("/function/hell%6F/x", ("hello", "/x", "")),
        ("/function/a/x/../../y/./z", ("a", "/y/z", "")),
        ("/function/a/%2e%2E/b", ("a", "/b", "")),
        ("/function/a/b/..", ("a", "/", "")),
    ],
)
def test_split_target(raw: str, expected: tuple[str, str, str]) -> None:
    assert split_target(raw) == expected


def test_remove_dot_segments() -> None:
    assert remove_dot_segments("/a/b/../c/.") == "/a/c/"
    assert remove_dot_segments("/../../x") == "/x"
    assert remove_dot_segments("/a/.b/..c") == "/a/.b/..c"


def test_response_head_bytes() -> None:
    assert response_head(200, "OK", [("A", "1"), ("B", "caf\u00e9")]) == (
        b"HTTP/1.1 200 OK\r\nA: 1\r\nB: caf\xc3\xa9\r\n\r\n"
    )


@pytest.mark.parametrize(
    ("raw", "served"),
    [
        (b"POST /async-function/a HTTP/1.1\r\nHost: h", True),
        (b"POST /async-function/a.ns/x/y?z HTTP/1.1\r\nHost: h\r\nContent-Length: 3", True),
        (b"GET /async-function/a HTTP/1.1\r\nHost: h", False),  # aiohttp's 405
        (b"PUT /async-function/a HTTP/1.1\r\nHost: h", False),
        (b"POST /async-function/ HTTP/1.1\r\nHost: h", False),
        (b"POST /async-function/%61 HTTP/1.1\r\nHost: h", False),
        (b"POST /async-functions/a HTTP/1.1\r\nHost: h", False),
        (b"POST /async-function/a HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked", False),
        (b"POST /async-function/a HTTP/1.1\r\nHost: h\r\nExpect: 100-continue", False),
    ],
)
def test_front_takes_plain_async_posts(raw: bytes, served: bool) -> None:
    request = parse_function_request(raw)
    assert (request is not None) is served
    assert request is None or request.is_async


def test_async_request_keeps_every_field_line() -> None:
    # The envelope's headers are chosen from all of them, by the same code as aiohttp's.
    request = parse_function_request(
        b"POST /async-function/a HTTP/1.1\r\nHost: h\r\nContent-Length: 2\r\n"
        b"Connection: close, X-Hop\r\nX-Hop: 1\r\nX-Call-Id: abc\r\nX-Val:  v "
    )
    assert request is not None and request.is_async and request.close
    assert request.content_length == 2
    assert request.forward == (
        b"Host: h\r\nContent-Length: 2\r\nConnection: close, X-Hop\r\nX-Hop: 1\r\n"
        b"X-Call-Id: abc\r\nX-Val:  v \r\n"
    )
    plain = parse_function_request(b"POST /function/a HTTP/1.1\r\nHost: h")
    assert plain is not None and not plain.is_async
