"""The garbage collector's pauses: kept short, and watched on /metrics.

A collection over tens of thousands of connection objects holds every greenlet at once
(shared/PERFORMANCE.md measured 140-240 ms for full collections; we measured 169 ms for
a middle-generation one with 6,000 sockets open). Open connections are long-lived: once
objects have survived a middle-generation collection they are moved out of the
collector's reach (``gc.freeze()``), so each later collection walks only what is new.
The young generations are collected often enough to stay small, and the youngest
on a clock as well (``young_collection``). The cost: reference
cycles among frozen objects that become garbage are not reclaimed; measured growth is in
docs/performance.md.

``vv_gc_pause_seconds`` (histogram) and ``vv_gc_pause_max_seconds`` (the longest since
start) are labelled by generation.
"""
from __future__ import annotations

import gc
import time

from flask import current_app
from prometheus_client import Gauge, Histogram

from ops.background import periodic

pauses = Histogram("vv_gc_pause_seconds", "Garbage-collector pauses", ["generation"],
                   buckets=(0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1))
longest = Gauge("vv_gc_pause_max_seconds", "Longest garbage-collector pause since start",
                ["generation"])
# The same in CPU time: on a busy machine a pause's wall time also counts other processes.
longest_cpu = Gauge("vv_gc_pause_cpu_max_seconds", "Most CPU one garbage collection took",
                    ["generation"])
_started: list[float] = [0.0, 0.0]
_longest = [0.0, 0.0, 0.0]
_longest_cpu = [0.0, 0.0, 0.0]


# Young generation: a collection every 10,000 new container objects; the middle one
# every 5 of those; the oldest holds only what survived since the last freeze.
THRESHOLDS = (10_000, 5, 10)
_freeze_pending = [False]
_watching = [False]
_last_full = [float("-inf")]


def _callback(phase: str, info: dict) -> None:
    if phase == "start":
        _started[0], _started[1] = time.perf_counter(), time.thread_time()
        return
    generation = info.get("generation", 0)
    seconds = time.perf_counter() - _started[0]
    cpu = time.thread_time() - _started[1]
    if cpu > _longest_cpu[generation]:
        _longest_cpu[generation] = cpu
        longest_cpu.labels(str(generation)).set(cpu)
    pauses.labels(str(generation)).observe(seconds)
    if seconds > _longest[generation]:
        _longest[generation] = seconds
        longest.labels(str(generation)).set(seconds)
    if generation >= 1 and not _freeze_pending[0]:
        # Not from inside the collector: right after, from the event loop.
        _freeze_pending[0] = True
        _later(_freeze_survivors)


def _freeze_survivors() -> None:
    _freeze_pending[0] = False
    gc.freeze()


def _later(func) -> None:
    try:
        import gevent

        gevent.get_hub().loop.run_callback(func)
    except Exception:  # not under gevent: a plain call is as good
        func()


def watch() -> None:
    """Freeze the start-up heap, set the thresholds, start timing collections (once per
    process)."""
    _watching[0] = True
    _last_full[0] = time.monotonic()
    gc.collect()
    gc.freeze()
    gc.set_threshold(*THRESHOLDS)
    if _callback not in gc.callbacks:
        gc.callbacks.append(_callback)


# The collector starts a young collection when allocations outnumber frees by the first
# threshold. A socket waiting for data holds a few objects made for that wait (a waiter,
# its callback, a view of the read buffer); each message it receives (a pong: 6,000
# sockets, each every 25 s) frees the old ones and makes new ones. The count stays put
# while the young generation fills with tens of thousands of live objects, which the next
# collection then walks in one 30-70 ms pause (measured on PostgreSQL, where more queries
# push the count over). Collected this often, it never holds more than a few hundred.
YOUNG_COLLECTION_SECONDS = 0.1


@periodic(YOUNG_COLLECTION_SECONDS, name="ops.gc_young_collection")
def young_collection() -> None:
    """Collect the young generation every ``YOUNG_COLLECTION_SECONDS`` whatever the
    allocation count says (see above); a few hundred microseconds at most."""
    if _watching[0]:
        gc.collect(0)


@periodic(60.0, name="ops.gc_full_collection")
def full_collection() -> None:
    """Every ``GC_FULL_COLLECTION_SECONDS``, collect everything, frozen objects included,
    and freeze again: cycles among connections that closed since are reclaimed, so memory
    after a busy day comes back down. One long pause (timed as generation 2) instead of
    many."""
    every = float(current_app.config["GC_FULL_COLLECTION_SECONDS"])
    if not _watching[0] or every <= 0 or time.monotonic() - _last_full[0] < every:
        return
    _last_full[0] = time.monotonic()
    gc.unfreeze()
    gc.collect()
    gc.freeze()
