"""Call-quality samples are kept ``VV_QUALITY_RETENTION_DAYS`` (default 90): a purge every
``VV_QUALITY_PURGE_INTERVAL_SECONDS`` in each server process's background loop, and
``flask reports purge-quality-samples`` for an operator. The per-person rollups the
quality report reads stay; only the 10-s samples behind the visit timeline go."""
from __future__ import annotations

import click
from flask import current_app
from flask.cli import with_appcontext

from ops.background import periodic
from visits.models import utcnow
from visits.quality import purge_samples


@periodic("QUALITY_PURGE_INTERVAL_SECONDS", name="reports.quality_purge")
def purge_old_samples() -> None:
    """The periodic purge; several processes running it at once delete disjoint batches
    or nothing."""
    purge_samples(utcnow(), current_app.config["QUALITY_RETENTION_DAYS"])


@click.command("purge-quality-samples")
@click.option("--days", type=click.IntRange(min=1), metavar="N",
              help="Keep this many days (default: VV_QUALITY_RETENTION_DAYS).")
@with_appcontext
def purge_command(days: int | None) -> None:
    """Delete call-quality samples older than the retention period (the report's sums
    stay); prints how many were deleted."""
    keep = days or current_app.config["QUALITY_RETENTION_DAYS"]
    deleted = purge_samples(utcnow(), keep)
    click.echo(f"Deleted {deleted} call-quality samples older than {keep} days.")
