"""The watchdog's own HTTP/1.1 server over real sockets, byte by byte as clients send them.

Keep-alive and pipelining, HTTP/1.0, chunked uploads, ``Expect: 100-continue``, timeouts
(slowloris), hostile input, and closing keep-alive connections on drain. The watchdog runs
in python mode (``python -m watchdog``) with the fixture handler.
"""

from __future__ import annotations

import json
import shutil
import signal
import socket
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

ORIGIN = "x-localfaas-origin"
READ_TIMEOUT_S = 1.0
MAX_BODY = 1024


@dataclass
class Reply:
    status: int
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)


class RawClient:
    """One TCP connection; reads responses one at a time from whatever has arrived."""

    def __init__(self, port: int, timeout_s: float = 10.0) -> None:
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=timeout_s)
        self.pending = b""

    def send(self, data: bytes) -> None:
        self.sock.sendall(data)

    def _fill(self) -> None:
        chunk = self.sock.recv(65536)
        if not chunk:
            raise EOFError("the server closed the connection")
        self.pending += chunk

    def response(self, head_only: bool = False) -> Reply:
        while b"\r\n\r\n" not in self.pending:
            self._fill()
        head, _, self.pending = self.pending.partition(b"\r\n\r\n")
        lines = head.decode("latin-1").split("\r\n")
        version, status, _ = lines[0].split(" ", 2)
        assert version == "HTTP/1.1", lines[0]
        headers: dict[str, str] = {}
        for line in lines[1:]:
            name, _, value = line.partition(":")
            assert name.lower() not in headers, f"repeated {name}"
            headers[name.lower()] = value.strip()
        length = 0 if head_only else int(headers.get("content-length", "0"))
        while len(self.pending) < length:
            self._fill()
        body, self.pending = self.pending[:length], self.pending[length:]
        return Reply(int(status), headers, body)

    def closed_by_server(self, timeout_s: float = 5.0) -> bool:
        """True once the server closed (EOF or reset); False if still open after the wait."""
        self.sock.settimeout(timeout_s)
        try:
            while True:
                chunk = self.sock.recv(65536)
                if not chunk:
                    return True
                self.pending += chunk
        except TimeoutError:
            return False
        except ConnectionResetError:
            return True

    def close(self) -> None:
        self.sock.close()


def get(path: str, *extra: str, version: str = "1.1") -> bytes:
    lines = [f"GET {path} HTTP/{version}", "Host: test", *extra]
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


def post(path: str, body: bytes, *extra: str) -> bytes:
    lines = [f"POST {path} HTTP/1.1", "Host: test", f"Content-Length: {len(body)}", *extra]
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + body


@pytest.fixture(scope="module")
def function_dir(tmp_path_factory: pytest.TempPathFactory, helpers: Any) -> Path:
    target = tmp_path_factory.mktemp("python_fn") / "fn"
    shutil.copytree(helpers.fixtures / "python_fn", target)
    return target


@pytest.fixture(scope="module")
def watchdog(start_module_watchdog: Any, function_dir: Path) -> Any:
    return start_module_watchdog(
        {"read_timeout": f"{READ_TIMEOUT_S:g}s", "max_body_bytes": str(MAX_BODY)},
        cwd=function_dir,
    )


@pytest.fixture
def client(watchdog: Any) -> Any:
    clients: list[RawClient] = []

    def connect(port: int | None = None) -> RawClient:
        raw = RawClient(port or watchdog.port)
        clients.append(raw)
        return raw

    yield connect
    for raw in clients:
        raw.close()


def test_python_mode_never_imports_aiohttp(watchdog: Any, client: Any) -> None:
    conn = client()
    conn.send(get("/modules"))
    assert conn.response().json() == []


def test_keep_alive_serves_many_requests_on_one_connection(client: Any) -> None:
    conn = client()
    for i in range(50):
        conn.send(post("/echo-body", f"request {i}".encode()))
        reply = conn.response()
        assert (reply.status, reply.body) == (200, f"request {i}".encode())
        assert "connection" not in reply.headers
        assert reply.headers["date"].endswith(" GMT")
        assert re_duration(reply.headers["x-duration-seconds"])


