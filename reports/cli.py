"""``flask reports health|usage|…``: every report for scripts (JSON or CSV), the same figures
as its page under ``/admin/reports``. A report registered in reports/framework.py gets its
command here, with the same filters as its page."""
from __future__ import annotations

import json
import time

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


@reports_cli.command("sample-data")
@click.option("--visits", "count", type=click.IntRange(1, 5_000_000), required=True,
              help="How many made-up visits to add.")
@click.option("--days", type=click.IntRange(1, 3650), default=365, show_default=True,
              help="Spread over this many days before today (and a week after).")
@click.option("--samples-per-visit", type=click.IntRange(0, 1000), default=20,
              show_default=True, help="Call-quality samples per call, on average.")
@click.option("--seed", type=int, default=12, show_default=True, help="Random seed.")
def sample_data_command(count: int, days: int, samples_per_visit: int, seed: int) -> None:
    """Add made-up visits (participants, lobby waits, device tests, call-quality samples,
    texts) for developing and measuring the reports. Refused in production."""
    from reports import sample_data

    refused = sample_data.refusal(current_app.config)
    if refused:
        raise click.ClickException(refused)
    counts = sample_data.generate(
        count, utcnow(), days=days, samples_per_visit=samples_per_visit, seed=seed,
        progress=lambda n: click.echo(f"{n} visits...", err=True))
    click.echo(f"Added {counts.appointments} visits, {counts.participants} participants, "
               f"{counts.lobby_entries} lobby entries, {counts.device_tests} device tests, "
               f"{counts.quality_samples} quality samples ({counts.quality_rollups} rollups), "
               f"{counts.texts} texts in {counts.seconds:.1f} s.")
    _refresh_usage()


@reports_cli.command("refresh-usage")
def refresh_usage_command() -> None:
    """Keep the usage report's facts of every visit settled since the last refresh, and sum
    them per clinic day (each server process also does it every 10 minutes)."""
    _refresh_usage()


def _refresh_usage() -> None:
    from reports import usage

    started = time.perf_counter()
    added = usage.refresh_facts(utcnow())
    click.echo(f"Usage facts: {added} settled visits added, and summed per clinic day, in "
               f"{time.perf_counter() - started:.1f} s.")


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
