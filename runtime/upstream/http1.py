"""HTTP/1.1 on the wire between the gateway and a replica: request heads out, response heads in.

Pure functions and a small chunked decoder, no I/O, so they are table-tested on their own. Only
what a replica (our watchdog, or any HTTP/1.x server behind it) can send needs handling here;
anything outside that is a protocol error, answered 502 by the gateway.
"""

from __future__ import annotations

import enum
import re
from collections.abc import Iterable
from typing import NamedTuple

from multidict import CIMultiDict, CIMultiDictProxy

# RFC 9110 §7.6.1 connection-specific headers; never forwarded in either direction.
HOP_BY_HOP = frozenset(
    {
        "connection",
        "keep-alive",
        "proxy-authenticate",
        "proxy-authorization",
        "proxy-connection",
        "te",
        "trailer",
        "transfer-encoding",
        "upgrade",
    }
)
# The client owns framing and the connection: these never come from the caller's headers.
# `Expect` goes too: the body is sent without waiting for 100 Continue.
CLIENT_OWNED = HOP_BY_HOP | {"host", "content-length", "expect"}

# RFC 9110 §9.2.1-ish: methods that carry no body unless one is given (aiohttp's rule, which
# callers relied on before: a bodiless POST still says `Content-Length: 0`).
_BODYLESS_METHODS = frozenset({"GET", "HEAD", "OPTIONS", "CONNECT", "TRACE"})
MAX_HEAD_BYTES = 64 * 1024
MAX_CHUNK_LINE_BYTES = 4 * 1024
_HEX_DIGITS = b"0123456789abcdefABCDEF"


class ProtocolError(ConnectionError):
    """The replica sent something that is not a valid HTTP/1.x response."""


class Framing(enum.Enum):
    NONE = "none"  # no body (HEAD, 1xx, 204, 304)
    LENGTH = "length"
    CHUNKED = "chunked"
    UNTIL_CLOSE = "until-close"


# Members as plain names: looking one up on its Enum class goes through EnumType.__getattr__.
_NONE, _LENGTH, _CHUNKED, _UNTIL_CLOSE = Framing


def encode_request_head(
    method: str,
    target: str,
    authority: str,
    headers: Iterable[tuple[str, str]] | bytes,
    extra: Iterable[tuple[str, str]],
    *,
    defaults: Iterable[tuple[str, str]] = (),
    skip: frozenset[str] = frozenset(),
    body_length: int | None,
    has_body: bool,
) -> bytes:
    """The request line and headers, ready for one `transport.write`.

    ``headers`` lose every name in ``skip`` (lower case) and the client's own framing headers;
    ``extra`` are added as given, ``defaults`` unless ``headers`` has that name.
    ``body_length`` None with ``has_body`` means chunked. ``headers`` as bytes are lines
    already encoded and checked (``Name: value\\r\\n`` each, no framing, hop-by-hop or Host
    field, no other CR or LF): they go out as they are, after the Host line (``skip`` and
    ``defaults`` do not look into them). The gateway's front has the caller's lines so.
    """
    first = f"{method} {target} HTTP/1.1\r\nHost: {authority}\r\n"
    parts = []
    if isinstance(headers, bytes):
        block = headers
    else:
        block = b""
        missing = {name.lower(): (name, value) for name, value in defaults}
        for name, value in headers:
            lowered = name.lower()
            if lowered in skip or lowered in CLIENT_OWNED:
                continue
            if missing:
                missing.pop(lowered, None)
            parts.append(f"{name}: {value}\r\n")
        if missing:
            extra = [*extra, *missing.values()]
    for name, value in extra:
        parts.append(f"{name}: {value}\r\n")
    if has_body:
        if body_length is None:
            parts.append("Transfer-Encoding: chunked\r\n")
        else:
            parts.append(f"Content-Length: {body_length}\r\n")
    elif method not in _BODYLESS_METHODS:
        parts.append("Content-Length: 0\r\n")
    parts.append("\r\n")
    rest = "".join(parts)
    # Every CR and LF must be one of ours: a value smuggling a line break would split the
    # request (header injection). Counting is C-level scans, cheaper than checking values.
    # `first` holds two line ends (request line and Host), every part one.
    line_ends = len(parts)
    if (
        rest.count("\n") != line_ends
        or rest.count("\r") != line_ends
        or first.count("\n") != 2
        or first.count("\r") != 2
        or " " in target
        or " " in method
    ):
        raise ValueError("request method, target or a header contains a line break or space")
    return b"".join(
        (first.encode("utf-8", "surrogateescape"), block, rest.encode("utf-8", "surrogateescape"))
    )


