"""`localfaas`: the daemon (`up`) and faas-cli-style client verbs."""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from runtime import __version__
from runtime.client import GatewayClient, GatewayError
from runtime.config import Settings, default_state_dir
from runtime.credentials import read_credentials
from runtime.errors import InvalidSpec, LocalFaasError
from runtime.scaling.config import scaling_from_labels

DEFAULT_GATEWAY = "http://127.0.0.1:8080"

# Exit codes scripts can rely on.
EXIT_OK, EXIT_ERROR, EXIT_USAGE, EXIT_NOT_FOUND, EXIT_UNREACHABLE = 0, 1, 2, 3, 4


def setup_logging(verbose: bool = False) -> None:
    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        datefmt="%Y-%m-%dT%H:%M:%S",
    )
    logging.getLogger("aiohttp.access").setLevel(logging.WARNING)


def print_table(rows: Sequence[Sequence[Any]], header: Sequence[str]) -> None:
    table = [list(map(str, header))] + [[str(c) for c in row] for row in rows]
    widths = [max(len(row[i]) for row in table) for i in range(len(header))]
    for row in table:
        print("  ".join(cell.ljust(widths[i]) for i, cell in enumerate(row)).rstrip())


def client_from(args: argparse.Namespace) -> GatewayClient:
    url = args.gateway or os.environ.get("OPENFAAS_URL") or DEFAULT_GATEWAY
    user, password = args.user, args.password
    if password is None:
        password = os.environ.get("LOCALFAAS_PASSWORD")
    if password is None:
        state_dir = (
            Path(args.state_dir)
            if args.state_dir
            else (
                Path(os.environ["LOCALFAAS_STATE_DIR"])
                if os.environ.get("LOCALFAAS_STATE_DIR")
                else default_state_dir(os.environ)
            )
        )
        creds = read_credentials(state_dir)
        if creds is not None:
            user, password = user or creds.user, creds.password
    return GatewayClient(url, user or "admin", password)


# -- verbs -------------------------------------------------------------------------------------


def cmd_up(args: argparse.Namespace) -> int:
    if args.file:
        from runtime.cli_stack import build_and_deploy

        return build_and_deploy(args, client_from(args), deploy=True)
    from runtime.daemon import serve

    setup_logging(args.verbose)
    settings = Settings.load(
        os.environ,
        host=args.host,
        port=args.port,
        state_dir=args.state_dir,
        nats_url=args.nats_url,
        stop_functions=True if args.stop_functions else None,
    )
    try:
        import uvloop

        uvloop.install()
    except ImportError:
        pass
    asyncio.run(serve(settings))
    return EXIT_OK


def cmd_ls(args: argparse.Namespace) -> int:
    functions = client_from(args).list_functions(args.namespace)
    if args.json:
        print(json.dumps(functions, indent=2))
        return EXIT_OK
    rows = [
        (
            f["name"],
            f.get("namespace", ""),
            f.get("image", ""),
            f.get("invocationCount", 0),
            f"{f.get('availableReplicas', 0)}/{f.get('replicas', 0)}",
        )
        for f in functions
    ]
    print_table(rows, ("NAME", "NAMESPACE", "IMAGE", "INVOCATIONS", "READY"))
    return EXIT_OK


def cmd_describe(args: argparse.Namespace) -> int:
    client = client_from(args)
    status = client.get_function(args.name, args.namespace)
    triggers = client.connector_bindings(args.name, status.get("namespace") or args.namespace)
    if args.json:
        print(json.dumps({**status, "triggers": triggers}, indent=2))
        return EXIT_OK
    fields = [
        ("Name", status["name"]),
        ("Namespace", status.get("namespace", "")),
        ("Status", "Ready" if status.get("availableReplicas") else "Not Ready"),
        ("Replicas", _replicas_line(status)),
        ("Scaling", _scaling_line(status.get("labels") or {})),
        ("Invocations", status.get("invocationCount", 0)),
        ("Image", status.get("image", "")),
        ("Process", status.get("envProcess", "")),
        ("Created", status.get("createdAt", "")),
        ("Labels", ", ".join(f"{k}={v}" for k, v in status.get("labels", {}).items())),
        ("Annotations", ", ".join(f"{k}={v}" for k, v in status.get("annotations", {}).items())),
        ("Secrets", ", ".join(status.get("secrets", []))),
        ("Triggers", "; ".join(f"{t['connector']} {t['trigger']}" for t in triggers) or "-"),
    ]
    width = max(len(k) for k, _ in fields)
    for key, value in fields:
        print(f"{key + ':':<{width + 1}} {value}")
    return EXIT_OK


