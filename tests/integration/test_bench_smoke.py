"""`make bench` at N=50 with short phases, so the benchmark cannot rot: the real app (one
process, SQLite) and the Node reference through the same driver, every phase run, every
figure present and plausible. The targets themselves are judged at N=3,000 by `make bench`
(docs/performance.md), not here."""
from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.timeout(420)
def test_bench_runs_every_phase_against_the_app_and_the_node_reference(tmp_path):
    assert shutil.which("node"), "Node.js is needed (make test installs it)"
    out = tmp_path / "bench.json"

    done = subprocess.run([sys.executable, "bench/run.py", "--smoke", "--variants", "node,sqlite",
                           "--grace", "1", "--json", str(out)],
                          cwd=ROOT, capture_output=True, text=True, timeout=400)

    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-5000:]
    report = json.loads(out.read_text())
    node, app = report["results"]["node"], report["results"]["sqlite"]
    for result in (node, app):
        phases = result["phases"]
        assert phases["fill"]["failed"] == 0
        assert phases["fill"]["connect_told"]["lost"] == 0
        assert phases["probe"]["connect_told"]["lost"] == 0
        # Each probe visit used in two rounds: every connect of both was timed.
        assert phases["probe"]["connect_told"]["n"] == 2 * report["probes"]
        assert phases["probe"]["drop_told"]["lost"] == 0
        assert phases["probe"]["driver"]["loop_lag_ms"]["max"] > 0
        assert phases["storm"]["back"] == phases["storm"]["sockets"] == 2 * report["pairs"]
        assert phases["idle"]["kib_per_socket"] > 0
    assert app["phases"]["probe"]["left_after_grace"]["lost"] == 0
    assert app["phases"]["storm"]["presence_wrong"] == 0
    assert app["phases"]["storm"]["lobby_place_changed"] == 0
    assert app["phases"]["storm"]["false_disconnects_sent"] == 0
    assert app["phases"]["drain"]["backlog_left"] == 0
    # The drain waited for every patient's "connected", not just the first ones queued.
    assert app["phases"]["drain"]["queued_in_all"] >= report["pairs"]
    assert app["fhir_standin"]["duplicates"] == 0
    assert app["phases"]["join"]["not_200"] == 0 and app["phases"]["join"]["requests_per_s"] > 0
    # The table: every metric row, with ratios to Node where both have the figure.
    assert "| connect → told, paced probe p99 (ms) |" in done.stdout
    assert "SQLite / Node" in done.stdout
    assert "| driver's own stalls in the probe: longest (ms) |" in done.stdout
