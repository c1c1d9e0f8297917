"""Async invocations (`POST /async-function/`): accepted calls/s at 64 in flight, end-to-end
completions/s of a burst, and 202 → callback latency when idle, with JetStream's fsync before
ack (the default) and without it (LOCALFAAS_NATS_FSYNC=off, a second daemon), one run.

Each variant gets its own daemon (fresh state dir, embedded nats-server) and the same no-op
python3-http function; both daemons stay up and the rounds alternate them (durable, fsync off,
durable, ...), so a noisy minute on a shared machine hits both. Per variant and round:

1. warm-up: a burst of calls, drained; then 1 s of nothing, to record how busy the machine is
   without us;
2. idle latency: sequential calls, each with X-Callback-Url to a receiver in this process on
   127.0.0.1; timed from the 202's arrival to the callback's arrival. The calls' status records
   (enqueuedAt, startedAt, finishedAt) split that time into pick-up, invoke and callback;
3. accepted/s: wrk, 64 connections POSTing for --duration seconds (a Lua script counts every
   answer that is not a 202). The workers drain the queue meanwhile, as they would in use
   (yielding to accepting while 32+ enqueues wait: a quarter of their concurrency);
   the backlog is then drained before the next phase;
4. end to end: --calls calls enqueued as fast as 64 client tasks can, timed from the first
   send until localfaas_async_succeeded_total (on /metrics) counted all of them.

CPU seconds of the daemon, nats-server, the replicas (their cgroups) and the load generator are
read around phases 3 and 4 and reported per call.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import re
import resource
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import aiohttp
from aiohttp import web

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
import benchlib  # noqa: E402
import daemonlib  # noqa: E402

FUNCTION = "noop"
NAMESPACE = "openfaas-fn"
IMAGE = "localfaas-bench/async-noop:latest"
CONCURRENCY_ANNOTATION = "com.localfaas.async.concurrency"
SCALE_MIN_LABEL = "com.openfaas.scale.min"
SCALE_MAX_LABEL = "com.openfaas.scale.max"  # = min: the autoscaler leaves the replica count fixed
VARIANTS: tuple[tuple[str, str, dict[str, str]], ...] = (
    ("durable (fsync before ack)", "durable", {}),
    ("fsync off", "fsync-off", {"LOCALFAAS_NATS_FSYNC": "off"}),
)
TARGET_ACCEPTED_PER_S = 2000
TARGET_CALLBACK_P50_MS = 20.0

POST_LUA = """
wrk.method = "POST"
wrk.body = "{}"
wrk.headers["Content-Type"] = "application/json"
local threads = {}
function setup(thread) table.insert(threads, thread) end
function init(args) non202 = 0 end
function response(status, headers, body)
  if status ~= 202 then non202 = non202 + 1 end
end
function done(summary, latency, requests)
  local n = 0
  for _, t in ipairs(threads) do n = n + t:get("non202") end
  io.write(string.format("non202 %d\\n", n))
