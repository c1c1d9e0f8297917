"""The three servers the watchdog benchmark compares, each returning the same bytes.

- bare:   aiohttp + uvloop, the ceiling for any Python server here.
- flask:  an equivalent of the OpenFaaS python3-http template's index.py (Flask behind waitress,
          default 4 threads), which is what OpenFaaS runs behind its Go of-watchdog.
Run as `python servers.py bare PORT` or `python servers.py flask PORT HANDLER_DIR`.
"""

from __future__ import annotations

import sys


def bare(port: int) -> None:
    import uvloop
    from aiohttp import web

    body = b"Hello, world!"

    async def hello(request: web.Request) -> web.Response:
        await request.read()
        return web.Response(body=body)

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", hello)
    uvloop.install()
    web.run_app(app, host="127.0.0.1", port=port, access_log=None, print=None)


def flask(port: int, handler_dir: str) -> None:
    import json
    import os

    from flask import Flask, request
    from waitress import serve

    sys.path.insert(0, handler_dir)
    from function import handler  # type: ignore[import-not-found]

    app = Flask(__name__)

    class Event:
        def __init__(self) -> None:
            self.body = request.get_data()
            self.headers = request.headers
            self.method = request.method
            self.query = request.args
            self.path = request.path

    class Context:
        def __init__(self) -> None:
            self.hostname = os.getenv("HOSTNAME", "localhost")

    def to_response(result):  # type: ignore[no-untyped-def]
        if result is None:
            return ("", 200)
        if not isinstance(result, dict):
            return (result, 200)
        body = result.get("body", "")
        headers = result.get("headers", {})
        if isinstance(body, dict | list):
            body = json.dumps(body)
            headers = {**headers, "Content-Type": "application/json"}
        return (body, result.get("statusCode", 200), headers)

    @app.route("/", defaults={"path": ""}, methods=["GET", "PUT", "POST", "PATCH", "DELETE"])
    @app.route("/<path:path>", methods=["GET", "PUT", "POST", "PATCH", "DELETE"])
    def call_handler(path: str):  # type: ignore[no-untyped-def]
        return to_response(handler.handle(Event(), Context()))

    serve(app, host="127.0.0.1", port=port, _quiet=True)


if __name__ == "__main__":
    kind, port = sys.argv[1], int(sys.argv[2])
    if kind == "bare":
        bare(port)
    else:
        flask(port, sys.argv[3])
