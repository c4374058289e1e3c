"""Prometheus counters. Labels are route patterns and status codes, never concrete paths."""
from __future__ import annotations

from prometheus_client import Counter, Histogram

http_requests = Counter("vv_http_requests", "HTTP requests answered",
                        ["method", "route", "status"])
http_duration = Histogram("vv_http_request_duration_seconds", "Time to answer a request",
                          ["route"], buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5))