def _replicas_line(status: dict[str, Any]) -> str:
    line = f"{status.get('availableReplicas', 0)}/{status.get('replicas', 0)}"
    paused = status.get("pausedReplicas") or 0
    return f"{line} ({paused} paused)" if paused else line


def _duration(seconds: float) -> str:
    """15m, 1h30m, 45s, 2.5s: as the labels are written."""
    if seconds < 60 or seconds != int(seconds):
        return f"{seconds:g}s"
    hours, rest = divmod(int(seconds), 3600)
    minutes, secs = divmod(rest, 60)
    parts = [
        f"{hours}h" if hours else "",
        f"{minutes}m" if minutes else "",
        f"{secs}s" if secs else "",
    ]
    return "".join(parts)


def _scaling_line(labels: dict[str, str]) -> str:
    """The function's scaling settings in words, as the daemon reads its labels."""
    try:
        config = scaling_from_labels(labels)
    except InvalidSpec as exc:
        return f"invalid ({exc})"
    if config.fixed:
        return f"fixed at {config.min} replica{'s' if config.min != 1 else ''}"
    unit = {"rps": "requests/s", "capacity": "in flight", "cpu": "milli-CPU"}[config.type]
    line = (
        f"{config.type}, target {config.target:g} {unit} per replica"
        f" ({config.proportion:.0%}), {config.min}-{config.max} replicas"
    )
    idle = []
    if config.pause_after_s > 0:
        who = "replicas" if config.zero else "replicas beyond the minimum"
        idle.append(f"{who} paused after {_duration(config.pause_after_s)} idle")
    if config.zero:
        idle.append(f"to zero after {_duration(config.zero_duration_s)} idle")
    return line + ("; " + ", ".join(idle) if idle else "")


def cmd_invoke(args: argparse.Namespace) -> int:
    body = b"" if sys.stdin.isatty() else sys.stdin.buffer.read()
    headers = {}
    for item in args.header or []:
        key, sep, value = item.partition("=")
        if not sep:
            print(f"error: header {item!r} must be key=value", file=sys.stderr)
            return EXIT_USAGE
        headers[key] = value
    if args.content_type:
        headers["Content-Type"] = args.content_type
    if args.callback_url:
        if not args.async_:
            print("error: --callback-url needs --async", file=sys.stderr)
            return EXIT_USAGE
        headers["X-Callback-Url"] = args.callback_url
    if args.call_id:
        headers["X-Call-Id"] = args.call_id
    reply = client_from(args).invoke(
        args.name,
        body,
        namespace=args.namespace,
        method=args.method.upper(),
        headers=headers,
        asynchronous=args.async_,
    )
    if args.async_:
        print(f"accepted: call id {reply.headers.get('X-Call-Id', '')}", file=sys.stderr)
    sys.stdout.buffer.write(reply.body)
    sys.stdout.flush()
    return EXIT_OK


def cmd_logs(args: argparse.Namespace) -> int:
    try:
        for entry in client_from(args).logs(
            args.name, args.namespace, follow=args.follow, tail=args.tail, since=args.since
        ):
            if args.json:
                print(json.dumps(entry), flush=True)
            else:
                print(f"{entry['timestamp']} {entry['instance']} {entry['text']}", flush=True)
    except KeyboardInterrupt:
        pass
    return EXIT_OK


def cmd_rm(args: argparse.Namespace) -> int:
    client = client_from(args)
    for name in args.names:
        client.delete(name, args.namespace)
        print(f"removed {name}")
    return EXIT_OK