def re_duration(value: str) -> bool:
    whole, _, fraction = value.partition(".")
    return whole.isdigit() and len(fraction) == 6 and fraction.isdigit()


def test_pipelined_requests_are_answered_in_order(client: Any) -> None:
    conn = client()
    conn.send(
        get("/text")
        + post("/echo-body", b"second")
        + get("/none")
        + b"\r\n"  # an empty line between requests is allowed
        + post("/echo-body", b"fourth")
    )
    replies = [conn.response() for _ in range(4)]
    assert [(r.status, r.body) for r in replies] == [
        (200, b"plain text"),
        (200, b"second"),
        (200, b""),
        (200, b"fourth"),
    ]


def test_a_request_split_into_single_bytes_is_served(client: Any) -> None:
    conn = client()
    for byte in post("/echo-body", b"bytewise"):
        conn.send(bytes([byte]))
    assert conn.response().body == b"bytewise"


def test_connection_close_is_honoured(client: Any) -> None:
    conn = client()
    conn.send(get("/text", "Connection: close"))
    reply = conn.response()
    assert reply.status == 200
    assert reply.headers["connection"] == "close"
    assert conn.closed_by_server()


def test_http_1_0_closes_unless_keep_alive_is_asked_for(client: Any) -> None:
    conn = client()
    conn.send(get("/text", version="1.0"))
    reply = conn.response()
    assert (reply.status, reply.body) == (200, b"plain text")
    assert reply.headers["connection"] == "close"
    assert conn.closed_by_server()

    conn = client()
    conn.send(get("/text", "Connection: keep-alive", version="1.0"))
    assert conn.response().headers["connection"] == "keep-alive"
    conn.send(get("/none", "Connection: keep-alive", version="1.0"))
    assert conn.response().status == 200


def test_head_gets_the_length_but_no_body(client: Any) -> None:
    conn = client()
    conn.send(b"HEAD /text HTTP/1.1\r\nHost: t\r\n\r\n")
    reply = conn.response(head_only=True)
    assert reply.status == 200
    assert reply.headers["content-length"] == "10"
    # No body bytes followed: the next response starts right away.
    conn.send(get("/none"))
    assert conn.response().status == 200


def test_chunked_upload_in_small_pieces_with_extensions_and_trailers(client: Any) -> None:
    conn = client()
    conn.send(b"POST /echo-body HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n")
    for piece in (b"5\r\nhel", b"lo\r\n", b"1;ext=1\r\n", b" \r\n", b"5\r\nworld\r", b"\n0\r\n"):
        conn.send(piece)
        time.sleep(0.01)
    conn.send(b"X-Trailer: ignored\r\n\r\n")
    reply = conn.response()
    assert (reply.status, reply.body) == (200, b"hello world")
    conn.send(get("/none"))  # the connection is still in step
    assert conn.response().status == 200


def test_expect_100_continue_like_curl(client: Any) -> None:
    conn = client()
    body = b"x" * 900
    conn.send(
        b"POST /echo-body HTTP/1.1\r\nHost: t\r\nExpect: 100-continue\r\n"
        b"Content-Length: %d\r\n\r\n" % len(body)
    )
    interim = conn.response(head_only=True)  # curl waits for this before it sends the body
    assert interim.status == 100
    conn.send(body)
    reply = conn.response()
    assert (reply.status, reply.body) == (200, body)


def test_expect_100_continue_with_a_body_too_large_is_413_without_continue(
    client: Any,
) -> None:
    conn = client()
    conn.send(
        b"POST /echo-body HTTP/1.1\r\nHost: t\r\nExpect: 100-continue\r\n"
        b"Content-Length: %d\r\n\r\n" % (MAX_BODY + 1)
    )
    reply = conn.response()
    assert reply.status == 413
    assert reply.headers[ORIGIN] == "watchdog"
    assert reply.headers["connection"] == "close"  # the body may still come: never reuse
    assert conn.closed_by_server()


def test_content_length_over_the_limit_is_413_before_the_body_is_read(client: Any) -> None:
    conn = client()
    conn.send(b"POST /echo-body HTTP/1.1\r\nHost: t\r\nContent-Length: 100000\r\n\r\nxx")
    reply = conn.response()
    assert reply.status == 413
    assert "max_body_bytes" in reply.body.decode()


