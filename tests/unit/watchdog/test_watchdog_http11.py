"""The watchdog's HTTP/1.1 parser: request heads, chunked bodies, headers and query mappings.

The parser faces the network, so most cases here are inputs it must refuse, and with which
status (400 unless said otherwise).
"""

from __future__ import annotations

import pytest

from watchdog.http11 import (
    MAX_HEAD_BYTES,
    MAX_HEADERS,
    ChunkedDecoder,
    Headers,
    HttpError,
    Query,
    http_date,
    parse_request,
)


def head(*lines: str) -> bytes:
    """A request head as the server hands it to the parser (without the final CRLF CRLF)."""
    return "\r\n".join(lines).encode("latin-1")


# Request heads that parse


def test_simple_get() -> None:
    request = parse_request(head("GET /hello?a=1&b=2 HTTP/1.1", "Host: x", "X-Call-Id: abc"))
    assert request.method == "GET"
    assert request.target == "/hello?a=1&b=2"
    assert request.raw_path == "/hello"
    assert request.path == "/hello"
    assert request.query_string == "a=1&b=2"
    assert request.version == (1, 1)
    assert request.headers["x-call-id"] == "abc"
    assert request.content_length is None
    assert not request.chunked
    assert not request.close
    assert request.body_done
    assert not request.body_exists


def test_no_headers_at_all() -> None:
    request = parse_request(b"GET / HTTP/1.1")
    assert request.path == "/"
    assert len(request.headers) == 0


def test_header_values_are_trimmed_and_may_be_empty() -> None:
    request = parse_request(head("GET / HTTP/1.1", "A:  spaced \t", "B:", "C:\tx y"))
    assert request.headers["A"] == "spaced"
    assert request.headers["B"] == ""
    assert request.headers["C"] == "x y"


def test_non_ascii_header_values_survive_as_utf8() -> None:
    request = parse_request("GET / HTTP/1.1\r\nX-Name: Zoë".encode())
    assert request.headers["x-name"] == "Zoë"
    # Bytes that are not UTF-8 are kept (surrogateescape), not refused or replaced.
    raw = parse_request(b"GET / HTTP/1.1\r\nX-Raw: \xff\xfe").headers["X-Raw"]
    assert raw.encode("utf-8", "surrogateescape") == b"\xff\xfe"


def test_path_is_percent_decoded_and_raw_path_is_not() -> None:
    request = parse_request(b"GET /a%20b/%2e%2e/c?x=%2F HTTP/1.1")
    assert request.path == "/a b/../c"
    assert request.raw_path == "/a%20b/%2e%2e/c"
    assert request.query_string == "x=%2F"
    assert request.query["x"] == "/"


@pytest.mark.parametrize(
    ("target", "origin_form"),
    [
        ("http://example.com/p/q?x=1", "/p/q?x=1"),
        ("http://example.com", "/"),
        ("https://example.com?x=1", "/?x=1"),
        ("*", "*"),
    ],
)
def test_absolute_form_targets_become_origin_form(target: str, origin_form: str) -> None:
    assert parse_request(f"OPTIONS {target} HTTP/1.1".encode()).target == origin_form


def test_content_length_body() -> None:
    request = parse_request(head("POST / HTTP/1.1", "Content-Length: 42"))
    assert request.content_length == 42
    assert request.body_exists
    assert not request.body_done


def test_zero_content_length_is_no_body() -> None:
    request = parse_request(head("POST / HTTP/1.1", "Content-Length: 0"))
    assert request.content_length == 0
    assert request.body_done
    assert not request.body_exists


def test_repeated_identical_content_length_is_accepted() -> None:
    request = parse_request(head("POST / HTTP/1.1", "Content-Length: 5", "content-length: 5"))
    assert request.content_length == 5


@pytest.mark.parametrize("value", ["chunked", "Chunked", " chunked ", "CHUNKED"])
def test_chunked_body(value: str) -> None:
    request = parse_request(head("POST / HTTP/1.1", f"Transfer-Encoding: {value}"))
    assert request.chunked
    assert request.content_length is None
    assert request.body_exists


@pytest.mark.parametrize(
    ("version", "connection", "close"),
    [
        ("1.1", None, False),
        ("1.1", "close", True),
        ("1.1", "Keep-Alive, Close", True),
        ("1.1", "closed", False),  # a token, not a substring
        ("1.1", "keep-alive", False),
        ("1.0", None, True),
        ("1.0", "keep-alive", False),
        ("1.0", "Keep-Alive", False),
        ("1.0", "close", True),
    ],
)
def test_persistence(version: str, connection: str | None, close: bool) -> None:
    lines = [f"GET / HTTP/{version}"] + ([f"Connection: {connection}"] if connection else [])
    request = parse_request(head(*lines))
    assert request.close is close
    assert request.version == (1, int(version[-1]))


