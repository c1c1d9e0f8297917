"""Prometheus metrics of function requests, in the text exposition format, written by hand.

Names and labels follow of-watchdog (``http_requests_total``, ``http_request_duration_seconds``,
``http_requests_in_flight``; ``code`` and lower-case ``method``), so dashboards carry over.
No prometheus_client: the watchdog keeps its imports few (cold starts), and recording must
stay a few dictionary operations on the hot path.
"""

from __future__ import annotations

from bisect import bisect_left
from collections.abc import Callable

# Prometheus' default buckets, as of-watchdog uses.
BUCKETS_S = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
# A client can send any token as a method; unknown ones share one label value so the
# number of series stays bounded.
_METHODS = frozenset(
    {"GET", "HEAD", "POST", "PUT", "DELETE", "CONNECT", "OPTIONS", "TRACE", "PATCH"}
)


class _Series:
    """Counts for one (code, method): per-bucket (not yet cumulative) counts, sum, total."""

    __slots__ = ("bucket_counts", "count", "sum_s")

    def __init__(self) -> None:
        self.bucket_counts = [0] * (len(BUCKETS_S) + 1)  # the last slot is above every bucket
        self.count = 0
        self.sum_s = 0.0


class Metrics:
    """Request counter, duration histogram and in-flight gauge of one watchdog."""

    def __init__(self, in_flight: Callable[[], int]) -> None:
        self._in_flight = in_flight
        self._series: dict[tuple[int, str], _Series] = {}

    def observe(self, code: int, method: str, duration_s: float) -> None:
        """Record one finished function request."""
        series = self._series.get((code, method))
        if series is None:
            if method not in _METHODS:
                method = "OTHER"
            series = self._series.setdefault((code, method), _Series())
        series.bucket_counts[bisect_left(BUCKETS_S, duration_s)] += 1
        series.count += 1
        series.sum_s += duration_s

    def render(self) -> str:
        """Return all metrics in the Prometheus text format (version 0.0.4)."""
        series = sorted(self._series.items())
        lines = [
            "# HELP http_requests_total Function requests handled by the watchdog.",
            "# TYPE http_requests_total counter",
        ]
        for (code, method), one in series:
            lines.append(
                f'http_requests_total{{code="{code}",method="{method.lower()}"}} {one.count}'
            )
        lines += [
            "# HELP http_request_duration_seconds Seconds taken by function requests.",
            "# TYPE http_request_duration_seconds histogram",
        ]
        for (code, method), one in series:
            labels = f'code="{code}",method="{method.lower()}"'
            cumulative = 0
            for bound_s, in_bucket in zip(BUCKETS_S, one.bucket_counts, strict=False):
                cumulative += in_bucket
                lines.append(
                    f'http_request_duration_seconds_bucket{{{labels},le="{bound_s:g}"}} {cumulative}'
                )
            lines.append(f'http_request_duration_seconds_bucket{{{labels},le="+Inf"}} {one.count}')
            lines.append(f"http_request_duration_seconds_sum{{{labels}}} {one.sum_s!r}")
            lines.append(f"http_request_duration_seconds_count{{{labels}}} {one.count}")
        lines += [
            "# HELP http_requests_in_flight Function requests being handled now.",
            "# TYPE http_requests_in_flight gauge",
            f"http_requests_in_flight {self._in_flight()}",
        ]
        return "\n".join(lines) + "\n"
