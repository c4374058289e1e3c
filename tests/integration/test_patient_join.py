"""The patient's way in: the SMS link ``/j/<token>``, the portal (MyChart) launch against the
sandbox EHR over real HTTP, the join page, the session-based socket, and the page's weight."""
from __future__ import annotations

import json
import logging
import re
from datetime import datetime, timedelta, timezone
from urllib.parse import parse_qs, urlsplit

import pytest
import requests
from flask import Flask

from app import create_app
from ehr.services import ensure_endpoint
from extensions import db, socketio
from sandbox_ehr import store
from tests import factories
from tests.integration.conftest import change_launch_context
from tests.conftest import build_app, dispose_app, make_config
from visits.models import Appointment, AuditLog, JoinLink, Participant

JOIN_DATA = re.compile(r'<script type="application/json" id="join-data">(.*?)</script>', re.S)


def _now() -> datetime:
    return datetime.now(timezone.utc)


@pytest.fixture
def visit(app):
    with app.app_context():
        made = factories.make_visit()
        yield made


def token_for(app: Flask, participant: Participant, expires_in: timedelta = timedelta(hours=3)
              ) -> str:
    """A join link; runs in the ``visit`` fixture's app context, which requests share."""
    from visits.links import create_join_link

    return create_join_link(participant, expires_at=_now() + expires_in)


def reason(response) -> str | None:
    found = re.search(r'data-testid="join-problem" data-reason="([a-z_]+)"',
                      response.get_data(as_text=True))
    return found.group(1) if found else None


def join_data(html: str) -> dict:
    return json.loads(JOIN_DATA.search(html).group(1))


# --- the SMS link ---------------------------------------------------------------------------

def test_a_valid_link_keeps_a_pass_in_the_session_and_redirects_to_a_clean_url(app, client,
                                                                                visit):
    token = token_for(app, visit.patient)

    response = client.get(f"/j/{token}")

    assert response.status_code == 303
    assert response.headers["Location"] == "/join"
    assert token not in response.headers["Location"]
    assert response.headers["Referrer-Policy"] == "no-referrer"
    assert "no-store" in response.headers["Cache-Control"]
    with client.session_transaction() as session:
        held = session["patient"]
    assert held["participant_id"] == visit.patient.id
    assert held["appointment_id"] == visit.appointment.id
    assert datetime.fromisoformat(held["expires_at"]) > _now()
    assert token not in json.dumps(dict(held))
    with app.app_context():
        link = db.session.execute(db.select(JoinLink)).scalar_one()
        assert link.last_used_at is not None and held["link_id"] == link.id
        # The usage report's join route: a patient's own link is the texted one.
        assert link.participant.join_route == "sms"


@pytest.mark.parametrize("token", ["not-a-real-token", "x" * 300,
                                   "A" * 43])  # the length of a real one
def test_an_unknown_link_gets_a_page_saying_what_to_do(client, token):
    response = client.get(f"/j/{token}")

    html = response.get_data(as_text=True)
    assert response.status_code == 404
    assert reason(response) == "unknown_link"
    assert "This link isn&#39;t valid" in html
    assert "whole link" in html and "call your clinic" in html
    assert response.headers["Referrer-Policy"] == "no-referrer"
    with client.session_transaction() as session:
        assert "patient" not in session


def test_an_expired_link_says_the_visit_has_ended(app, client, visit):
    token = token_for(app, visit.patient, expires_in=timedelta(seconds=-1))

    response = client.get(f"/j/{token}")

    assert response.status_code == 410
    assert reason(response) == "visit_ended"
    assert "This visit has ended" in response.get_data(as_text=True)


def test_a_revoked_link_says_the_visit_has_ended(app, client, visit):
    token = token_for(app, visit.patient)
    db.session.execute(db.update(JoinLink).values(revoked_at=_now()))
    db.session.commit()

    response = client.get(f"/j/{token}")

    assert response.status_code == 410


def test_the_default_validity_ends_after_the_visit_plus_the_endpoint_grace(app, visit):
    from visits.links import create_join_link, default_expiry

    visit.appointment.endpoint.link_valid_after_end_minutes = 45

    create_join_link(visit.patient)

    link = db.session.execute(db.select(JoinLink)).scalar_one()
    assert link.expires_at == visit.appointment.end_at + timedelta(minutes=45)
    assert default_expiry(visit.appointment) == link.expires_at


