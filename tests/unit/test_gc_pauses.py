"""The garbage collector's settings: frozen survivors are reclaimed by the periodic full
collection, and not before."""
from __future__ import annotations

import gc
import weakref

import pytest
from flask import Flask

from ops import gc_pauses


class _Connection:
    """Stands in for a closed socket's objects: a reference cycle nobody points at."""


@pytest.fixture
def watching(monkeypatch):
    app = Flask(__name__)
    app.config["GC_FULL_COLLECTION_SECONDS"] = 3600.0
    monkeypatch.setattr(gc_pauses, "_watching", [True])
    monkeypatch.setattr(gc_pauses, "_last_full", [float("-inf")])
    thresholds = gc.get_threshold()
    yield app
    gc.unfreeze()
    gc.set_threshold(*thresholds)


def _frozen_garbage_cycle() -> weakref.ref:
    connection = _Connection()
    connection.me = connection
    gc.freeze()  # as the server does after a middle-generation collection
    ref = weakref.ref(connection)
    del connection
    return ref


def _alive(ref: weakref.ref) -> bool:
    return ref() is not None


def test_a_full_collection_reclaims_cycles_among_frozen_objects(watching):
    ref = _frozen_garbage_cycle()
    gc.collect()
    # Checked through a helper: pytest keeps an assert's intermediate values alive.
    assert _alive(ref), "frozen objects are out of the collector's reach"
    with watching.app_context():
        gc_pauses.full_collection()
    assert not _alive(ref)
    assert gc.get_freeze_count() > 0, "what survives is frozen again"


def test_the_full_collection_waits_for_its_interval_and_can_be_turned_off(watching):
    ref = _frozen_garbage_cycle()
    with watching.app_context():
        gc_pauses.full_collection()  # due: the last one was "never"
        second = _frozen_garbage_cycle()
        gc_pauses.full_collection()  # not due again for an hour
        assert not _alive(ref) and _alive(second)
        gc_pauses._last_full[0] = float("-inf")
        watching.config["GC_FULL_COLLECTION_SECONDS"] = 0
        gc_pauses.full_collection()
        assert _alive(second)


def _young_collections() -> int:
    return gc.get_stats()[0]["collections"]


def test_the_young_generation_is_collected_on_the_clock_whatever_the_count(watching):
    # Objects replaced one for one (a socket's wait objects, at every message it gets)
    # leave the collector's allocation count where it was: its own trigger never comes.
    gc.set_threshold(1_000_000, 5, 10)
    waiting = [[] for _ in range(2_000)]
    for i in range(len(waiting)):
        waiting[i] = [i]  # the old list freed, a new one in the young generation
    before = _young_collections()
    with watching.app_context():
        gc_pauses.young_collection()
    assert _young_collections() == before + 1
    young = {id(o) for o in gc.get_objects(generation=0)}
    assert not any(id(o) in young for o in waiting), "the waiting objects moved on"


def test_the_young_collection_waits_for_the_server(monkeypatch):
    monkeypatch.setattr(gc_pauses, "_watching", [False])
    gc.disable()  # only an explicit collection may count here
    try:
        before = _young_collections()
        gc_pauses.young_collection()  # tests and commands: the collector's own settings
        after = _young_collections()
    finally:
        gc.enable()
    assert after == before
