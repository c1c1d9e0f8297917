"""The hand-written Prometheus exposition."""

from __future__ import annotations

from watchdog.metrics import Metrics


def test_counter_histogram_and_gauge() -> None:
    in_flight = 3
    metrics = Metrics(lambda: in_flight)
    metrics.observe(200, "GET", 0.004)
    metrics.observe(200, "GET", 0.2)
    metrics.observe(200, "GET", 20.0)
    metrics.observe(500, "POST", 0.01)
    text = metrics.render()
    lines = text.splitlines()
    assert "# TYPE http_requests_total counter" in lines
    assert 'http_requests_total{code="200",method="get"} 3' in lines
    assert 'http_requests_total{code="500",method="post"} 1' in lines
    assert "# TYPE http_request_duration_seconds histogram" in lines
    buckets = {
        line.split('le="')[1].split('"')[0]: int(line.rsplit(" ", 1)[1])
        for line in lines
        if line.startswith('http_request_duration_seconds_bucket{code="200",method="get"')
    }
    assert buckets == {
        "0.005": 1, "0.01": 1, "0.025": 1, "0.05": 1, "0.1": 1, "0.25": 2, "0.5": 2,
        "1": 2, "2.5": 2, "5": 2, "10": 2, "+Inf": 3,
    }  # fmt: skip
    # A duration exactly on a bound falls in that bucket (le means <=).
    assert 'http_request_duration_seconds_bucket{code="500",method="post",le="0.01"} 1' in lines
    assert 'http_request_duration_seconds_bucket{code="500",method="post",le="0.005"} 0' in lines
    assert 'http_request_duration_seconds_count{code="200",method="get"} 3' in lines
    total = next(
        line for line in lines if line.startswith('http_request_duration_seconds_sum{code="200"')
    )
    assert abs(float(total.rsplit(" ", 1)[1]) - 20.204) < 1e-9
    assert "# TYPE http_requests_in_flight gauge" in lines
    assert "http_requests_in_flight 3" in lines
    assert text.endswith("\n")


def test_unknown_methods_share_one_label() -> None:
    metrics = Metrics(lambda: 0)
    for method in ("FOO", "BAR", "BAZ"):
        metrics.observe(405, method, 0.001)
    assert 'http_requests_total{code="405",method="other"} 3' in metrics.render().splitlines()


def test_empty_registry_still_has_the_gauge() -> None:
    assert "http_requests_in_flight 0" in Metrics(lambda: 0).render()
