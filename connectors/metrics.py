"""Prometheus metrics every connector shares: events received, invocations, failures per
function, with a `connector` label."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter


class ConnectorMetrics:
    def __init__(self, registry: CollectorRegistry) -> None:
        labels = ["connector", "function_name"]
        self.events = Counter(
            "localfaas_connector_events",
            "Events received by a connector",
            labels,
            registry=registry,
        )
        self.invocations = Counter(
            "localfaas_connector_invocations",
            "Invocations (sync calls or queued async calls) made for events",
            labels,
            registry=registry,
        )
        self.failures = Counter(
            "localfaas_connector_failures",
            "Events that did not lead to a successful invocation",
            labels,
            registry=registry,
        )
        self.skipped = Counter(
            "localfaas_connector_skipped",
            "Events deliberately not run (overlapping cron firing, duplicate delivery)",
            [*labels, "reason"],
            registry=registry,
        )

    def event(self, connector: str, function_name: str) -> None:
        self.events.labels(connector, function_name).inc()

    def invoked(self, connector: str, function_name: str) -> None:
        self.invocations.labels(connector, function_name).inc()

    def failed(self, connector: str, function_name: str) -> None:
        self.failures.labels(connector, function_name).inc()

    def skip(self, connector: str, function_name: str, reason: str) -> None:
        self.skipped.labels(connector, function_name, reason).inc()
