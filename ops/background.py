"""Periodic background work (outbox delivery, presence upkeep), one loop per task.

Features register tasks at import time with ``@periodic``; the server starts them once
per process (``ops/server.py``, the gunicorn worker). Tests do not start them: they
call the task functions directly, or ``start(app)`` when they want the real loops.
Under gevent each loop is a greenlet, in threading mode a thread (``start_background_task``).
"""
from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass

from flask import Flask

from extensions import db, socketio

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Task:
    name: str
    run: Callable[[], None]
    # Seconds between runs: a number, or the app.config key that holds it.
    interval: float | str


_TASKS: list[Task] = []


def periodic(interval: float | str, name: str | None = None):
    """Register ``func`` (no arguments, runs inside an app context) to run every ``interval``."""
    def register(func: Callable[[], None]) -> Callable[[], None]:
        _TASKS.append(Task(name or f"{func.__module__}.{func.__name__}", func, interval))
        return func

    return register


def start(app: Flask) -> list:
    """Start every registered task for ``app``; returns the greenlets/threads."""
    return [socketio.start_background_task(_loop, app, task) for task in _TASKS]


# After a failed run, wait at least this long: a task that waits inside its own run
# (interval 0) would otherwise retry a broken database in a tight loop.
_RETRY_AFTER_FAILURE_SECONDS = 1.0


def _loop(app: Flask, task: Task) -> None:
    while True:
        interval = task.interval if isinstance(task.interval, (int, float)) \
            else float(app.config[task.interval])
        with app.app_context():
            try:
                task.run()
            except Exception:  # a failing run must not end the loop; the next one retries
                log.exception("background task failed", extra={"task": task.name})
                db.session.rollback()
                interval = max(interval, _RETRY_AFTER_FAILURE_SECONDS)
            finally:
                db.session.remove()
        socketio.sleep(interval)
