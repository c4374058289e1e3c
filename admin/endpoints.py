"""Admin: (being built)."""
from admin import bp
from admin.auth import require_role


@bp.route("/endpoints/new")
@require_role()
def endpoint_new():
    return "not built yet", 501


@bp.route("/endpoints/<name>")
@require_role()
def endpoint(name):
    return "not built yet", 501
