"""Admin portal: endpoints, approval, SMS set-up, certificates, integration records.

Its stylesheet is the app's ``static/css/admin.css``: nothing under /admin answers a
signed-out visitor except the sign-in page.
"""
from flask import Blueprint

bp = Blueprint("admin", __name__, url_prefix="/admin")

from admin import (  # noqa: E402,F401
    audit_views, auth, certificates, endpoints, integration, models, self_test, sms_views, sso,
    views)
