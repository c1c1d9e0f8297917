"""Through the gateway vs straight to the replica (same run), then daemon RSS with 50 functions."""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
import benchlib  # noqa: E402
import daemonlib  # noqa: E402


ONE_REPLICA = {"com.openfaas.scale.min": "1", "com.openfaas.scale.max": "1"}

def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--duration", type=int, default=10)
    parser.add_argument("--connections", type=int, default=50)
    parser.add_argument("--functions", type=int, default=50, help="functions deployed for the RSS figure")
    args = parser.parse_args()

    cache = Path(tempfile.mkdtemp(prefix="bench-cache-"))
    image = "localfaas-bench/hello:latest"
    daemonlib.build_hello(image, cache)
    daemon = daemonlib.start_daemon()
    try:
        # One replica throughout: the gateway is compared with that same replica reached directly
        # (the autoscaler would otherwise add replicas under the load).
        daemon.deploy("hello", image, labels=ONE_REPLICA)
        daemon.wait_ready("hello")
        (port,) = daemon.replica_ports("hello")
        targets = {
            "direct to replica": f"http://127.0.0.1:{port}/",
            "through gateway": f"{daemon.url}/function/hello",
        }
        results = {}
        for name, url in targets.items():
            benchlib.run_wrk(url, connections=args.connections, duration_s=2)
        for name, url in targets.items():
            loaded = benchlib.run_wrk(url, connections=args.connections, duration_s=args.duration)
            single = benchlib.run_wrk(url, connections=1, duration_s=max(3, args.duration // 2))
            results[name] = (loaded, single)
            print(f"  {name}: {loaded.requests_per_s:,.0f} req/s", file=sys.stderr)
        rss_one = daemon.rss_mib()
        for i in range(1, args.functions):
            daemon.deploy(f"fn-{i:02d}", image, labels=ONE_REPLICA)
        for i in range(1, args.functions):
            daemon.wait_ready(f"fn-{i:02d}")
        # Each function serves once, so connection pools and metrics exist for all of them.
        for i in range(1, args.functions):
            benchlib.wait_http(f"{daemon.url}/function/fn-{i:02d}")
        rss_many = daemon.rss_mib()
    finally:
        daemon.stop()

    direct, gateway = results["direct to replica"], results["through gateway"]
    rows = [
        (name, f"{lo.requests_per_s:,.0f}", f"{lo.requests_per_s / direct[0].requests_per_s:.0%}", f"{lo.p50_ms:.2f}", f"{lo.p99_ms:.2f}", f"{si.p50_ms:.3f}", lo.errors + si.errors)
        for name, (lo, si) in results.items()
    ]
    print(f"\nMachine: {benchlib.machine_line()}\n")
    print(f"wrk -t1 -c{args.connections} -d{args.duration}s; python3-http hello in one replica (watchdog python mode)\n")
    print(benchlib.table(rows, ("path", "req/s", "vs direct", "p50 ms", "p99 ms", "p50 ms at c=1", "errors")))
    added = gateway[1].p50_ms - direct[1].p50_ms
    print(
        f"\ngateway keeps {gateway[0].requests_per_s / direct[0].requests_per_s:.0%} of direct throughput (target ≥ 60 %); "
        f"adds {added:.3f} ms p50 at c=1 (target ≤ 1 ms)"
    )
    print(f"daemon RSS: {rss_one:.0f} MiB with 1 function, {rss_many:.0f} MiB with {args.functions} functions (target ≤ 120 MB)")


if __name__ == "__main__":
    main()
