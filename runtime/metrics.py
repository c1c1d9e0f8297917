"""Prometheus metrics of the gateway, with the OpenFaaS names and labels.

One registry per daemon (not prometheus_client's global one) so several daemons can live in one
test process.

The per-invocation series are plain integers on the invoke path, turned into metric families
only when `/metrics` is scraped: prometheus_client's `labels()` and `inc()`/`observe()` take a
lock and a dict lookup each, five or more per request, which showed up in gateway profiles. The
whole daemon runs on one event loop thread, so the integers need no lock.
"""

from __future__ import annotations

from bisect import bisect_left
from collections.abc import Iterator

from prometheus_client import (
    CollectorRegistry,
    Gauge,
    Histogram,
    disable_created_metrics,
    generate_latest,
)
from prometheus_client.metrics_core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector
from prometheus_client.utils import floatToGoString

# OpenFaaS's gateway exports no `_created` series; dashboards written for it expect none.
disable_created_metrics()  # type: ignore[no-untyped-call]

# prometheus_client's default histogram buckets (what `gateway_functions_seconds` always had).
BUCKETS_S: tuple[float, ...] = tuple(Histogram.DEFAULT_BUCKETS[:-1])
_BUCKET_LABELS = [floatToGoString(b) for b in BUCKETS_S] + ["+Inf"]  # type: ignore[no-untyped-call]


class GatewayMetrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self._functions: dict[str, FunctionMetrics] = {}
        self.registry.register(_InvocationCollector(self._functions))
        self.service_count = Gauge(
            "gateway_service_count",
            "Ready replicas of a function",
            ["function_name"],
            registry=self.registry,
        )

    def function(self, function_name: str) -> FunctionMetrics:
        """The counters of one function (``name.namespace``), made on first use."""
        found = self._functions.get(function_name)
        if found is None:
            found = self._functions[function_name] = FunctionMetrics()
        return found

    def render(self) -> bytes:
        return generate_latest(self.registry)


class FunctionMetrics:
    """Counters of one function; the Invoker updates them, the collector reads them."""

    __slots__ = ("by_code", "in_flight", "peak_in_flight", "started")

    def __init__(self) -> None:
        self.started = 0
        self.in_flight = 0
        # Highest in_flight since the autoscaler last looked (it resets this each second).
        self.peak_in_flight = 0
        self.by_code: dict[int, _Outcomes] = {}

    def finished(self, status: int, elapsed_s: float) -> None:
        outcomes = self.by_code.get(status)
        if outcomes is None:
            outcomes = self.by_code[status] = _Outcomes()
        outcomes.count += 1
        outcomes.sum_s += elapsed_s
        outcomes.buckets[bisect_left(BUCKETS_S, elapsed_s)] += 1


class _Outcomes:
    """Invocations that ended with one status code: count, total time, histogram buckets
    (not cumulative here; the last one is +Inf)."""

    __slots__ = ("buckets", "count", "sum_s")

    def __init__(self) -> None:
        self.count = 0
        self.sum_s = 0.0
        self.buckets = [0] * (len(BUCKETS_S) + 1)


class _InvocationCollector(Collector):
    def __init__(self, functions: dict[str, FunctionMetrics]) -> None:
        self._functions = functions

    def collect(self) -> Iterator[Metric]:
        total = CounterMetricFamily(
            "gateway_function_invocation_total",
            "Function invocations by final status code",
            labels=["function_name", "code"],
        )
        # A gauge that only goes up: a counter would be renamed `..._total`, and OpenFaaS
        # dashboards query this exact name.
        started = GaugeMetricFamily(
            "gateway_function_invocation_started",
            "Function invocations started",
            labels=["function_name"],
        )
        seconds = HistogramMetricFamily(
            "gateway_functions_seconds",
            "Function invocation time taken",
            labels=["function_name", "code"],
        )
        in_flight = GaugeMetricFamily(
            "gateway_function_invocation_inflight",
            "Function invocations in flight",
            labels=["function_name"],
        )
        for name, fn in sorted(self._functions.items()):
            started.add_metric([name], fn.started)
            in_flight.add_metric([name], fn.in_flight)
            for status, outcomes in sorted(fn.by_code.items()):
                code = str(status)
                total.add_metric([name, code], outcomes.count)
                cumulative = 0
                buckets = []
                for label, count in zip(_BUCKET_LABELS, outcomes.buckets, strict=True):
                    cumulative += count
                    buckets.append((label, float(cumulative)))
                seconds.add_metric([name, code], buckets, outcomes.sum_s)
        yield from (total, started, seconds, in_flight)
