"""Prometheus counters. Labels are route patterns and status codes, never concrete paths."""
from __future__ import annotations

from prometheus_client import Counter, Histogram

http_requests = Counter("vv_http_requests", "HTTP requests answered",
                        ["method", "route", "status"])
http_duration = Histogram("vv_http_request_duration_seconds", "Time to answer a request",
                          ["route"], buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5))

# (method, route, status) -> the two labelled series a request adds to. Routes and statuses
# are few, and labels() checks and locks on every call: each is looked up once. Bounded,
# since a client chooses the method.
_series: dict[tuple[str, str, int], tuple] = {}
_MAX_SERIES = 1000


def count_request(method: str, route: str, status: int, seconds: float | None) -> None:
    """One answered request: counted, and its duration observed when known."""
    series = _series.get((method, route, status))
    if series is None:
        series = (http_requests.labels(method, route, str(status)), http_duration.labels(route))
        if len(_series) < _MAX_SERIES:
            _series[(method, route, status)] = series
    series[0].inc()
    if seconds is not None:
        series[1].observe(seconds)