def cmd_scale(args: argparse.Namespace) -> int:
    client_from(args).scale(args.name, args.replicas, args.namespace)
    print(f"scaling {args.name} to {args.replicas}")
    return EXIT_OK


def cmd_secret(args: argparse.Namespace) -> int:
    client = client_from(args)
    if args.secret_cmd in ("create", "update"):
        if args.from_literal is not None:
            value = args.from_literal.encode()
        elif args.from_file is not None:
            value = Path(args.from_file).read_bytes()
        elif not sys.stdin.isatty():
            value = sys.stdin.buffer.read()
        else:
            print(
                "error: give the value with --from-literal, --from-file or stdin", file=sys.stderr
            )
            return EXIT_USAGE
        client.put_secret(args.name, value, args.namespace, update=args.secret_cmd == "update")
        print(f"{args.secret_cmd}d secret {args.name}")
    elif args.secret_cmd == "ls":
        secrets = client.list_secrets(args.namespace)
        if args.json:
            print(json.dumps(secrets, indent=2))
        else:
            print_table(
                [(s["name"], s.get("namespace", "")) for s in secrets], ("NAME", "NAMESPACE")
            )
    elif args.secret_cmd == "rm":
        client.delete_secret(args.name, args.namespace)
        print(f"removed secret {args.name}")
    return EXIT_OK


def cmd_ns(args: argparse.Namespace) -> int:
    namespaces = client_from(args).list_namespaces()
    if args.json:
        print(json.dumps(namespaces))
    else:
        print_table([(n,) for n in namespaces], ("NAMESPACE",))
    return EXIT_OK


def cmd_new(args: argparse.Namespace) -> int:
    from runtime.cli_stack import new_function

    return new_function(args)


def cmd_build(args: argparse.Namespace) -> int:
    from runtime.cli_stack import build_and_deploy

    return build_and_deploy(args, None, deploy=False)


def cmd_deploy(args: argparse.Namespace) -> int:
    from runtime.cli_stack import deploy_only

    return deploy_only(args, client_from(args))


# -- parser --------------------------------------------------------------------------------------


def _client_options(parser: argparse.ArgumentParser, *, namespace: bool = True) -> None:
    parser.add_argument(
        "-g", "--gateway", help=f"gateway URL (env OPENFAAS_URL, default {DEFAULT_GATEWAY})"
    )
    parser.add_argument("--user", help="gateway user (default: from the state dir, else admin)")
    parser.add_argument("--password", help="gateway password (default: from the state dir)")
    parser.add_argument("--state-dir", help="where to read credentials (env LOCALFAAS_STATE_DIR)")
    if namespace:
        parser.add_argument("-n", "--namespace", help="namespace (default openfaas-fn)")


