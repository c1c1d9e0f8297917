"""HTTP/1.1 messages for the watchdog's own server: parsing (it faces the network), headers,
query strings and response heads. No I/O here; ``watchdog.httpserver`` does that.

What the parser accepts, deliberately strict:

- A request head is the request line and header fields, each ended by CRLF, then an empty
  line. Bare LF, bare CR, obs-fold (a line starting with SP/HTAB) and control characters
  (other than HTAB in values) are rejected with 400, as are whitespace between a field name
  and its colon and request lines not of the form ``METHOD SP target SP HTTP/x.y``. Empty
  lines before a request line are skipped (RFC 9112 §2.2).
- At most ``MAX_HEAD_BYTES`` for the whole head and ``MAX_HEADERS`` fields (else 431).
- HTTP/1.0 and 1.1 (other 1.x minor versions are served as 1.1); another major version
  gets 505.
- Framing: ``Content-Length`` (digits only; repeated only with one value) or
  ``Transfer-Encoding: chunked``, never both (400). ``chunked`` is the only transfer-coding
  (another one is 501; ``chunked`` not last is 400); HTTP/1.0 with Transfer-Encoding is 400.
- Chunk sizes are 1-16 hex digits; chunk extensions are ignored, trailers are read and
  dropped (same limits as the head).

Header values are decoded as UTF-8 with ``surrogateescape`` (as aiohttp did, and lossless
when they are sent on), names are ASCII tokens.
"""

from __future__ import annotations

import re
import time
from collections.abc import Iterator, Mapping
from typing import Any

MAX_HEAD_BYTES = 64 * 1024
MAX_HEADERS = 128
MAX_CHUNK_LINE_BYTES = 4096

_TOKEN = rb"[!#$%&'*+\-.^_`|~0-9A-Za-z]+"
_FIELD_VALUE = rb"[\t\x20-\x7e\x80-\xff]*"
# The whole head in one pass: request line, then CRLF + field line, repeated. Each repetition
# starts with CRLF, which neither a name nor a value may contain, so matching is linear.
_HEAD = re.compile(
    rb"(" + _TOKEN + rb") ([\x21-\x7e]+) HTTP/([0-9])\.([0-9])"
    rb"((?:\r\n" + _TOKEN + rb":" + _FIELD_VALUE + rb")*)"
)
# Compiled on first use (re caches them): a cold start that sees no bad request or chunked
# body does not pay for them.
_REQUEST_LINE = rb"(" + _TOKEN + rb") ([\x21-\x7e]+) HTTP/([0-9])\.([0-9])"
_FIELD_LINE = _TOKEN + rb":" + _FIELD_VALUE
_CHUNK_LINE = rb"([0-9A-Fa-f]{1,16})[\t ]*(?:;[\t\x20-\x7e\x80-\xff]*)?"
TOKEN_START = frozenset(
    b"!#$%&'*+-.^_`|~0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
)

# Response body framing: none (HEAD, 204, 304), Content-Length, chunked, or until close.
FRAMING_NONE, FRAMING_FIXED, FRAMING_CHUNKED, FRAMING_UNTIL_CLOSE = range(4)

REASONS = {
    100: "Continue", 101: "Switching Protocols", 102: "Processing", 103: "Early Hints",
    200: "OK", 201: "Created", 202: "Accepted", 203: "Non-Authoritative Information",
    204: "No Content", 205: "Reset Content", 206: "Partial Content", 207: "Multi-Status",
    208: "Already Reported", 226: "IM Used",
    300: "Multiple Choices", 301: "Moved Permanently", 302: "Found", 303: "See Other",
    304: "Not Modified", 305: "Use Proxy", 307: "Temporary Redirect", 308: "Permanent Redirect",
    400: "Bad Request", 401: "Unauthorized", 402: "Payment Required", 403: "Forbidden",
    404: "Not Found", 405: "Method Not Allowed", 406: "Not Acceptable",
    407: "Proxy Authentication Required", 408: "Request Timeout", 409: "Conflict", 410: "Gone",
    411: "Length Required", 412: "Precondition Failed", 413: "Content Too Large",
    414: "URI Too Long", 415: "Unsupported Media Type", 416: "Range Not Satisfiable",
    417: "Expectation Failed", 418: "I'm a Teapot", 421: "Misdirected Request",
    422: "Unprocessable Content", 423: "Locked", 424: "Failed Dependency", 425: "Too Early",
    426: "Upgrade Required", 428: "Precondition Required", 429: "Too Many Requests",
    431: "Request Header Fields Too Large", 451: "Unavailable For Legal Reasons",
    500: "Internal Server Error", 501: "Not Implemented", 502: "Bad Gateway",
    503: "Service Unavailable", 504: "Gateway Timeout", 505: "HTTP Version Not Supported",
    506: "Variant Also Negotiates", 507: "Insufficient Storage", 508: "Loop Detected",
    510: "Not Extended", 511: "Network Authentication Required",
}  # fmt: skip


