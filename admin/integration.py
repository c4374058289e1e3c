"""Admin: (being built)."""
from admin import bp
from admin.auth import require_role


@bp.route("/endpoints/<name>/integration")
@require_role()
def integration(name):
    return "not built yet", 501
