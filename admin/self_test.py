"""Admin: (being built)."""
from admin import bp
from admin.auth import require_role


@bp.route("/endpoints/<name>/self-test")
@require_role()
def self_test(name):
    return "not built yet", 501