def test_guessing_links_is_rate_limited_without_logging_tokens(tmp_path, monkeypatch, caplog):
    monkeypatch.chdir(tmp_path)
    app = create_app(make_config(tmp_path, JOIN_LINK_RATE_LIMIT="3 per minute"))
    client = app.test_client()
    guesses = [f"guess-{n}-{'z' * 20}" for n in range(5)]
    caplog.set_level(logging.INFO)
    with app.app_context():
        db.create_all()

    statuses = [client.get(f"/j/{guess}").status_code for guess in guesses]

    assert statuses == [404, 404, 404, 429, 429]
    limited = client.get("/j/one-more")
    assert reason(limited) == "too_many_attempts"
    assert "Too many attempts" in limited.get_data(as_text=True)
    assert limited.headers["Referrer-Policy"] == "no-referrer"
    assert int(limited.headers["Retry-After"]) > 0
    breaches = [r for r in caplog.records if r.getMessage() == "join link rate limit reached"]
    assert breaches and all(r.route == "/j/<token>" for r in breaches)
    everything_logged = repr([vars(record) for record in caplog.records])
    assert not any(guess in everything_logged for guess in guesses)
    assert "127.0.0.1" not in everything_logged  # nor who guessed
    # Other pages are not limited.
    assert client.get("/healthz").status_code == 200
    with app.app_context():
        db.session.remove()
        db.engine.dispose()


def test_a_texted_link_opens_the_join_page_in_the_language_of_the_text(app, client, visit):
    token = token_for(app, visit.patient)

    opened = client.get(f"/j/{token}?lang=pt-BR", headers={"Accept-Language": "en-US"})
    page = client.get("/join", headers={"Accept-Language": "en-US"})

    assert opened.status_code == 303 and opened.headers["Location"] == "/join"
    html = page.get_data(as_text=True)
    assert '<html lang="pt-BR">' in html
    assert 'href="?lang=en"' in html and 'href="?lang=es"' in html  # the switch is there


# --- the join page --------------------------------------------------------------------------

def test_join_without_a_pass_explains_where_to_start(client):
    response = client.get("/join")

    assert response.status_code == 403
    assert reason(response) == "no_session"
    assert "text message" in response.get_data(as_text=True)
    assert response.headers["Referrer-Policy"] == "no-referrer"


def test_join_page_shows_the_visit_and_its_data_block(app, client, visit):
    client.get(f"/j/{token_for(app, visit.patient)}")

    response = client.get("/join")

    html = response.get_data(as_text=True)
    assert response.status_code == 200
    assert response.headers["Referrer-Policy"] == "no-referrer"
    assert "no-store" in response.headers["Cache-Control"]
    assert "Dr. Quinn Example" in html and "Family Medicine" in html
    assert "(Central Time)" in html
    assert 'data-testid="join-button"' in html
    # The device test exists: a link carrying this patient's context token.
    assert re.search(r'<a class="button secondary" href="/device-test\?ctx=[^"]+&amp;next=/join" '
                     r'data-testid="device-test-link">', html)
    assert 'id="lobby"' in html and 'id="call"' in html
    data = join_data(html)
    assert {"participant_id", "appointment_id", "role", "time_zone", "start", "lobby_opens_at",
            "strings"} <= set(data)
    assert data["participant_id"] == visit.patient.id
    assert data["role"] == "patient" and data["time_zone"] == "America/Chicago"
    assert data["socket_auth"] == {"patient": True}
    assert data["strings"]["denied_title"] and data["strings"]["help_safari_ios"]
    # join.js inline (one request fewer on a slow network), its imports absolute.
    assert '<script type="module">' in html and 'from "/static/js/media.js?v=' in html