end
"""


# -- CPU accounting -----------------------------------------------------------------------------

CLK_TCK = os.sysconf("SC_CLK_TCK")


def _process_cpu_s(pid: int) -> float:
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / CLK_TCK  # utime + stime


def _container_cpu_s(container_id: str) -> float | None:
    v1 = Path(f"/sys/fs/cgroup/cpuacct/docker/{container_id}/cpuacct.usage")
    if v1.exists():
        return int(v1.read_text()) / 1e9
    v2 = Path(f"/sys/fs/cgroup/system.slice/docker-{container_id}.scope/cpu.stat")
    if v2.exists():
        for line in v2.read_text().splitlines():
            if line.startswith("usage_usec "):
                return int(line.split()[1]) / 1e6
    return None


def _machine_busy_s() -> float:
    values = [int(v) for v in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
    idle = values[3] + values[4]  # idle + iowait
    return (sum(values[:8]) - idle) / CLK_TCK


def background_busy(seconds: float = 1.0) -> float:
    """Share of all cores busy over ``seconds`` while this benchmark does nothing: how much
    else runs on the machine (these machines are shared)."""
    before, t0 = _machine_busy_s(), time.monotonic()
    time.sleep(seconds)
    return (_machine_busy_s() - before) / ((time.monotonic() - t0) * (os.cpu_count() or 1)) * 100


def _client_cpu_s() -> float:
    """This process (every thread) plus its finished children (wrk)."""
    kids = resource.getrusage(resource.RUSAGE_CHILDREN)
    return time.process_time() + kids.ru_utime + kids.ru_stime


@dataclass
class CpuMeter:
    daemon_pid: int
    nats_pid: int | None
    containers: list[str]

    def read(self) -> dict[str, float]:
        replicas = [_container_cpu_s(c) for c in self.containers]
        out = {
            "daemon": _process_cpu_s(self.daemon_pid),
            "nats-server": _process_cpu_s(self.nats_pid) if self.nats_pid else float("nan"),
            "replicas": sum(r for r in replicas if r is not None) if replicas and None not in replicas else float("nan"),
            "load generator": _client_cpu_s(),
            "machine": _machine_busy_s(),
            "wall": time.monotonic(),
        }
        return out

    @staticmethod
    def per_call_us(before: dict[str, float], after: dict[str, float], calls: int) -> dict[str, float]:
        per = {k: (after[k] - before[k]) / max(calls, 1) * 1e6 for k in before if k != "wall"}
        wall = after["wall"] - before["wall"]
        per["other"] = per["machine"] - sum(per[k] for k in ("daemon", "nats-server", "replicas", "load generator") if per[k] == per[k])
        per["busy %"] = (after["machine"] - before["machine"]) / (wall * (os.cpu_count() or 1)) * 100
        return per


# -- the daemon side ----------------------------------------------------------------------------


def nats_pid(daemon: daemonlib.Daemon) -> int | None:
    try:
        return int((daemon.state_dir / "nats" / "nats-server.pid").read_text().strip())
    except (OSError, ValueError):
        return None


def container_ids(daemon: daemonlib.Daemon) -> list[str]:
    instance = (daemon.state_dir / "instance-id").read_text().strip()
    return subprocess.run(
        ["docker", "ps", "-q", "--no-trunc", "--filter", f"label=com.localfaas.instance={instance}", "--filter", f"label=com.localfaas.function={FUNCTION}"],
        capture_output=True, text=True, check=True,
    ).stdout.split()


def wait_worker(daemon: daemonlib.Daemon, concurrency: int, timeout_s: float = 60) -> None:
    """Until the function's async worker runs with the expected concurrency."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        status, body = daemon.api("GET", "/system/async/queues")
        if status == 200:
            for row in body:
                if row["name"] == FUNCTION and row["concurrency"] == concurrency:
                    return
        time.sleep(0.1)
    raise RuntimeError(f"the async worker of {FUNCTION} did not come up with concurrency {concurrency}: {status} {body!r}")


_SAMPLE = re.compile(r'^localfaas_async_(\w+?)_total\{function_name="' + re.escape(f"{FUNCTION}.{NAMESPACE}") + r'"(?:,outcome="(\w+)")?\} (\S+)$', re.M)


async def counters(session: aiohttp.ClientSession, url: str) -> dict[str, float]:
    """localfaas_async_*_total of the bench function: {"enqueued": n, "succeeded": n, ...}."""
    async with session.get(url + "/metrics") as resp:
        text = await resp.text()
    out: dict[str, float] = {}
    for name, outcome, value in _SAMPLE.findall(text):
        out[f"{name}.{outcome}" if outcome else name] = float(value)
    return out


def _finished(c: dict[str, float]) -> float:
    return c.get("succeeded", 0) + c.get("failed", 0) + c.get("dead_lettered", 0)


