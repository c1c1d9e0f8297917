"""The connectors a daemon runs, and what they are given."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from prometheus_client import CollectorRegistry

from connectors.base import Connector, Dispatch
from connectors.host import InvokerDispatch
from connectors.metrics import ConnectorMetrics
from runtime.config import Settings
from runtime.invoker import Invoker
from runtime.queue.service import AsyncQueue
from runtime.secrets import SecretFiles
from runtime.store import Store


@dataclass(frozen=True)
class ConnectorContext:
    settings: Settings
    dispatch: Dispatch
    store: Store  # kv_add/kv_get/kv_put with TTLs: dedupe ids, last fire times
    secrets: SecretFiles  # webhook keys are function secrets
    metrics: ConnectorMetrics
    nats_url: Callable[[], str | None]  # the server async uses (embedded or --nats-url)


def daemon_context(
    settings: Settings,
    invoker: Invoker,
    queue: AsyncQueue | None,
    store: Store,
    secrets: SecretFiles,
    registry: CollectorRegistry,
) -> ConnectorContext:
    """What a daemon's connectors get: the Invoker and the async queue (if any) as Dispatch,
    the daemon's store, secrets and metrics registry, and the queue's NATS URL."""
    return ConnectorContext(
        settings=settings,
        dispatch=InvokerDispatch(invoker, queue, settings.invoke_timeout_s),
        store=store,
        secrets=secrets,
        metrics=ConnectorMetrics(registry),
        nats_url=lambda: queue.nats_url if queue is not None else None,
    )


def default_connectors(ctx: ConnectorContext) -> list[Connector]:
    """The connectors every daemon runs. Imported here, not at module level: each connector
    module imports ConnectorContext from this one."""
    from connectors.cron import CronConnector
    from connectors.http_routes import HttpRoutes
    from connectors.nats_subjects import NatsSubjects
    from connectors.webhook import WebhookConnector

    return [CronConnector(ctx), NatsSubjects(ctx), HttpRoutes(ctx), WebhookConnector(ctx)]
