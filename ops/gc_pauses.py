"""How long CPython's garbage collector stops the server, per generation, on /metrics.

A full collection over tens of thousands of connection objects is the one pause that
holds every greenlet at once (shared/PERFORMANCE.md measured 140-240 ms), so it is
watched: ``vv_gc_pause_seconds`` (histogram) and ``vv_gc_pause_max_seconds`` (the
longest since start), labelled by generation.
"""
from __future__ import annotations

import gc
import time

from prometheus_client import Gauge, Histogram

pauses = Histogram("vv_gc_pause_seconds", "Garbage-collector pauses", ["generation"],
                   buckets=(0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1))
longest = Gauge("vv_gc_pause_max_seconds", "Longest garbage-collector pause since start",
                ["generation"])
_started: list[float] = [0.0]
_longest = [0.0, 0.0, 0.0]


def _callback(phase: str, info: dict) -> None:
    if phase == "start":
        _started[0] = time.perf_counter()
        return
    generation = info.get("generation", 0)
    seconds = time.perf_counter() - _started[0]
    pauses.labels(str(generation)).observe(seconds)
    if seconds > _longest[generation]:
        _longest[generation] = seconds
        longest.labels(str(generation)).set(seconds)


def watch() -> None:
    """Start timing collections (once per process)."""
    if _callback not in gc.callbacks:
        gc.callbacks.append(_callback)
