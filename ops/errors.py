"""Friendly error pages in HTML, or JSON when the client asks for it."""
from __future__ import annotations

import logging

from flask import jsonify, render_template, request
from flask_babel import gettext as _
from werkzeug.exceptions import HTTPException, InternalServerError

from ops import bp

log = logging.getLogger(__name__)


def wants_json() -> bool:
    best = request.accept_mimetypes.best_match(["text/html", "application/json"])
    return best == "application/json" and request.accept_mimetypes[best] > \
        request.accept_mimetypes["text/html"]


def _messages(code: int) -> tuple[str, str]:
    if code == 404:
        return _("Page not found"), _(
            "We couldn't find this page. If you followed a link from a text message, "
            "check that the whole link was opened, or ask your clinic for a new one.")
    if code == 403:
        return _("You can't open this page"), _(
            "This page opens from your EHR. Go back to the appointment in the EHR and "
            "choose \u201cStart virtual visit\u201d again.")
    if code == 405:
        return _("Not allowed"), _("This page can't be used that way.")
    if code == 429:
        return _("Too many attempts"), _("Please wait a minute, then try again.")
    if code >= 500:
        return _("Something went wrong"), _(
            "We couldn't finish that. Please try again in a moment. If it keeps happening, "
            "call your clinic.")
    return _("Request not understood"), _("Please go back and try again.")


@bp.app_errorhandler(HTTPException)
def http_error(error: HTTPException):
    """Render any HTTP error; the status code is kept."""
    code = error.code or 500
    title, message = _messages(code)
    if wants_json():
        return jsonify(error=title, message=message, status=code), code
    return render_template("ops/error.html", title=title, message=message, code=code), code


@bp.app_errorhandler(Exception)
def unexpected_error(error: Exception):
    """Log the unexpected with its traceback (no request data), answer a friendly 500."""
    log.exception("unhandled error")
    return http_error(InternalServerError())