def test_join_button_waits_for_the_lobby_window(app, client, visit):
    appointment = visit.appointment
    appointment.start_at = _now() + timedelta(hours=2)
    appointment.end_at = appointment.start_at + timedelta(minutes=30)
    db.session.commit()
    client.get(f"/j/{token_for(app, visit.patient)}")

    early = client.get("/join").get_data(as_text=True)
    appointment.start_at = _now() + timedelta(minutes=10)  # inside the 30-minute window
    db.session.commit()
    open_now = client.get("/join").get_data(as_text=True)

    button = re.search(r'<button[^>]*data-testid="join-button"[^>]*>([^<]*)</button>', early)
    assert " disabled" in button.group(0)
    assert button.group(1).startswith("The waiting room opens at")
    assert "Come back at" in early and "test your camera" in early
    assert join_data(early)["lobby_open"] is False
    button = re.search(r'<button[^>]*data-testid="join-button"[^>]*>([^<]*)</button>', open_now)
    assert " disabled" not in button.group(0) and button.group(1) == "Join"
    assert join_data(open_now)["lobby_open"] is True


def test_join_page_is_translated(app, client):
    # No app context held open here: Flask-Babel keeps the locale on it between requests.
    with app.app_context():
        token = token_for(app, factories.make_visit().patient)
    client.get(f"/j/{token}")

    spanish = client.get("/join?lang=es").get_data(as_text=True)
    portuguese = client.get("/join?lang=pt_BR").get_data(as_text=True)

    assert '<html lang="es">' in spanish and "Su videoconsulta" in spanish
    assert join_data(spanish)["strings"]["join"] == "Entrar"
    assert '<html lang="pt-BR">' in portuguese and "Sua consulta por vídeo" in portuguese


def test_every_string_of_the_page_script_follows_the_page_language(app, client):
    # The media help once stayed in the language of the first page the server rendered.
    with app.app_context():
        token = token_for(app, factories.make_visit().patient)
    client.get(f"/j/{token}")

    english = join_data(client.get("/join?lang=en").get_data(as_text=True))["strings"]
    spanish = join_data(client.get("/join?lang=es").get_data(as_text=True))["strings"]

    assert english["denied_title"] == "Camera and microphone are blocked"
    assert spanish["denied_title"] == "La cámara y el micrófono están bloqueados"
    assert spanish["join"] == "Entrar" and spanish["help_chrome"] != english["help_chrome"]
    assert set(spanish) == set(english)


@pytest.mark.parametrize("change, status, expected", [
    ({"ended_at": True}, 410, "visit_ended"),
    ({"status": "cancelled"}, 410, "cancelled"),
])
def test_an_ended_or_cancelled_visit_is_not_joinable(app, client, visit, change, status,
                                                     expected):
    client.get(f"/j/{token_for(app, visit.patient)}")
    if change.get("ended_at"):
        visit.appointment.ended_at = _now()
    if change.get("status"):
        visit.appointment.status = change["status"]
    db.session.commit()

    response = client.get("/join")

    assert response.status_code == status
    assert reason(response) == expected


def test_an_expired_pass_is_refused_and_forgotten(app, client, visit):
    client.get(f"/j/{token_for(app, visit.patient)}")
    with client.session_transaction() as session:
        session["patient"] = {**session["patient"],
                              "expires_at": (_now() - timedelta(seconds=1)).isoformat()}

    response = client.get("/join")

    assert response.status_code == 410
    with client.session_transaction() as session:
        assert "patient" not in session


def test_revoking_the_link_ends_the_pass_it_gave(app, client, visit):
    client.get(f"/j/{token_for(app, visit.patient)}")
    assert client.get("/join").status_code == 200
    db.session.execute(db.update(JoinLink).values(revoked_at=_now()))
    db.session.commit()

    assert client.get("/join").status_code == 410


@pytest.mark.parametrize("change", ["another_participant", "another_appointment",
                                    "unknown_link", "participant_removed"])
def test_a_pass_that_no_longer_matches_its_visit_is_refused(app, client, visit, change):
    client.get(f"/j/{token_for(app, visit.patient)}")
    with client.session_transaction() as session:
        held = dict(session["patient"])
        if change == "another_participant":  # the link is the patient's, not the provider's
            held["participant_id"] = visit.provider.id
        elif change == "another_appointment":
            held["appointment_id"] = visit.appointment.id + 1
        elif change == "unknown_link":
            held["link_id"] += 1
        session["patient"] = held
    if change == "participant_removed":
        db.session.delete(visit.patient)
        db.session.commit()

    response = client.get("/join")

    assert response.status_code == 410 and reason(response) == "visit_ended"
    with client.session_transaction() as session:
        assert "patient" not in session


