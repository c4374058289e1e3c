"""Admin: (being built)."""
from admin import bp
from admin.auth import require_role


@bp.route("/audit")
@require_role()
def audit():
    return "not built yet", 501