class HttpError(Exception):
    """The request cannot be served; the connection answers ``status`` and closes."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


class Headers(Mapping[str, str]):
    """Case-insensitive header fields that keep order, original case and repeated names.

    Like aiohttp's CIMultiDict (what handlers got before): ``h[name]`` and ``h.get(name)``
    give the first value, ``getall``/``getlist`` every value, and iterating or ``items()``
    yields every (name, value) pair in order, repeats included.
    """

    __slots__ = ("_first", "_items")

    def __init__(self, items: Any = None) -> None:
        self._items: list[tuple[str, str]] = []
        self._first: dict[str, str] = {}
        if items:
            pairs = items.items() if isinstance(items, Mapping) else items
            for name, value in pairs:
                self.add(name, value)

    @classmethod
    def _trusted(cls, items: list[tuple[str, str]], first: dict[str, str]) -> Headers:
        headers = cls.__new__(cls)
        headers._items = items
        headers._first = first
        return headers

    def __getitem__(self, name: str) -> str:
        return self._first[name.lower()]

    def get(self, name: str, default: Any = None) -> Any:
        return self._first.get(name.lower(), default)

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and name.lower() in self._first

    def getall(self, name: str, default: Any = None) -> Any:
        key = name.lower()
        values = [value for item_name, value in self._items if item_name.lower() == key]
        if values:
            return values
        if default is not None:
            return default
        raise KeyError(name)

    def getlist(self, name: str) -> list[str]:
        """Werkzeug's spelling: every value, an empty list when there is none."""
        key = name.lower()
        return [value for item_name, value in self._items if item_name.lower() == key]

    def __iter__(self) -> Iterator[str]:
        return (name for name, _ in self._items)

    def __len__(self) -> int:
        return len(self._items)

    def keys(self) -> Any:
        return [name for name, _ in self._items]

    def items(self) -> Any:
        return list(self._items)

    def values(self) -> Any:
        return [value for _, value in self._items]

    def __repr__(self) -> str:
        return f"<Headers {self._items!r}>"

    # Mutation, for response headers.

    def add(self, name: str, value: str) -> None:
        self._items.append((name, value))
        self._first.setdefault(name.lower(), value)

    def __setitem__(self, name: str, value: str) -> None:
        """Replace every field called ``name`` (any case) with one."""
        key = name.lower()
        if key in self._first:
            self._items = [item for item in self._items if item[0].lower() != key]
        self._items.append((name, value))
        self._first[key] = value

    def __delitem__(self, name: str) -> None:
        key = name.lower()
        if key not in self._first:
            raise KeyError(name)
        self._items = [item for item in self._items if item[0].lower() != key]
        del self._first[key]

    def pop(self, name: str, default: Any = None) -> Any:
        value = self._first.get(name.lower(), default)
        if name in self:
            del self[name]
        return value


class Query(Mapping[str, str]):
    """A parsed query string: ``q[key]``/``q.get(key)`` give the first value (as Flask's
    ``request.args``), ``getall``/``getlist`` every value. Blank values are kept
    (``?a=`` gives ``""``), as both Flask and aiohttp do."""

    __slots__ = ("_all",)

    def __init__(self, query_string: str) -> None:
        values: dict[str, list[str]] = {}
        if query_string:
            from urllib.parse import parse_qsl  # only functions that read the query pay for it

            for key, value in parse_qsl(query_string, keep_blank_values=True):
                values.setdefault(key, []).append(value)
        self._all = values

    def __getitem__(self, key: str) -> str:
        return self._all[key][0]

    def __iter__(self) -> Iterator[str]:
        return iter(self._all)

    def __len__(self) -> int:
        return len(self._all)

    def getall(self, key: str, default: Any = None) -> Any:
        if key in self._all:
            return list(self._all[key])
        if default is not None:
            return default
        raise KeyError(key)

    def getlist(self, key: str) -> list[str]:
        return list(self._all.get(key, ()))

    def to_dict(self, flat: bool = True) -> dict[str, Any]:
        if flat:
            return {key: values[0] for key, values in self._all.items()}
        return {key: list(values) for key, values in self._all.items()}

    def __repr__(self) -> str:
        return f"<Query {self._all!r}>"