async def wait_done(session: aiohttp.ClientSession, url: str, total: float, timeout_s: float, poll_s: float = 0.05) -> tuple[float, dict[str, float]]:
    """Poll /metrics until ``total`` calls of the function ended; (monotonic time, counters)."""
    deadline = time.monotonic() + timeout_s
    while True:
        c = await counters(session, url)
        now = time.monotonic()
        if _finished(c) >= total:
            return now, c
        if now > deadline:
            raise RuntimeError(f"only {_finished(c):.0f} of {total:.0f} async calls ended within {timeout_s:.0f}s: {c}")
        await asyncio.sleep(poll_s)


# -- the client side ----------------------------------------------------------------------------


async def burst(session: aiohttp.ClientSession, url: str, calls: int, in_flight: int) -> dict[int, int]:
    """``calls`` POSTs by ``in_flight`` tasks as fast as they go; answers counted by status."""
    statuses: dict[int, int] = {}
    left = calls

    async def one_task() -> None:
        nonlocal left
        while left > 0:
            left -= 1
            try:
                async with session.post(url, data=b"{}", headers={"Content-Type": "application/json"}) as resp:
                    await resp.read()
                    statuses[resp.status] = statuses.get(resp.status, 0) + 1
            except aiohttp.ClientError:
                statuses[0] = statuses.get(0, 0) + 1

    await asyncio.gather(*(one_task() for _ in range(in_flight)))
    return statuses


