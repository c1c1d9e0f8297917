"""JetStream layout of the async queue: names and configs as pure functions, plus idempotent setup.

- ``LOCALFAAS_ASYNC`` (work): subjects ``localfaas.async.<ns>.<fn>.<call-id>``, file storage,
  **WorkQueue** retention. An acked message is removed, so the stream holds exactly the backlog:
  its limits (max messages / bytes, discard *new*) make "queue full" a real, refusable state
  (→ 503) instead of silently evicting accepted calls, and queue depth is the consumer's pending
  count. Nothing needs an acked message again: outcomes live in the status store, failures in
  the dead-letter stream. The ``Nats-Msg-Id`` dedupe map outlives the removal of the message
  (checked against the server), so a client retry within ``duplicate_window`` is dropped.
  WorkQueue also lets at most one consumer own each subject: one worker per function.
  The call id in the subject lets status and cancel find a queued call without a second write
  at enqueue time (``last_by_subj`` with wildcards for ``<ns>.<fn>``).
- ``LOCALFAAS_ASYNC_DLQ`` (dead letters): ``localfaas.dlq.<ns>.<fn>.<call-id>``, Limits
  retention with a max age; dead letters leave by replay (deleted) or by age.
- Call status records are not in JetStream: see status_sqlite.py for why.

Every name is built from names that passed ``check_name`` / ``check_call_id`` only.
"""

from __future__ import annotations

from dataclasses import dataclass

from nats.js import JetStreamContext
from nats.js.api import (
    AckPolicy,
    ConsumerConfig,
    DeliverPolicy,
    DiscardPolicy,
    RetentionPolicy,
    StorageType,
    StreamConfig,
)
from nats.js.errors import NotFoundError

from runtime.errors import InvalidSpec
from runtime.names import check_name, is_valid_name
from runtime.queue.message import check_call_id

WORK_STREAM = "LOCALFAAS_ASYNC"
DLQ_STREAM = "LOCALFAAS_ASYNC_DLQ"
WORK_PREFIX = "localfaas.async"
DLQ_PREFIX = "localfaas.dlq"

DAY_S = 24 * 3600.0


@dataclass(frozen=True)
class QueueLimits:
    """Sizes and ages of the layout; defaults suit one host."""

    max_msgs: int = 1_000_000
    max_bytes: int = 1024**3
    max_msg_bytes: int = 8 * 1024**2
    duplicate_window_s: float = DAY_S
    dlq_max_age_s: float = 14 * DAY_S
    dlq_max_bytes: int = 1024**3
    status_ttl_s: float = 14 * DAY_S
    # A call whose worker died (daemon crash) runs again after this; running calls renew it
    # with heartbeats every third of it, so it does not bound how long a call may take.
    ack_wait_s: float = 10.0
    max_ack_pending: int = 10_000

    def __post_init__(self) -> None:
        for name in ("max_msgs", "max_bytes", "max_msg_bytes", "dlq_max_bytes", "max_ack_pending"):
            if getattr(self, name) < 1:
                raise InvalidSpec(f"queue limit {name} must be at least 1")
        if self.duplicate_window_s <= 0 or self.ack_wait_s <= 0:
            raise InvalidSpec("queue duplicate_window_s and ack_wait_s must be positive")
        # The server refuses a duplicate window longer than the stream's max age; the work
        # stream has none, but the status must outlive the dedupe window to catch late twins.
        if self.status_ttl_s < self.duplicate_window_s:
            raise InvalidSpec("queue status_ttl_s must be at least duplicate_window_s")


def work_subject(namespace: str, name: str, call_id: str) -> str:
    return (
        f"{WORK_PREFIX}.{check_name(namespace, 'namespace')}."
        f"{check_name(name, 'function name')}.{check_call_id(call_id)}"
    )


def work_filter(namespace: str, name: str) -> str:
    """All queued calls of one function (a consumer's filter subject)."""
    return (
        f"{WORK_PREFIX}.{check_name(namespace, 'namespace')}.{check_name(name, 'function name')}.*"
    )


def work_call_filter(call_id: str) -> str:
    """The queued message of one call, whatever its function."""
    return f"{WORK_PREFIX}.*.*.{check_call_id(call_id)}"


def dlq_subject(namespace: str, name: str, call_id: str) -> str:
    return (
        f"{DLQ_PREFIX}.{check_name(namespace, 'namespace')}."
        f"{check_name(name, 'function name')}.{check_call_id(call_id)}"
    )


def dlq_filter(namespace: str | None = None, name: str | None = None) -> str:
    """Dead letters of everything, of one namespace, or of one function."""
    if name is not None and namespace is None:
        raise InvalidSpec("a function filter needs its namespace")
    ns = check_name(namespace, "namespace") if namespace is not None else "*"
    fn = check_name(name, "function name") if name is not None else "*"
    return f"{DLQ_PREFIX}.{ns}.{fn}.*"


