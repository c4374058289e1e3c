"""Admin: the audit trail of the portal itself: sign-ins (and refusals), sign-outs and
every configuration change recorded with ``admin.auth.record``. Both roles may read it."""
from __future__ import annotations

from dataclasses import dataclass

import sqlalchemy as sa
from flask import render_template, request

from admin import bp
from admin.auth import redact, require_role
from extensions import db
from visits.models import AuditLog

PER_PAGE = 50
# Far past any real log, and small enough that every database takes the offset (a page of
# 10**20 overflowed PostgreSQL's bigint and answered 500).
MAX_PAGE = 1_000_000


@dataclass(frozen=True)
class AuditFilter:
    """What the reader narrowed the list to; empty strings mean everything."""

    action: str = ""
    actor: str = ""

    @property
    def is_active(self) -> bool:
        return bool(self.action or self.actor)


def _like(text: str) -> str:
    """A LIKE pattern matching ``text`` literally anywhere."""
    escaped = text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
    return f"%{escaped}%"


def audit_query(wanted: AuditFilter) -> sa.Select:
    """Admin entries (actor ``admin:…``), newest first, narrowed by ``wanted``."""
    query = db.select(AuditLog).where(AuditLog.action.like("admin.%"))
    if wanted.action:
        query = query.where(AuditLog.action.ilike(_like(wanted.action), escape="\\"))
    if wanted.actor:
        query = query.where(AuditLog.actor.ilike(_like(wanted.actor), escape="\\"))
    return query.order_by(AuditLog.at.desc(), AuditLog.id.desc())


def action_names() -> list[str]:
    """Every admin action recorded so far, for the filter's suggestions."""
    rows = db.session.execute(db.select(AuditLog.action).where(AuditLog.action.like("admin.%"))
                              .distinct().order_by(AuditLog.action)).scalars()
    return [row.removeprefix("admin.") for row in rows]


@bp.route("/audit")
@require_role()
def audit():
    """Who did what in the portal, newest first, 50 a page, filterable by action or actor."""
    wanted = AuditFilter(action=request.args.get("action", "").strip()[:64],
                         actor=request.args.get("actor", "").strip()[:120])
    query = audit_query(wanted)
    # A page past the end (an old bookmark, a typed number) shows the last one.
    requested = min(max(request.args.get("page", 1, type=int), 1), MAX_PAGE)
    page = db.paginate(query, page=requested, per_page=PER_PAGE, error_out=False, count=True)
    if page.pages and requested > page.pages:
        page = db.paginate(query, page=page.pages, per_page=PER_PAGE, error_out=False,
                           count=True)
    entries = [(entry, redact(entry.detail)) for entry in page.items]
    return render_template("admin/audit.html", page=page, entries=entries, wanted=wanted,
                           actions=action_names())
