"""``flask reports health|usage|…``: every report for scripts (JSON or CSV), the same figures
as its page under ``/admin/reports``. A report registered in reports/framework.py gets its
command here, with the same filters as its page."""
from __future__ import annotations

import json

import click
from flask import current_app
from flask.cli import AppGroup, with_appcontext

from reports import framework, health
from visits.models import utcnow

reports_cli = AppGroup("reports", help="Reports for the clinic: usage, call quality, texts, "
                       "integration health; sample data for development.")


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


def _report_command(kind: framework.ReportKind) -> click.Command:
    """``flask reports <name>``: the registered report with its page's filters."""
    def run(start: str | None, end: str | None, table: str | None, as_json: bool,
            as_csv: bool, **chosen: str | None) -> None:
        if as_json and as_csv:
            raise click.UsageError("choose one of --json and --csv")
        # Labels are translated: outside a request they are read in the default language.
        with current_app.test_request_context():
            _run(start, end, table, as_json, as_csv, chosen)

    def _run(start, end, table, as_json, as_csv, chosen) -> None:
        now = utcnow()
        try:
            filters = framework.Filters.parse({"from": start, "to": end, **chosen}, now)
        except framework.FilterError as refused:
            raise click.UsageError(str(refused.message)) from None
        report = kind.build(filters, now)
        if as_json:
            click.echo(json.dumps(report.as_json(), indent=2))
            return
        try:
            tables = [report.table(table)] if table or as_csv else report.tables
        except KeyError:
            raise click.UsageError(f"no table named {table!r}; one of: "
                                   + ", ".join(t.key for t in report.tables)) from None
        if as_csv:
            click.echo(tables[0].csv(), nl=False)
            return
        click.echo(f"{kind.title} {filters.days.start} to {filters.days.end}")
        for shown in tables:
            click.echo(f"\n[{shown.key}]")
            click.echo(shown.csv().replace("\r\n", "\n"), nl=False)

    options = [
        click.Option(["--from", "start"], metavar="DATE",
                     help="First day, YYYY-MM-DD (default: six days before --to)."),
        click.Option(["--to", "end"], metavar="DATE",
                     help="Last day, YYYY-MM-DD (default: today in the clinic's time zone)."),
        click.Option(["--table"], metavar="KEY",
                     help="With --csv (or plain), this table; --csv without it: the main table."),
        click.Option(["--json", "as_json"], is_flag=True,
                     help="Every table as one JSON object, for scripts."),
        click.Option(["--csv", "as_csv"], is_flag=True, help="One table as CSV, header row first."),
    ]
    helps = {"endpoint": "Only this endpoint (its name).",
             "department": "Only this department, as the EHR names it.",
             "provider": "Only this provider's EHR id (Practitioner/...).",
             "period": "Rows per day or week."}
    for name in kind.filters:
        options.append(click.Option(
            [f"--{name}"], metavar="NAME" if name != "period" else "day|week",
            help=helps[name]))
    return click.Command(kind.name, callback=with_appcontext(run), params=options,
                         help=f"{kind.title}: {kind.summary}")


for _kind in framework.kinds():
    reports_cli.add_command(_report_command(_kind))


# The call-quality retention purge (reports/retention.py).
from reports.retention import purge_command  # noqa: E402

reports_cli.add_command(purge_command)