# Response fields the client and the gateway look at: bits of `ResponseHead.present`.
F_CONNECTION = 1
F_TRANSFER_ENCODING = 2
F_CONTENT_LENGTH = 4
F_OTHER_HOP_BY_HOP = 8
F_DATE = 16
F_CONTENT_TYPE = 32
F_CALL_ID = 64  # X-Call-Id and X-Start-Time: the gateway sets its own
F_START_TIME = 128
_FIELD_BITS = {name.encode(): F_OTHER_HOP_BY_HOP for name in HOP_BY_HOP} | {
    b"connection": F_CONNECTION,
    b"transfer-encoding": F_TRANSFER_ENCODING,
    b"content-length": F_CONTENT_LENGTH,
    b"date": F_DATE,
    b"content-type": F_CONTENT_TYPE,
    b"x-call-id": F_CALL_ID,
    b"x-start-time": F_START_TIME,
}
F_HOP_BY_HOP = F_CONNECTION | F_TRANSFER_ENCODING | F_OTHER_HOP_BY_HOP


class ResponseHead(NamedTuple):
    """A parsed response head. The fields stay as received (bytes) until someone asks for
    `headers`: the gateway mostly passes them on as they are."""

    status: int
    status_text: bytes  # what follows the version on the status line: code, SP, reason
    fields: bytes  # the field lines as received, each starting with CRLF
    present: int  # F_* bits of the fields found
    framing: Framing
    length: int | None  # body bytes when framing is LENGTH
    keep_alive: bool

    @property
    def reason(self) -> str:
        return self.status_text[4:].decode("utf-8", "surrogateescape")

    @property
    def headers(self) -> CIMultiDictProxy[str]:
        return decode_fields(self.fields)


# NamedTuple's own constructor is a Python function; tuple's is not (and takes no defaults).
_new_tuple = tuple.__new__


def decode_fields(fields: bytes) -> CIMultiDictProxy[str]:
    """Field lines (each starting with CRLF) as a multidict.

    Header text is decoded like aiohttp's parser does (UTF-8, undecodable bytes kept as
    surrogates), so values round-trip unchanged when the gateway writes them on.
    """
    pairs: list[tuple[str, str]] = []
    if fields:
        for field in fields[2:].decode("utf-8", "surrogateescape").split("\r\n"):
            name, _, value = field.partition(":")
            pairs.append((name, value.strip(" \t")))
    return CIMultiDictProxy(CIMultiDict(pairs))


_TOKEN = rb"[!#$%&'*+\-.^_`|~0-9A-Za-z]+"
_TEXT = rb"[\t\x20-\x7e\x80-\xff]*"  # no control characters but HTAB: no bare CR or LF
# The whole head in one pass: status line, then CRLF + field line, repeated. Each repetition
# starts with CRLF, which neither a name nor a value may contain, so matching is linear.
# Token names also rule out obsolete line folding and whitespace before the colon.
_RESPONSE_HEAD = re.compile(
    rb"HTTP/1\.([01]) ([0-9]{3})(?: (" + _TEXT + rb"))?((?:\r\n" + _TOKEN + rb":" + _TEXT + rb")*)"
)


