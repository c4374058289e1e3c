"""Staff single sign-on with the organization's OpenID Connect provider.

Optional per EHR endpoint: the first launch of an EHR user asks them to sign in there
once, and their EHR user id is linked to that account. The blueprint (``/sso/login``,
``/sso/callback``) and the services know nothing of launches, so the admin portal can
sign staff in the same way.
"""
from flask import Blueprint

bp = Blueprint("staff_sso", __name__, template_folder="templates")

from staff_sso import models, views  # noqa: E402,F401