class Receiver:
    """The callback target: an aiohttp server on 127.0.0.1 recording each callback's arrival."""

    def __init__(self) -> None:
        self.waiting: dict[str, asyncio.Future[tuple[float, float, str]]] = {}
        self.port = benchlib.free_port()
        self._runner: web.AppRunner | None = None

    async def start(self) -> None:
        app = web.Application()
        app.router.add_post("/cb", self._callback)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        await web.TCPSite(self._runner, "127.0.0.1", self.port).start()

    async def close(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/cb"

    async def _callback(self, request: web.Request) -> web.Response:
        arrived, arrived_wall = time.perf_counter(), time.time()
        await request.read()
        fut = self.waiting.pop(request.headers.get("X-Call-Id", ""), None)
        if fut is not None and not fut.done():
            fut.set_result((arrived, arrived_wall, request.headers.get("X-Function-Status", "")))
        return web.Response(status=200)


@dataclass
class IdleCall:
    call_id: str
    sent_wall: float
    accepted_ms: float  # send → 202 received
    callback_ms: float  # 202 received → callback arrived
    accepted_wall: float
    callback_wall: float
    function_status: str


async def idle_latency(session: aiohttp.ClientSession, url: str, receiver: Receiver, calls: int, gap_s: float) -> list[IdleCall]:
    out = []
    for _ in range(calls):
        call_id = str(uuid.uuid4())
        fut: asyncio.Future[tuple[float, float, str]] = asyncio.get_running_loop().create_future()
        receiver.waiting[call_id] = fut
        sent_wall, sent = time.time(), time.perf_counter()
        async with session.post(url, data=b"{}", headers={"Content-Type": "application/json", "X-Call-Id": call_id, "X-Callback-Url": receiver.url}) as resp:
            await resp.read()
            accepted, accepted_wall = time.perf_counter(), time.time()
            if resp.status != 202:
                raise RuntimeError(f"idle call answered {resp.status}")
        arrived, arrived_wall, fn_status = await asyncio.wait_for(fut, 30)
        out.append(IdleCall(call_id, sent_wall, (accepted - sent) * 1e3, (arrived - accepted) * 1e3, accepted_wall, arrived_wall, fn_status))
        await asyncio.sleep(gap_s)
    return out


async def stage_times(session: aiohttp.ClientSession, daemon: daemonlib.Daemon, idle: list[IdleCall]) -> dict[str, list[float]]:
    """The idle calls' stages (ms), from their status records (wall clocks of the same host):
    the handler until the 202 arrived (publish + JetStream ack), 202 → the worker started the
    attempt (delivery + claim in the status bucket), the attempt (invoke), attempt end →
    callback arrival (final status write + callback POST)."""
    stages: dict[str, list[float]] = {stage: [] for stage in STAGES}
    headers = {"Authorization": daemon.auth()}
    for call in idle:
        async with session.get(f"{daemon.url}/system/async/calls/{call.call_id}", headers=headers) as resp:
            status = await resp.json()
        attempt = status["history"][-1]
        stages[STAGES[0]].append((call.accepted_wall - status["enqueuedAt"]) * 1e3)
        stages[STAGES[1]].append((attempt["startedAt"] - call.accepted_wall) * 1e3)
        stages[STAGES[2]].append((attempt["finishedAt"] - attempt["startedAt"]) * 1e3)
        stages[STAGES[3]].append((call.callback_wall - attempt["finishedAt"]) * 1e3)
    return stages


STAGES = ("handler: enqueuedAt → 202 received", "202 → attempt started", "attempt (invoke)", "attempt end → callback arrived")


# -- one variant, one round ---------------------------------------------------------------------


@dataclass
class Result:
    """One variant in one round."""

    accept: benchlib.LoadResult
    accept_non202: int
    accept_socket_errors: int
    accept_wrk_requests: int
    accept_enqueued: int
    accept_cpu: dict[str, float]
    backlog: int
    backlog_drain_s: float
    e2e_calls: int
    e2e_statuses: dict[int, int]
    e2e_enqueue_s: float
    e2e_total_s: float
    e2e_cpu: dict[str, float]
    not_succeeded: int
    idle: list[IdleCall]
    stages: dict[str, list[float]]
    background_busy: float

    @property
    def e2e_per_s(self) -> float:
        return self.e2e_calls / self.e2e_total_s


class Profiler:
    """py-spy on the daemon for one phase (collapsed stacks, `--format raw`)."""

    def __init__(self, out_dir: Path | None, pid: int) -> None:
        self.out_dir, self.pid = out_dir, pid
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self, label: str) -> None:
        if self.out_dir is None:
            return
        pyspy = Path(sys.executable).parent / "py-spy"
        out = self.out_dir / f"{label}.txt"
        self.proc = subprocess.Popen([str(pyspy), "record", "--pid", str(self.pid), "--format", "raw", "--rate", "200", "--nonblocking", "--output", str(out)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        time.sleep(0.5)  # attached

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.send_signal(signal.SIGINT)
            self.proc.wait(timeout=60)
            self.proc = None


@dataclass
class Variant:
    name: str
    slug: str
    env: dict[str, str]
    daemon: daemonlib.Daemon
    meter: CpuMeter
    profiler: Profiler
    rounds: list[Result] = field(default_factory=list)

    @property
    def url(self) -> str:
        return f"{self.daemon.url}/async-function/{FUNCTION}"

    def idle_ms(self, attr: str, pct: float) -> float:
        return float(benchlib.percentile([float(getattr(c, attr)) for r in self.rounds for c in r.idle], pct))

    def median(self, value: Callable[[Result], float]) -> float:
        return float(benchlib.median([value(r) for r in self.rounds]))

    def mean_cpu(self, phase: str, key: str) -> float:
        return sum(float(getattr(r, phase)[key]) for r in self.rounds) / len(self.rounds)


async def background_busy_async(seconds: float = 1.0) -> float:
    before, t0 = _machine_busy_s(), time.monotonic()
    await asyncio.sleep(seconds)
    return (_machine_busy_s() - before) / ((time.monotonic() - t0) * (os.cpu_count() or 1)) * 100


async def measure(v: Variant, session: aiohttp.ClientSession, receiver: Receiver, args: argparse.Namespace, round_no: int) -> Result:
    daemon, url, tag = v.daemon, v.url, f"{v.name}, round {round_no}"
    # 1. warm-up (and a drained queue)
    await burst(session, url, args.warmup, args.connections)
    await wait_done(session, daemon.url, (await counters(session, daemon.url)).get("enqueued", 0), 120)
    await idle_latency(session, url, receiver, 20, args.gap)
    background = await background_busy_async()

    # 2. idle latency
    print(f"  {tag}: {args.latency_calls} sequential calls with a callback", file=sys.stderr)
    idle = await idle_latency(session, url, receiver, args.latency_calls, args.gap)
    stages = await stage_times(session, daemon, idle)

    # 3. accepted/s
    print(f"  {tag}: wrk -c{args.connections} -d{args.duration}s POST", file=sys.stderr)
    before = await counters(session, daemon.url)
    script = Path(tempfile.mkdtemp(prefix="bench-async-")) / "post.lua"
    script.write_text(POST_LUA)
    v.profiler.start(f"{v.slug}-round{round_no}-accept")
    cpu0 = v.meter.read()
    load, out = await asyncio.to_thread(benchlib.run_wrk_script, url, script, connections=args.connections, duration_s=args.duration)
    cpu1 = v.meter.read()
    v.profiler.stop()
    after = await counters(session, daemon.url)
    non202 = int(re.search(r"^non202 (\d+)$", out, re.M).group(1))  # type: ignore[union-attr]
    socket_errors = 0
    if m := re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out):
        socket_errors = sum(int(g) for g in m.groups())
    wrk_requests = int(re.search(r"(\d+) requests in", out).group(1))  # type: ignore[union-attr]
    enqueued = int(after.get("enqueued", 0) - before.get("enqueued", 0))
    backlog = int(after.get("enqueued", 0) - _finished(after))
    started = time.monotonic()
    done_at, _ = await wait_done(session, daemon.url, after.get("enqueued", 0), max(300, backlog / 20), poll_s=0.1)
    drain_s = done_at - started

    # 4. end to end
    print(f"  {tag}: {args.calls} calls end to end", file=sys.stderr)
    before = await counters(session, daemon.url)
    v.profiler.start(f"{v.slug}-round{round_no}-e2e")
    e2e_cpu0 = v.meter.read()
    t0 = time.monotonic()
    statuses = await burst(session, url, args.calls, args.connections)
    enqueue_s = time.monotonic() - t0
    accepted = statuses.get(202, 0)
    done_at, after_e2e = await wait_done(session, daemon.url, _finished(before) + accepted, max(300, accepted / 20))
    e2e_cpu1 = v.meter.read()
    v.profiler.stop()
    return Result(
        accept=load,
        accept_non202=non202,
        accept_socket_errors=socket_errors,
        accept_wrk_requests=wrk_requests,
        accept_enqueued=enqueued,
        accept_cpu=CpuMeter.per_call_us(cpu0, cpu1, enqueued),
        backlog=backlog,
        backlog_drain_s=drain_s,
        e2e_calls=accepted,
        e2e_statuses=statuses,
        e2e_enqueue_s=enqueue_s,
        e2e_total_s=done_at - t0,
        e2e_cpu=CpuMeter.per_call_us(e2e_cpu0, e2e_cpu1, accepted),
        not_succeeded=int(_finished(after_e2e) - after_e2e.get("succeeded", 0)),
        idle=idle,
        stages=stages,
        background_busy=background,
    )


async def run_rounds(variants: list[Variant], args: argparse.Namespace) -> None:
    """Rounds alternate the variants (durable, fsync off, durable, ...): both daemons are up
    the whole time, so a noisy minute on this shared machine hits both, not one."""
    receiver = Receiver()
    await receiver.start()
    try:
        async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0)) as session:
            for round_no in range(1, args.rounds + 1):
                for v in variants:
                    v.rounds.append(await measure(v, session, receiver, args, round_no))
    finally:
        await receiver.close()


