"""Patient entry routes: the SMS link ``/j/<token>``, the portal (MyChart) launch, and the
join page ``/join``. They read the request, keep a ``PatientPass`` in the signed session
(never the token), and render refusals in words a patient can act on."""
from __future__ import annotations

import logging
import time
from collections import defaultdict
from dataclasses import dataclass
from datetime import datetime, timezone
from functools import lru_cache
from urllib.parse import quote
from zoneinfo import ZoneInfo

from babel.dates import format_date, format_time, get_timezone_name
from flask import current_app, make_response, redirect, render_template, request, session, url_for
from flask_babel import get_locale
from flask_babel import gettext as _
from flask_babel import lazy_gettext as _l
from flask_limiter import RateLimitExceeded
from jinja2.utils import htmlsafe_json_dumps
from markupsafe import Markup

from ehr.launch import LaunchFailed, safe_error_code
from ehr import launch as ehr_launch
from ops import headers
from ops.errors import http_error
from patient_join import bp, guesses, services
from visits import lobby
from visits.errors import LinkExpired, LinkUnknown
from visits.models import AppointmentStatus

log = logging.getLogger(__name__)

SESSION_KEY = services.SESSION_KEY
PENDING_KEY = "patient_smart_pending"

_CALL_CLINIC = _l("If it still doesn't work, call your clinic: they can send you a new link "
                  "by text message.")
_AGAIN_FROM_PORTAL = _l("Go back to MyChart and open your video visit again.")

# reason -> (status, title, what happened, what to do). Patients read these on a phone,
# often not in their first language: short sentences, one thing to do.
PAGES: dict[str, tuple[int, object, object, object]] = {
    "unknown_link": (
        404, _l("This link isn't valid"),
        _l("We couldn't find a visit for this link. Some phones cut long links short."),
        _l("Open the link from your text message again and check that the whole link was "
           "opened. If it still doesn't work, call your clinic and ask for a new link.")),
    "visit_ended": (
        410, _l("This visit has ended"),
        _l("This link no longer works: the visit is over, or the link was replaced by a newer "
           "one."),
        _l("If you still need to see your provider, call your clinic.")),
    "cancelled": (
        410, _l("This visit was cancelled"),
        _l("Your clinic cancelled this video visit."),
        _l("Call your clinic if you think this is a mistake, or to choose a new time.")),
    "no_session": (
        403, _l("Open your visit link"),
        _l("This page opens from the link in your text message, or from your visit in "
           "MyChart."),
        _l("Open your visit from there again.")),
    "too_many_attempts": (
        429, _l("Too many attempts"),
        _l("This device opened too many visit links in a short time."),
        _l("Please wait a minute, then open the link from your text message again.")),
    # The portal launch.
    "missing_launch_params": (
        400, _l("Open your visit from MyChart"),
        _l("This address is missing information that MyChart adds when it opens a visit."),
        _AGAIN_FROM_PORTAL),
    "unknown_iss": (
        403, _l("Video visits can't be opened from this portal yet"),
        _l("Your clinic has not set up video visits for this patient portal."), _CALL_CLINIC),
    "unapproved_endpoint": (
        403, _l("Video visits can't be opened from this portal yet"),
        _l("Your clinic has not set up video visits for this patient portal."), _CALL_CLINIC),
    "ehr_unavailable": (
        503, _l("MyChart didn't answer"),
        _l("We couldn't reach your patient portal. This is usually brief."),
        _l("Wait a minute, then open your video visit from MyChart again.")),
    "ehr_misconfigured": (
        502, _l("Video visits can't be opened from this portal"),
        _l("Your patient portal's settings for video visits are incomplete."), _CALL_CLINIC),
    "bad_state": (
        400, _l("Please start again"),
        _l("Your sign-in didn't finish in this browser, or was already used."),
        _AGAIN_FROM_PORTAL),
    "launch_expired": (
        400, _l("Please start again"), _l("Your sign-in took too long."), _AGAIN_FROM_PORTAL),
    "missing_code": (
        400, _l("Please start again"), _l("MyChart sent you back without finishing the sign-in."),
        _AGAIN_FROM_PORTAL),
    "ehr_refused": (
        400, _l("MyChart didn't open the visit"),
        _l("MyChart did not allow the visit to open (code %(error)s)."), _CALL_CLINIC),
    "token_refused": (
        400, _l("MyChart didn't open the visit"),
        _l("MyChart did not allow the visit to open (code %(error)s)."), _CALL_CLINIC),
    "id_token_invalid": (
        400, _l("We couldn't confirm who you are"),
        _l("MyChart's sign-in did not pass our safety checks."), _AGAIN_FROM_PORTAL),
    "missing_id_token": (
        400, _l("We couldn't confirm who you are"),
        _l("MyChart didn't tell us who signed in."), _CALL_CLINIC),
    "missing_patient": (
        400, _l("We couldn't tell whose visit this is"),
        _l("MyChart didn't say which patient the visit is for."), _CALL_CLINIC),
    "not_a_patient": (
        403, _l("This page is for patients"),
        _l("You are signed in with a staff account."),
        _l("Clinicians start video visits from the appointment in the EHR.")),
    "no_appointment_today": (
        404, _l("No video visit today"),
        _l("MyChart didn't say which visit to open, and we found no video visit for you today."),
        _l("Check the date of your visit in MyChart. If your visit is today, call your "
           "clinic.")),
    "appointment_not_found": (
        404, _l("We couldn't find your appointment"),
        _l("It may have been changed or cancelled."),
        _l("Check your appointments in MyChart, or call your clinic.")),
    "appointment_unusable": (
        400, _l("Your appointment is missing information"),
        _l("Your appointment has no start time, so the visit can't be set up."), _CALL_CLINIC),
    "context_mismatch": (
        400, _l("This visit is for someone else"),
        _l("The visit MyChart opened belongs to another patient."),
        _l("Go back to MyChart, check whose account is open, and try again.")),
    "fhir_refused": (
        403, _l("MyChart didn't share your appointment"),
        _l("We weren't allowed to read your appointment."), _CALL_CLINIC),
    "visit_over": (
        410, _l("This visit has ended"),
        _l("This visit is over, so it can't be joined any more."),
        _l("If you still need to see your provider, call your clinic.")),
}


