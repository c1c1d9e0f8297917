"""Request heads the gateway's front serves itself (see front.py), and response heads it writes.

The front takes only a plain subset of HTTP/1.1, checked strictly in one regular expression:
origin-form `/function/...` targets (and `POST /async-function/...`), token field names, no control characters, one Host, at
most one Content-Length and nothing that changes framing or the connection (Transfer-Encoding,
Expect, Upgrade). Anything else is not an error here: `parse_function_request` returns None
and the connection goes to aiohttp, which serves or rejects it exactly as it always did.
"""

from __future__ import annotations

import re
import time
from email.utils import formatdate
from typing import NamedTuple

from runtime.gateway.proxy import PREFIX, REQUEST_DROP

ASYNC_PREFIX = "/async-function/"

MAX_HEAD_BYTES = 16 * 1024  # longer heads go to aiohttp, which has its own limits and errors

_TOKEN = rb"[!#$%&'*+\-.^_`|~0-9A-Za-z]+"
_HEAD = re.compile(
    rb"([A-Z]{1,16}) ((?:" + PREFIX.encode() + rb"|" + ASYNC_PREFIX.encode() + rb")[\x21-\x7e]*)"
    rb" HTTP/1\.1"
    rb"((?:\r\n" + _TOKEN + rb":[\t\x20-\x7e\x80-\xff]*)*)"
)
# What the parser does with a field, by lower-case name; fields not listed pass on as they are.
_REJECT = 0  # decides how the request is read or the connection handled: aiohttp's job
_HOST = 1
_LENGTH = 2
_CONNECTION = 3
_CALL_ID = 4
_FORWARDED_FOR = 5
_FORWARDED_HOST = 6
_DROP = 7  # other hop-by-hop fields and X-Start-Time: the gateway's own or not passed on
_ACTIONS: dict[bytes, int] = {name.encode(): _DROP for name in REQUEST_DROP} | {
    b"transfer-encoding": _REJECT,
    b"expect": _REJECT,
    b"upgrade": _REJECT,
    b"http2-settings": _REJECT,
    b"host": _HOST,
    b"content-length": _LENGTH,
    b"connection": _CONNECTION,
    b"x-call-id": _CALL_ID,
    b"x-forwarded-for": _FORWARDED_FOR,
    b"x-forwarded-host": _FORWARDED_HOST,
}
_USUAL_TOKENS = frozenset({b"close", b"keep-alive"})  # Connection values naming no other field


class FunctionRequest(NamedTuple):
    method: str
    target: str  # origin-form, as sent
    host: bytes
    content_length: int  # 0 when absent
    close: bool  # the caller asked to close after the response
    # The caller's end-to-end field lines as sent, each ending in CRLF: no hop-by-hop ones,
    # none named in Connection, none the gateway sets itself (X-Call-Id, X-Forwarded-*, ...).
    forward: bytes
    call_id: bytes | None  # the caller's X-Call-Id (the first, when not empty)
    forwarded_for: bytes | None  # the caller's first X-Forwarded-For
    forwarded_host: bytes | None  # the caller's first X-Forwarded-Host
    # `/async-function/`: ``forward`` then holds every field line as sent (each ending in
    # CRLF): the envelope keeps what aiohttp's request headers hold, chosen by the same code.
    # The other fields are those of `/function/` (unused).
    is_async: bool


def parse_function_request(head: bytes) -> FunctionRequest | None:
    """The request in ``head`` (without the final CRLF CRLF), or None if the front should
    leave it to aiohttp.

    Field lines stay bytes: the expression checked them whole (token names, no control
    characters in values), so the ones passed on need no decoding or checking again.
    """
    match = _HEAD.fullmatch(head)
    if match is None:
        return None
    method_b, target_b, fields = match.groups()
    if method_b == b"CONNECT":
        return None
    target = target_b.decode("ascii")
    is_async = target_b[1] == 97  # "a"sync-function
    if is_async and method_b != b"POST":
        return None  # aiohttp's 405
    segment = target[len(ASYNC_PREFIX if is_async else PREFIX) :]
    segment = segment.partition("/")[0].partition("?")[0]
    if not segment or "%" in segment:
        return None  # the router's answer (404) or its decoding rules apply
    kept: list[bytes] = []
    host: bytes | None = None
    length: bytes | None = None
    tokens: set[bytes] = set()
    call_id = forwarded_for = forwarded_host = None
    actions = _ACTIONS
    for line in fields[2:].split(b"\r\n") if fields else ():
        name, _, value = line.partition(b":")
        action = actions.get(name.lower())
        if action is None:
            kept.append(line)
            continue
        value = value.strip(b" \t")
        if action == _HOST:
            if host is not None:
                return None
            host = value
        elif action == _LENGTH:
            if length is not None or not value.isdigit() or len(value) > 15:
                return None
            length = value
        elif action == _CONNECTION:
            tokens.update(t.strip().lower() for t in value.split(b","))
        elif action == _CALL_ID:
            if call_id is None:
                call_id = value
        elif action == _FORWARDED_FOR:
            if forwarded_for is None:
                forwarded_for = value
        elif action == _FORWARDED_HOST:
            if forwarded_host is None:
                forwarded_host = value
        elif action == _REJECT:
            return None
    if not host:
        return None
    if is_async:
        kept = fields[2:].split(b"\r\n") if fields else []
    elif tokens and not tokens <= _USUAL_TOKENS:
        kept = [line for line in kept if line.partition(b":")[0].lower() not in tokens]
    # tuple's constructor: NamedTuple's own is a Python function, a measurable cost here.
    return _new_tuple(
        FunctionRequest,
        (
            method_b.decode("ascii"),
            target,
            host,
            int(length) if length else 0,
            b"close" in tokens,
            b"\r\n".join(kept) + b"\r\n" if kept else b"",
            call_id or None,
            forwarded_for,
            forwarded_host,
            is_async,
        ),
    )


_new_tuple = tuple.__new__


class HttpDate:
    """The Date header value, formatted once per second."""

    __slots__ = ("_bytes", "_second", "_value")

    def __init__(self) -> None:
        self._second = -1
        self._value = ""
        self._bytes = b""

    def now(self) -> str:
        second = int(time.time())
        if second != self._second:
            self._tick(second)
        return self._value

    def now_bytes(self) -> bytes:
        second = int(time.time())
        if second != self._second:
            self._tick(second)
        return self._bytes

    def _tick(self, second: int) -> None:
        self._second = second
        self._value = formatdate(second, usegmt=True)  # locale-independent, unlike strftime
        self._bytes = self._value.encode("ascii")


def response_head(status: int, reason: str, headers: list[tuple[str, str]]) -> bytes:
    fields = "".join([f"{name}: {value}\r\n" for name, value in headers])
    return f"HTTP/1.1 {status} {reason}\r\n{fields}\r\n".encode("utf-8", "surrogateescape")
