"""CLI verbs that work from a stack file: `new`, `build`, `deploy`, `up -f` (build + deploy)."""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
from pathlib import Path

import yaml

from runtime.client import GatewayClient
from runtime.config import Settings
from runtime.errors import InvalidSpec
from runtime.stack import Stack, StackFunction, load_stack, to_build, to_deployment

EXIT_OK, EXIT_ERROR = 0, 1


def _selected(stack: Stack, name_filter: str | None) -> list[StackFunction]:
    functions = [fn for fn in stack.functions if name_filter in (None, fn.name)]
    if name_filter and not functions:
        raise InvalidSpec(f"{stack.path}: no function named {name_filter!r}")
    return functions


def _load(args: argparse.Namespace) -> Stack:
    path = args.file or "stack.yml"
    if not Path(path).exists() and args.file is None and Path("stack.yaml").exists():
        path = "stack.yaml"
    stack = load_stack(path, os.environ)
    for warning in stack.warnings:
        print(f"warning: {warning}", file=sys.stderr)
    return stack


async def _build_all(functions: list[StackFunction]) -> None:
    import aiodocker

    from runtime.build.builder import build_function
    from runtime.build.progress import ProgressPrinter

    settings = Settings.load(os.environ)
    printer = ProgressPrinter(sys.stderr)
    async with aiodocker.Docker() as docker:
        for fn in functions:
            if fn.skip_build:
                print(f"{fn.name}: skip_build set, not building", file=sys.stderr)
                continue
            try:
                built = await build_function(
                    docker,
                    to_build(fn),
                    base_image=settings.base_image,
                    cache_dir=settings.cache_dir,
                    on_progress=printer,
                )
            finally:
                printer.close()
            cached = " (all steps cached)" if built.fully_cached else ""
            print(f"built {built.image} in {built.duration_s:.1f}s{cached}", file=sys.stderr)


def build_and_deploy(
    args: argparse.Namespace, client: GatewayClient | None, *, deploy: bool
) -> int:
    stack = _load(args)
    functions = _selected(stack, getattr(args, "filter", None))
    asyncio.run(_build_all(functions))
    if deploy and client is not None:
        _deploy(stack, functions, client, args)
    return EXIT_OK


def _deploy(
    stack: Stack, functions: list[StackFunction], client: GatewayClient, args: argparse.Namespace
) -> None:
    gateway_given = args.gateway or os.environ.get("OPENFAAS_URL")
    if not gateway_given and stack.provider is not None and stack.provider.gateway:
        client = GatewayClient(stack.provider.gateway, client.user, client.password)
    for fn in functions:
        deployment = to_deployment(fn)
        if args.namespace and "namespace" not in deployment:
            deployment["namespace"] = args.namespace
        outcome = client.deploy(deployment)
        print(f"{outcome} {fn.name}: {client.url}/function/{fn.name}")


def deploy_only(args: argparse.Namespace, client: GatewayClient) -> int:
    if args.image:
        if not args.name:
            raise InvalidSpec("--image needs --name")
        deployment: dict[str, object] = {"service": args.name, "image": args.image}
        if args.namespace:
            deployment["namespace"] = args.namespace
        if args.fprocess:
            deployment["envProcess"] = args.fprocess
        for key, option in (
            ("envVars", args.env),
            ("labels", args.label),
            ("annotations", args.annotation),
        ):
            if option:
                deployment[key] = _pairs(option, key)
        if args.secret:
            deployment["secrets"] = list(args.secret)
        outcome = client.deploy(deployment)
        print(f"{outcome} {args.name}: {client.url}/function/{args.name}")
        return EXIT_OK
    stack = _load(args)
    _deploy(stack, _selected(stack, args.filter), client, args)
    return EXIT_OK


def _pairs(items: list[str], what: str) -> dict[str, str]:
    out = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise InvalidSpec(f"{what}: {item!r} must be KEY=VALUE")
        out[key] = value
    return out


def new_function(args: argparse.Namespace) -> int:
    from runtime.build.new import create_function, stack_entry

    stack_path = Path(args.file)
    folder = create_function(
        args.name, args.lang, stack_path.parent if stack_path.parent != Path("") else Path(".")
    )
    if stack_path.exists():
        document = yaml.safe_load(stack_path.read_text()) or {}
        functions = document.setdefault("functions", {}) or {}
        if args.name in functions:
            raise InvalidSpec(f"{stack_path}: function {args.name!r} is already listed")
        functions[args.name] = stack_entry(args.name, args.lang)
        document["functions"] = functions
    else:
        document = {
            "version": 1.0,
            "provider": {"name": "openfaas", "gateway": "http://127.0.0.1:8080"},
            "functions": {args.name: stack_entry(args.name, args.lang)},
        }
    stack_path.write_text(yaml.safe_dump(document, sort_keys=False))
    print(f"created {folder}/ and added {args.name} to {stack_path}")
    print(f"next: localfaas up -f {stack_path}")
    return EXIT_OK
