"""Prometheus metrics of the async queue, registered on the daemon's registry."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge


class AsyncMetrics:
    def __init__(self, registry: CollectorRegistry) -> None:
        def counter(name: str, doc: str, labels: tuple[str, ...] = ("function_name",)) -> Counter:
            return Counter(name, doc, list(labels), registry=registry)

        self.enqueued_total = counter("localfaas_async_enqueued", "Async calls accepted (202)")
        self.duplicates_total = counter(
            "localfaas_async_duplicates",
            "Async calls not run again: an enqueue or delivery of a call id already seen",
            ("function_name", "stage"),
        )
        self.started_total = counter("localfaas_async_started", "Async call attempts started")
        self.succeeded_total = counter("localfaas_async_succeeded", "Async calls that succeeded")
        self.failed_total = counter(
            "localfaas_async_failed", "Async calls that ended with a status not worth retrying"
        )
        self.retried_total = counter("localfaas_async_retried", "Async call attempts retried")
        self.dead_lettered_total = counter(
            "localfaas_async_dead_lettered", "Async calls moved to the dead-letter stream"
        )
        self.cancelled_total = counter(
            "localfaas_async_cancelled", "Async calls skipped because they were cancelled"
        )
        self.callbacks_total = counter(
            "localfaas_async_callbacks", "Callbacks by outcome", ("function_name", "outcome")
        )
        self.queue_depth = Gauge(
            "localfaas_async_queue_depth",
            "Async calls waiting or in flight per function",
            ["function_name", "kind"],
            registry=registry,
        )

    def enqueued(self, function_name: str, *, duplicate: bool) -> None:
        if duplicate:
            self.duplicates_total.labels(function_name, "enqueue").inc()
        else:
            self.enqueued_total.labels(function_name).inc()

    def set_depth(self, function_name: str, pending: int, in_flight: int) -> None:
        self.queue_depth.labels(function_name, "pending").set(pending)
        self.queue_depth.labels(function_name, "in_flight").set(in_flight)
