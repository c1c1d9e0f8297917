"""Prometheus metrics of the gateway, with the OpenFaaS names and labels.

One registry per daemon (not prometheus_client's global one) so several daemons can live in one
test process.
"""

from __future__ import annotations

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    disable_created_metrics,
    generate_latest,
)

# OpenFaaS's gateway exports no `_created` series; dashboards written for it expect none.
disable_created_metrics()  # type: ignore[no-untyped-call]


class GatewayMetrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self.invocation_total = Counter(
            "gateway_function_invocation_total",
            "Function invocations by final status code",
            ["function_name", "code"],
            registry=self.registry,
        )
        # A Gauge that only goes up: prometheus_client would rename a Counter to `..._total`,
        # and OpenFaaS dashboards query this exact name.
        self.invocation_started = Gauge(
            "gateway_function_invocation_started",
            "Function invocations started",
            ["function_name"],
            registry=self.registry,
        )
        self.function_seconds = Histogram(
            "gateway_functions_seconds",
            "Function invocation time taken",
            ["function_name", "code"],
            registry=self.registry,
        )
        self.in_flight = Gauge(
            "gateway_function_invocation_inflight",
            "Function invocations in flight",
            ["function_name"],
            registry=self.registry,
        )
        self.service_count = Gauge(
            "gateway_service_count",
            "Ready replicas of a function",
            ["function_name"],
            registry=self.registry,
        )

    def render(self) -> bytes:
        return generate_latest(self.registry)
