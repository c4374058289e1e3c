"""Report pages (both admin roles may read them): the index ``/admin/reports/``, every
registered report at ``/admin/reports/<name>`` (reports/framework.py) with its CSV, and
``/admin/reports/health``, as HTML, or as CSV with ``?format=csv`` (``&table=`` one of the
page's tables; every column, or the main table, without)."""
from __future__ import annotations

import functools
from datetime import date, datetime
from urllib.parse import urlencode

from flask import Response, abort, current_app, render_template, request, url_for
from flask_babel import format_date, format_decimal, format_percent
from flask_babel import gettext as _

from admin.auth import require_role
from admin.models import AdminRole
from reports import bp, framework, health
from visits.models import utcnow


@bp.app_context_processor
def _report_kinds():
    """``report_kinds()`` for the admin home's list of reports."""
    return {"report_kinds": framework.kinds}


@bp.app_template_filter("clinic_time")
def clinic_time(value, zone_name: str | None) -> str:
    """A UTC time as the clinic reads it: ``2026-12-04 09:30 CST``."""
    return value.astimezone(health.zone_of(zone_name)).strftime("%Y-%m-%d %H:%M %Z")


def _today_in(zone_name: str | None):
    return utcnow().astimezone(health.zone_of(zone_name)).date()


@bp.route("/health")
@require_role(AdminRole.ADMIN, AdminRole.ANALYST)
def health_report():
    """Integration health per endpoint: HL7 ACKs, write-backs owed, token failures."""
    names = [endpoint.name for endpoint in health.endpoints()]
    chosen = request.args.get("endpoint", "").strip()
    error = None
    status = 200
    if chosen and chosen not in names:
        error = _("There is no endpoint named %(name)s.", name=chosen[:64])
        status = 400
        chosen = ""
    zone = health.endpoints(chosen)[0].site_timezone if chosen else (
        health.endpoints()[0].site_timezone if names else None)
    try:
        days = health.DateRange.parse(request.args.get("from") or None,
                                      request.args.get("to") or None, _today_in(zone))
    except health.InvalidRange:
        error = _("Choose dates written YYYY-MM-DD, the first on or before the last, at most "
                  "%(days)d days apart.", days=health.MAX_DAYS)
        days = health.DateRange.parse(None, None, _today_in(zone))
        status = 400
    now = utcnow()
    report = health.health_report(days, now, endpoint=chosen or None,
                                  alert_minutes=current_app.config["REPORTS_HEALTH_ALERT_MINUTES"])
    if request.args.get("format") == "csv" and status == 200:
        table = request.args.get("table") if request.args.get("table") in health.TABLES else None
        filename = f"integration-health-{days.start}-{days.end}" + (f"-{table}" if table else "")
        return Response(health.as_csv(report, table), mimetype="text/csv", headers={
            "Content-Disposition": f'attachment; filename="{filename}.csv"'})
    return render_template("reports/health.html", report=report, names=names, chosen=chosen,
                           error=error, csv_url=functools.partial(_csv_url, days, chosen)), status


def _csv_url(days: health.DateRange, chosen: str, table: str | None) -> str:
    """This report's CSV (one table, or all): ``endpoint`` is url_for's own first argument,
    so the query string is built here."""
    query = {"from": days.start.isoformat(), "to": days.end.isoformat(), "format": "csv"}
    if chosen:
        query["endpoint"] = chosen
    if table:
        query["table"] = table
    return url_for("admin.reports.health_report") + "?" + urlencode(query)


# --- registered reports (reports/framework.py): usage, and the others as they come ------------

@bp.route("/")
@require_role(AdminRole.ADMIN, AdminRole.ANALYST)
def index():
    """Every report, with a line on what it answers."""
    return render_template("reports/index.html", kinds=framework.kinds())


@bp.route("/<name>")
@require_role(AdminRole.ADMIN, AdminRole.ANALYST)
def report(name: str):
    """A registered report as a page, or one of its tables as CSV with ``?format=csv``
    (``&table=<key>``; the main table without)."""
    return _report(name, as_csv=request.args.get("format") == "csv")


@bp.route("/<name>/export.csv")
@require_role(AdminRole.ADMIN, AdminRole.ANALYST)
def export(name: str):
    """One table of a registered report as CSV (``?table=<key>``; the main table without)."""
    return _report(name, as_csv=True)


def _report(name: str, *, as_csv: bool):
    kind = framework.REGISTRY.get(name)
    if kind is None:
        abort(404)
    now = utcnow()
    try:
        filters = framework.Filters.parse(request.args, now)
    except framework.FilterError as refused:
        if as_csv:
            return Response(str(refused.message) + "\n", status=400, mimetype="text/plain")
        return render_template(kind.template, kind=kind, report=None, error=refused.message,
                               filters=framework.Filters.default(now), **_page_tools(kind)), 400
    result = kind.build(filters, now)
    if as_csv:
        try:
            table = result.table(request.args.get("table"))
        except KeyError:
            return Response(_("This report has no table of that name.") + "\n", status=400,
                            mimetype="text/plain")
        filename = f"{kind.name}-{table.key}-{filters.days.start}-{filters.days.end}.csv"
        return Response(table.csv(), mimetype="text/csv", headers={
            "Content-Disposition": f'attachment; filename="{filename}"'})
    return render_template(kind.template, kind=kind, report=result, error=None, filters=filters,
                           **_page_tools(kind))


def _page_tools(kind: framework.ReportKind) -> dict:
    def csv_url(filters: framework.Filters, table: str | None = None) -> str:
        query = filters.query(**({"table": table} if table else {}))
        return url_for("admin.reports.export", name=kind.name) + "?" + urlencode(query)
    return {"endpoint_names": framework.endpoint_names(), "csv_url": csv_url}


@bp.app_template_filter("report_value")
def report_value(value, kind: str = "int") -> str:
    """A table cell as the reader's language writes it: ``12``, ``45 %``, ``3 min 05 s``,
    ``–`` for none."""
    if value is None:
        return "–"
    if kind == "percent":
        return format_percent(value, "#,##0.#%")
    if kind == "seconds":
        return duration(value)
    if kind in ("int", "number"):
        return format_decimal(value, "#,##0.#")
    if isinstance(value, datetime):
        return value.isoformat()  # with its UTC offset: which zone is never in doubt
    if isinstance(value, date):
        # "Nov 29, 2026", "29 nov 2026": the reader's way (CSV and JSON keep ISO dates).
        return format_date(value, "medium")
    return str(value)


def duration(seconds: float) -> str:
    """``42 s``, ``3 min 05 s``, ``1 h 02 min``; negative for early (lateness)."""
    sign = "−" if seconds < 0 else ""
    whole = round(abs(seconds))
    if whole < 60:
        return sign + _("%(s)d s", s=whole)
    if whole < 3600:
        return sign + _("%(m)d min %(s)02d s", m=whole // 60, s=whole % 60)
    return sign + _("%(h)d h %(m)02d min", h=whole // 3600, m=(whole % 3600) // 60)
