"""Admin: the endpoint self-test page. An admin runs it (one POST); anyone signed in
sees the last run's outcome. The steps themselves are ``admin.checks``."""
from __future__ import annotations

from flask import abort, current_app, render_template, request
from flask_babel import gettext as _

from admin import bp, checks
from admin.auth import current_user, record, require_role
from admin.lookup import endpoint_or_404
from admin.models import AdminRole
from extensions import db
from ops.i18n import LANGUAGES
from visits.models import AuditLog

AUDIT_ACTION = "endpoint.self_test"


def _last_run(name: str) -> AuditLog | None:
    """The audit entry of the latest self-test of this endpoint, if any."""
    return db.session.execute(
        db.select(AuditLog).where(AuditLog.action == f"admin.{AUDIT_ACTION}",
                                  AuditLog.target_type == "endpoint",
                                  AuditLog.target_id == name[:64])
        .order_by(AuditLog.at.desc(), AuditLog.id.desc()).limit(1)).scalar_one_or_none()


@bp.route("/endpoints/<name>/self-test", methods=["GET", "POST"])
@require_role()
def self_test(name):
    """GET: the form and the last run; POST (admins): run every step and show them."""
    endpoint = endpoint_or_404(name)
    user = current_user()
    results = None
    language = "en"
    if request.method == "POST":
        if user.role != AdminRole.ADMIN:
            abort(403)
        language = request.form.get("language", "en")
        if language not in LANGUAGES:
            language = "en"
        # The typed number is used for this one text and never stored or logged here.
        results = checks.run_self_test(endpoint, public_base_url=current_app.config[
            "PUBLIC_BASE_URL"], test_phone=request.form.get("test_phone"), language=language)
        endpoint = endpoint_or_404(name)  # the run committed; reload for the template
        record(AUDIT_ACTION, target=f"endpoint:{name}",
               details={result.key: result.ok for result in results})
        db.session.commit()
    last = None if results is not None else _last_run(name)
    passed, total, skipped = checks.summary_counts(results or [])
    return render_template(
        "admin/self_test.html", endpoint=endpoint, results=results, passed=passed,
        total=total, skipped=skipped, last=last, step_names=checks.step_names(),
        can_run=user.role == AdminRole.ADMIN, languages=LANGUAGES, language=language,
        step_timeout=checks.STEP_TIMEOUT_S, summary=_summary(passed, total, skipped))


def _summary(passed: int, total: int, skipped: int) -> str:
    text = _("%(passed)s of %(total)s steps passed", passed=passed, total=total)
    if skipped:
        text += " " + _("(%(skipped)s skipped)", skipped=skipped)
    return text
