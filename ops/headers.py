"""Security headers that several blueprints set on their pages.

Patient pages (the join page with its lobby and call, the SMS link, the portal launch, the
device test) ask for the camera and microphone, so no other site may frame them: a framed
page could be dressed up to trick a patient into allowing them (clickjacking). The
provider's pages are different: the EHR embeds them, and provider_launch lets each
endpoint's own origins frame them (``frame-ancestors 'self' <origins>``).

Admin pages set their whole policy in admin/auth.py.
"""
from __future__ import annotations

NO_FRAMING = "frame-ancestors 'none'"


def forbid_framing(response):
    """No site, ours included, may show this page in a frame: CSP ``frame-ancestors
    'none'`` (kept alongside any policy the view set) and, for old browsers,
    ``X-Frame-Options: DENY``."""
    existing = response.headers.get("Content-Security-Policy", "").strip().rstrip(";")
    if "frame-ancestors" not in existing:
        response.headers["Content-Security-Policy"] = \
            f"{existing}; {NO_FRAMING}" if existing else NO_FRAMING
    response.headers["X-Frame-Options"] = "DENY"
    return response


def no_referrer(response):
    """The page's URL carries a token (a join link, a device-test context, an OAuth code):
    the browser must never send it on as a Referer."""
    response.headers["Referrer-Policy"] = "no-referrer"
    return response
