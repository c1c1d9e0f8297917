"""NATS subjects connector: `topic: orders.*,invoices.>` binds a function to NATS subjects.

The OpenFaaS nats-connector convention: every message on a bound subject becomes one POST to
the function, its headers as request headers plus ``X-Topic`` (the actual subject) and
``X-Connector: nats``, its data as the body.

- **Once per message.** Each (function, subject) subscribes in the queue group
  ``localfaas.fn.<ns>.<name>``: several subscribers (daemons sharing a server) split the
  messages instead of each running them.
- **Request/reply.** A message with a reply subject gets the function's response body back, with
  ``X-Function-Status: <code>`` and, for statuses >= 400 and failed calls, the NATS services
  error headers ``Nats-Service-Error`` / ``Nats-Service-Error-Code`` (404 function gone, 502
  unreachable, 503 no replica or shutting down, 504 timeout). A ``Status`` header is avoided on
  purpose: nats-py reads ``Status: 503`` on a reply as "no responders".
- **Bounded.** At most ``com.localfaas.nats.concurrency`` (default 16) invocations run at once per
  binding; beyond that the subscription stops reading and NATS buffers (core NATS drops
  messages for a slow consumer past its pending limits, as it does for any subscriber).
- **Durable** (``com.localfaas.nats.durable: "true"``): a JetStream pull consumer on the stream
  that captures the subject, named per function and subject so a restart resumes it. At least
  once: acked after a 2xx, ``nak`` with back-off for a retryable failure, terminated after the
  retry policy gives up (``com.openfaas.retry.*``, as async calls). Long calls keep their lease
  with ``in_progress``. A new consumer starts with messages published after it was created.
- **Connection.** Its own connection ("localfaas-connectors") to the server async uses; retried
  with back-off while that is not up; nats-py reconnects and resubscribes after a loss.

Subjects must start with a literal token and may not reach internal subjects (``$…``,
``_INBOX…``, ``localfaas…``): a function on ``>`` would otherwise receive its own replies and
every async call, and loop.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import random
import uuid
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from nats.aio.client import Client as NATS
from nats.aio.msg import Msg
from nats.aio.subscription import Subscription
from nats.errors import Error as NatsError
from nats.js import JetStreamContext
from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy
from nats.js.errors import NotFoundError

from connectors.base import Binding
from connectors.registry import ConnectorContext
from runtime.errors import (
    FunctionNotFound,
    InvalidSpec,
    LocalFaasError,
    NoReadyReplica,
    UpstreamFailed,
    UpstreamTimeout,
)
from runtime.invoker import BufferedResult, Invocation
from runtime.labels import int_annotation
from runtime.models import FunctionSpec
from runtime.queue.connection import connect, redacted
from runtime.queue.message import is_valid_call_id, request_headers
from runtime.queue.retry import RetryPolicy

log = logging.getLogger("localfaas.connectors.nats")

NAME = "nats"
TOPIC = "topic"
CRON_TOPIC = "cron-function"  # the cron connector's value of `topic`, not a subject
DURABLE = "com.localfaas.nats.durable"
CONCURRENCY = "com.localfaas.nats.concurrency"
DEFAULT_CONCURRENCY = 16
MAX_CONCURRENCY = 1000
MAX_SUBJECT_LEN = 255
MAX_SUBJECTS = 64
QUEUE_GROUP_PREFIX = "localfaas.fn"
CONNECTION_NAME = "localfaas-connectors"

# Internal subject spaces no function may subscribe to (the first token, case-insensitively
# for ours): JetStream/system/KV APIs, request/reply inboxes, the async queue.
_INTERNAL_FIRST = ("_INBOX",)
_OURS = "localfaas"

STATUS_HEADER = "X-Function-Status"
ERROR_HEADER = "Nats-Service-Error"
ERROR_CODE_HEADER = "Nats-Service-Error-Code"

# Headers of the function's response not worth copying into a reply.
_REPLY_DROPPED = frozenset(
    {"connection", "keep-alive", "transfer-encoding", "content-length", "date", "server"}
)

CONNECT_MIN_S = 0.25
CONNECT_MAX_S = 10.0
STREAMS_REFRESH_S = 30.0
ACK_WAIT_S = 30.0
PULL_EXPIRES_S = 5.0
DRAIN_S = 5.0


# -- pure rules ------------------------------------------------------------------------------


def check_subject(subject: str) -> str:
    """``subject`` if it is a NATS subject a function may be bound to; InvalidSpec otherwise."""
    shown = subject if len(subject) <= 80 else subject[:77] + "..."
    where = f"annotation {TOPIC}: subject {shown!r}"
    if not subject:
        raise InvalidSpec(f"annotation {TOPIC}: empty subject (check for a stray ',')")
    if len(subject) > MAX_SUBJECT_LEN:
        raise InvalidSpec(f"{where} is longer than {MAX_SUBJECT_LEN} characters")
    if any(not (33 <= ord(c) <= 126) for c in subject):
        raise InvalidSpec(
            f"{where} may hold printable ASCII only (no spaces or control characters)"
        )
    tokens = subject.split(".")
    for i, token in enumerate(tokens):
        if token == "":
            raise InvalidSpec(f"{where} has an empty token (leading, trailing or double '.')")
        if token == ">" and i != len(tokens) - 1:
            raise InvalidSpec(f"{where}: '>' may only be the last token")
        if token not in ("*", ">") and ("*" in token or ">" in token):
            raise InvalidSpec(f"{where}: wildcards '*' and '>' must be whole tokens")
    first = tokens[0]
    if first in ("*", ">"):
        raise InvalidSpec(
            f"{where} must start with a literal token: a leading wildcard would also match "
            "internal subjects (replies, JetStream, the async queue)"
        )
    if first.startswith("$") or first in _INTERNAL_FIRST or first.lower() == _OURS:
        raise InvalidSpec(
            f"{where} is internal ({first}.…: NATS system, JetStream, inboxes or localfaas's "
            "own queue); bind to an application subject"
        )
    return subject


def covers(pattern: str, subject: str) -> bool:
    """Every subject matched by ``subject`` (itself maybe with wildcards) is matched by
    ``pattern``."""
    p, s = pattern.split("."), subject.split(".")
    for i, token in enumerate(p):
        if token == ">":
            return len(s) > i
        if i >= len(s):
            return False
        if token == "*":
            if s[i] == ">":
                return False
        elif token != s[i]:
            return False
    return len(p) == len(s)


def collide(a: str, b: str) -> bool:
    """Some subject is matched by both ``a`` and ``b``."""
    x, y = a.split("."), b.split(".")
    for i in range(max(len(x), len(y))):
        tx = x[i] if i < len(x) else None
        ty = y[i] if i < len(y) else None
        if tx == ">" or ty == ">":
            return tx is not None and ty is not None
        if tx is None or ty is None:
            return False
        if tx != "*" and ty != "*" and tx != ty:
            return False
    return True


def parse_topics(raw: str) -> tuple[str, ...]:
    """The subjects of a `topic` annotation (comma-separated, spaces around items ignored),
    without `cron-function` (the cron connector's). Duplicates are dropped; two subjects that
    can match the same message are refused, since that message would run the function twice."""
    found: list[str] = []
    for item in raw.split(","):
        subject = item.strip()
        if subject == CRON_TOPIC:
            continue
        check_subject(subject)
        if subject not in found:
            found.append(subject)
    if len(found) > MAX_SUBJECTS:
        raise InvalidSpec(f"annotation {TOPIC}: more than {MAX_SUBJECTS} subjects")
    for i, a in enumerate(found):
        for b in found[i + 1 :]:
            if collide(a, b):
                raise InvalidSpec(
                    f"annotation {TOPIC}: subjects {a!r} and {b!r} overlap (a message on both "
                    "would run the function twice); keep one"
                )
    return tuple(found)


def _flag(annotations: Mapping[str, str], key: str) -> bool:
    raw = annotations.get(key, "").strip().lower()
    if raw in ("", "false", "0", "no"):
        return False
    if raw in ("true", "1", "yes"):
        return True
    raise InvalidSpec(f"annotation {key}: {annotations[key]!r} is not true or false")


@dataclass(frozen=True)
class Plan:
    """What a function's annotations ask of this connector."""

    subjects: tuple[str, ...] = ()
    durable: bool = False
    concurrency: int = DEFAULT_CONCURRENCY
    retry: RetryPolicy = field(default_factory=RetryPolicy)


def plan_for(spec: FunctionSpec) -> Plan:
    """Parse (and validate) the connector's annotations. No `topic` (or only
    `cron-function`) → no subjects."""
    annotations = spec.annotations
    raw = annotations.get(TOPIC)
    subjects = parse_topics(raw) if raw is not None else ()
    durable = _flag(annotations, DURABLE)
    if durable and not subjects:
        raise InvalidSpec(f"annotation {DURABLE} needs subjects in the {TOPIC} annotation")
    concurrency = int_annotation(annotations, CONCURRENCY, DEFAULT_CONCURRENCY, 1, MAX_CONCURRENCY)
    retry = RetryPolicy.from_annotations(annotations) if durable else RetryPolicy()
    return Plan(subjects, durable, concurrency, retry)


def queue_group(namespace: str, name: str) -> str:
    return f"{QUEUE_GROUP_PREFIX}.{namespace}.{name}"


def consumer_name(namespace: str, name: str, subject: str) -> str:
    """Durable consumer of one function on one subject: deterministic, so a restart resumes it;
    '_' never occurs in DNS-1123 names, the hash keeps wildcards and dots out."""
    digest = hashlib.sha256(subject.encode()).hexdigest()[:12]
    return f"lf_{namespace}_{name}_{digest}"


def stream_for(subject: str, streams: Mapping[str, Sequence[str]]) -> str | None:
    """The stream whose subjects capture every message of ``subject``."""
    for stream, patterns in sorted(streams.items()):
        if any(covers(p, subject) for p in patterns):
            return stream
    return None


def invocation_headers(
    subject: str, headers: Mapping[str, str] | None, extra: Iterable[tuple[str, str]] = ()
) -> list[tuple[str, str]]:
    """Request headers for a message: its own (minus hop-by-hop ones, names that are not
    HTTP tokens and values with line breaks), then X-Topic and X-Connector."""
    ours = {"x-topic", "x-connector"}
    pairs = [
        (k, v)
        for k, v in request_headers((headers or {}).items())
        if k.lower() not in ours and _token(k) and "\r" not in v and "\n" not in v
    ]
    pairs.extend(extra)
    pairs.append(("X-Topic", subject))
    pairs.append(("X-Connector", NAME))
    return pairs


_TCHARS = frozenset("!#$%&'*+-.^_`|~0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ")


def _token(name: str) -> bool:
    return bool(name) and all(c in _TCHARS for c in name)


def error_status(exc: BaseException) -> int:
    if isinstance(exc, FunctionNotFound):
        return 404
    if isinstance(exc, NoReadyReplica):
        return 503
    if isinstance(exc, UpstreamTimeout | TimeoutError):
        return 504
    if isinstance(exc, UpstreamFailed | OSError):
        return 502
    return 500


def reply_headers(
    status: int, headers: Iterable[tuple[str, str]] = (), error: str = ""
) -> dict[str, str]:
    """NATS headers of a reply: the function's response headers worth keeping, the status, and
    the NATS services error pair when it failed."""
    out: dict[str, str] = {}
    for key, value in headers:
        if key.lower() in _REPLY_DROPPED or "\r" in value or "\n" in value:
            continue
        out[key] = value
    out[STATUS_HEADER] = str(status)
    if status >= 400:
        out[ERROR_CODE_HEADER] = str(status)
        out[ERROR_HEADER] = (error or f"function answered {status}").splitlines()[0][:200]
    return out


def durable_call_id(stream: str, sequence: int) -> str:
    """The same call id for every delivery of one stream message (a function can dedupe)."""
    return str(uuid.uuid5(uuid.NAMESPACE_URL, f"nats-stream:{stream}:{sequence}"))


# -- the connector ---------------------------------------------------------------------------


@dataclass
class _Sub:
    """One (function, subject) binding and what runs it."""

    namespace: str
    name: str
    subject: str
    durable: bool
    concurrency: int
    retry: RetryPolicy
    state: str = "waiting for NATS"
    stream: str | None = None
    consumer: str | None = None
    subscription: Subscription | None = None
    tasks: set[asyncio.Task[None]] = field(default_factory=set)
    busy: set[asyncio.Task[None]] = field(default_factory=set)  # durable pullers mid-call
    stopping: bool = False
    slots: asyncio.Semaphore | None = None

    @property
    def function_name(self) -> str:
        return f"{self.name}.{self.namespace}"

    def same(self, other: _Sub) -> bool:
        return (self.durable, self.concurrency, self.retry) == (
            other.durable,
            other.concurrency,
            other.retry,
        )


class NatsSubjects:
    name = NAME

    def __init__(self, ctx: ConnectorContext, *, rand: Callable[[], float] = random.random):
        self._ctx = ctx
        self._rand = rand
        self._subs: dict[tuple[str, str], dict[str, _Sub]] = {}
        self._nc: NATS | None = None
        self._js: JetStreamContext | None = None
        # name → subjects of every JetStream stream, refreshed on connect, on stream advisories
        # and every STREAMS_REFRESH_S; None until first read (deploy-time check skipped then).
        self._streams: dict[str, tuple[str, ...]] | None = None
        self._lock = asyncio.Lock()
        self._tasks: list[asyncio.Task[None]] = []
        self._closing = False
        self._server_shown: str | None = None  # the URL connected to, without credentials
        self.connected = asyncio.Event()

    # -- Connector ---------------------------------------------------------------------------

    def validate(self, spec: FunctionSpec) -> None:
        plan = plan_for(spec)
        if not plan.durable or self._streams is None or not self.is_connected:
            return
        for subject in plan.subjects:
            if stream_for(subject, self._streams) is None:
                raise InvalidSpec(
                    f"annotation {TOPIC}: no JetStream stream captures subject {subject!r}, "
                    f"which {DURABLE} needs; create one first (e.g. with subjects "
                    f"{subject.split('.')[0]}.>)"
                )

    async def start(self) -> None:
        self._tasks.append(asyncio.create_task(self._connect_loop(), name="nats connector"))

    async def bind(self, spec: FunctionSpec) -> None:
        try:
            plan = plan_for(spec)
        except InvalidSpec as exc:  # stored before a rule got stricter: unbind, say why
            log.warning("nats: %s not bound: %s", spec.qualified_name, exc)
            plan = Plan()
        wanted = {
            s: _Sub(spec.namespace, spec.name, s, plan.durable, plan.concurrency, plan.retry)
            for s in plan.subjects
        }
        async with self._lock:
            key = (spec.namespace, spec.name)
            current = self._subs.get(key, {})
            for subject, sub in list(current.items()):
                if subject not in wanted or not sub.same(wanted[subject]):
                    keep = subject in wanted and wanted[subject].durable
                    await self._stop(sub, forget=not keep)
                    del current[subject]
            for subject, sub in wanted.items():
                if subject not in current:
                    current[subject] = sub
                    await self._start(sub)
            if current:
                self._subs[key] = current
            else:
                self._subs.pop(key, None)

    async def unbind(self, namespace: str, name: str) -> None:
        async with self._lock:
            for sub in self._subs.pop((namespace, name), {}).values():
                await self._stop(sub, forget=True)

    def bindings(self) -> list[Binding]:
        return [
            Binding(
                NAME,
                sub.name,
                sub.namespace,
                sub.subject,
                {
                    "queue_group": queue_group(sub.namespace, sub.name),
                    "mode": "durable" if sub.durable else "core",
                    "state": sub.state,
                    "concurrency": sub.concurrency,
                    "server": self._server_shown,
                    **({"stream": sub.stream, "consumer": sub.consumer} if sub.durable else {}),
                },
            )
            for subs in self._subs.values()
            for sub in subs.values()
        ]

    async def close(self) -> None:
        """Stop reading (no new events), let running invocations finish up to DRAIN_S (the rest
        are cancelled: their requesters get a 503 reply, durable messages a nak), close."""
        self._closing = True
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self._tasks.clear()
        async with self._lock:
            subs = [sub for subs in self._subs.values() for sub in subs.values()]
            await asyncio.gather(*(self._stop(sub, forget=False) for sub in subs))
        nc, self._nc, self._js = self._nc, None, None
        if nc is not None:
            with contextlib.suppress(Exception):
                await nc.close()

    # -- connection --------------------------------------------------------------------------

    @property
    def streams(self) -> Mapping[str, tuple[str, ...]]:
        """JetStream streams and their subjects, as last read (empty before the first read)."""
        return dict(self._streams or {})

    @property
    def is_connected(self) -> bool:
        return self._nc is not None and self._nc.is_connected

    async def _connect_loop(self) -> None:
        wait_s = CONNECT_MIN_S
        problem = ""
        while True:
            url = self._ctx.nats_url()
            if url is not None:
                try:
                    nc = await connect(url, name=CONNECTION_NAME)
                    break
                except (LocalFaasError, NatsError, OSError, TimeoutError) as exc:
                    reason = str(exc) or type(exc).__name__
                    if reason != problem:
                        log.warning("nats connector cannot connect (%s); retrying", reason)
                        problem = reason
            await asyncio.sleep(wait_s)
            wait_s = min(wait_s * 2, CONNECT_MAX_S)
        self._nc = nc
        self._js = nc.jetstream()
        self._server_shown = redacted(url)
        with contextlib.suppress(NatsError, TimeoutError):
            # Streams created, updated or deleted: re-read them (deploy checks, waiting binds).
            await nc.subscribe("$JS.EVENT.ADVISORY.STREAM.*.*", cb=self._stream_advisory)
        await self._refresh_streams()
        self.connected.set()
        async with self._lock:
            for subs in self._subs.values():
                for sub in subs.values():
                    await self._start(sub)
        while True:
            await asyncio.sleep(STREAMS_REFRESH_S)
            await self._refresh_streams()
            await self._retry_waiting()

    async def _stream_advisory(self, msg: Msg) -> None:
        self._tasks.append(asyncio.create_task(self._after_advisory()))
        self._tasks[:] = [t for t in self._tasks if not t.done()]

    async def _after_advisory(self) -> None:
        await self._refresh_streams()
        await self._retry_waiting()

    async def _refresh_streams(self) -> None:
        js = self._js
        if js is None:
            return
        try:
            infos = await js.streams_info()
        except (NatsError, TimeoutError) as exc:
            log.debug("nats connector cannot list streams: %s", exc)
            return
        self._streams = {
            info.config.name: tuple(info.config.subjects or ())
            for info in infos
            if info.config.name
        }

    async def _retry_waiting(self) -> None:
        async with self._lock:
            for subs in self._subs.values():
                for sub in subs.values():
                    if sub.subscription is None and not sub.tasks and not sub.stopping:
                        await self._start(sub)

    # -- binding lifecycle -------------------------------------------------------------------

    async def _start(self, sub: _Sub) -> None:
        if sub.subscription is not None or sub.tasks:
            return  # already running
        sub.stopping = False
        nc, js = self._nc, self._js
        if nc is None or js is None or self._closing:
            sub.state = "waiting for NATS"
            return
        try:
            if sub.durable:
                await self._start_durable(sub, js)
            else:
                sub.slots = asyncio.Semaphore(sub.concurrency)

                async def on_message(msg: Msg) -> None:
                    await self._on_core(sub, msg)

                sub.subscription = await nc.subscribe(
                    sub.subject, queue=queue_group(sub.namespace, sub.name), cb=on_message
                )
                sub.state = "subscribed"
                log.info(
                    "nats: %s bound to %s (queue group %s)",
                    sub.function_name,
                    sub.subject,
                    queue_group(sub.namespace, sub.name),
                )
        except (NatsError, TimeoutError, OSError) as exc:
            sub.state = f"not bound: {exc or type(exc).__name__}"
            log.warning("nats: %s not bound to %s: %s", sub.function_name, sub.subject, exc)

    async def _start_durable(self, sub: _Sub, js: JetStreamContext) -> None:
        await self._refresh_streams()
        stream = stream_for(sub.subject, self._streams or {})
        if stream is None:
            if sub.state != "waiting for a stream":
                log.warning(
                    "nats: %s durable binding to %s waits: no JetStream stream captures it",
                    sub.function_name,
                    sub.subject,
                )
            sub.state = "waiting for a stream"
            return
        name = consumer_name(sub.namespace, sub.name, sub.subject)
        try:
            await js.consumer_info(stream, name)
        except NotFoundError:
            await js.add_consumer(
                stream,
                ConsumerConfig(
                    durable_name=name,
                    description=f"localfaas: {sub.function_name} on {sub.subject}",
                    filter_subject=sub.subject,
                    deliver_policy=DeliverPolicy.NEW,
                    ack_policy=AckPolicy.EXPLICIT,
                    ack_wait=ACK_WAIT_S,
                    max_deliver=-1,
                    max_ack_pending=max(1000, sub.concurrency),
                ),
            )
        sub.stream, sub.consumer = stream, name
        for i in range(sub.concurrency):
            task = asyncio.create_task(
                self._pull_loop(sub, js, stream, name), name=f"nats {sub.function_name} {i}"
            )
            sub.tasks.add(task)
        sub.state = "consuming"
        log.info(
            "nats: %s bound to %s (durable consumer %s on stream %s)",
            sub.function_name,
            sub.subject,
            name,
            stream,
        )

    async def _stop(self, sub: _Sub, *, forget: bool) -> None:
        """Stop one binding; ``forget`` also deletes its durable consumer (the function or the
        subject is gone), otherwise it stays for the next start."""
        if sub.subscription is not None:
            with contextlib.suppress(Exception):
                await sub.subscription.unsubscribe()
                # Until the server has the UNSUB it still routes requests here, where they
                # would go unanswered; after the round trip they get "no responders" at once.
                if self._nc is not None and self._nc.is_connected:
                    await self._nc.flush(timeout=1)
            sub.subscription = None
        sub.stopping = True
        if sub.tasks:
            # Idle pullers go at once; running calls may finish up to DRAIN_S, then are
            # cancelled (a durable message is nak'ed, a requester told 503).
            for task in sub.tasks - sub.busy:
                task.cancel()
            _, pending = await asyncio.wait(set(sub.tasks), timeout=DRAIN_S)
            for task in pending:
                task.cancel()
            await asyncio.gather(*sub.tasks, return_exceptions=True)
        sub.tasks.clear()
        if forget and sub.durable and sub.stream and sub.consumer and self._js is not None:
            with contextlib.suppress(NatsError, TimeoutError):
                await self._js.delete_consumer(sub.stream, sub.consumer)
                log.info("nats: durable consumer %s deleted", sub.consumer)
        if forget:
            log.info("nats: %s unbound from %s", sub.function_name, sub.subject)
        sub.state = "stopped"

    # -- core messages -----------------------------------------------------------------------

    async def _on_core(self, sub: _Sub, msg: Msg) -> None:
        """Called for each message in order; blocking here (all slots busy) is the
        back-pressure: the subscription's pending buffer holds the rest."""
        assert sub.slots is not None
        await sub.slots.acquire()
        task = asyncio.create_task(self._run_core(sub, msg))
        sub.tasks.add(task)
        task.add_done_callback(sub.tasks.discard)

    async def _run_core(self, sub: _Sub, msg: Msg) -> None:
        assert sub.slots is not None
        try:
            call_id = (msg.headers or {}).get("X-Call-Id", "")
            status, headers, body, error = await self._invoke(
                sub, msg, call_id if is_valid_call_id(call_id) else None
            )
            if msg.reply:
                await self._reply(msg, status, headers, body, error)
        except asyncio.CancelledError:
            if msg.reply:
                with contextlib.suppress(Exception):
                    await self._reply(msg, 503, (), b"", "the connector is shutting down")
            raise
        finally:
            sub.slots.release()

    async def _reply(
        self, msg: Msg, status: int, headers: Iterable[tuple[str, str]], body: bytes, error: str
    ) -> None:
        nc = self._nc
        if nc is None:
            return
        if len(body) > nc.max_payload - 4096:
            error = f"the response of {len(body)} bytes is too large for a NATS message"
            status, body, headers = 502, b"", ()
        if status >= 400 and error and not body:
            body = error.encode()
        try:
            await nc.publish(msg.reply, body, headers=reply_headers(status, headers, error))
        except (NatsError, OSError) as exc:
            log.debug("nats: reply to %s not sent: %s", msg.subject, exc)

    async def _invoke(
        self, sub: _Sub, msg: Msg, call_id: str | None, extra: Iterable[tuple[str, str]] = ()
    ) -> tuple[int, Iterable[tuple[str, str]], bytes, str]:
        """(status, response headers, body, error text) of one invocation for ``msg``."""
        metrics = self._ctx.metrics
        metrics.event(NAME, sub.function_name)
        ids: dict[str, Any] = {"call_id": call_id} if call_id else {}
        inv = Invocation(
            name=sub.name,
            namespace=sub.namespace,
            headers=invocation_headers(msg.subject, msg.headers, extra),
            body=msg.data,
            body_length=len(msg.data),
            timeout_s=self._ctx.dispatch.invoke_timeout_s,
            **ids,
        )
        try:
            result: BufferedResult = await self._ctx.dispatch.invoke(inv)
        except (LocalFaasError, OSError, TimeoutError) as exc:
            metrics.failed(NAME, sub.function_name)
            status = error_status(exc)
            log.debug("nats: %s on %s failed: %s", sub.function_name, msg.subject, exc)
            return status, (), b"", str(exc) or type(exc).__name__
        metrics.invoked(NAME, sub.function_name)
        if not 200 <= result.status < 300:
            metrics.failed(NAME, sub.function_name)
        return result.status, result.headers.items(), result.body, ""

    # -- durable messages --------------------------------------------------------------------

    async def _pull_loop(self, sub: _Sub, js: JetStreamContext, stream: str, consumer: str) -> None:
        """One pull credit, one call at a time; ``concurrency`` of these run per binding."""
        wait_s = CONNECT_MIN_S
        psub: JetStreamContext.PullSubscription | None = None
        try:
            while True:
                try:
                    if psub is None:
                        psub = await js.pull_subscribe_bind(consumer, stream)
                    msgs = await psub.fetch(1, timeout=PULL_EXPIRES_S)
                    wait_s = CONNECT_MIN_S
                except TimeoutError:
                    continue
                except NotFoundError:
                    sub.state = "consumer missing; recreating"
                    log.warning("nats: consumer %s is gone; binding again", consumer)
                    asyncio.get_running_loop().call_soon(self._rebind_later, sub)
                    return
                except (NatsError, OSError) as exc:
                    log.debug("nats: pull from %s failed: %s", consumer, exc)
                    await asyncio.sleep(wait_s)
                    wait_s = min(wait_s * 2, CONNECT_MAX_S)
                    continue
                task = asyncio.current_task()
                assert task is not None
                for msg in msgs:
                    if sub.stopping:
                        with contextlib.suppress(Exception):
                            await msg.nak()
                        return
                    sub.busy.add(task)
                    try:
                        await self._run_durable(sub, stream, msg)
                    finally:
                        sub.busy.discard(task)
        finally:
            if psub is not None:
                with contextlib.suppress(Exception):
                    await psub.unsubscribe()

    def _rebind_later(self, sub: _Sub) -> None:
        async def again() -> None:
            async with self._lock:
                current = self._subs.get((sub.namespace, sub.name), {}).get(sub.subject)
                if current is sub:
                    await self._stop(sub, forget=False)
                    await self._start(sub)

        self._tasks.append(asyncio.create_task(again()))

    async def _run_durable(self, sub: _Sub, stream: str, msg: Msg) -> None:
        meta = msg.metadata
        attempt = meta.num_delivered or 1
        extra = [("X-Delivery-Attempt", str(attempt))]
        keepalive = asyncio.create_task(self._keep_leased(msg))
        try:
            status, _, _, error = await self._invoke(
                sub, msg, durable_call_id(stream, meta.sequence.stream), extra
            )
        except asyncio.CancelledError:
            with contextlib.suppress(Exception):
                await msg.nak()  # back at once for the next start, not after ack_wait
            raise
        finally:
            keepalive.cancel()
        try:
            if 200 <= status < 300:
                await msg.ack()
                return
            retryable = status in sub.retry.codes or (error != "" and status != 404)
            if retryable and attempt < sub.retry.attempts:
                delay_s = sub.retry.backoff_s(attempt, self._rand)
                log.info(
                    "nats: %s on %s got %s (attempt %d); retry in %.1fs",
                    sub.function_name,
                    msg.subject,
                    status,
                    attempt,
                    delay_s,
                )
                await msg.nak(delay=delay_s)
            else:
                log.warning(
                    "nats: %s on %s gave up after attempt %d (status %s); message %s of %s "
                    "stays in the stream",
                    sub.function_name,
                    msg.subject,
                    attempt,
                    status,
                    meta.sequence.stream,
                    stream,
                )
                await msg.term()
        except (NatsError, OSError) as exc:
            # Not acked: the server redelivers after ack_wait.
            log.debug("nats: ack for %s failed: %s", msg.subject, exc)

    async def _keep_leased(self, msg: Msg) -> None:
        with contextlib.suppress(NatsError, OSError):
            while True:
                await asyncio.sleep(ACK_WAIT_S / 3)
                await msg.in_progress()
