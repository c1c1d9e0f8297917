"""Envelope wire form: byte-exact bodies, headers kept in order with repeats, names checked."""

from __future__ import annotations

import pytest

from runtime.errors import InvalidSpec
from runtime.queue.message import (
    CALL_HEADER,
    MSG_ID_HEADER,
    Envelope,
    MalformedMessage,
    check_call_id,
    decode,
    encode,
    request_headers,
)

ALL_BYTES = bytes(range(256))


@pytest.mark.parametrize(
    "body",
    [
        b"",
        b"hello",
        ALL_BYTES,
        ALL_BYTES * 4096,  # 1 MiB
        b"\r\n\r\nNATS/1.0\r\n",  # looks like a protocol line
        "grüße ✓".encode(),
        b"\x00" * 10,
    ],
    ids=["empty", "text", "all-bytes", "1MiB", "protocol-like", "utf8", "nuls"],
)
def test_body_round_trips_byte_exact(body: bytes) -> None:
    env = Envelope(call_id="abc", function="hello", namespace="openfaas-fn", body=body)
    headers, payload = encode(env)
    assert payload is body or payload == body
    assert decode("abc", headers, payload).body == body


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("method", "PUT"),
        ("path", "/a/b%20c/ü"),
        ("query", "x=1&x=2&y=%2F"),
        ("headers", (("X-A", "1"), ("x-a", "2"), ("Cookie", "a=b; c=d"), ("X-U", "äöü ✓"))),
        ("callback_url", "http://127.0.0.1:9000/cb?x=1"),
        ("callback_url", None),
        ("enqueued_at", 1700000000.123456),
    ],
)
def test_fields_round_trip(field: str, value: object) -> None:
    env = Envelope(call_id="id-1", function="fn", namespace="ns", **{field: value})  # type: ignore[arg-type]
    headers, payload = encode(env)
    assert decode("id-1", headers, payload) == env


def test_header_block_is_ascii_without_line_breaks() -> None:
    env = Envelope(
        call_id="id",
        function="fn",
        namespace="ns",
        headers=(("X-Evil", "a\r\nNats-Msg-Id: other"), ("X-U", "ü")),
        path="/\r\n",
    )
    headers, _ = encode(env)
    assert headers[MSG_ID_HEADER] == "id"
    raw = headers[CALL_HEADER]
    assert raw.isascii() and "\r" not in raw and "\n" not in raw
    assert decode("id", headers, b"").headers == env.headers


def test_extra_headers_and_msg_id_override() -> None:
    env = Envelope(call_id="id", function="fn", namespace="ns")
    headers, _ = encode(env, extra={MSG_ID_HEADER: "id.replay.1", "Lf-Dead": "{}"})
    assert headers[MSG_ID_HEADER] == "id.replay.1"
    assert headers["Lf-Dead"] == "{}"


@pytest.mark.parametrize(
    "headers",
    [None, {}, {CALL_HEADER: "not json"}, {CALL_HEADER: '{"v": 99}'}, {CALL_HEADER: '{"v": 1}'}],
)
def test_decode_refuses_foreign_messages(headers: dict[str, str] | None) -> None:
    with pytest.raises(MalformedMessage):
        decode("id", headers, b"x")


def test_decode_refuses_invalid_names_inside() -> None:
    env = Envelope(call_id="id", function="fn", namespace="ns")
    headers, payload = encode(env)
    headers[CALL_HEADER] = headers[CALL_HEADER].replace('"fn":"fn"', '"fn":"Bad.Name"')
    with pytest.raises(MalformedMessage):
        decode("id", headers, payload)


@pytest.mark.parametrize(
    "value",
    ["0b2f6a9e-5d3c-4b1a-9f0e-1c2d3e4f5a6b", "01HZY3", "a", "A_b-C", "x" * 128],
)
def test_valid_call_ids(value: str) -> None:
    assert check_call_id(value) == value


@pytest.mark.parametrize(
    "value",
    ["", "a.b", "a*", "a>", "a b", "x" * 129, "ü", "a/b", None, 5],
)
def test_malformed_call_ids(value: object) -> None:
    with pytest.raises(InvalidSpec):
        check_call_id(value, "X-Call-Id")


@pytest.mark.parametrize(
    ("function", "namespace"), [("Bad", "ns"), ("fn", "a.b"), ("", "ns"), ("fn", "x" * 64)]
)
def test_envelope_refuses_invalid_names(function: str, namespace: str) -> None:
    with pytest.raises(InvalidSpec):
        Envelope(call_id="id", function=function, namespace=namespace)


def test_request_headers_drop_hop_by_hop_and_named() -> None:
    given = [
        ("Host", "example"),
        ("Connection", "keep-alive, X-Private"),
        ("Keep-Alive", "timeout=5"),
        ("Transfer-Encoding", "chunked"),
        ("Content-Length", "12"),
        ("X-Private", "secret"),
        ("X-A", "1"),
        ("Content-Type", "text/plain"),
        ("X-A", "2"),
        ("TE", "trailers"),
        ("Upgrade", "h2c"),
    ]
    assert request_headers(given) == (("X-A", "1"), ("Content-Type", "text/plain"), ("X-A", "2"))


def test_header_lookup_is_case_insensitive() -> None:
    env = Envelope(call_id="id", function="fn", namespace="ns", headers=(("retry-after", "3"),))
    assert env.header("Retry-After") == "3"
    assert env.header("X-None") is None
    assert env.function_name == "fn.ns"