class Request:
    """One parsed request head; the body is read through the connection (``_conn``)."""

    __slots__ = (
        "_conn",
        "_path",
        "_query",
        "body_done",
        "chunked",
        "close",
        "content_length",
        "expect_continue",
        "headers",
        "method",
        "query_string",
        "raw_path",
        "started",
        "target",
        "version",
    )

    def __init__(
        self,
        method: str,
        target: str,
        version: tuple[int, int],
        headers: Headers,
        content_length: int | None,
        chunked: bool,
        close: bool,
        expect_continue: bool,
    ) -> None:
        self.method = method
        self.target = target  # origin-form: path and query exactly as sent
        raw_path, _, self.query_string = target.partition("?")
        self.raw_path = raw_path
        self.version = version
        self.headers = headers
        self.content_length = content_length
        self.chunked = chunked
        self.close = close  # the connection closes after the response
        self.expect_continue = expect_continue
        self.body_done = not chunked and not content_length
        self.started = False  # the response head is on its way
        self._path: str | None = None
        self._query: Query | None = None
        self._conn: Any = None

    @property
    def path(self) -> str:
        """The percent-decoded path (as Flask's ``request.path``), without the query."""
        path = self._path
        if path is None:
            path = self.raw_path
            if "%" in path:
                from urllib.parse import unquote

                path = unquote(path)
            self._path = path
        return path

    @property
    def query(self) -> Query:
        query = self._query
        if query is None:
            query = self._query = Query(self.query_string)
        return query

    @property
    def body_exists(self) -> bool:
        return self.chunked or bool(self.content_length)

    @property
    def keep_alive(self) -> bool:
        return not self.close

    # Body and connection, provided by watchdog.httpserver.

    async def read(self, limit: int, timeout_s: float) -> bytes:
        """The whole body; BodyError 413 past ``limit`` bytes, 408 after ``timeout_s``."""
        return await self._conn.read_body(self, limit, timeout_s)  # type: ignore[no-any-return]

    def stream(self) -> Any:
        """The body as an async iterator of chunks (no size limit, no timeout)."""
        return self._conn.stream_body(self)

    async def send_continue(self) -> None:
        """Answer ``Expect: 100-continue`` now (reading the body does it by itself)."""
        await self._conn.send_continue(self)

    def force_close(self) -> None:
        """Close the connection once the handler returns, whatever state the response is in."""
        self.close = True
        if self._conn is not None:
            self._conn.abort_after_response()

    def __repr__(self) -> str:
        return f"<Request {self.method} {self.target}>"


def parse_request(head: bytes) -> Request:
    """Parse a request head (without its final CRLF CRLF); raise HttpError when it is bad."""
    match = _HEAD.fullmatch(head)
    if match is None:
        raise _head_error(head)
    method_b, target_b, major, minor, fields = match.groups()
    if major != b"1":
        raise HttpError(505, "only HTTP/1.x is supported")
    http10 = minor == b"0"
    target = target_b.decode("ascii")
    if target[0] != "/":
        target = _origin_form(target)

    items: list[tuple[str, str]] = []
    first: dict[str, str] = {}
    repeated: set[str] | None = None
    if fields:
        lines = fields.decode("utf-8", "surrogateescape").split("\r\n")
        if len(lines) > MAX_HEADERS + 1:
            raise HttpError(431, f"more than {MAX_HEADERS} header fields")
        for line in lines[1:]:  # lines[0] is the empty text before the first CRLF
            name, _, value = line.partition(":")
            value = value.strip(" \t")
            items.append((name, value))
            key = name.lower()
            if key in first:
                if repeated is None:
                    repeated = set()
                repeated.add(key)
            else:
                first[key] = value
    headers = Headers._trusted(items, first)

    content_length: int | None = None
    chunked = False
    transfer_encoding = first.get("transfer-encoding")
    raw_length = first.get("content-length")
    if repeated:
        if "transfer-encoding" in repeated:
            transfer_encoding = ", ".join(headers.getall("transfer-encoding"))
        if "content-length" in repeated and len(set(headers.getall("content-length"))) > 1:
            raise HttpError(400, "conflicting Content-Length headers")
    if transfer_encoding is not None:
        if http10:
            raise HttpError(400, "Transfer-Encoding is not allowed in HTTP/1.0")
        if raw_length is not None:
            raise HttpError(400, "both Content-Length and Transfer-Encoding")
        codings = [coding.strip(" \t").lower() for coding in transfer_encoding.split(",")]
        if codings != ["chunked"]:
            if codings[-1] != "chunked":
                raise HttpError(400, "Transfer-Encoding must end with chunked")
            raise HttpError(501, "only the chunked transfer-coding is supported")
        chunked = True
    elif raw_length is not None:
        if not (raw_length.isascii() and raw_length.isdigit()) or len(raw_length) > 18:
            raise HttpError(400, "invalid Content-Length")
        content_length = int(raw_length)

    connection = first.get("connection")
    if repeated and "connection" in repeated:
        connection = ", ".join(headers.getall("connection"))
    if connection is None:
        close = http10
    else:
        tokens = connection.lower()
        if "close" in tokens and "close" in _tokens(tokens):
            close = True
        elif http10:
            close = "keep-alive" not in _tokens(tokens)
        else:
            close = False
    expect = first.get("expect")
    expect_continue = expect is not None and not http10 and expect.lower() == "100-continue"
    return Request(
        method_b.decode("ascii"),
        target,
        (1, 0) if http10 else (1, 1),
        headers,
        content_length,
        chunked,
        close,
        expect_continue,
    )


