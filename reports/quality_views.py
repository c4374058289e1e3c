"""``/admin/reports/quality/visits/<id>``: one visit's timeline (joins, the lobby and admit,
disconnects, quality minute by minute), opened from the quality report's worst visits.
People are their role and a number; no patient is named."""
from __future__ import annotations

from flask import abort, render_template

from admin.auth import require_role
from admin.models import AdminRole
from reports import bp, quality
from visits.quality import POOR_MOS


@bp.route("/quality/visits/<int:appointment_id>")
@require_role(AdminRole.ADMIN, AdminRole.ANALYST)
def quality_timeline(appointment_id: int):
    """The visit's timeline; 404 for an unknown visit."""
    timeline = quality.visit_timeline(appointment_id)
    if timeline is None:
        abort(404)
    return render_template("reports/quality_timeline.html", timeline=timeline,
                           poor_mos=POOR_MOS)
