"""A fake gateway speaking exactly the async-call management contract (and /async-function),
on an ephemeral 127.0.0.1 port, for the CLI's unit tests."""

from __future__ import annotations

import base64
import json
import re
import threading
import time
import urllib.parse
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

USER, PASSWORD = "admin", "s3cret"
_CALL_ID = re.compile(r"^[A-Za-z0-9_-]{1,128}$")
FINAL = {"succeeded", "failed", "dead-lettered", "cancelled"}


@dataclass
class Seen:
    method: str
    path: str
    query: dict[str, str]
    headers: dict[str, str]


@dataclass
class FakeState:
    now: float = field(default_factory=time.time)
    calls: dict[str, dict[str, Any]] = field(default_factory=dict)
    dead_letters: list[dict[str, Any]] = field(default_factory=list)
    queues: list[dict[str, Any]] = field(default_factory=list)
    seen: list[Seen] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def status(self, call_id: str, fn: str, ns: str, state: str, **extra: Any) -> dict[str, Any]:
        obj: dict[str, Any] = {
            "callId": call_id,
            "function": fn,
            "namespace": ns,
            "state": state,
            "attempts": 0,
            "lastStatus": None,
            "lastError": None,
            "enqueuedAt": self.now - 300,
            "updatedAt": self.now - 60,
            "nextAttemptAt": None,
            "replays": 0,
            "callbackUrl": None,
            "callbackState": None,
            "callbackStatus": None,
            "history": [],
        }
        obj.update(extra)
        self.calls[call_id] = obj
        return obj


