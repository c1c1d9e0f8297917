"""Throughput and latency of the watchdog's python mode against a bare aiohttp+uvloop server and
Flask+waitress (OpenFaaS python3-http's stack), same machine, one run, loopback; then the
watchdog's start→ready time and idle RSS inside containers."""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
import benchlib  # noqa: E402

HANDLER = '''def handle(event, context):
    return {"statusCode": 200, "body": "Hello, world!"}
'''


def make_handler_dir() -> Path:
    root = Path(tempfile.mkdtemp(prefix="bench-watchdog-"))
    (root / "function").mkdir()
    (root / "function" / "__init__.py").write_text("")
    (root / "function" / "handler.py").write_text(HANDLER)
    return root


def throughput(args: argparse.Namespace) -> list[tuple[str, benchlib.LoadResult, benchlib.LoadResult]]:
    handler_dir = make_handler_dir()
    py = sys.executable
    here = Path(__file__).resolve().parent
    variants = {
        "bare aiohttp+uvloop": lambda port: benchlib.start(
            [py, str(here / "servers.py"), "bare", str(port)], cpu=0
        ),
        "watchdog python mode": lambda port: benchlib.start(
            [py, "-m", "watchdog"],
            env={
                "mode": "python",
                "handler": "function.handler:handle",
                "port": str(port),
                "metrics_port": str(benchlib.free_port()),
                "PYTHONPATH": f"{benchlib.ROOT}:{handler_dir}",
            },
            cwd=handler_dir,
            cpu=0,
        ),
        "Flask+waitress (OpenFaaS python3-http)": lambda port: benchlib.start(
            [py, str(here / "servers.py"), "flask", str(port), str(handler_dir)], cpu=0
        ),
    }
    results = []
    for name, launch in variants.items():
        port = benchlib.free_port()
        proc = launch(port)
        try:
            ready_path = "/_/ready" if "watchdog" in name else "/"
            benchlib.wait_http(f"http://127.0.0.1:{port}{ready_path}")
            url = f"http://127.0.0.1:{port}/"
            benchlib.run_wrk(url, connections=args.connections, duration_s=2, cpu=1)  # warm-up
            loaded = benchlib.run_wrk(url, connections=args.connections, duration_s=args.duration, cpu=1)
            single = benchlib.run_wrk(url, connections=1, duration_s=max(3, args.duration // 2), cpu=1)
        finally:
            benchlib.stop(proc)
        print(f"  {name}: {loaded.requests_per_s:,.0f} req/s at c={args.connections}", file=sys.stderr)
        results.append((name, loaded, single))
    return results


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--duration", type=int, default=10, help="seconds per measurement")
    parser.add_argument("--connections", type=int, default=50)
    parser.add_argument("--no-docker", action="store_true", help="skip the container figures")
    parser.add_argument("--samples", type=int, default=20, help="container starts to time")
    args = parser.parse_args()

    print(f"machine: {benchlib.machine_line()}", file=sys.stderr)
    results = throughput(args)
    bare_rps = results[0][1].requests_per_s
    rows = []
    for name, loaded, single in results:
        rows.append(
            (
                name,
                f"{loaded.requests_per_s:,.0f}",
                f"{loaded.requests_per_s / bare_rps:.0%}",
                f"{loaded.p50_ms:.2f}",
                f"{loaded.p99_ms:.2f}",
                f"{single.p50_ms:.3f}",
                loaded.errors + single.errors,
            )
        )
    print(f"\nMachine: {benchlib.machine_line()}\n")
    print(
        f"Throughput: wrk -t1 -c{args.connections} -d{args.duration}s, server pinned to CPU 0, wrk to CPU 1\n"
    )
    print(
        benchlib.table(
            rows,
            ("server", "req/s", "vs bare", "p50 ms", "p99 ms", "p50 ms at c=1", "errors"),
        )
    )
    watchdog_rps = results[1][1].requests_per_s
    flask_rps = results[2][1].requests_per_s
    print(
        f"\nwatchdog / bare = {watchdog_rps / bare_rps:.0%} (target ≥ 60 %); "
        f"watchdog / Flask+waitress = {watchdog_rps / flask_rps:.1f}× (target ≥ 3×)"
    )
    if not args.no_docker:
        sys.path.insert(0, str(Path(__file__).resolve().parent))
        import container_figures

        container_figures.report(args.samples)


if __name__ == "__main__":
    main()
