"""Admin: (being built)."""
from admin import bp
from admin.auth import require_role


@bp.route("/endpoints/<name>/sms")
@require_role()
def sms_settings(name):
    return "not built yet", 501