def _tokens(value: str) -> set[str]:
    return {token.strip(" \t") for token in value.split(",")}


def _head_error(head: bytes) -> HttpError:
    """Say which part of a head that failed to parse is wrong."""
    line, _, rest = head.partition(b"\r\n")
    if re.fullmatch(_REQUEST_LINE, line) is None:
        if b"\n" in line or b"\r" in line:
            return HttpError(400, "bare CR or LF in the request line")
        return HttpError(400, "malformed request line")
    for field in rest.split(b"\r\n"):
        if field[:1] in (b" ", b"\t"):
            return HttpError(400, "obsolete line folding in a header field")
        if re.fullmatch(_FIELD_LINE, field) is None:
            return HttpError(400, "malformed header field")
    return HttpError(400, "malformed request head")


def _origin_form(target: str) -> str:
    """The path and query of an absolute-form target (``http://host/p?q``); ``*`` stays."""
    if target == "*":
        return target
    scheme, sep, rest = target.partition("://")
    if not sep or scheme.lower() not in ("http", "https") or not rest:
        raise HttpError(400, "unsupported request target")
    slash = rest.find("/")
    question = rest.find("?")
    if slash < 0 or 0 <= question < slash:
        return "/" + rest[question:] if question >= 0 else "/"
    return rest[slash:]


_chunk_line_re: re.Pattern[bytes] | None = None


def _chunk_line() -> re.Pattern[bytes]:
    global _chunk_line_re
    if _chunk_line_re is None:
        _chunk_line_re = re.compile(_CHUNK_LINE)
    return _chunk_line_re


def check_field_line(line: bytes) -> None:
    """Validate one trailer field line; raise HttpError(400) if it is malformed."""
    if re.fullmatch(_FIELD_LINE, line) is None:
        raise HttpError(400, "malformed trailer field")


class ChunkedDecoder:
    """Incremental decoder of a chunked body, fed from a connection's receive buffer.

    ``decode(buf, out)`` consumes what it can from ``buf`` (a bytearray), appends body bytes
    to ``out`` and returns True once the last chunk and the trailers are in. ``announced`` is
    the sum of chunk sizes seen so far: a limit can be enforced before the data arrives.
    """

    __slots__ = ("_fields", "_remaining", "_state", "_trailer_bytes", "announced")

    _SIZE, _DATA, _DATA_END, _TRAILER, _DONE = range(5)

    def __init__(self) -> None:
        self._state = self._SIZE
        self._remaining = 0
        self._trailer_bytes = 0
        self._fields = 0
        self.announced = 0

    @property
    def done(self) -> bool:
        return self._state == self._DONE

    def decode(self, buf: bytearray, out: list[bytes]) -> bool:
        while True:
            state = self._state
            if state == self._DATA:
                if not buf:
                    return False
                take = self._remaining
                if take >= len(buf):
                    take = len(buf)
                    out.append(bytes(buf))
                    buf.clear()
                else:
                    out.append(bytes(buf[:take]))
                    del buf[:take]
                self._remaining -= take
                if not self._remaining:
                    self._state = self._DATA_END
            elif state == self._SIZE:
                end = buf.find(b"\r\n", 0, MAX_CHUNK_LINE_BYTES + 2)
                if end < 0:
                    self._check_incomplete_line(buf, "chunk size line")
                    return False
                match = _chunk_line().fullmatch(buf, 0, end)
                if match is None:
                    raise HttpError(400, "malformed chunk size")
                size = int(match[1], 16)
                del buf[: end + 2]
                if size:
                    self.announced += size
                    self._remaining = size
                    self._state = self._DATA
                else:
                    self._state = self._TRAILER
            elif state == self._DATA_END:
                if len(buf) < 2:
                    if buf and buf[0] != 0x0D:
                        raise HttpError(400, "chunk data not followed by CRLF")
                    return False
                if buf[0] != 0x0D or buf[1] != 0x0A:
                    raise HttpError(400, "chunk data not followed by CRLF")
                del buf[:2]
                self._state = self._SIZE
            elif state == self._TRAILER:
                end = buf.find(b"\r\n", 0, MAX_HEAD_BYTES + 2)
                if end < 0:
                    self._check_incomplete_line(buf, "trailer field")
                    return False
                if end == 0:
                    del buf[:2]
                    self._state = self._DONE
                    return True
                self._trailer_bytes += end + 2
                self._fields += 1
                if self._trailer_bytes > MAX_HEAD_BYTES or self._fields > MAX_HEADERS:
                    raise HttpError(431, "trailer section too large")
                check_field_line(bytes(buf[:end]))
                del buf[: end + 2]
            else:
                return True

    def _check_incomplete_line(self, buf: bytearray, what: str) -> None:
        limit = MAX_CHUNK_LINE_BYTES if self._state == self._SIZE else MAX_HEAD_BYTES
        if len(buf) > limit:
            raise HttpError(400, f"{what} too long")
        if b"\n" in buf:  # an LF with no CR before it: the CRLF search found none
            raise HttpError(400, f"bare LF in a {what}")