def dlq_call_filter(call_id: str) -> str:
    return f"{DLQ_PREFIX}.*.*.{check_call_id(call_id)}"


def parse_subject(subject: str) -> tuple[str, str, str]:
    """``<prefix>.<ns>.<fn>.<call-id>`` (work or DLQ) → (namespace, name, call_id)."""
    parts = subject.split(".")
    if len(parts) != 5 or ".".join(parts[:2]) not in (WORK_PREFIX, DLQ_PREFIX):
        raise InvalidSpec(f"subject {subject!r} is not an async call subject")
    return (
        check_name(parts[2], "namespace"),
        check_name(parts[3], "function name"),
        check_call_id(parts[4]),
    )


def consumer_name(namespace: str, name: str) -> str:
    """Durable consumer of one function. '_' cannot occur in DNS-1123 names, so the join is
    unambiguous (``a-b``+``c`` and ``a``+``b-c`` differ)."""
    return f"fn_{check_name(namespace, 'namespace')}_{check_name(name, 'function name')}"


def parse_consumer_name(consumer: str) -> tuple[str, str] | None:
    """(namespace, name) of a consumer made by `consumer_name`, None for any other."""
    prefix, sep, rest = consumer.partition("_")
    namespace, sep2, name = rest.partition("_")
    if prefix != "fn" or not sep or not sep2:
        return None
    if not (is_valid_name(namespace) and is_valid_name(name)):
        return None
    return namespace, name


def work_stream_config(limits: QueueLimits, *, atomic: bool = False) -> StreamConfig:
    """``atomic``: allow atomic batch publishes (nats-server 2.12+), which the enqueuer uses to
    store calls that arrive together with one fsync."""
    return StreamConfig(
        name=WORK_STREAM,
        description="localfaas async calls waiting for their function",
        subjects=[f"{WORK_PREFIX}.>"],
        retention=RetentionPolicy.WORK_QUEUE,
        storage=StorageType.FILE,
        discard=DiscardPolicy.NEW,
        max_msgs=limits.max_msgs,
        max_bytes=limits.max_bytes,
        max_msg_size=limits.max_msg_bytes,
        duplicate_window=limits.duplicate_window_s,
        allow_direct=True,
        allow_atomic=atomic or None,
        num_replicas=1,
    )


def dlq_stream_config(limits: QueueLimits) -> StreamConfig:
    return StreamConfig(
        name=DLQ_STREAM,
        description="localfaas async calls that exhausted their retries",
        subjects=[f"{DLQ_PREFIX}.>"],
        retention=RetentionPolicy.LIMITS,
        storage=StorageType.FILE,
        # Dead-lettering must not fail because old dead letters pile up: the oldest go first.
        discard=DiscardPolicy.OLD,
        max_age=limits.dlq_max_age_s,
        max_bytes=limits.dlq_max_bytes,
        max_msg_size=limits.max_msg_bytes,
        duplicate_window=min(limits.duplicate_window_s, limits.dlq_max_age_s),
        allow_direct=True,
        num_replicas=1,
    )


def consumer_config(namespace: str, name: str, limits: QueueLimits) -> ConsumerConfig:
    return ConsumerConfig(
        durable_name=consumer_name(namespace, name),
        description=f"async worker of {name}.{namespace}",
        filter_subject=work_filter(namespace, name),
        deliver_policy=DeliverPolicy.ALL,
        ack_policy=AckPolicy.EXPLICIT,
        ack_wait=limits.ack_wait_s,
        # Attempts are counted and bounded by the worker (per-function policy, dead letters);
        # the server must keep redelivering until the worker decides.
        max_deliver=-1,
        max_ack_pending=limits.max_ack_pending,
    )


# Atomic batch publishes with a Nats-Msg-Id per message.
ATOMIC_BATCH_VERSION = (2, 12, 0)


@dataclass(frozen=True)
class Layout:
    js: JetStreamContext
    limits: QueueLimits
    atomic: bool  # the work stream takes atomic batches


async def ensure_layout(
    js: JetStreamContext, limits: QueueLimits | None = None, *, atomic: bool = False
) -> Layout:
    """Create the streams, or bring their configs up to date. Idempotent. ``atomic`` asks for
    atomic batches on the work stream; the layout says whether the server took it."""
    limits = limits or QueueLimits()
    work_atomic = False
    for config in (work_stream_config(limits, atomic=atomic), dlq_stream_config(limits)):
        assert config.name is not None
        try:
            await js.stream_info(config.name)
        except NotFoundError:
            info = await js.add_stream(config)
        else:
            info = await js.update_stream(config)
        if config.name == WORK_STREAM:
            # A server that does not know the setting drops it from the config it returns.
            work_atomic = bool(info.config.allow_atomic)
    return Layout(js, limits, work_atomic)