@bp.after_request
def _patient_headers(response):
    """Patient pages never leak their URL to another site (``/j/`` and the portal launch
    carry tokens), are never cached or indexed (they name a clinic, a provider and a time),
    and are never framed: they ask for the camera and microphone, so another site must not
    dress them up (clickjacking)."""
    headers.no_referrer(response)
    if request.endpoint != "patient_join.static":
        response.headers["Cache-Control"] = "no-store"
        response.headers["X-Robots-Tag"] = "noindex, nofollow"
        headers.forbid_framing(response)
    return response


def _too_many_attempts(retry_after: int):
    """Too many failed guesses: log which route (never the token or who), answer 429."""
    log.warning("join link rate limit reached", extra={"route": "/j/<token>"})
    response = make_response(problem("too_many_attempts"))
    response.headers["Retry-After"] = str(retry_after)
    return response


@bp.app_errorhandler(RateLimitExceeded)
def _rate_limited(error: RateLimitExceeded):
    """Answer with the page the limited route's breach hook made (``/j/`` makes the
    patient's), else the generic error page."""
    if error.response is not None:
        return error.response
    return http_error(error)


@bp.get("/j/<token>")
def link(token: str):
    """The link from a text message: keep the pass in the session, then a clean URL.
    Only a failed guess counts against the client's limit (patient_join/guesses.py), so a
    valid link always opens."""
    try:
        patient_pass = services.open_link(token, _now())
    except LinkUnknown:
        retry_after = guesses.failed_guess(guesses.client_address())
        if retry_after is not None:
            return _too_many_attempts(retry_after)
        log.info("unknown join link", extra={"reason": "unknown_link"})
        # No link has this token (open_link just looked): only a one-clinic number applies.
        return problem("unknown_link", clinic_phone=services.clinic_phone())
    except LinkExpired:
        return problem("visit_ended", clinic_phone=services.clinic_phone(token=token))
    return _enter(patient_pass)


@bp.get("/join")
def join():
    """The join page: visit details, camera and microphone preview, Join (from the
    waiting room's opening time), then the lobby and the call on the same page."""
    now = _now()
    try:
        visit = services.join_visit(session.get(SESSION_KEY), now)
    except services.NoPatientSession:
        return problem("no_session")
    except (LinkUnknown, LinkExpired):
        held = session.pop(SESSION_KEY, None)
        return problem("visit_ended", clinic_phone=services.clinic_phone(
            appointment_id=_pass_appointment(held)))
    if visit.appointment.status == AppointmentStatus.CANCELLED:
        return problem("cancelled", clinic_phone=services.clinic_phone(
            appointment_id=visit.appointment.id))
    if not services.is_joinable(visit.appointment):
        return problem("visit_ended", clinic_phone=services.clinic_phone(
            appointment_id=visit.appointment.id))
    return render_template("patient_join/join.html", **_join_context(visit, now))


