"""Fixtures for the async queue against a real nats-server (marker `nats`).

Each test gets its own embedded server (ephemeral port, temporary store). Never skipped: without
the nats-server binary the tests fail and say how to get it.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Mapping
from contextlib import AsyncExitStack
from dataclasses import dataclass, field
from pathlib import Path

import aiohttp
import pytest
from aiohttp import web
from nats.aio.client import Client as NATS
from nats.js import JetStreamContext

from runtime.queue.callbacks import CallbackGuard, CallbackPolicy, CallbackRetry, CallbackSender
from runtime.queue.calls import Calls
from runtime.queue.connection import connect
from runtime.queue.enqueue import Enqueuer
from runtime.queue.errors import NatsServerError
from runtime.queue.message import Envelope, new_call_id
from runtime.queue.nats_server import EmbeddedNats, find_binary
from runtime.queue.retry import RetryPolicy
from runtime.queue.status import CallState, CallStatus, StatusStore
from runtime.queue.status_sqlite import SqliteStatusStore
from runtime.queue.streams import QueueLimits, ensure_layout
from runtime.queue.worker import AsyncWorkers, Invoke, WorkerOptions

WAIT_S = 15.0


@pytest.fixture
def nats_binary() -> Path:
    try:
        return find_binary()
    except NatsServerError as exc:
        pytest.fail(f"{exc} (./dev setup installs it into .venv)", pytrace=False)


@pytest.fixture
async def nats_server(nats_binary: Path, tmp_path: Path) -> AsyncIterator[EmbeddedNats]:
    server = EmbeddedNats(
        tmp_path / "state", binary=nats_binary, backoff_min_s=0.05, backoff_max_s=0.5
    )
    async with server:
        yield server


async def eventually(
    check: Callable[[], Awaitable[bool]] | Callable[[], bool],
    timeout_s: float = WAIT_S,
    what: str = "condition",
) -> None:
    deadline = time.monotonic() + timeout_s
    while True:
        result = check()
        if asyncio.iscoroutine(result):
            result = await result
        if result:
            return
        if time.monotonic() > deadline:
            raise AssertionError(f"{what} not reached within {timeout_s}s")
        await asyncio.sleep(0.02)


Reply = tuple[int, Mapping[str, str], bytes]


@dataclass
class FakeFunction:
    """An ``invoke`` callable: scripted replies per call id (or a default), records every call."""

    default: Reply | BaseException = (200, {"Content-Type": "text/plain"}, b"ok")
    delay_s: float = 0.0
    script: dict[str, list[Reply | BaseException]] = field(default_factory=dict)
    calls: list[tuple[str, float]] = field(default_factory=list)
    in_flight: int = 0
    max_in_flight: int = 0
    envelopes: list[Envelope] = field(default_factory=list)

    async def __call__(self, env: Envelope) -> Reply:
        self.calls.append((env.call_id, time.monotonic()))
        self.envelopes.append(env)
        self.in_flight += 1
        self.max_in_flight = max(self.max_in_flight, self.in_flight)
        try:
            if self.delay_s:
                await asyncio.sleep(self.delay_s)
            steps = self.script.get(env.call_id)
            reply = steps.pop(0) if steps else self.default
            if isinstance(reply, BaseException):
                raise reply
            return reply
        finally:
            self.in_flight -= 1

    def count(self, call_id: str) -> int:
        return sum(1 for cid, _ in self.calls if cid == call_id)

    def times(self, call_id: str) -> list[float]:
        return [t for cid, t in self.calls if cid == call_id]


@dataclass
class Queue:
    server: EmbeddedNats
    nc: NATS
    js: JetStreamContext
    store: StatusStore
    enqueuer: Enqueuer
    calls: Calls
    limits: QueueLimits
    stack: AsyncExitStack
    session: aiohttp.ClientSession

    async def enqueue(
        self,
        function: str = "hello",
        body: bytes = b"payload",
        *,
        namespace: str = "openfaas-fn",
        call_id: str | None = None,
        callback_url: str | None = None,
        headers: Iterable[tuple[str, str]] = (),
    ) -> str:
        env = Envelope(
            call_id=call_id or new_call_id(),
            function=function,
            namespace=namespace,
            body=body,
            headers=tuple(headers),
            callback_url=callback_url,
        )
        return (await self.enqueuer.enqueue(env)).call_id

    async def workers(
        self,
        invoke: Invoke,
        *,
        policy: RetryPolicy | None = None,
        heartbeat_s: float | None = None,
        rand: Callable[[], float] = lambda: 0.0,
        callback_policy: CallbackPolicy | None = None,
        callback_retry: CallbackRetry | None = None,
        accepting_busy: Callable[[], bool] | None = None,
    ) -> AsyncWorkers:
        sender = CallbackSender(
            self.session,
            CallbackGuard(callback_policy or CallbackPolicy()),
            callback_retry or CallbackRetry(attempts=3, min_wait_s=0.05, max_wait_s=0.2),
        )
        workers = AsyncWorkers(
            self.nc,
            self.js,
            self.store,
            invoke,
            options=WorkerOptions(
                limits=self.limits,
                heartbeat_s=heartbeat_s,
                pull_expires_s=1.0,
                rand=rand,
                drain_timeout_s=2.0,
                accepting_busy=accepting_busy,
            ),
            default_policy=policy or RetryPolicy(attempts=3, min_wait_s=0.05, max_wait_s=0.5),
            callbacks=sender,
        )
        self.stack.push_async_callback(workers.close)
        return workers

    async def state(self, call_id: str) -> CallState:
        return (await self.calls.status(call_id)).state

    async def wait_state(
        self, call_id: str, state: CallState, timeout_s: float = WAIT_S
    ) -> CallStatus:
        async def reached() -> bool:
            return await self.state(call_id) is state

        await eventually(reached, timeout_s, f"call {call_id} {state.value}")
        return await self.calls.status(call_id)


QueueFactory = Callable[..., Awaitable[Queue]]


@pytest.fixture
async def make_queue(nats_server: EmbeddedNats) -> AsyncIterator[QueueFactory]:
    async with AsyncExitStack() as stack:

        async def make(**limits: float) -> Queue:
            qlimits = QueueLimits(**{"ack_wait_s": 5.0, **limits})  # type: ignore[arg-type]
            nc = await connect(nats_server.url, reconnect_wait_s=0.05)
            stack.push_async_callback(nc.close)
            js = nc.jetstream()
            layout = await ensure_layout(js, qlimits, atomic=True)
            # One status file per test: a second queue made in a test is the same daemon
            # restarted, which finds the statuses the first one wrote.
            store = SqliteStatusStore(
                nats_server.dir.parent / "async-calls.db", ttl_s=qlimits.status_ttl_s
            )
            stack.callback(store.close)
            session = aiohttp.ClientSession()
            stack.push_async_callback(session.close)
            return Queue(
                nats_server,
                nc,
                js,
                store,
                Enqueuer(nc, atomic_batches=layout.atomic, publish_timeout_s=2.0),
                Calls(nc, js, store),
                qlimits,
                stack,
                session,
            )

        yield make


@pytest.fixture
async def queue(make_queue: QueueFactory) -> Queue:
    return await make_queue()


@dataclass
class Receiver:
    """A callback receiver on 127.0.0.1 that records requests and answers from a script."""

    url: str
    received: list[tuple[dict[str, str], bytes, float]]
    answers: list[int]


@pytest.fixture
async def receiver() -> AsyncIterator[Receiver]:
    received: list[tuple[dict[str, str], bytes, float]] = []
    answers: list[int] = []

    async def handle(request: web.Request) -> web.Response:
        received.append((dict(request.headers), await request.read(), time.monotonic()))
        status = answers.pop(0) if answers else 200
        location = {"Location": "/redirect"} if status == 302 else None
        return web.Response(status=status, headers=location)

    app = web.Application()
    app.router.add_post("/cb", handle)
    app.router.add_get("/redirect", handle)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    yield Receiver(f"http://127.0.0.1:{port}/cb", received, answers)
    await runner.cleanup()
