"""``flask reports health``: the integration health report for scripts (JSON or CSV), the
same figures as ``/admin/reports/health``. Other report kinds join this group later."""
from __future__ import annotations

import json

import click
from flask import current_app
from flask.cli import AppGroup

from reports import health
from visits.models import utcnow

reports_cli = AppGroup("reports", help="Reports for the clinic: integration health.")


@reports_cli.command("health")
@click.option("--from", "start", metavar="DATE", help="First day, YYYY-MM-DD (default: six "
              "days before --to).")
@click.option("--to", "end", metavar="DATE", help="Last day, YYYY-MM-DD (default: today in "
              "the clinic's time zone).")
@click.option("--endpoint", metavar="NAME", help="Only this endpoint.")
@click.option("--json", "as_json", is_flag=True, help="One JSON object, for scripts.")
@click.option("--csv", "as_csv", is_flag=True, help="CSV with a header row, one endpoint a line.")
def health_command(start: str | None, end: str | None, endpoint: str | None, as_json: bool,
                   as_csv: bool) -> None:
    """Per endpoint: HL7 ACKs by code over the days, the last HL7 message, write-backs
    pending and failed (now), the oldest pending one's age, backend-token failures."""
    if as_json and as_csv:
        raise click.UsageError("choose one of --json and --csv")
    known = health.endpoints(endpoint) if endpoint else health.endpoints()
    if endpoint and not known:
        raise click.UsageError(f"no endpoint named {endpoint!r}")
    zone = health.zone_of(known[0].site_timezone if known else None)
    try:
        days = health.DateRange.parse(start, end, utcnow().astimezone(zone).date())
    except health.InvalidRange as exc:
        raise click.UsageError(str(exc)) from None
    report = health.health_report(
        days, utcnow(), endpoint=endpoint,
        alert_minutes=current_app.config["REPORTS_HEALTH_ALERT_MINUTES"])
    if as_json:
        click.echo(json.dumps(health.as_json(report), indent=2))
    elif as_csv:
        click.echo(health.as_csv(report), nl=False)
    else:
        click.echo(f"Integration health {days.start} to {days.end}")
        for row in report.rows:
            click.echo(
                f"{row.endpoint}: HL7 AA={row.hl7_aa} AE={row.hl7_ae} AR={row.hl7_ar} "
                f"last={row.hl7_last_received_at.isoformat() if row.hl7_last_received_at else '-'}"
                f"  write-backs pending={row.writebacks_pending} failed={row.writebacks_failed}"
                f" oldest={row.oldest_pending_seconds if row.oldest_pending_seconds is not None else '-'}s"
                f" error={row.last_error or '-'}"
                f"  device tests pending={row.device_tests_pending} failed={row.device_tests_failed}"
                f"  token failures={row.token_failures}")
        for alert in report.alerts:
            click.echo(f"ALERT {alert.endpoint}: {alert.kind}")
