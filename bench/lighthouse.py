"""Lighthouse's mobile performance score for the patient's pages: the join page (opened
from a texted link) and the device test (issue 14, item 13: target 98).

    .venv/bin/python bench/lighthouse.py [--runs 3] [--lighthouse PATH]

Needs the Lighthouse CLI (Node), which is not part of ``make test``:

    (cd /tmp/lh && npm install lighthouse@12)   # then --lighthouse /tmp/lh/node_modules/.bin/lighthouse

Starts its own server (the browser tests' ``start_server``: migrated SQLite, the sandbox
EHR, gevent) and runs Lighthouse's default mobile emulation (Moto G Power screen, 4x CPU
slowdown, simulated slow 4G) in Debian Chromium, headless, with a fake camera and
microphone. The join link is opened fresh in each run (its redirect to ``/join``
included). Prints each page's scores and the median; the machine is shared, so re-run
before comparing.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tests.browser.conftest import CHROMIUM, start_server, stop_server
from tests.browser.test_patient_join_page import join_link

FLAGS = ("--headless=new --no-sandbox --disable-gpu --no-first-run "
         "--disable-background-networking --disable-component-update --disable-sync "
         "--use-fake-ui-for-media-stream --use-fake-device-for-media-stream")


def score(lighthouse: str, url: str, folder: Path) -> tuple[float, dict]:
    """(performance score 0-100, the metrics that make it) of one Lighthouse run."""
    out = folder / "report.json"
    result = subprocess.run(
        [lighthouse, url, "--only-categories=performance", "--output=json",
         f"--output-path={out}", f"--chrome-flags={FLAGS}", "--quiet"],
        env={**os.environ, "CHROME_PATH": CHROMIUM}, capture_output=True, text=True,
        timeout=300, check=False)
    if result.returncode != 0 or not out.exists():
        raise RuntimeError(f"lighthouse failed ({result.returncode}):\n{result.stderr[-2000:]}")
    report = json.loads(out.read_text())
    audits = report["audits"]
    metrics = {key: round(audits[key]["numericValue"]) for key in (
        "first-contentful-paint", "largest-contentful-paint", "total-blocking-time",
        "speed-index")}
    metrics["cumulative-layout-shift"] = round(
        audits["cumulative-layout-shift"]["numericValue"], 3)
    return report["categories"]["performance"]["score"] * 100, metrics


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--lighthouse", default=shutil.which("lighthouse")
                        or "/tmp/lh/node_modules/.bin/lighthouse")
    args = parser.parse_args()
    if not Path(args.lighthouse).exists():
        sys.exit(f"no Lighthouse at {args.lighthouse}: see this script's docstring")
    with tempfile.TemporaryDirectory() as folder:
        server = start_server(Path(folder) / "server")
        try:
            for page in ("join", "device-test"):
                scores = []
                for run in range(args.runs):
                    url = (join_link(server, f"appt-{run % 6 + 1}") if page == "join"
                           else f"{server.url}/device-test")
                    value, metrics = score(args.lighthouse, url, Path(folder))
                    scores.append(value)
                    print(f"{page} run {run + 1}: {value:.0f} {metrics}", flush=True)
                print(f"{page}: median performance score {statistics.median(scores):.0f} "
                      f"of {args.runs} runs", flush=True)
        finally:
            stop_server(server)


if __name__ == "__main__":
    main()