def test_other_http1_minor_versions_are_served_as_1_1() -> None:
    assert parse_request(b"GET / HTTP/1.2").version == (1, 1)


@pytest.mark.parametrize(
    ("expect", "version", "expected"),
    [("100-continue", "1.1", True), ("100-Continue", "1.1", True), ("100-continue", "1.0", False),
     ("something-else", "1.1", False)],
)  # fmt: skip
def test_expect_100_continue(expect: str, version: str, expected: bool) -> None:
    request = parse_request(
        head(f"POST / HTTP/{version}", "Content-Length: 3", f"Expect: {expect}")
    )
    assert request.expect_continue is expected


def test_methods_are_tokens_and_kept_as_sent() -> None:
    assert parse_request(b"PROPFIND / HTTP/1.1").method == "PROPFIND"
    assert parse_request(b"get / HTTP/1.1").method == "get"


def test_as_many_headers_as_allowed() -> None:
    lines = ["GET / HTTP/1.1"] + [f"X-{i}: {i}" for i in range(MAX_HEADERS)]
    assert len(parse_request(head(*lines)).headers) == MAX_HEADERS


# Request heads that are refused


@pytest.mark.parametrize(
    ("raw", "status"),
    [
        # Request line
        (b"", 400),
        (b"GET", 400),
        (b"GET /", 400),
        (b"GET / HTTP/1.1 extra", 400),
        (b"GET  / HTTP/1.1", 400),  # two spaces
        (b"GET /\tHTTP/1.1", 400),
        (b" GET / HTTP/1.1", 400),
        (b"GET / http/1.1", 400),
        (b"GET / HTTP/1", 400),
        (b"GET / HTTP/11", 400),
        (b"GET / HTTP/1.1 ", 400),
        (b"G\x00T / HTTP/1.1", 400),
        (b"GET /\x7f HTTP/1.1", 400),
        (b"GET /caf\xc3\xa9 HTTP/1.1", 400),  # raw non-ASCII in the target
        (b"GET @@@ HTTP/1.1", 400),
        (b"CONNECT example.com:443 HTTP/1.1", 400),
        (b"GET ftp://example.com/ HTTP/1.1", 400),
        (b"\x16\x03\x01\x00\xa5\x01\x00\x00\xa1\x03\x03", 400),  # a TLS client hello
        (b"GET / HTTP/2.0", 505),
        (b"GET / HTTP/0.9", 505),
        # Header fields
        (b"GET / HTTP/1.1\r\nNo-Colon", 400),
        (b"GET / HTTP/1.1\r\n: no-name", 400),
        (b"GET / HTTP/1.1\r\nSpace Name: x", 400),
        (b"GET / HTTP/1.1\r\nName : x", 400),  # whitespace before the colon
        (b"GET / HTTP/1.1\r\nA: 1\r\n folded", 400),  # obs-fold
        (b"GET / HTTP/1.1\r\nA: 1\r\n\tfolded", 400),
        (b"GET / HTTP/1.1\r\nA: 1\nB: 2", 400),  # bare LF
        (b"GET / HTTP/1.1\nA: 1", 400),
        (b"GET / HTTP/1.1\r\nA: 1\rB: 2", 400),  # bare CR
        (b"GET / HTTP/1.1\r\nA: x\x00y", 400),
        (b"GET / HTTP/1.1\r\nA: x\x1by", 400),
        (b"GET / HTTP/1.1\r\nA: x\x7fy", 400),
        (b"GET / HTTP/1.1\r\nA\x00: x", 400),
        (b"GET / HTTP/1.1\r\n\r\nA: 1", 400),  # an empty line inside the head
        # Framing
        (b"POST / HTTP/1.1\r\nContent-Length: nope", 400),
        (b"POST / HTTP/1.1\r\nContent-Length: -1", 400),
        (b"POST / HTTP/1.1\r\nContent-Length: +5", 400),
        (b"POST / HTTP/1.1\r\nContent-Length: 5 5", 400),
        (b"POST / HTTP/1.1\r\nContent-Length: 5, 5", 400),
        (b"POST / HTTP/1.1\r\nContent-Length: 0x10", 400),
        (b"POST / HTTP/1.1\r\nContent-Length: \xd9\xa3", 400),  # a non-ASCII digit
        (b"POST / HTTP/1.1\r\nContent-Length: 1234567890123456789", 400),
        (b"POST / HTTP/1.1\r\nContent-Length: 5\r\nContent-Length: 6", 400),
        (b"POST / HTTP/1.1\r\nContent-Length: 5\r\nTransfer-Encoding: chunked", 400),
        (b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\nContent-Length: 5", 400),
        (b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked, gzip", 400),  # chunked not last
        (b"POST / HTTP/1.1\r\nTransfer-Encoding: gzip", 400),
        (b"POST / HTTP/1.1\r\nTransfer-Encoding: gzip, chunked", 501),
        (b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked, chunked", 501),
        (b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: chunked", 501),
        (b"POST / HTTP/1.1\r\nTransfer-Encoding: identity", 400),
        (b"POST / HTTP/1.1\r\nTransfer-Encoding: xchunked", 400),
        (b"POST / HTTP/1.0\r\nTransfer-Encoding: chunked", 400),
        (b"POST / HTTP/1.1\r\nTransfer-Encoding:", 400),
    ],
)
def test_bad_heads_are_refused(raw: bytes, status: int) -> None:
    with pytest.raises(HttpError) as caught:
        parse_request(raw)
    assert caught.value.status == status
    assert caught.value.message


def test_too_many_headers_is_431() -> None:
    lines = ["GET / HTTP/1.1"] + [f"X-{i}: {i}" for i in range(MAX_HEADERS + 1)]
    with pytest.raises(HttpError) as caught:
        parse_request(head(*lines))
    assert caught.value.status == 431


@pytest.mark.parametrize(
    ("raw", "words"),
    [
        (b"NOT HTTP AT ALL", "request line"),
        (b"GET / HTTP/1.1\r\nBad Header", "header field"),
        (b"GET / HTTP/1.1\r\nA: 1\r\n folded", "folding"),
        (b"GET / HTTP/1.1\nA: 1", "bare CR or LF"),
    ],
)
def test_refusals_say_what_is_wrong(raw: bytes, words: str) -> None:
    with pytest.raises(HttpError, match=words):
        parse_request(raw)


def test_a_long_hostile_head_is_parsed_in_linear_time() -> None:
    # One huge header value that almost matches, then a bad byte: must not backtrack.
    raw = b"GET / HTTP/1.1\r\nA: " + b"a:" * (MAX_HEAD_BYTES // 2) + b"\x00"
    with pytest.raises(HttpError):
        parse_request(raw)


# Chunked bodies


def decode_all(raw: bytes, step: int | None = None) -> tuple[bytes, bytearray, ChunkedDecoder]:
    """Feed ``raw`` whole or ``step`` bytes at a time; return body, leftover and decoder."""
    decoder = ChunkedDecoder()
    buf = bytearray()
    out: list[bytes] = []
    pieces = [raw] if step is None else [raw[i : i + step] for i in range(0, len(raw), step)]
    done = False
    for index, piece in enumerate(pieces):
        buf += piece
        if decoder.decode(buf, out):
            done = True
            buf += b"".join(pieces[index + 1 :])  # what follows the body, untouched
            break
    assert done, "the body never finished"
    return b"".join(out), buf, decoder


CHUNKED = b"5\r\nhello\r\n1;name=value\r\n \r\nA\r\n0123456789\r\n0\r\n\r\n"


@pytest.mark.parametrize("step", [None, 1, 2, 3, 7])
def test_chunked_body_fed_in_any_pieces(step: int | None) -> None:
    body, leftover, decoder = decode_all(CHUNKED + b"NEXT", step)
    assert body == b"hello 0123456789"
    assert decoder.announced == 16
    assert decoder.done
    assert bytes(leftover) == b"NEXT"  # what followed stays for the next request


def test_chunk_extensions_and_whitespace_before_them_are_ignored() -> None:
    body, _, _ = decode_all(b'3 \t;a=1;b="q;x"\r\nabc\r\n0;last\r\n\r\n')
    assert body == b"abc"


def test_trailers_are_consumed_and_dropped() -> None:
    body, leftover, _ = decode_all(b"3\r\nabc\r\n0\r\nX-Sum: 1\r\nX-Other: 2\r\n\r\nGET")
    assert body == b"abc"
    assert bytes(leftover) == b"GET"


def test_upper_and_lower_case_hex() -> None:
    body, _, _ = decode_all(b"a\r\n" + b"x" * 10 + b"\r\nB\r\n" + b"y" * 11 + b"\r\n0\r\n\r\n")
    assert body == b"x" * 10 + b"y" * 11


def test_announced_size_is_known_before_the_data() -> None:
    decoder = ChunkedDecoder()
    buf = bytearray(b"FFFFFFFF\r\nab")
    assert not decoder.decode(buf, [])
    assert decoder.announced == 0xFFFFFFFF


@pytest.mark.parametrize(
    "raw",
    [
        b"\r\n",  # empty size
        b"x\r\n",
        b"-1\r\n",
        b"+1\r\n",
        b"0x10\r\n",
        b"1_0\r\n",
        b" 5\r\n",
        b"12345678901234567\r\n",  # more than 16 hex digits
        b"5\nhello\r\n",  # bare LF after the size
        b"5\r\nhelloXX",  # no CRLF after the data
        b"5\r\nhello\n0\r\n\r\n",
        b"3\r\nabc\r\n0\r\nBad Trailer\r\n\r\n",
        b"3\r\nabc\r\n0\r\n folded: x\r\n\r\n",
        b"3\x00\r\nabc\r\n",
    ],
)
def test_bad_chunked_bodies_are_refused(raw: bytes) -> None:
    decoder = ChunkedDecoder()
    with pytest.raises(HttpError) as caught:
        decoder.decode(bytearray(raw), [])
    assert caught.value.status == 400


def test_a_size_line_that_never_ends_is_refused() -> None:
    decoder = ChunkedDecoder()
    with pytest.raises(HttpError):
        decoder.decode(bytearray(b"5;" + b"e" * 5000), [])


def test_endless_trailers_are_refused() -> None:
    decoder = ChunkedDecoder()
    trailers = b"".join(b"X-%d: v\r\n" % i for i in range(MAX_HEADERS + 1))
    with pytest.raises(HttpError) as caught:
        decoder.decode(bytearray(b"0\r\n" + trailers), [])
    assert caught.value.status == 431


def test_incomplete_input_waits_for_more() -> None:
    decoder = ChunkedDecoder()
    buf = bytearray(b"5\r\nhel")
    out: list[bytes] = []
    assert not decoder.decode(buf, out)
    assert out == [b"hel"]
    buf += b"lo\r"
    assert not decoder.decode(buf, out)
    buf += b"\n0\r\n"
    assert not decoder.decode(buf, out)
    buf += b"\r\n"
    assert decoder.decode(buf, out)
    assert b"".join(out) == b"hello"


# Headers and Query


def test_headers_are_case_insensitive_ordered_and_keep_repeats() -> None:
    headers = Headers([("Set-Cookie", "a=1"), ("X-One", "1"), ("set-cookie", "b=2")])
    assert headers["SET-COOKIE"] == "a=1"
    assert headers.get("x-one") == "1"
    assert headers.get("missing") is None
    assert headers.get("missing", "d") == "d"
    assert "X-ONE" in headers
    assert "nope" not in headers
    assert 42 not in headers
    assert headers.getall("set-cookie") == ["a=1", "b=2"]
    assert headers.getlist("Set-Cookie") == ["a=1", "b=2"]
    assert headers.getlist("missing") == []
    assert headers.getall("missing", []) == []
    with pytest.raises(KeyError):
        headers.getall("missing")
    with pytest.raises(KeyError):
        headers["missing"]
    assert list(headers) == ["Set-Cookie", "X-One", "set-cookie"]
    assert headers.items() == [("Set-Cookie", "a=1"), ("X-One", "1"), ("set-cookie", "b=2")]
    assert len(headers) == 3
    assert dict(headers) == {"Set-Cookie": "a=1", "X-One": "1", "set-cookie": "a=1"}


def test_headers_set_replaces_every_case_and_add_appends() -> None:
    headers = Headers({"Content-Type": "text/html"})
    headers.add("X-A", "1")
    headers["content-type"] = "application/json"
    assert headers.items() == [("X-A", "1"), ("content-type", "application/json")]
    assert headers["Content-Type"] == "application/json"
    del headers["X-a"]
    assert "X-A" not in headers
    assert headers.pop("content-type") == "application/json"
    assert len(headers) == 0
    with pytest.raises(KeyError):
        del headers["X-A"]


def test_query_first_value_like_flask_args() -> None:
    query = Query("a=1&a=2&b=&c=x%20y&d+e=f+g&flag")
    assert query["a"] == "1"
    assert query.get("a") == "1"
    assert query.getall("a") == ["1", "2"]
    assert query.getlist("a") == ["1", "2"]
    assert query["b"] == ""  # blank values are kept, as Flask and aiohttp do
    assert query["c"] == "x y"
    assert query["d e"] == "f g"
    assert query["flag"] == ""
    assert query.get("missing") is None
    assert query.getlist("missing") == []
    assert list(query) == ["a", "b", "c", "d e", "flag"]
    assert len(query) == 5
    assert query.to_dict() == {"a": "1", "b": "", "c": "x y", "d e": "f g", "flag": ""}
    assert query.to_dict(flat=False)["a"] == ["1", "2"]
    assert dict(Query("")) == {}


def test_http_date() -> None:
    assert http_date(784111777) == "Sun, 06 Nov 1994 08:49:37 GMT"
    assert http_date().endswith(" GMT")
