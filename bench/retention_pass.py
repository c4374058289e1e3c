"""The texts' retention pass (notifications/retention.py ``purge_finished``), timed alone.

    .venv/bin/python bench/retention_pass.py [--visits 3000] [--passes 50]

Seeds a throw-away SQLite database with ``--visits`` visits (bench/seed.py), then runs the
pass ``--passes`` times in one app context and prints the median and the longest. Every
process runs it every few seconds, so it must cost what is still held (phones, text
bodies), not the number of appointments ever booked: compare ``--visits 3000`` with
``--visits 20000``.
"""
from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--visits", type=int, default=3000)
    parser.add_argument("--passes", type=int, default=50)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="vv-retention-") as work:
        os.environ.update({
            "VV_DATABASE_URL": f"sqlite:///{work}/vv.db", "VV_INSTANCE_PATH": f"{work}/instance",
            "VV_SECRET_KEY": "bench-secret-key-" + "x" * 32, "VV_ENV": "development",
            "VV_SANDBOX": "0", "VV_PUBLIC_BASE_URL": "http://127.0.0.1:1"})
        subprocess.run([sys.executable, os.path.join(ROOT, "bench", "seed.py"), "--visits",
                        str(args.visits), "--probes", "0", "--fhir-base",
                        "http://127.0.0.1:9/fhir", "--out", f"{work}/manifest.json"],
                       cwd=ROOT, check=True, capture_output=True, timeout=900)
        sys.path.insert(0, ROOT)
        from app import create_app
        from extensions import db
        from notifications.retention import purge_finished
        from visits.models import Appointment, utcnow

        app = create_app()
        with app.app_context():
            appointments = db.session.query(Appointment).count()
            times = []
            for _ in range(args.passes):
                started = time.perf_counter()
                purge_finished(utcnow())
                db.session.remove()
                times.append((time.perf_counter() - started) * 1000)
        times.sort()
        print(f"retention pass over {appointments:,} appointments: median "
              f"{times[len(times) // 2]:.2f} ms, longest {times[-1]:.2f} ms "
              f"({args.passes} passes)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
