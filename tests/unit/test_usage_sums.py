"""Medians and 90th percentiles estimated from the usage report's daily sums
(reports/usage_sums.py): exact for one or two values and at the least and greatest value,
otherwise within the width of the buckets of the two values the exact answer lies between;
and sums added in any order give the same answer as one sum of everything."""
from __future__ import annotations

import random
from bisect import bisect_right
from dataclasses import dataclass

import pytest

from reports import usage_sums
from reports.framework import percentile
from reports.models import MEASURE_EDGES, SPAN_EDGES


@dataclass(frozen=True)
class Visit:
    """What ``usage_sums.add`` reads of a counted visit: an admitted, completed one."""

    wait: float | None = None
    duration: float | None = None
    lateness: float | None = None
    scheduled: bool = True
    started: bool = True
    completed: bool = True
    no_show: bool = False
    left_before_admitted: bool = False
    provider_never_joined: bool = False
    joined: bool = True
    tested: bool = False
    passed: bool = False


def _summed(waits, key="all"):
    groups: dict = {}
    for wait in waits:
        usage_sums.add(groups, key, Visit(wait=wait), "sms")
    return groups[key]


def _bucket_width(value: float, edges) -> float:
    index = max(0, bisect_right(edges, value) - 1)
    return edges[index + 1] - edges[index] if index + 1 < len(edges) else float("inf")


@pytest.mark.parametrize("waits", [[600.0], [600.0, 120.0], [3.0, 9000.0], [75.0, 75.0]])
def test_one_or_two_values_are_exact(waits):
    sums = _summed(waits)

    for share in (0.0, 0.5, 0.9, 1.0):
        assert usage_sums.estimate(sums, "wait", share) == pytest.approx(
            percentile(waits, share))


@pytest.mark.parametrize("seed", range(8))
def test_an_estimate_is_within_the_width_of_the_exact_answers_bucket(seed):
    rng = random.Random(seed)
    # Lobby waits as clinics see them: most a few minutes, a long tail.
    waits = [rng.expovariate(1 / 240) for _ in range(rng.randint(3, 3000))]
    sums = _summed(waits)

    for share in (0.5, 0.9):
        exact = percentile(waits, share)
        off = abs(usage_sums.estimate(sums, "wait", share) - exact)
        assert off <= usage_sums.estimate_bound(sums, "wait", share)
        if len(waits) > 100:  # the two middle values in one bucket or neighbours
            assert off <= _bucket_width(exact, SPAN_EDGES)
    assert usage_sums.estimate(sums, "wait", 0.0) == pytest.approx(min(waits))
    assert usage_sums.estimate(sums, "wait", 1.0) == pytest.approx(max(waits))


@pytest.mark.parametrize("seed", range(40))
def test_a_small_groups_estimate_is_within_the_buckets_of_its_two_middle_values(seed):
    # Eight lateness values, some early and some late: the median lies between two values
    # that may be buckets apart, and the exact answer's own bucket may be narrower.
    rng = random.Random(seed)
    values = [rng.uniform(-600, 900) for _ in range(8)]
    groups: dict = {}
    for value in values:
        usage_sums.add(groups, "provider", Visit(lateness=value), None)
    sums = groups["provider"]

    for share in (0.5, 0.9):
        off = abs(usage_sums.estimate(sums, "lateness", share) - percentile(values, share))
        assert off <= usage_sums.estimate_bound(sums, "lateness", share) + 1e-9


def test_lateness_below_the_first_edge_and_early_admissions_are_counted():
    groups: dict = {}
    values = [-4000.0, -45.0, 0.0, 30.0, 500.0]
    for value in values:
        usage_sums.add(groups, "day", Visit(lateness=value), None)
    sums = groups["day"]

    assert sum(sums[f"lateness_b{i}"] for i in range(len(MEASURE_EDGES["lateness"]))) == 5
    assert usage_sums.estimate(sums, "lateness", 0.0) == -4000.0
    assert abs(usage_sums.estimate(sums, "lateness", 0.5) - 0.0) <= 30


def test_sums_merged_in_parts_are_the_sum_of_everything():
    rng = random.Random(5)
    waits = [rng.uniform(0, 4000) for _ in range(500)]
    whole = _summed(waits)
    parts = usage_sums.empty()
    for start in range(0, 500, 37):
        usage_sums.merge(parts, _summed(waits[start:start + 37]))

    assert parts == whole
    assert usage_sums.figures(parts)["wait_median_seconds"] == usage_sums.figures(
        whole)["wait_median_seconds"]


def test_counts_routes_and_the_wait_histogram_are_exact():
    groups: dict = {}
    for route, wait in (("sms", 30.0), ("mychart", 61.0), ("guest", 130.0), (None, 700.0),
                        ("sms", 4000.0)):
        usage_sums.add(groups, "day", Visit(wait=wait), route)
    usage_sums.add(groups, "day", Visit(scheduled=False, started=False, completed=False,
                                         joined=False), None)
    sums = groups["day"]
    edges = [m * 60 for m in (0, 1, 2, 5, 10, 15, 20, 30, 45, 60)]

    assert usage_sums.routes(sums) == {"sms": 2, "mychart": 1, "guest": 1, None: 1}
    assert usage_sums.wait_histogram(sums, edges) == [1, 1, 1, 0, 1, 0, 0, 0, 0, 1]
    assert (sums["scheduled"], sums["cancelled"], sums["completed"]) == (5, 1, 5)
    assert usage_sums.estimate(usage_sums.empty(), "wait", 0.5) is None


def test_every_edge_of_the_reports_wait_histogram_is_an_edge_of_the_sums():
    from reports.usage import WAIT_BUCKETS_MINUTES

    assert {minutes * 60 for minutes in WAIT_BUCKETS_MINUTES} <= set(SPAN_EDGES)
