"""``flask outbox list|retry``: EHR write-backs waiting, sent, and dead letters."""
from __future__ import annotations

import json

import click
from flask.cli import AppGroup

from ehr import outbox
from ehr.models import WritebackStatus

outbox_cli = AppGroup("outbox", help="EHR write-backs (AuditEvent, Observation) and dead letters.")


@outbox_cli.command("list")
@click.option("--status", type=click.Choice([s.value for s in WritebackStatus]),
              help="Only rows in this state; failed rows are the dead letters.")
@click.option("--limit", type=int, default=200, show_default=True, help="Newest rows first.")
@click.option("--json", "as_json", is_flag=True, help="One JSON array, for scripts.")
def list_command(status: str | None, limit: int, as_json: bool) -> None:
    """List write-backs: status, attempts, last error, created, the process holding a claim
    (never the payload)."""
    rows = [outbox.as_dict(row) for row in outbox.list_rows(status, limit)]
    if as_json:
        click.echo(json.dumps(rows, indent=2))
        return
    if not rows:
        click.echo("No write-backs" + (f" with status {status}." if status else "."))
    for row in rows:
        click.echo(f"{row['id']:>6}  {row['status']:<7}  {row['resource_type']:<11}  "
                   f"attempts={row['attempts']:<2}  created={row['created_at']}  "
                   f"{row['business_identifier']}"
                   + (f"  error={row['last_error']}" if row["last_error"] else "")
                   + (f"  claimed_by={row['claimed_by']} until={row['locked_until']}"
                      if row["claimed_by"] else ""))


@outbox_cli.command("retry")
@click.argument("ids", nargs=-1, type=int)
@click.option("--all-failed", is_flag=True, help="Requeue every failed write-back.")
def retry_command(ids: tuple[int, ...], all_failed: bool) -> None:
    """Requeue failed write-backs (by ID, or --all-failed) with a fresh set of attempts."""
    if not ids and not all_failed:
        raise click.UsageError("give one or more IDs, or --all-failed")
    count = outbox.requeue(list(ids), all_failed=all_failed)
    click.echo(f"Requeued {count} write-back{'s' if count != 1 else ''}.")
    if ids and count < len(ids):
        click.echo("Only failed rows can be requeued; the others were left as they are.",
                   err=True)