class _Handler(BaseHTTPRequestHandler):
    server: _Server
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: Any) -> None:
        pass

    # -- plumbing ----------------------------------------------------------------------------

    def _send(self, status: int, body: bytes, ctype: str, headers: dict[str, str]) -> None:
        self.send_response(status)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        for key, value in headers.items():
            self.send_header(key, value)
        self.end_headers()
        self.wfile.write(body)

    def _json(self, status: int, value: Any, **headers: str) -> None:
        self._send(status, json.dumps(value).encode(), "application/json", headers)

    def _text(self, status: int, message: str) -> None:
        # The daemon's own error shape: plain text, one line.
        self._send(status, (message + "\n").encode(), "text/plain", {})

    def _handle(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        if length:
            self.rfile.read(length)
        url = urllib.parse.urlsplit(self.path)
        query = dict(urllib.parse.parse_qsl(url.query))
        state = self.server.state
        with state.lock:
            state.seen.append(Seen(self.command, url.path, query, dict(self.headers.items())))
        segments = [urllib.parse.unquote(s) for s in url.path.split("/")[1:]]
        if url.path.startswith("/system/"):
            expected = "Basic " + base64.b64encode(f"{USER}:{PASSWORD}".encode()).decode()
            if self.headers.get("Authorization") != expected:
                self._send(401, b"unauthorized\n", "text/plain", {"WWW-Authenticate": "Basic"})
                return
        with state.lock:
            self._route(state, self.command, segments, query)

    def _route(self, state: FakeState, method: str, seg: list[str], query: dict[str, str]) -> None:
        match (method, seg):
            case ("GET" | "DELETE", ["system", "async", "calls", call_id]):
                if not _CALL_ID.fullmatch(call_id):
                    self._text(400, f"call id {call_id!r} is invalid: use letters, digits")
                    return
                status = state.calls.get(call_id)
                if status is None:
                    self._text(404, f"no async call {call_id!r}")
                    return
                if method == "DELETE":
                    if status["state"] == "running" or status["state"] in FINAL:
                        # A JSON error body this time: the client must show its message.
                        self._json(409, {"message": f"call {call_id} is {status['state']}"})
                        return
                    status["state"] = "cancelled"
                self._json(200, status)
            case ("GET", ["system", "async", "dead-letters"]):
                letters = [
                    d
                    for d in state.dead_letters
                    if query.get("namespace") in (None, d["namespace"])
                    and query.get("name") in (None, d["function"])
                    and d["seq"] > int(query.get("after", 0))
                ]
                if "limit" in query:
                    letters = letters[: int(query["limit"])]
                self._json(200, letters)
            case ("POST", ["system", "async", "dead-letters", call_id, "replay"]):
                letter = next((d for d in state.dead_letters if d["callId"] == call_id), None)
                if letter is None:
                    self._text(404, f"no dead letter {call_id!r}")
                    return
                state.dead_letters.remove(letter)
                status = state.calls[call_id]
                status.update(state="queued", replays=status["replays"] + 1)
                self._json(202, status, **{"X-Call-Id": call_id})
            case ("GET", ["system", "async", "queues"]):
                ns = query.get("namespace")
                self._json(200, [q for q in state.queues if ns in (None, q["namespace"])])
            case ("POST", ["async-function", _]):
                call_id = self.headers.get("X-Call-Id") or "generated-1"
                self._send(202, b"", "text/plain", {"X-Call-Id": call_id})
            case _:
                self._text(404, "404: Not Found")

    do_GET = do_POST = do_DELETE = do_PUT = _handle


class _Server(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, state: FakeState) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.state = state


@dataclass
class FakeGateway:
    url: str
    state: FakeState

    def args(self, *argv: str) -> list[str]:
        """CLI arguments with this gateway and its credentials after the verb."""
        return [*argv, "-g", self.url, "--user", USER, "--password", PASSWORD]

    def seen(self, path: str) -> list[Seen]:
        with self.state.lock:
            return [s for s in self.state.seen if s.path == path]


def _sample(state: FakeState) -> None:
    now = state.now
    state.status("call-queued", "hello", "openfaas-fn", "queued", callbackUrl="http://cb.test/done")
    state.status(
        "call-running",
        "hello",
        "openfaas-fn",
        "running",
        attempts=1,
        history=[{"attempt": 1, "startedAt": now - 2, "finishedAt": None, "status": None}],
    )
    state.status(
        "call-failed",
        "resize",
        "team-a",
        "failed",
        attempts=2,
        lastStatus=503,
        lastError="upstream said 503",
        nextAttemptAt=now + 30,
        callbackUrl="http://cb.test/r",
        callbackState="delivered",
        callbackStatus=200,
        history=[
            {
                "attempt": 1,
                "startedAt": now - 100,
                "finishedAt": now - 99.75,
                "status": 500,
                "error": "boom\twith tab",
            },
            {
                "attempt": 2,
                "startedAt": now - 50,
                "finishedAt": now - 48.5,
                "status": 503,
                "error": "upstream said 503",
            },
        ],
    )
    for seq, (call_id, fn, ns) in enumerate(
        [("dead-1", "resize", "team-a"), ("dead-2", "hello", "openfaas-fn")], start=3
    ):
        state.status(call_id, fn, ns, "dead-lettered", attempts=3, lastStatus=500)
        state.dead_letters.append(
            {
                "seq": seq,
                "callId": call_id,
                "function": fn,
                "namespace": ns,
                "method": "POST",
                "path": "/",
                "query": "",
                "callbackUrl": None,
                "enqueuedAt": now - 7200,
                "bodyBytes": 12,
                "attempts": 3,
                "lastStatus": 500 if seq == 3 else None,
                "lastError": "boom " * 30 if seq == 3 else "connection refused\nby replica",
                "firstAttemptAt": now - 7190,
                "deadAt": now - 3700,
                "replays": 0,
                "history": [],
            }
        )
    state.queues.extend(
        [
            {
                "name": "hello",
                "namespace": "openfaas-fn",
                "pending": 4,
                "inFlight": 1,
                "running": 1,
                "concurrency": 2,
            },
            {
                "name": "resize",
                "namespace": "team-a",
                "pending": 0,
                "inFlight": 0,
                "running": 0,
                "concurrency": None,
            },
        ]
    )


@pytest.fixture(scope="session")
def _fake_server() -> Iterator[_Server]:
    # One server for the session (shutting one down waits out its poll interval); each test
    # gets fresh state.
    server = _Server(FakeState())
    thread = threading.Thread(target=server.serve_forever, name="fake-gateway", daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


@pytest.fixture
def fake_gateway(_fake_server: _Server) -> FakeGateway:
    state = FakeState()
    _sample(state)
    _fake_server.state = state
    host, port = _fake_server.server_address[:2]
    return FakeGateway(f"http://{host!s}:{port}", state)
