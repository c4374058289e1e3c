"""Reports for the clinic, under ``/admin/reports``: usage, integration health, and more.

The blueprint is nested in the admin portal's, so every report passes the portal's
guards (sign-in, CSRF, its error pages and security headers); services in
``reports/health.py`` take explicit arguments for the page, the CLI and ``/metrics``.
"""
from flask import Blueprint

import admin

bp = Blueprint("reports", __name__, url_prefix="/reports", template_folder="templates")

# Reports register themselves (reports/framework.py) before the views and the CLI read the
# registry; a new report adds its module here.
from reports import usage  # noqa: E402,F401
from reports import quality, texts  # noqa: E402,F401
from reports import metrics, views  # noqa: E402,F401
from reports import quality_views  # noqa: E402,F401

# Nested once, at import: a blueprint may be registered on its parent only once, and the
# test suite builds many apps from the same admin blueprint.
admin.bp.register_blueprint(bp)
metrics.register()