def test_chunked_body_over_the_limit_is_413_as_soon_as_a_size_says_so(client: Any) -> None:
    conn = client()
    # Announce more than the limit and send none of it: the answer must not wait for the data.
    conn.send(
        b"POST /echo-body HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n"
        b"200\r\n" + b"a" * 0x200 + b"\r\n" + b"300\r\n"
    )
    reply = conn.response()
    assert reply.status == 413
    assert reply.headers[ORIGIN] == "watchdog"
    assert conn.closed_by_server()


def test_slowloris_head_gets_408_and_other_connections_are_served(
    client: Any, watchdog: Any
) -> None:
    slow = client()
    began = time.monotonic()
    slow.send(b"GET /text HTTP/1.1\r\nHost: t\r\n")
    other_latencies = []
    status = None
    while time.monotonic() - began < READ_TIMEOUT_S + 3:
        try:
            slow.send(b"X-Drip: 1\r\n")  # never the empty line that ends the head
        except OSError:
            break
        fast = client()
        started = time.monotonic()
        fast.send(get("/text"))
        assert fast.response().status == 200
        other_latencies.append(time.monotonic() - started)
        slow.sock.settimeout(0.2)
        try:
            status = slow.response().status
            break
        except TimeoutError:
            continue
    elapsed = time.monotonic() - began
    assert status == 408
    assert READ_TIMEOUT_S - 0.1 <= elapsed < READ_TIMEOUT_S + 2
    assert max(other_latencies) < 0.5
    assert slow.closed_by_server()


def test_a_body_that_stalls_gets_408(client: Any) -> None:
    conn = client()
    began = time.monotonic()
    conn.send(b"POST /echo-body HTTP/1.1\r\nHost: t\r\nContent-Length: 10\r\n\r\nabc")
    reply = conn.response()
    assert reply.status == 408
    assert reply.headers[ORIGIN] == "watchdog"
    assert READ_TIMEOUT_S - 0.1 <= time.monotonic() - began < READ_TIMEOUT_S + 2
    assert conn.closed_by_server()


def test_a_chunked_body_that_stalls_gets_408(client: Any) -> None:
    conn = client()
    conn.send(b"POST /echo-body HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nab")
    assert conn.response().status == 408


def test_an_idle_connection_stays_open_past_read_timeout(client: Any) -> None:
    # read_timeout is for reading a request; between requests a keep-alive connection idles.
    conn = client()
    conn.send(get("/none"))
    assert conn.response().status == 200
    assert not conn.closed_by_server(timeout_s=READ_TIMEOUT_S + 0.5)
    conn.send(get("/text"))
    assert conn.response().status == 200


@pytest.mark.parametrize(
    ("raw", "status"),
    [
        (b"\x16\x03\x01\x00\xa5\x01\x00\x00\xa1\x03\x03\x00\x01", 400),  # TLS, no CRLF at all
        (b"NOT HTTP AT ALL\r\n\r\n", 400),
        (b"GET / HTTP/1.1\nHost: x\n\n", 400),  # bare LF line ends
        (b"GET / HTTP/1.1\r\nHost: x\n\r\n\r\n", 400),
        (b"GET / HTTP/1.1\r\nA: 1\r\n folded\r\n\r\n", 400),
        (b"GET / HTTP/1.1\r\nBad Header: x\r\n\r\n", 400),
        (b"GET / HTTP/1.1\r\nA: x\x00y\r\n\r\n", 400),
        (b"GET / HTTP/3.0\r\n\r\n", 505),
        (b"POST / HTTP/1.1\r\nContent-Length: nope\r\n\r\n", 400),
        (b"POST / HTTP/1.1\r\nContent-Length: 3\r\nContent-Length: 4\r\n\r\nabc", 400),
        (b"POST / HTTP/1.1\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n", 400),
        (b"POST / HTTP/1.1\r\nTransfer-Encoding: gzip, chunked\r\n\r\n", 501),
        (b"POST /echo-body HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n", 400),
        (b"POST /echo-body HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabcXX", 400),
        (b"GET / HTTP/1.1\r\nX-Big: " + b"a" * 70_000 + b"\r\n\r\n", 431),
        (b"GET / HTTP/1.1\r\nX-Big: " + b"a" * 70_000, 431),  # not even finished
    ],
)
def test_hostile_input_is_refused_and_the_server_keeps_serving(
    client: Any, watchdog: Any, helpers: Any, raw: bytes, status: int
) -> None:
    conn = client()
    conn.send(raw)
    reply = conn.response()
    assert reply.status == status
    assert reply.headers[ORIGIN] == "watchdog"
    assert reply.headers["connection"] == "close"
    assert conn.closed_by_server()
    assert helpers.http_status(watchdog.url("/hello")) == 200
    assert watchdog.process.poll() is None