class Response:
    """A complete response; the server adds Content-Length, Date and Connection."""

    __slots__ = ("body", "headers", "reason", "status")

    prepared = False  # never streamed (StreamResponse has the same attribute)

    def __init__(
        self,
        status: int = 200,
        body: bytes = b"",
        headers: Headers | Any = None,
        reason: str | None = None,
    ) -> None:
        self.status = status
        self.body = body
        self.headers = headers if isinstance(headers, Headers) else Headers(headers)
        self.reason = reason

    @property
    def text(self) -> str:
        return self.body.decode("utf-8", "replace")

    def __repr__(self) -> str:
        return f"<Response {self.status} {len(self.body)} bytes>"


class StreamResponse:
    """A response whose body is written piece by piece after ``prepare``.

    With a Content-Length header the body is sent as is, without one it is chunked (or, for
    an HTTP/1.0 client, ended by closing the connection). Returning it unfinished (no
    ``write_eof``) aborts the connection, so the client sees a broken response.
    """

    __slots__ = ("_conn", "_framing", "finished", "headers", "prepared", "reason", "status")

    def __init__(
        self, status: int = 200, reason: str | None = None, headers: Headers | Any = None
    ) -> None:
        self.status = status
        self.reason = reason
        self.headers = headers if isinstance(headers, Headers) else Headers(headers)
        self.prepared = False
        self.finished = False
        self._conn: Any = None
        self._framing = FRAMING_NONE

    async def prepare(self, request: Request) -> None:
        conn = request._conn
        conn.start_stream(request, self)
        self._conn = conn
        self.prepared = True
        await conn.drain()

    async def write(self, data: bytes) -> None:
        assert self._conn is not None, "prepare() first"
        await self._conn.write_stream(self, data)

    async def write_eof(self) -> None:
        assert self._conn is not None, "prepare() first"
        self._conn.end_stream(self)
        await self._conn.drain()


# Response heads.

_DAYS = ("Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun")
_MONTHS = ("", "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")
_date_second = -1
_date_value = ""


def http_date(timestamp: float | None = None) -> str:
    """An IMF-fixdate (``Sun, 06 Nov 1994 08:49:37 GMT``); the current one is cached per second."""
    global _date_second, _date_value
    if timestamp is not None:
        return _format_date(timestamp)
    now = int(time.time())
    if now != _date_second:
        _date_value = _format_date(now)
        _date_second = now
    return _date_value


def _format_date(timestamp: float) -> str:
    t = time.gmtime(timestamp)
    return (
        f"{_DAYS[t.tm_wday]}, {t.tm_mday:02d} {_MONTHS[t.tm_mon]} {t.tm_year:04d} "
        f"{t.tm_hour:02d}:{t.tm_min:02d}:{t.tm_sec:02d} GMT"
    )


def status_line(status: int, reason: str | None = None) -> str:
    return f"HTTP/1.1 {status} {reason or REASONS.get(status, 'Unknown')}\r\n"
