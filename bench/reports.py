"""How long each report takes on a big database: a fresh PostgreSQL database (dropped and
created), migrated, filled with ``flask reports sample-data``'s generator, ANALYZEd; then
every registered report (and integration health) is built and rendered as its page would
be, for the last 7, 31 and 365 days, all endpoints and one, and the median of 3 runs is
printed in milliseconds. The usage report's settled visits are kept as facts first
(``refresh_facts``, timed), as each server process does every 10 minutes.

    .venv/bin/python bench/reports.py --visits 100000 \
        --postgres postgresql://postgres@127.0.0.1:5432/postgres [--json out.json]

``--keep`` reuses the filled database of an earlier run (same ``--database``), so a change
to a query can be measured again without refilling.
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from datetime import timedelta
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import psycopg
import sqlalchemy as sa

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

RANGES = (7, 31, 365)


def _database_url(server: str, name: str) -> str:
    parts = urlsplit(server)
    return urlunsplit(parts._replace(path=f"/{name}"))


def _fresh_database(server: str, name: str) -> None:
    with psycopg.connect(server, autocommit=True) as connection:
        connection.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        connection.execute(f'CREATE DATABASE "{name}"')


def _timed(run, repeat: int = 3) -> float:
    runs = []
    for _ in range(repeat):
        started = time.perf_counter()
        run()
        runs.append((time.perf_counter() - started) * 1000)
    return statistics.median(runs)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--visits", type=int, default=100_000)
    parser.add_argument("--samples-per-visit", type=int, default=25)
    parser.add_argument("--postgres", default="postgresql://postgres@127.0.0.1:5432/postgres",
                        help="a server URL whose user may create databases")
    parser.add_argument("--database", default="vv_reports_bench")
    parser.add_argument("--keep", action="store_true", help="reuse an earlier run's data")
    parser.add_argument("--json", type=Path, help="also write the figures here")
    args = parser.parse_args()

    url = _database_url(args.postgres, args.database)
    if not args.keep:
        _fresh_database(args.postgres, args.database)

    import flask_migrate
    from flask import render_template

    from app import create_app
    from extensions import db
    from reports import framework, health, sample_data, usage
    from visits.models import utcnow

    app = create_app({"DATABASE_URL": url, "SECRET_KEY": "bench-" + "k" * 40,
                      "ASYNC_MODE": "threading", "LOG_FORMAT": "text", "LOG_LEVEL": "WARNING"})
    result: dict = {"visits": args.visits, "reports": {}}
    with app.app_context():
        if not args.keep:
            flask_migrate.upgrade()
            started = time.perf_counter()
            counts = sample_data.generate(
                args.visits, utcnow(), samples_per_visit=args.samples_per_visit,
                progress=lambda n: print(f"  {n} visits", file=sys.stderr, flush=True))
            result["fill_seconds"] = round(time.perf_counter() - started, 1)
            result["rows"] = counts.by_table
            print(f"filled in {result['fill_seconds']} s: {counts.by_table}", flush=True)
            started = time.perf_counter()
            settled = usage.refresh_facts(utcnow())
            result["refresh_seconds"] = round(time.perf_counter() - started, 1)
            print(f"usage facts of {settled} settled visits kept in "
                  f"{result['refresh_seconds']} s", flush=True)
            with db.engine.connect().execution_options(isolation_level="AUTOCOMMIT") as c:
                c.exec_driver_sql("VACUUM ANALYZE")
        one = framework.endpoint_names()[0]
        now = utcnow()
        print(f"{'report':<10} {'days':>5} {'endpoint':<16} {'build ms':>9} {'page ms':>9}")
        for kind in framework.kinds():
            for days in RANGES:
                for endpoint in (None, one):
                    query = {"from": (now - timedelta(days=days - 1)).date().isoformat(),
                             "to": now.date().isoformat(), "endpoint": endpoint}
                    filters = framework.Filters.parse(query, now)

                    def page(kind=kind, filters=filters):
                        with app.test_request_context():
                            report = kind.build(filters, now)
                            render_template(kind.template, kind=kind, report=report,
                                            error=None, filters=filters, endpoint_names=[],
                                            csv_url=lambda *a, **k: "#")

                    def build(kind=kind, filters=filters):
                        with app.test_request_context():
                            kind.build(filters, now)
                        db.session.remove()

                    try:
                        built, shown = _timed(build), _timed(page)
                    except sa.exc.SQLAlchemyError as error:  # a schema newer than the data
                        db.session.rollback()
                        print(f"{kind.name:<10} {days:>5} {endpoint or 'all':<16} "
                              f"failed: {type(error).__name__}", flush=True)
                        continue
                    finally:
                        db.session.remove()
                    key = f"{kind.name}/{days}d/{endpoint or 'all'}"
                    result["reports"][key] = {"build_ms": round(built), "page_ms": round(shown)}
                    print(f"{kind.name:<10} {days:>5} {endpoint or 'all':<16} {built:>9.0f} "
                          f"{shown:>9.0f}", flush=True)
        for days in RANGES:
            span = health.DateRange(now.date() - timedelta(days=days - 1), now.date())
            shown = _timed(lambda span=span: health.health_report(span, now))
            result["reports"][f"health/{days}d/all"] = {"build_ms": round(shown)}
            print(f"{'health':<10} {days:>5} {'all':<16} {shown:>9.0f}", flush=True)
    if args.json:
        args.json.write_text(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
