"""/admin/endpoints/<name>/sms (SMS set-up, previews) and /admin/sms (texts sent)."""
from __future__ import annotations

import re
from datetime import datetime, timedelta, timezone
from html import unescape

import pytest

import at_rest
from extensions import db
from tests.admin_helpers import create_account, csrf_from, sign_in
from tests.conftest import build_app, dispose_app

GOOD = {"enabled": "1", "send_confirmation": "1", "send_cancellation": "1",
        "reminder_offsets_minutes": "60, 1440", "quiet_start": "20:00", "quiet_end": "07:30",
        "sender_number": "+1 608 555 0100"}


def make_app(tmp_path, monkeypatch, **config):
    """An app with one endpoint (whose SMS JSON holds another feature's key) and users."""
    application = build_app(tmp_path, monkeypatch, PUBLIC_BASE_URL="https://vv.example.org",
                            **config)
    with application.app_context():
        from ehr.services import ensure_endpoint

        endpoint = ensure_endpoint("epic-test", "https://epic.example.org/fhir",
                                   client_id="vv", scopes="launch", approved_by="tester",
                                   site_timezone="America/Denver")
        endpoint.sms_settings = {"templates_note": "kept by another feature"}
        db.session.commit()
    create_account(application, "ada", "admin")
    create_account(application, "ann", "analyst")
    return application


@pytest.fixture
def sms_app(tmp_path, monkeypatch):
    application = make_app(tmp_path, monkeypatch)
    yield application
    dispose_app(application)


def _post(client, data: dict) -> object:
    page = client.get("/admin/endpoints/epic-test/sms").get_data(as_text=True)
    form = {key: value for key, value in data.items() if value is not None}  # None: unticked
    return client.post("/admin/endpoints/epic-test/sms",
                       data={**form, "csrf_token": csrf_from(page)})


def _stored(app) -> dict:
    from ehr.services import get_endpoint

    with app.app_context():
        return dict(get_endpoint("epic-test").sms_settings)


def test_admin_saves_the_set_up_and_it_is_audited(sms_app):
    from visits.models import AuditLog

    client = sign_in(sms_app.test_client(), "ada")

    response = _post(client, GOOD)
    page = client.get(response.headers["Location"]).get_data(as_text=True)

    assert response.status_code == 303
    stored = _stored(sms_app)
    assert stored["enabled"] is True and stored["send_reschedule"] is False
    assert stored["reminder_offsets_minutes"] == [1440, 60]
    assert (stored["quiet_start"], stored["quiet_end"]) == ("20:00", "07:30")
    assert stored["sender_number"] == "+16085550100"
    assert stored["templates_note"] == "kept by another feature"
    assert "SMS set-up saved." in page
    assert 'value="1440, 60"' in page and 'value="+16085550100"' in page
    with sms_app.app_context():
        entry = db.session.execute(db.select(AuditLog).filter_by(
            action="admin.sms_settings.update")).scalar_one()
        assert entry.actor == "admin:ada" and entry.target_id == "epic-test"
        assert "sender_number" in entry.detail["changed"]


def test_settings_are_stored_on_each_database(tmp_path, monkeypatch, database_url):
    app = make_app(tmp_path, monkeypatch, DATABASE_URL=database_url)
    client = sign_in(app.test_client(), "ada")

    _post(client, GOOD)
    _post(client, {**GOOD, "reminder_offsets_minutes": "", "enabled": None})

    stored = _stored(app)
    assert stored["reminder_offsets_minutes"] == [] and stored["enabled"] is False
    assert stored["templates_note"] == "kept by another feature"
    dispose_app(app)


@pytest.mark.parametrize(("field", "typed", "message"), [
    ("reminder_offsets_minutes", "a day", "whole minutes"),
    ("reminder_offsets_minutes", "0", "between 1 minute and 14 days"),
    ("quiet_start", "25:00", "is not a time of day"),
    ("quiet_end", "", "is not a time of day"),
    ("sender_number", "hello", "international form"),
])
def test_a_bad_value_is_explained_next_to_its_field_and_nothing_is_saved(
        sms_app, field, typed, message):
    client = sign_in(sms_app.test_client(), "ada")

    response = _post(client, {**GOOD, field: typed})

    html = response.get_data(as_text=True)
    assert response.status_code == 400
    error = re.search(rf'<p class="field-error" id="{field}-error" role="alert"[^>]*>([^<]+)</p>',
                      html)
    assert error and message in unescape(error.group(1))
    assert re.search(rf'id="{field}"[^>]*aria-describedby="{field}-help {field}-error"', html,
                     re.S)
    # The form keeps what was typed, the other fields included.
    assert f'value="{typed}"' in html.replace("&#39;", "'") or typed == ""
    assert 'value="20:00"' in html or field == "quiet_start"
    assert _stored(sms_app) == {"templates_note": "kept by another feature"}


def test_analyst_reads_the_set_up_but_cannot_change_it(sms_app):
    client = sign_in(sms_app.test_client(), "ann")

    page = client.get("/admin/endpoints/epic-test/sms").get_data(as_text=True)
    refused = _post(client, GOOD)

    assert "<fieldset disabled>" in page
    assert "save-sms-settings" not in page
    assert "Only an administrator can change these settings." in page
    assert refused.status_code == 403
    assert _stored(sms_app) == {"templates_note": "kept by another feature"}


