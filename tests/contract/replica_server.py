"""A stand-in function replica for the Docker contract tests (stdlib only, runs in the image).

Copied into the test image built FROM localfaas/python-base:bookworm. Answers like the
watchdog (`/_/ready`, `/_/health`) plus a few probes the tests use to look inside:
  /log?text=..&stream=stderr   print a line (the log tests)
  /whoami                      uid, gid and groups of the process
  /read?path=..                read a file (secrets)
  /write?path=..               try to write a file (read-only rootfs, read-only mounts)
  anything else                JSON echo of method and path
"""

from __future__ import annotations

import http.server
import json
import os
import signal
import sys
import urllib.parse


class Handler(http.server.BaseHTTPRequestHandler):
    def _send(self, status: int, body: object, content_type: str = "application/json") -> None:
        data = body if isinstance(body, bytes) else json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(data)))
        self.send_header("X-Replica", os.uname().nodename)
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self) -> None:
        url = urllib.parse.urlsplit(self.path)
        query = dict(urllib.parse.parse_qsl(url.query))
        if url.path in ("/_/ready", "/_/health"):
            self._send(200, b"OK", "text/plain")
        elif url.path == "/log":
            out = sys.stderr if query.get("stream") == "stderr" else sys.stdout
            print(query.get("text", ""), file=out, flush=True)
            self._send(200, {"printed": query.get("text", "")})
        elif url.path == "/whoami":
            self._send(200, {"uid": os.getuid(), "gid": os.getgid(), "groups": os.getgroups()})
        elif url.path == "/read":
            try:
                with open(query["path"], "rb") as f:
                    self._send(200, f.read(), "application/octet-stream")
            except OSError as exc:
                self._send(403, {"error": exc.strerror, "errno": exc.errno})
        elif url.path == "/write":
            try:
                with open(query["path"], "wb") as f:
                    f.write(b"x")
                self._send(200, {"written": query["path"]})
            except OSError as exc:
                self._send(403, {"error": exc.strerror, "errno": exc.errno})
        else:
            self._send(200, {"method": "GET", "path": url.path, "query": url.query})

    def log_message(self, format: str, *args: object) -> None:
        pass  # keep the container's log to what the tests print


def main() -> None:
    # PID 1 ignores SIGTERM unless it handles it: exit at once so `stop` is quick.
    signal.signal(signal.SIGTERM, lambda *_: os._exit(0))
    server = http.server.ThreadingHTTPServer(("0.0.0.0", 8080), Handler)
    print("listening on 8080", flush=True)
    server.serve_forever()


if __name__ == "__main__":
    main()