def _stack_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("-f", "--yaml", dest="file", default=None, help="stack file (stack.yml)")
    parser.add_argument("--filter", help="only the function with this name")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="localfaas", description="localfaas: functions on one host"
    )
    parser.add_argument("--version", action="version", version=f"localfaas {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    up = sub.add_parser("up", help="run the daemon; with -f: build and deploy a stack")
    up.add_argument("--host", help="listen address (env LOCALFAAS_HOST, default 127.0.0.1)")
    up.add_argument("--port", type=int, help="listen port (env LOCALFAAS_PORT, default 8080)")
    up.add_argument("--nats-url", help="external NATS server (env LOCALFAAS_NATS_URL)")
    up.add_argument(
        "--stop-functions", action="store_true", help="remove function containers on exit"
    )
    up.add_argument("-v", "--verbose", action="store_true")
    _client_options(up)
    _stack_options(up)
    up.set_defaults(func=cmd_up)

    new = sub.add_parser("new", help="create a function folder from a template")
    new.add_argument("name")
    new.add_argument("--lang", default="python3-http", help="python3-http (default) or dockerfile")
    new.add_argument(
        "-f", "--yaml", dest="file", default="stack.yml", help="stack file to create or extend"
    )
    new.set_defaults(func=cmd_new)

    build = sub.add_parser("build", help="build function images from a stack file")
    _stack_options(build)
    build.set_defaults(func=cmd_build)

    deploy = sub.add_parser("deploy", help="deploy functions from a stack file (or --image)")
    _client_options(deploy)
    _stack_options(deploy)
    deploy.add_argument("--image", help="deploy this image without a stack file")
    deploy.add_argument("--name", help="function name with --image")
    deploy.add_argument("--fprocess", help="process for the watchdog (envProcess)")
    deploy.add_argument("-e", "--env", action="append", help="KEY=VALUE, repeatable")
    deploy.add_argument("-l", "--label", action="append", help="KEY=VALUE, repeatable")
    deploy.add_argument("--annotation", action="append", help="KEY=VALUE, repeatable")
    deploy.add_argument("--secret", action="append", help="secret name, repeatable")
    deploy.set_defaults(func=cmd_deploy)

    invoke = sub.add_parser("invoke", help="call a function with stdin as the body")
    _client_options(invoke)
    invoke.add_argument("name")
    invoke.add_argument("--async", dest="async_", action="store_true", help="queue the call")
    invoke.add_argument("-H", "--header", action="append", help="KEY=VALUE, repeatable")
    invoke.add_argument("--content-type")
    invoke.add_argument("-m", "--method", default="POST")
    invoke.add_argument(
        "--callback-url", help="with --async: where the result is POSTed (X-Callback-Url)"
    )
    invoke.add_argument(
        "--call-id",
        help="your own call id (X-Call-Id); with --async a repeat is not queued twice",
    )
    invoke.set_defaults(func=cmd_invoke)

    ls = sub.add_parser("ls", aliases=["list"], help="list functions")
    _client_options(ls)
    ls.add_argument("--json", action="store_true")
    ls.set_defaults(func=cmd_ls)

    describe = sub.add_parser("describe", help="show one function")
    _client_options(describe)
    describe.add_argument("name")
    describe.add_argument("--json", action="store_true")
    describe.set_defaults(func=cmd_describe)

    logs = sub.add_parser("logs", help="print a function's logs")
    _client_options(logs)
    logs.add_argument("name")
    logs.add_argument("-f", "--follow", action="store_true")
    logs.add_argument("--tail", type=int)
    logs.add_argument("--since", help="RFC 3339 time")
    logs.add_argument("--json", action="store_true")
    logs.set_defaults(func=cmd_logs)

    rm = sub.add_parser("rm", aliases=["remove"], help="remove functions")
    _client_options(rm)
    rm.add_argument("names", nargs="+")
    rm.set_defaults(func=cmd_rm)

    scale = sub.add_parser("scale", help="set a function's replica count")
    _client_options(scale)
    scale.add_argument("name")
    scale.add_argument("--replicas", type=int, required=True)
    scale.set_defaults(func=cmd_scale)

    secret = sub.add_parser("secret", help="manage secrets")
    secret_sub = secret.add_subparsers(dest="secret_cmd", required=True)
    for verb in ("create", "update"):
        p = secret_sub.add_parser(verb)
        _client_options(p)
        p.add_argument("name")
        p.add_argument("--from-literal")
        p.add_argument("--from-file")
    p = secret_sub.add_parser("ls")
    _client_options(p)
    p.add_argument("--json", action="store_true")
    p = secret_sub.add_parser("rm")
    _client_options(p)
    p.add_argument("name")
    secret.set_defaults(func=cmd_secret)

    ns = sub.add_parser("ns", aliases=["namespace"], help="list namespaces")
    ns_sub = ns.add_subparsers(dest="ns_cmd", required=True)
    p = ns_sub.add_parser("ls")
    _client_options(p)
    p.add_argument("--json", action="store_true")
    ns.set_defaults(func=cmd_ns)

    from runtime.cli_async import add_async_parser

    add_async_parser(sub, _client_options)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        code: int = args.func(args)
        return code
    except GatewayError as exc:
        print(f"error: {exc}", file=sys.stderr)
        if exc.status == 0:
            return EXIT_UNREACHABLE
        return EXIT_NOT_FOUND if exc.status == 404 else EXIT_ERROR
    except LocalFaasError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_ERROR
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