@pytest.mark.parametrize("held", [None, "garbage", {"participant_id": "1"},
                                  {"participant_id": 1, "appointment_id": 1, "expires_at": "x"}])
def test_a_malformed_pass_is_no_pass(client, held):
    with client.session_transaction() as session:
        if held is not None:
            session["patient"] = held

    assert reason(client.get("/join")) == "no_session"


# --- the patient's socket -------------------------------------------------------------------

def test_the_join_page_socket_is_recognised_from_the_session(app, client, visit):
    client.get(f"/j/{token_for(app, visit.patient)}")

    patient = socketio.test_client(app, flask_test_client=client, auth={"patient": True})

    assert patient.is_connected()
    states = [m["args"][0] for m in patient.get_received() if m["name"] == "lobby_state"]
    assert states and states[-1]["state"] == "waiting"
    db.session.refresh(visit.patient)
    assert visit.patient.presence == "connected"
    patient.disconnect()


def test_a_socket_without_a_pass_is_refused(app, client, visit):
    other = app.test_client()

    refused = socketio.test_client(app, flask_test_client=other, auth={"patient": True})

    assert not refused.is_connected()


@pytest.mark.parametrize("spoil", ["expired", "revoked", "link_expired", "no_such_link"])
def test_a_socket_with_a_spent_pass_is_refused(app, client, visit, spoil):
    client.get(f"/j/{token_for(app, visit.patient)}")
    if spoil == "expired":
        with client.session_transaction() as session:
            session["patient"] = {**session["patient"],
                                  "expires_at": (_now() - timedelta(minutes=1)).isoformat()}
    elif spoil == "no_such_link":
        with client.session_transaction() as session:
            session["patient"] = {**session["patient"],
                                  "link_id": session["patient"]["link_id"] + 1000}
    else:
        changed = {"revoked_at": _now()} if spoil == "revoked" else {
            "expires_at": _now() - timedelta(minutes=1)}
        db.session.execute(db.update(JoinLink).values(**changed))
        db.session.commit()

    refused = socketio.test_client(app, flask_test_client=client, auth={"patient": True})

    assert not refused.is_connected()


def test_a_patient_pass_does_not_answer_for_a_staff_socket(app, client, visit):
    client.get(f"/j/{token_for(app, visit.patient)}")

    staff = socketio.test_client(app, flask_test_client=client,
                                 auth={"visit": visit.appointment.id})

    assert not staff.is_connected()


# --- the sandbox's "Patient link (SMS)" -----------------------------------------------------

def test_sandbox_shows_a_fresh_join_link_for_the_appointments_patient(tmp_path, monkeypatch):
    # The first visit starts now, so its link is still good whatever the hour of the run.
    app = build_app(tmp_path, monkeypatch, SANDBOX_FIRST_VISIT="now")
    client, runner = app.test_client(), app.test_cli_runner()
    runner.invoke(args=["demo"])

    page = client.post("/sandbox/appointments/appt-1/patient-link")

    html = page.get_data(as_text=True)
    assert page.status_code == 200
    assert page.headers["Cache-Control"] == "no-store"
    url = re.search(r'data-testid="join-link"', html) and \
        re.search(r'value="(http[^"]+/j/[^"]+)"', html).group(1)
    assert "Ada Testwell" in html and 'id="copy-link"' in html
    opened = client.get(urlsplit(url).path)
    assert opened.status_code == 303
    with app.app_context():
        appointment = db.session.execute(
            db.select(Appointment).filter_by(ehr_appointment_id="appt-1")).scalar_one()
        patient = next(p for p in appointment.participants if p.role == "patient")
        assert patient.ehr_user_id == "Patient/pat-1" and patient.display_name is None
    with client.session_transaction() as session:
        assert session["patient"]["participant_id"] == patient.id
    dispose_app(app)


def test_sandbox_schedule_offers_the_patient_link(client):
    html = client.get("/sandbox").get_data(as_text=True)

    assert html.count('data-testid="sandbox-patient-link"') >= 6
    assert 'action="/sandbox/appointments/appt-1/patient-link"' in html


def test_sandbox_patient_link_needs_flask_demo_first(client):
    page = client.post("/sandbox/appointments/appt-1/patient-link")

    assert page.status_code == 409
    assert "flask demo" in page.get_data(as_text=True)