# -- report -------------------------------------------------------------------------------------


def fmt_ms(value: float) -> str:
    return f"{value:.2f}" if value < 10 else f"{value:.1f}"


def report(variants: Sequence[Variant], args: argparse.Namespace) -> None:
    print(f"\nMachine: {benchlib.machine_line()}")
    store = subprocess.run(["df", "--output=source,fstype", tempfile.gettempdir()], capture_output=True, text=True).stdout.split()[-2:]
    rounds = f"median of {args.rounds} alternating rounds; " if args.rounds > 1 else ""
    print(
        f"\nno-op python3-http function, {args.replicas} replica(s), async concurrency {args.concurrency} "
        f"(annotation {CONCURRENCY_ANNOTATION}); JetStream file store on {' '.join(store)}; {rounds}"
        f"accepted/s: wrk -t1 -c{args.connections} -d{args.duration}s POST (workers draining meanwhile, yielding to accepts); "
        f"end to end: {args.calls:,} calls from {args.connections} aiohttp tasks, first send → all succeeded; "
        f"backlog drain: what wrk left queued, drained with no new calls; "
        f"202 → callback: {args.latency_calls} sequential calls per round, receiver in the bench process on 127.0.0.1\n"
    )
    rows: list[tuple[str, ...]] = []
    for v in variants:
        non202 = sum(r.accept_non202 + sum(n for s, n in r.e2e_statuses.items() if s != 202) for r in v.rounds)
        rows.append((
            v.name,
            f"{v.median(lambda r: r.accept.requests_per_s):,.0f}",
            f"{v.median(lambda r: r.accept.p50_ms):.1f} / {v.median(lambda r: r.accept.p99_ms):.1f}",
            f"{v.median(lambda r: r.e2e_per_s):,.0f}",
            f"{v.median(lambda r: r.e2e_calls / r.e2e_enqueue_s):,.0f}",
            f"{v.median(lambda r: r.backlog / r.backlog_drain_s):,.0f}",
            fmt_ms(v.idle_ms("callback_ms", 50)),
            fmt_ms(v.idle_ms("callback_ms", 99)),
            fmt_ms(v.idle_ms("accepted_ms", 50)),
            f"{non202} / {sum(r.accept_socket_errors for r in v.rounds)} / {sum(r.not_succeeded for r in v.rounds)}",
        ))
    print(benchlib.table(rows, (
        "variant", "accepted/s (64 in flight)", "202 p50 / p99 ms", "end-to-end completions/s",
        "enqueue/s in that burst", "backlog drain/s (workers alone)", "202→callback p50 ms", "p99 ms", "202 round trip p50 ms (idle)",
        "non-202 / socket errors / not succeeded",
    )))

    print("\nIdle call, median per stage (ms; from the call status records):\n")
    print(benchlib.table(
        [(stage, *(fmt_ms(benchlib.median([x for r in v.rounds for x in r.stages[stage]])) for v in variants)) for stage in STAGES],
        ("stage", *(v.name for v in variants)),
    ))

    print("\nCPU per call (µs) while loaded" + (" (mean of the rounds)" if args.rounds > 1 else "") + ", and machine busy:\n")
    keys = ("daemon", "nats-server", "replicas", "load generator", "other", "machine", "busy %")
    rows = []
    for v in variants:
        for label, phase in (("accept (wrk)", "accept_cpu"), ("end to end (aiohttp burst + drain)", "e2e_cpu")):
            rows.append((v.name, label, *(f"{v.mean_cpu(phase, k):.0f}" + ("%" if k == "busy %" else "") for k in keys)))
    print(benchlib.table(rows, ("variant", "phase", "daemon", "nats-server", "replicas", "load generator", "rest (kernel I/O threads, other processes)", "machine total", "busy")))

    print()
    for v in variants:
        for i, r in enumerate(v.rounds, 1):
            print(
                f"{v.name}, round {i}: {r.accept.requests_per_s:,.0f} accepted/s (wrk sent {r.accept_wrk_requests:,}, daemon counted {r.accept_enqueued:,}), "
                f"{r.e2e_per_s:,.0f} completions/s, 202→callback p50 {benchlib.median([c.callback_ms for c in r.idle]):.1f} ms; "
                f"completed during wrk {(r.accept_enqueued - r.backlog) / args.duration:,.0f}/s; "
                f"backlog after wrk {r.backlog:,} drained in {r.backlog_drain_s:.1f}s; machine busy before (1 s, daemons idle) {r.background_busy:.0f}%"
            )
    durable = variants[0]
    accepted = durable.median(lambda r: r.accept.requests_per_s)
    p50 = durable.idle_ms("callback_ms", 50)
    if durable.slug == "durable":
        print(
            f"\ndurable accepted/s {accepted:,.0f} (target ≥ {TARGET_ACCEPTED_PER_S:,}: {'met' if accepted >= TARGET_ACCEPTED_PER_S else 'missed'}); "
            f"202→callback p50 idle {p50:.1f} ms (target ≤ {TARGET_CALLBACK_P50_MS:.0f} ms: {'met' if p50 <= TARGET_CALLBACK_P50_MS else 'missed'})"
        )
    if len(variants) > 1:
        off = variants[1]
        print(
            f"durability costs: accepted/s {accepted / off.median(lambda r: r.accept.requests_per_s):.0%} of fsync off, "
            f"end to end {durable.median(lambda r: r.e2e_per_s) / off.median(lambda r: r.e2e_per_s):.0%}, "
            f"202→callback p50 {p50 - off.idle_ms('callback_ms', 50):+.1f} ms"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--duration", type=int, default=5, help="seconds of wrk for accepted/s (default 5)")
    parser.add_argument("--connections", type=int, default=64, help="calls in flight for accepted/s and the end-to-end burst (default 64)")
    parser.add_argument("--calls", type=int, default=3000, help="calls in the end-to-end burst (default 3000)")
    parser.add_argument("--latency-calls", type=int, default=200, help="sequential calls with a callback for the idle latency, per round (default 200)")
    parser.add_argument("--gap", type=float, default=0.01, help="pause between the sequential calls, seconds (default 0.01)")
    parser.add_argument("--warmup", type=int, default=500, help="calls sent and drained before each round (default 500)")
    parser.add_argument("--concurrency", type=int, default=16, help=f"the function's {CONCURRENCY_ANNOTATION} annotation (default 16)")
    parser.add_argument("--replicas", type=int, default=2, help="replicas of the function (default 2)")
    parser.add_argument("--rounds", type=int, default=2, help="rounds, alternating the variants; the table shows medians (default 2)")
    parser.add_argument("--only", choices=("durable", "fsync-off"), help="measure one variant only")
    parser.add_argument("--profile", type=Path, metavar="DIR", help="py-spy the daemons during the loaded phases into DIR (collapsed stacks; slows the daemon: not for the table)")
    args = parser.parse_args()

    if args.profile is not None:
        args.profile.mkdir(parents=True, exist_ok=True)
    cache = Path(tempfile.mkdtemp(prefix="bench-cache-"))
    daemonlib.build_hello(IMAGE, cache)
    variants: list[Variant] = []
    try:
        for name, slug, env in VARIANTS:
            if args.only not in (None, slug):
                continue
            daemon = daemonlib.start_daemon(env=env)
            variants.append(Variant(name, slug, env, daemon, CpuMeter(daemon.proc.pid, None, []), Profiler(args.profile, daemon.proc.pid)))
            daemon.deploy(FUNCTION, IMAGE, annotations={CONCURRENCY_ANNOTATION: str(args.concurrency)}, labels={SCALE_MIN_LABEL: str(args.replicas), SCALE_MAX_LABEL: str(args.replicas)})
        for v in variants:
            v.daemon.wait_ready(FUNCTION, args.replicas)
            wait_worker(v.daemon, args.concurrency)
            v.meter = CpuMeter(v.daemon.proc.pid, nats_pid(v.daemon), container_ids(v.daemon))
        asyncio.run(run_rounds(variants, args))
    finally:
        for v in variants:
            v.daemon.stop()
    report(variants, args)


if __name__ == "__main__":
    main()