def test_previews_show_every_kind_in_three_languages_in_the_clinic_time_zone(sms_app):
    client = sign_in(sms_app.test_client(), "ann")

    html = client.get("/admin/endpoints/epic-test/sms").get_data(as_text=True)

    previews = re.findall(r'data-kind="(\w+)" data-language="(\w+)">.*?<span lang="[^"]+">'
                          r'([^<]+)</span>', html)
    assert {(kind, lang) for kind, lang, _ in previews} == {
        (kind, lang) for kind in ("confirmation", "reschedule", "reminder", "cancellation",
                                  "invitation") for lang in ("en", "es", "pt_BR")}
    english = {kind: unescape(body) for kind, lang, body in previews if lang == "en"}
    assert "9:30" in english["confirmation"] and "MST" in english["confirmation"]
    assert "https://vv.example.org/j/EXAMPLE-not-a-real-link" in english["reminder"]
    assert "/j/" not in english["cancellation"]


def test_the_sender_in_use_is_shown_without_ever_showing_the_token(tmp_path, monkeypatch):
    app = make_app(tmp_path, monkeypatch, SMS_SENDER="twilio",
                   TWILIO_ACCOUNT_SID="AC0123456789abcdef", TWILIO_AUTH_TOKEN="sekrit-token-42",
                   TWILIO_FROM_NUMBER="+16085550199")
    client = sign_in(app.test_client(), "ada")

    html = client.get("/admin/endpoints/epic-test/sms").get_data(as_text=True)

    assert 'data-sender="twilio"' in html
    assert "Account SID and auth token are set." in html
    assert "+16085550199" in html
    assert "sekrit-token-42" not in html
    dispose_app(app)


def test_outbox_sender_is_named_by_default(sms_app):
    client = sign_in(sms_app.test_client(), "ada")

    html = client.get("/admin/endpoints/epic-test/sms").get_data(as_text=True)

    assert 'data-sender="outbox"' in html
    assert "nothing reaches a phone" in html


# --- /admin/sms -----------------------------------------------------------------------------

def _add_texts(app, count: int = 1) -> None:
    from ehr.services import get_endpoint
    from notifications.models import BODY_PURPOSE, PHONE_PURPOSE, SmsMessage, SmsRecipient
    from visits.models import Appointment, Participant

    start = datetime(2026, 12, 1, 15, 0, tzinfo=timezone.utc)
    with app.app_context():
        endpoint = get_endpoint("epic-test")
        appointment = Appointment(endpoint_id=endpoint.id, filler_id="F-1001", start_at=start,
                                  end_at=start + timedelta(minutes=30),
                                  timezone="America/Denver", status="booked")
        patient = Participant(role="patient", ehr_user_id="Patient?identifier=MRN-1")
        appointment.participants.append(patient)
        db.session.add(appointment)
        db.session.flush()
        db.session.add(SmsRecipient(participant_id=patient.id,
                                    phone_encrypted=at_rest.encrypt("+16085550123",
                                                                    PHONE_PURPOSE)))
        for n in range(count):
            db.session.add(SmsMessage(
                appointment_id=appointment.id, participant_id=patient.id, kind="reminder",
                language="es", scheduled_for=start - timedelta(minutes=n), status="failed",
                error_code="21610", error_message="recipient unsubscribed",
                created_at=start - timedelta(minutes=n),
                body_encrypted=at_rest.encrypt(f"Recordatorio {n}: https://vv.example.org/j/"
                                               f"tok{n}", BODY_PURPOSE)))
        db.session.add(SmsMessage(kind="test", language="en", scheduled_for=start,
                                  status="delivered", created_at=start + timedelta(hours=1),
                                  body_encrypted=at_rest.encrypt("Virtual Visits test message",
                                                                 BODY_PURPOSE)))
        db.session.commit()


@pytest.mark.parametrize("username", ["ada", "ann"])
def test_texts_sent_lists_outcomes_with_bodies_behind_show_and_never_the_phone(
        sms_app, username):
    _add_texts(sms_app)
    client = sign_in(sms_app.test_client(), username)

    html = client.get("/admin/sms").get_data(as_text=True)

    rows = re.findall(r'<tr data-testid="sms-row" data-kind="(\w+)" data-status="(\w+)">(.*?)</tr>',
                      html, re.S)
    assert [(kind, status) for kind, status, _ in rows] == [("test", "delivered"),
                                                            ("reminder", "failed")]
    reminder = rows[1][2]
    assert "epic-test" in reminder and "F-1001" in reminder and ">es<" in reminder
    assert "21610 recipient unsubscribed" in reminder
    assert re.search(r"<details data-testid=\"sms-body\"><summary>Show.*?</summary>"
                     r"<p>Recordatorio 0: https://vv.example.org/j/tok0</p></details>", reminder)
    assert "6085550123" not in html and "555-0123" not in html


def test_texts_sent_shows_the_last_200(sms_app):
    _add_texts(sms_app, count=205)
    client = sign_in(sms_app.test_client(), "ada")

    html = client.get("/admin/sms").get_data(as_text=True)

    assert html.count('data-testid="sms-row"') == 200
    assert "Recordatorio 0:" in html and "Recordatorio 204:" not in html