@bp.get("/patient/launch")
def patient_launch():
    """Portal (MyChart) launch: check the iss, then to the EHR's authorize endpoint."""
    try:
        step = services.begin_portal_launch(
            request.args.get("iss"), request.args.get("launch"), redirect_uri=_redirect_uri(),
            scope=current_app.config["PATIENT_LAUNCH_SCOPES"])
    except LaunchFailed as failure:
        return problem(failure.reason, **failure.detail)
    ehr_launch.hold_pending(session, PENDING_KEY, step.pending)
    return redirect(step.url, code=302)


@bp.get("/patient/launch/callback")
def patient_launch_callback():
    """The EHR's answer to a portal launch: code (or error) and state, single use."""
    pending = ehr_launch.take_pending(session, PENDING_KEY, request.args.get("state"))
    if pending is None:
        return problem("bad_state")
    try:
        if pending.is_expired():
            raise LaunchFailed("launch_expired", 400)
        if request.args.get("error"):
            raise LaunchFailed("ehr_refused", 400, error=safe_error_code(request.args["error"]))
        code = request.args.get("code")
        if not code:
            raise LaunchFailed("missing_code", 400)
        patient_pass = services.complete_portal_launch(pending, code=code,
                                                       redirect_uri=_redirect_uri(), now=_now())
    except LaunchFailed as failure:
        return problem(failure.reason, **failure.detail)
    return _enter(patient_pass)


def problem(reason: str, clinic_phone: str | None = None, **detail: str):
    """A refusal page for patients, with the status its reason calls for, and the clinic's
    phone number when it is known (the endpoint's setting)."""
    status, title, message, advice = PAGES[reason]
    values = defaultdict(lambda: "?", detail)
    return render_template("patient_join/problem.html", reason=reason, title=str(title),
                           message=str(message) % values, advice=str(advice) % values,
                           clinic_phone=clinic_phone,
                           clinic_phone_dial=dial(clinic_phone)), status


def dial(phone: str | None) -> str | None:
    """A ``tel:`` target for a number as written (``+1 (312) 555-0100`` -> ``+13125550100``)."""
    if not phone:
        return None
    return "".join(ch for ch in phone if ch.isdigit() or ch == "+") or None


def _pass_appointment(held) -> int | None:
    """The appointment id of a session's pass, if it can be read."""
    try:
        return services.PatientPass.from_session(held).appointment_id
    except services.NoPatientSession:
        return None


def _enter(patient_pass: services.PatientPass):
    """Keep the pass (not the token) in the session and go to a URL without the token, so
    it stays out of the history, of screenshots and of any Referer."""
    session[SESSION_KEY] = patient_pass.to_session()
    return redirect(url_for("patient_join.join"), code=303)


def _redirect_uri() -> str:
    """Exactly as registered with the EHR: from PUBLIC_BASE_URL, never the Host header."""
    return current_app.config["PUBLIC_BASE_URL"] + url_for("patient_join.patient_launch_callback")


def _now() -> datetime:
    return datetime.now(timezone.utc)


