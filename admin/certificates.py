"""Admin: (being built)."""
from admin import bp
from admin.auth import require_role


@bp.route("/endpoints/<name>/certificates")
@require_role()
def certificates(name):
    return "not built yet", 501