# --- the portal (MyChart) launch, over real HTTP ----------------------------------------

@pytest.fixture(scope="module")
def sandbox_endpoint(live_server):
    """The sandbox as an approved EHR, as `flask demo` registers it."""
    with live_server.app.app_context():
        return ensure_endpoint("sandbox", live_server.url + "/sandbox/fhir",
                               client_id="virtual-visits",
                               scopes="launch openid fhirUser user/*.rs", approved_by="test").id


@pytest.fixture
def browser() -> requests.Session:
    http = requests.Session()
    http.trust_env = False
    return http


def reschedule(server, appointment_id: str, start: datetime) -> None:
    """Move a sandbox appointment, so tests do not depend on the hour they run at."""
    with server.app.app_context():
        resource = store.read("Appointment", appointment_id)
        end = start + timedelta(minutes=resource.get("minutesDuration", 20))
        store.upsert("Appointment", appointment_id,
                     {**resource, "start": start.isoformat(), "end": end.isoformat()})
        db.session.commit()


def portal_launch(server, http: requests.Session, appointment_id: str = "appt-1",
                  **context_changes) -> requests.Response:
    """MyChart's "Join video visit" to the end of our callback (redirects not followed);
    ``context_changes`` edit what the sandbox puts in the token response (None drops)."""
    ehr = http.get(f"{server.url}/sandbox/launch/patient/{appointment_id}",
                   allow_redirects=False)
    assert ehr.status_code == 302, ehr.text
    launch_url = ehr.headers["Location"]
    assert urlsplit(launch_url).path == "/patient/launch"
    if context_changes:
        change_launch_context(server, launch_url, **context_changes)
    ours = http.get(launch_url, allow_redirects=False)
    assert ours.status_code == 302, ours.text
    authorize = urlsplit(ours.headers["Location"])
    assert "patient/*.rs" in parse_qs(authorize.query)["scope"][0]
    answer = http.get(ours.headers["Location"], allow_redirects=False)
    assert answer.status_code == 302, answer.text
    assert answer.headers["Location"].startswith(server.url + "/patient/launch/callback")
    return http.get(answer.headers["Location"], allow_redirects=False)


def test_portal_launch_opens_the_join_page_for_the_appointments_patient(live_server,
                                                                         sandbox_endpoint,
                                                                         browser):
    reschedule(live_server, "appt-1", _now())

    response = portal_launch(live_server, browser, "appt-1")

    assert response.status_code == 303, response.text
    assert response.headers["Location"] == "/join"
    assert response.headers["Referrer-Policy"] == "no-referrer"
    page = browser.get(live_server.url + "/join")
    assert page.status_code == 200
    assert "Dr. Quinn Example" in page.text and "Family Medicine" in page.text
    data = join_data(page.text)
    with live_server.app.app_context():
        participant = db.session.get(Participant, data["participant_id"])
        assert participant.ehr_user_id == "Patient/pat-1" and participant.role == "patient"
        assert participant.appointment.ehr_appointment_id == "appt-1"
        assert participant.appointment.endpoint_id == sandbox_endpoint
        audit = db.session.execute(db.select(AuditLog).filter_by(action="patient_launch")
                                   ).scalars().all()
        assert audit and audit[-1].target_id == str(participant.appointment_id)


def test_portal_launch_presents_the_patient_apps_own_client_id(live_server, sandbox_endpoint,
                                                                browser):
    # Epic registers the MyChart app apart from the clinicians' one.
    from ehr.services import approve_endpoint, update_endpoint
    from sandbox_ehr.clients import register_client

    with live_server.app.test_request_context():
        register_client("virtual-visits-mychart",
                        redirect_uris=[live_server.url + "/patient/launch/callback"],
                        jwks_url=live_server.url + "/.well-known/jwks.json")
        change = update_endpoint("sandbox", patient_client_id="virtual-visits-mychart")
        approve_endpoint("sandbox", by="test")  # a new client id needs a new approval
    reschedule(live_server, "appt-1", _now())
    authorize_ids = []
    browser.hooks["response"].append(lambda r, *a, **k: authorize_ids.extend(
        parse_qs(urlsplit(r.url).query).get("client_id", []))
        if "/oauth/authorize" in r.url else None)
    try:
        response = portal_launch(live_server, browser, "appt-1")
    finally:
        with live_server.app.app_context():
            update_endpoint("sandbox", patient_client_id="")
            approve_endpoint("sandbox", by="test")

    assert change.approval_cleared
    assert response.status_code == 303, response.text
    assert authorize_ids == ["virtual-visits-mychart"]