def test_a_client_vanishing_mid_request_harms_no_one(client: Any, watchdog: Any) -> None:
    for partial in (
        b"GET /text HT",
        b"POST /echo-body HTTP/1.1\r\nContent-Length: 100\r\n\r\nabc",
        b"POST /echo-body HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nab",
    ):
        conn = client()
        conn.send(partial)
        conn.sock.shutdown(socket.SHUT_WR)
        conn.closed_by_server()
    conn = client()
    conn.send(get("/text"))
    assert conn.response().status == 200
    assert watchdog.process.poll() is None


def test_a_client_that_stops_reading_and_leaves_is_no_error(client: Any, watchdog: Any) -> None:
    conn = client()
    conn.send(get("/big?n=1000000") * 40)  # 40 MB of answers nobody reads
    first = conn.response()
    assert (first.status, len(first.body)) == (200, 1_000_000)
    time.sleep(0.3)  # the server is now blocked on a full socket buffer
    conn.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
    conn.close()  # with SO_LINGER 0: a reset, as a crashed client would leave
    other = client()
    other.send(get("/text"))
    assert other.response().status == 200
    time.sleep(0.2)
    assert "HTTP connection failed" not in watchdog.stderr()
    assert watchdog.process.poll() is None


def test_query_get_is_the_first_value_like_flask(client: Any) -> None:
    conn = client()
    conn.send(get("/query-first?a=1&a=2&b=&c=x%20y"))
    assert conn.response().json() == {"a": "1", "b": "", "c": "x y"}


def test_an_unread_body_that_already_arrived_does_not_cost_the_connection(
    client: Any, watchdog: Any
) -> None:
    # The metrics port never reads bodies: the server drops the buffered body and goes on.
    conn = client(watchdog.metrics_port)
    conn.send(post("/not-metrics", b"ignored body"))
    reply = conn.response()
    assert reply.status == 404
    assert "connection" not in reply.headers
    conn.send(get("/metrics"))
    reply = conn.response()
    assert reply.status == 200
    assert b"http_requests_in_flight" in reply.body


def test_drain_closes_idle_keep_alive_connections_and_finishes_busy_ones(
    start_watchdog: Any, function_dir: Path, tmp_path: Path, helpers: Any
) -> None:
    watchdog = start_watchdog({"healthcheck_interval": "0.3"}, cwd=function_dir)
    idle = RawClient(watchdog.port)
    busy = RawClient(watchdog.port)
    try:
        idle.send(get("/none"))
        assert idle.response().status == 200
        gate, entered = tmp_path / "gate", tmp_path / "entered"
        busy.send(get(f"/gate?gate={gate}&entered={entered}"))
        helpers.wait_until(entered.exists, what="the busy request to start")

        watchdog.send_signal(signal.SIGTERM)
        watchdog.wait_log("draining: SIGTERM")
        # During the healthcheck interval the idle connection still works ...
        idle.send(get("/_/ready"))
        assert idle.response().status == 503
        # ... then the listener stops and idle keep-alive connections are closed.
        watchdog.wait_log("draining: 1 in flight")
        assert idle.closed_by_server()
        assert watchdog.process.poll() is None
        gate.touch()
        reply = busy.response()
        assert (reply.status, reply.body) == (200, b"gate passed")
        assert reply.headers["connection"] == "close"
        assert busy.closed_by_server()
        assert watchdog.wait_exit() == 0
    finally:
        idle.close()
        busy.close()