def parse_response_head(raw: bytes, *, request_method: str) -> ResponseHead:
    """Parse a response head (``raw`` without the final CRLFCRLF): check it whole, and look
    only at the fields that decide framing and the connection."""
    match = _RESPONSE_HEAD.fullmatch(raw)
    if match is None:
        first = raw.partition(b"\r\n")[0]
        raise ProtocolError(f"malformed response head (status line {first[:80]!r})")
    minor, code, reason, fields = match.groups()
    status = int(code)
    present = 0
    connection: list[bytes] = []
    coding = b""  # the last Transfer-Encoding field
    lengths: list[bytes] = []
    if fields:
        bits = _FIELD_BITS
        for line in fields[2:].split(b"\r\n"):
            name, _, value = line.partition(b":")
            bit = bits.get(name.lower())
            if bit is None:
                continue
            present |= bit
            if bit == F_CONTENT_LENGTH:
                lengths.append(value.strip(b" \t"))
            elif bit == F_CONNECTION:
                connection.append(value)
            elif bit == F_TRANSFER_ENCODING:
                coding = value
    keep_alive = minor == b"1"
    if keep_alive and connection:
        tokens = {t.strip().lower() for v in connection for t in v.split(b",")}
        keep_alive = b"close" not in tokens
    length: int | None
    if (
        len(lengths) == 1
        and not present & F_TRANSFER_ENCODING
        and 200 <= status
        and status != 204
        and status != 304
        and request_method != "HEAD"
        and lengths[0].isdigit()
    ):
        framing, length = _LENGTH, int(lengths[0])  # the usual answer, in short
    else:
        framing, length = _framing(status, present, coding, lengths, request_method)
        if framing is _UNTIL_CLOSE:
            keep_alive = False
    return _new_tuple(
        ResponseHead,
        (
            status,
            code + b" " + reason if reason else code + b" ",
            fields,
            present,
            framing,
            length,
            keep_alive,
        ),
    )


def _framing(
    status: int, present: int, coding: bytes, lengths: list[bytes], method: str
) -> tuple[Framing, int | None]:
    # RFC 9112 §6.3, in its order.
    if method == "HEAD" or status < 200 or status in (204, 304):
        return _NONE, None
    if present & F_TRANSFER_ENCODING:
        last = coding.rpartition(b",")[2].strip().lower()
        # Chunked last: chunked. Anything else: the body runs to the end of the connection.
        # A Content-Length alongside is ignored (and the connection not reused: §6.1).
        return (_CHUNKED, None) if last == b"chunked" else (_UNTIL_CLOSE, None)
    if not lengths:
        return _UNTIL_CLOSE, None
    if len(lengths) == 1 and lengths[0].isdigit():
        return _LENGTH, int(lengths[0])
    values = {v.strip() for value in lengths for v in value.split(b",")}
    if len(values) != 1:
        shown = sorted(v.decode("latin-1") for v in values)
        raise ProtocolError(f"conflicting Content-Length values {shown}")
    (value,) = values
    if not value.isdigit():
        raise ProtocolError(f"invalid Content-Length {value[:40].decode('latin-1')!r}")
    return _LENGTH, int(value)


class ChunkedDecoder:
    """Incremental `Transfer-Encoding: chunked` decoder; trailers are read and dropped."""

    __slots__ = ("_buf", "_remaining", "_state", "done")

    _SIZE, _DATA, _DATA_END, _TRAILER = range(4)

    def __init__(self) -> None:
        self._buf = b""
        self._remaining = 0
        self._state = self._SIZE
        self.done = False

    def feed(self, data: bytes) -> tuple[list[bytes], bytes]:
        """Decode ``data``: the body pieces found, and any bytes after the final chunk."""
        pieces: list[bytes] = []
        buf = self._buf + data if self._buf else data
        self._buf = b""
        pos = 0
        end = len(buf)
        while pos < end and not self.done:
            state = self._state
            if state == self._DATA:
                take = min(self._remaining, end - pos)
                pieces.append(buf[pos : pos + take])
                pos += take
                self._remaining -= take
                if self._remaining == 0:
                    self._state = self._DATA_END
                continue
            eol = buf.find(b"\r\n", pos)
            if eol < 0:
                if end - pos > MAX_CHUNK_LINE_BYTES:
                    raise ProtocolError("chunk size or trailer line too long")
                self._buf = buf[pos:]
                return pieces, b""
            line = buf[pos:eol]
            pos = eol + 2
            if state == self._SIZE:
                size_text = line.partition(b";")[0].strip(b" \t")
                # int(x, 16) alone would also take "0x1f", "1_0" and signs.
                if not size_text or len(size_text) > 16 or size_text.strip(_HEX_DIGITS):
                    raise ProtocolError(f"invalid chunk size {size_text[:20]!r}")
                size = int(size_text, 16)
                if size == 0:
                    self._state = self._TRAILER
                else:
                    self._remaining = size
                    self._state = self._DATA
            elif state == self._DATA_END:
                if line:
                    raise ProtocolError("chunk data is longer than its size")
                self._state = self._SIZE
            elif not line:  # _TRAILER: an empty line ends the message
                self.done = True
        return pieces, buf[pos:] if pos < end else b""
