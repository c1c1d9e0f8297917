"""Request heads the gateway's front serves itself (see front.py), and response heads it writes.

The front takes only a plain subset of HTTP/1.1, checked strictly in one regular expression:
origin-form `/function/...` targets, token field names, no control characters, one Host, at
most one Content-Length and nothing that changes framing or the connection (Transfer-Encoding,
Expect, Upgrade). Anything else is not an error here: `parse_function_request` returns None
and the connection goes to aiohttp, which serves or rejects it exactly as it always did.
"""

from __future__ import annotations

import re
import time
from dataclasses import dataclass
from email.utils import formatdate

from runtime.gateway.proxy import PREFIX, REQUEST_DROP, CallerHeaders

MAX_HEAD_BYTES = 16 * 1024  # longer heads go to aiohttp, which has its own limits and errors

_TOKEN = rb"[!#$%&'*+\-.^_`|~0-9A-Za-z]+"
_HEAD = re.compile(
    rb"([A-Z]{1,16}) (" + PREFIX.encode() + rb"[\x21-\x7e]*) HTTP/1\.1"
    rb"((?:\r\n" + _TOKEN + rb":[\t\x20-\x7e\x80-\xff]*)*)"
)
# Fields that decide how the request is read or the connection handled (only their plain forms
# are served by the front), and those the proxy reads.
_NOT_HERE = frozenset({"transfer-encoding", "expect", "upgrade", "http2-settings"})
_SPECIAL = _NOT_HERE | {"host", "content-length", "connection", "x-call-id"}
_USUAL_TOKENS = frozenset({"close", "keep-alive"})  # Connection values naming no other field


@dataclass(slots=True)
class FunctionRequest:
    method: str
    target: str  # origin-form, as sent
    caller: CallerHeaders
    host: str
    content_length: int  # 0 when absent
    close: bool  # the caller asked to close after the response


def parse_function_request(head: bytes) -> FunctionRequest | None:
    """The request in ``head`` (without the final CRLF CRLF), or None if the front should
    leave it to aiohttp."""
    match = _HEAD.fullmatch(head)
    if match is None:
        return None
    method_b, target_b, fields = match.groups()
    if method_b == b"CONNECT":
        return None
    target = target_b.decode("ascii")
    segment = target[len(PREFIX) :].partition("/")[0].partition("?")[0]
    if not segment or "%" in segment:
        return None  # the router's answer (404) or its decoding rules apply
    # One pass: the framing fields checked, the caller's end-to-end fields kept (with the
    # lower-case names, to drop those listed in Connection at the end).
    forward: list[tuple[str, str, str]] = []
    host: str | None = None
    length: int | None = None
    tokens: set[str] = set()
    call_id = forwarded_for = forwarded_host = None
    if fields:
        for line in fields[2:].decode("utf-8", "surrogateescape").split("\r\n"):
            name, _, value = line.partition(":")
            value = value.strip(" \t")
            lowered = name.lower()
            if lowered in REQUEST_DROP or lowered in _SPECIAL:
                if lowered in _NOT_HERE:
                    return None
                if lowered == "host":
                    if host is not None:
                        return None
                    host = value
                elif lowered == "content-length":
                    if length is not None or not (value.isascii() and value.isdigit()):
                        return None
                    if len(value) > 15:
                        return None
                    length = int(value)
                elif lowered == "connection":
                    tokens.update(t.strip().lower() for t in value.split(","))
                elif lowered == "x-call-id":
                    if call_id is None:
                        call_id = value
                    forward.append((name, value, lowered))
                elif lowered == "x-forwarded-for":
                    if forwarded_for is None:
                        forwarded_for = value
                elif lowered == "x-forwarded-host":
                    if forwarded_host is None:
                        forwarded_host = value
                # other hop-by-hop fields and X-Start-Time: not passed on
                continue
            forward.append((name, value, lowered))
    if not host:
        return None
    if tokens - _USUAL_TOKENS:
        pairs = [(n, v) for n, v, lowered in forward if lowered not in tokens]
    else:
        pairs = [(n, v) for n, v, _ in forward]
    return FunctionRequest(
        method=method_b.decode("ascii"),
        target=target,
        caller=CallerHeaders(pairs, call_id or None, forwarded_for, forwarded_host),
        host=host,
        content_length=length or 0,
        close="close" in tokens,
    )


class HttpDate:
    """The Date header value, formatted once per second."""

    __slots__ = ("_second", "_value")

    def __init__(self) -> None:
        self._second = -1
        self._value = ""

    def now(self) -> str:
        second = int(time.time())
        if second != self._second:
            self._second = second
            self._value = formatdate(second, usegmt=True)  # locale-independent, unlike strftime
        return self._value


def response_head(status: int, reason: str, headers: list[tuple[str, str]]) -> bytes:
    fields = "".join([f"{name}: {value}\r\n" for name, value in headers])
    return f"HTTP/1.1 {status} {reason}\r\n{fields}\r\n".encode("utf-8", "surrogateescape")
