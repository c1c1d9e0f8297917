"""Publish (or request) one NATS message, with nats-py from localfaas's own virtualenv:

    .venv/bin/python examples/nats-python/publish.py orders.eu '{"id": 1}'
    .venv/bin/python examples/nats-python/publish.py --request orders.eu '{"id": 2}'

The server is --server, else $NATS_URL, else the one the daemon's NATS connector uses (read from
GET /system/connectors with the gateway credentials in the state dir, as the CLI does).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys

import nats

from runtime.cli import client_from


def server_url(args: argparse.Namespace) -> str:
    if args.server or os.environ.get("NATS_URL"):
        return str(args.server or os.environ["NATS_URL"])
    client = client_from(argparse.Namespace(gateway=None, user=None, password=None, state_dir=None))
    for binding in client.connector_bindings():
        if binding["connector"] == "nats" and binding["details"].get("server"):
            return str(binding["details"]["server"])
    sys.exit("no NATS binding found: deploy examples/nats-python first, or pass --server")


async def main(args: argparse.Namespace) -> None:
    nc = await nats.connect(server_url(args))
    try:
        headers = dict(h.split(":", 1) for h in args.header)
        if args.request:
            reply = await nc.request(args.subject, args.data.encode(), timeout=30, headers=headers)
            print(f"status {(reply.headers or {}).get('X-Function-Status')}: {reply.data.decode()}")
        else:
            await nc.publish(args.subject, args.data.encode(), headers=headers)
            await nc.flush()
    finally:
        await nc.close()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("subject")
    parser.add_argument("data", nargs="?", default="")
    parser.add_argument("--request", action="store_true", help="wait for the function's reply")
    parser.add_argument("-H", "--header", action="append", default=[], help="Name:value")
    parser.add_argument("--server", help="NATS URL (env NATS_URL)")
    asyncio.run(main(parser.parse_args()))