def test_portal_launch_without_context_finds_todays_video_visit(live_server, sandbox_endpoint,
                                                                 browser):
    reschedule(live_server, "appt-4", _now())

    response = portal_launch(live_server, browser, "appt-4", appointment=None, encounter=None)

    assert response.status_code == 303, response.text
    data = join_data(browser.get(live_server.url + "/join").text)
    with live_server.app.app_context():
        participant = db.session.get(Participant, data["participant_id"])
        assert participant.appointment.ehr_appointment_id == "appt-4"
        assert participant.ehr_user_id == "Patient/pat-3"


def test_portal_launch_from_the_encounter_alone(live_server, sandbox_endpoint, browser):
    reschedule(live_server, "appt-5", _now())

    response = portal_launch(live_server, browser, "appt-5", appointment=None)

    assert response.status_code == 303, response.text


@pytest.mark.parametrize("changes, status, expected", [
    ({"appointment": None, "encounter": None, "patient": "pat-nobody",
      "fhirUser": "Patient/pat-nobody"}, 404, "no_appointment_today"),
    # Another patient's appointment: the EHR itself refuses to show it to this patient.
    ({"appointment": "appt-2"}, 403, "fhir_refused"),
    ({"fhirUser": "Practitioner/prac-1"}, 403, "not_a_patient"),
    ({"appointment": "appt-missing"}, 404, "appointment_not_found"),
])
def test_portal_launch_refusals_say_what_the_portal_did_not_send(live_server, sandbox_endpoint,
                                                                  browser, changes, status,
                                                                  expected):
    reschedule(live_server, "appt-6", _now())

    response = portal_launch(live_server, browser, "appt-6", **changes)

    assert response.status_code == status, response.text
    assert f'data-reason="{expected}"' in response.text
    assert "patient" not in session_of(live_server, browser)


def test_portal_launch_for_a_visit_long_over_says_it_has_ended(live_server, sandbox_endpoint,
                                                               browser):
    reschedule(live_server, "appt-3", _now() - timedelta(hours=5))

    response = portal_launch(live_server, browser, "appt-3")

    assert response.status_code == 410
    assert 'data-reason="visit_over"' in response.text


@pytest.mark.parametrize("query, status, expected", [
    ("", 400, "missing_launch_params"),
    ("?iss=https://elsewhere.example.org/fhir&launch=x", 403, "unknown_iss"),
])
def test_portal_launch_request_checks(live_server, browser, query, status, expected):
    response = browser.get(f"{live_server.url}/patient/launch{query}", allow_redirects=False)

    assert response.status_code == status
    assert f'data-reason="{expected}"' in response.text
    assert "MyChart" in response.text or "portal" in response.text


def test_portal_callback_without_a_pending_launch_is_refused(live_server, browser):
    response = browser.get(f"{live_server.url}/patient/launch/callback?code=x&state=forged",
                           allow_redirects=False)

    assert response.status_code == 400
    assert 'data-reason="bad_state"' in response.text


def session_of(server, http: requests.Session) -> dict:
    app = server.app
    cookie = http.cookies.get(app.config["SESSION_COOKIE_NAME"])
    if not cookie:
        return {}
    return app.session_interface.get_signing_serializer(app).loads(cookie)


# --- page weight ----------------------------------------------------------------------------

def test_join_page_is_under_100_kb_compressed_and_same_origin(app, client, visit):
    from bench.join_page_weight import BUDGET_BYTES, measure

    client.get(f"/j/{token_for(app, visit.patient)}")

    report = measure(client, "/join")

    assert report.other_origins == []
    assert report.missing == []
    assert report.unversioned == []  # every static URL carries its fingerprint
    # Styles and join.js are inline (fewer round trips on a slow network).
    assert "/static/js/media.js" in report.sizes
    assert not [url for url in report.sizes if url.endswith(".css")]
    assert "/static/js/visit_session.js" in report.sizes  # the lazily loaded visit session
    assert 0 < report.total_gzip <= BUDGET_BYTES, report.table()