def _device_test_url(participant: services.ParticipantFacts) -> str:
    """The device test for this participant, with a context token so a patient's result
    reaches their chart.

    Signing the token was a tenth of the page's cost, and patients reload the page, so a
    participant's URL is reused for up to a minute (a hundredth of the token's lifetime,
    if that is shorter): the token carries only row ids and its age, which the device
    test checks again when it is used."""
    lifetime = min(60.0, current_app.config["DEVICE_TEST_CONTEXT_TTL_SECONDS"] / 100)
    period = int(time.monotonic() // lifetime) if lifetime > 0 else None
    made = current_app.extensions.get("patient_join.device_test_urls")
    if made is None or made[0] != period:
        # A new period starts empty, so the cache holds one minute's visitors at most.
        made = current_app.extensions["patient_join.device_test_urls"] = (period, {})
    appointment = participant.appointment
    # What the token and the URL are made of.
    key = (participant.id, appointment.id, appointment.endpoint_id, request.script_root)
    url = made[1].get(key)
    if url is None:
        url = _make_device_test_url(participant)
        if period is not None:
            made[1][key] = url
    return url


def _make_device_test_url(participant: services.ParticipantFacts) -> str:
    from device_test.context import make_token

    return url_for("device_test.device_test",
                   ctx=make_token(current_app.config["SECRET_KEY"], participant),
                   next=url_for("patient_join.join"))


def browser_help() -> list[tuple[str, str, str]]:
    """(key, browser, how to unblock the camera there); the page shows the one for the
    patient's browser first and the others behind "Help for other browsers"."""
    return [
        ("chrome_android", _("Chrome on Android"),
         _("Tap the icon to the left of the web address, then Permissions. Allow Camera and "
           "Microphone, then tap Try again.")),
        ("safari_ios", _("Safari on iPhone or iPad"),
         _("Tap aA in the address bar, then Website Settings. Set Camera and Microphone to "
           "Allow, then tap Try again. If you don't see them, open the Settings app, tap "
           "Safari, and set Camera and Microphone to Ask or Allow.")),
        ("ios_app", _("Chrome or Firefox on iPhone or iPad"),
         _("Open the Settings app, find your browser (for example Chrome), and turn on Camera "
           "and Microphone. Then come back and tap Try again.")),
        ("samsung", _("Samsung Internet"),
         _("Tap the lock icon in the address bar, then Permissions. Allow Camera and "
           "Microphone, then tap Try again. If they are not listed: Android Settings, Apps, "
           "Samsung Internet, Permissions.")),
        ("firefox", _("Firefox"),
         _("Tap the camera or lock icon in the address bar, remove the blocked setting for "
           "the camera and microphone, then tap Try again.")),
        ("chrome", _("Chrome or Edge on a computer"),
         _("Click the icon to the left of the web address, turn on Camera and Microphone, "
           "then select Try again.")),
        ("safari_mac", _("Safari on a Mac"),
         _("In the Safari menu, choose Settings for This Website, set Camera and Microphone "
           "to Allow, then select Try again.")),
    ]


@dataclass(frozen=True)
class _PageKit:
    """What the join page shows the same way for every visit in one language. Translating
    and rendering it was most of the page's cost, so it is made once per language."""

    preview: Markup  # the camera and microphone preview card
    lobby_and_call: Markup  # the waiting room and the call, hidden until used
    # The page script's strings (its own, media and browser help) as |tojson writes them.
    strings_json: Markup
    # The page's script, inline (its imports made absolute): one request fewer, so the
    # modules it and the waiting room need fit in one round of six connections.
    join_module: Markup
    # The head: the early-tap and local-time scripts, and a preload of every module
    # join.js imports and of the visit session's (the waiting room), so Join on a slow
    # network waits for no chain of imports.
    head: Markup
    # The page's stylesheets (base, join, call, chat), inline: on a slow network each
    # request costs a round trip and a browser opens only six at a time.
    inline_css: Markup
    favicon: str  # a data: URL, one request fewer
    # "It is %(time)s on %(day)s where you are (%(zone)s).", by the hour's plural category,
    # for the page's inline clock script.
    local_time_one: str
    local_time_other: str


def _page_kit(locale: str) -> _PageKit:
    """The kit for ``locale``, made in this request (whose locale it is) when new. Not kept
    while templates auto-reload, so edits show at once."""
    kits = current_app.extensions.setdefault("patient_join.page_kits", {})
    # The script root is in every URL the kit holds.
    key = (locale, request.script_root)
    kit = kits.get(key)
    if kit is None:
        kit = _make_page_kit()
        if not current_app.jinja_env.auto_reload:
            kits[key] = kit
    return kit


def _make_page_kit() -> _PageKit:
    help_texts = browser_help()
    environment = current_app.jinja_env
    # Modules made here, in this request: `{% import %}` would reuse the module from the
    # first request, in that request's language.
    strings = dict(environment.get_template("patient_join/_strings.html").make_module().strings)
    strings.update(environment.get_template("_media_help.html").make_module().strings)
    strings.update({f"help_{key}": text for key, _name, text in help_texts})
    local_one, local_other = strings["local_time_one"], strings["local_time_other"]
    return _PageKit(
        preview=Markup(render_template("patient_join/_preview.html",
                                       browser_help=help_texts).strip()),
        lobby_and_call=Markup(render_template("visits/_lobby.html", browser_help=help_texts)
                              + "\n" + render_template("visits/_call.html",
                                                         browser_help=help_texts,
                                                         css_inline=True)),
        strings_json=htmlsafe_json_dumps(
            {key: str(text) for key, text in strings.items()},
            dumps=environment.policies["json.dumps_function"],
            **environment.policies["json.dumps_kwargs"]),
        join_module=Markup(current_app.extensions["static_assets"].inline_module(
            "patient_join.static", "join.js", request.script_root)),
        head=Markup(render_template("patient_join/_head.html", module_preloads=_module_preloads(
            [("patient_join.static", "join.js"), ("static", "js/visit_session.js")])).strip()),
        inline_css=_inline_css([("static", "css/base.css"), ("patient_join.static", "join.css"),
                                ("static", "css/call.css"), ("static", "css/chat.css")]),
        local_time_one=str(local_one), local_time_other=str(local_other),
        favicon="data:image/svg+xml," + quote(
            current_app.extensions["static_assets"].find("static", "favicon.svg").raw.decode()))


def _module_preloads(roots: list[tuple[str, str]]) -> tuple[str, ...]:
    """The fingerprinted URLs of the modules the ``roots`` import statically, and of the
    roots after the first (inline in the page)."""
    assets = current_app.extensions["static_assets"]
    urls: list[str] = []
    for endpoint, filename in roots:
        for asset in assets.module_graph(endpoint, filename):
            url = f"{request.script_root}{asset.url_path}?v={asset.version}"
            if url not in urls:
                urls.append(url)
    return tuple(urls[1:])


def _inline_css(files: list[tuple[str, str]]) -> Markup:
    """The stylesheets' text, for a <style> element. Relative url()s would resolve against
    the page instead of the stylesheet, so a file with any is refused here, loudly."""
    assets = current_app.extensions["static_assets"]
    texts = []
    for endpoint, filename in files:
        text = assets.find(endpoint, filename).raw.decode("utf-8")
        if "url(" in text or "</" in text or "@import" in text:
            raise ValueError(f"{filename} cannot be inlined (url(), @import or </)")
        texts.append(f"/* {filename} */\n{text}")
    return Markup("\n".join(texts))


@lru_cache(maxsize=1024)
def _time_labels(start_at: datetime, opens_at: datetime, time_zone: str,
                 locale: str) -> tuple[str, str, str, str]:
    """(date, time, zone name, lobby opening time) in the clinic's zone, worded for
    ``locale``; the same for every reload of a visit's page."""
    zone = ZoneInfo(time_zone)
    start = start_at.astimezone(zone)
    return (format_date(start, format="full", locale=locale),
            format_time(start, format="short", tzinfo=zone, locale=locale),
            get_timezone_name(zone, width="long", zone_variant="generic", locale=locale),
            format_time(opens_at, format="short", tzinfo=zone, locale=locale))


def _join_context(visit: services.JoinVisit, now: datetime) -> dict:
    locale = str(get_locale() or "en")
    appointment = visit.appointment
    opens_at = lobby.lobby_opens_at(appointment)
    date_label, time_label, zone_label, opens_label = _time_labels(
        appointment.start_at, opens_at, appointment.timezone, locale)
    lobby_open = lobby.is_lobby_open(appointment, now)
    device_test_url = _device_test_url(visit.participant)
    return {
        "appointment": appointment,
        "providers": visit.providers,
        "date_label": date_label,
        "time_label": time_label,
        "zone_label": zone_label,
        "opens_label": opens_label,
        "lobby_open": lobby_open,
        "device_test_url": device_test_url,
        "kit": _page_kit(locale),
        # For the page script (#join-data), with kit.strings_json; built here rather than
        # in the template, where each value's lookup cost as much as a line of markup.
        "join_data": {
            "participant_id": visit.participant.id,
            "appointment_id": appointment.id,
            "role": visit.participant.role,
            "time_zone": appointment.timezone,
            "start": appointment.start_at.isoformat(),
            "end": appointment.end_at.isoformat(),
            "lobby_opens_at": opens_at.isoformat(),
            "lobby_open": lobby_open,
            "server_time": now.isoformat(),
            "socket_auth": {"patient": True},
            "device_test_url": device_test_url,
        },
    }
