"""Report pages: ``/admin/reports/health`` (both admin roles may read it), as HTML, or as
CSV with ``?format=csv`` (``&table=`` one of the page's tables; every column without)."""
from __future__ import annotations

import functools
from urllib.parse import urlencode

from flask import Response, current_app, render_template, request, url_for
from flask_babel import gettext as _

from admin.auth import require_role
from admin.models import AdminRole
from reports import bp, health
from visits.models import utcnow


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
    if chosen not in names:
        chosen = ""
    zone = health.endpoints(chosen)[0].site_timezone if chosen else (
        health.endpoints()[0].site_timezone if names else None)
    error = None
    status = 200
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
