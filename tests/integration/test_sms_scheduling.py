"""Texts planned from real, signed HL7 SIU messages posted to /hl7/v2/<endpoint>: what a
patient is sent on booking, rescheduling, cancelling and a no-show, and when."""
from __future__ import annotations

import itertools
import json
import re
import uuid
from datetime import datetime, timedelta, timezone

import flask_migrate
import pytest
import sqlalchemy as sa
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

import at_rest
from app import create_app
from ehr import services
from ehr.models import EhrEndpoint
from extensions import db
from hl7feed import certificates
from notifications.models import PHONE_PURPOSE, SmsMessage, SmsRecipient
from notifications.senders import MemorySender
from notifications.sending import send_due
from tests.conftest import make_config
from tests.integration.test_hl7_intake import _certificate, _msa, _s12, _sign
from visits.links import default_expiry
from visits.models import Appointment, JoinLink, Participant, utcnow

ENDPOINT = "epic-sms"
PHONE = "+16085550123"
# 09:30 in Chicago on Monday 11 March 2030 (daylight time since the 10th) is 14:30 UTC.
START = "20300311093000"
START_UTC = datetime(2030, 3, 11, 14, 30, tzinfo=timezone.utc)
_SENT = itertools.count(1)


@pytest.fixture(scope="module")
def hl7_key():
    return ec.generate_private_key(ec.SECP256R1())


def build_app(tmp_path, monkeypatch, hl7_key, database_url: str | None = None, **config):
    """An app with migrations applied, an approved endpoint trusting ``hl7_key`` and a
    MemorySender in place of the carrier."""
    monkeypatch.chdir(tmp_path)
    overrides = {"DATABASE_URL": database_url} if database_url else {}
    application = create_app(make_config(tmp_path, **overrides, **config))
    with application.app_context():
        flask_migrate.upgrade()
        services.ensure_endpoint(ENDPOINT, "https://epic.example.org/fhir", client_id="vv",
                                 scopes="launch openid", approved_by="tester",
                                 site_timezone="America/Chicago")
        pem = _certificate(hl7_key).public_bytes(serialization.Encoding.PEM)
        certificates.add_certificates(ENDPOINT, [("ec.pem", pem)])
    application.extensions["sms_sender"] = MemorySender()
    return application


@pytest.fixture
def sms_app(tmp_path, monkeypatch, hl7_key):
    application = build_app(tmp_path, monkeypatch, hl7_key)
    yield application
    with application.app_context():
        db.session.remove()
        db.engine.dispose()


def sent(app) -> list[dict]:
    return app.extensions["sms_sender"].sent


def siu(filler: str, *, trigger: str = "S12", start: str = START, language: str = "spa",
        phones: str = "(608)555-0123^PRN^CP") -> bytes:
    """An SIU message with a fresh control id, sent after every earlier one."""
    sent_at = (datetime(2030, 1, 1, 8, 0) + timedelta(seconds=next(_SENT))).strftime(
        "%Y%m%d%H%M%S")
    body = _s12(f"C-{uuid.uuid4().hex[:10]}", filler, trigger=trigger, sent=sent_at,
                start=start, phones=phones)
    return body.replace(b"||spa\r", f"||{language}\r".encode())


def post(app, key, body: bytes) -> str:
    """POST the signed message like an interface engine; returns MSA-1."""
    response = app.test_client().post(
        f"/hl7/v2/{ENDPOINT}", data=body,
        headers={"Content-Type": "x-application/hl7-v2+er7", "X-Signature": _sign(body, key)})
    assert response.status_code == 200, response.text
    return _msa(response)[1]


def texts(app, filler: str) -> list[SmsMessage]:
    """The appointment's texts, oldest plan first (detached, for asserting)."""
    with app.app_context():
        rows = db.session.execute(
            sa.select(SmsMessage).join(Appointment).where(Appointment.filler_id == filler)
            .order_by(SmsMessage.scheduled_for, SmsMessage.id)).scalars().all()
        db.session.expunge_all()
        return rows


def pending(app, filler: str) -> list[tuple[str, datetime]]:
    return [(m.kind, m.scheduled_for) for m in texts(app, filler) if m.status == "scheduled"]


def set_sms_settings(app, **values) -> None:
    with app.app_context():
        endpoint = db.session.execute(
            sa.select(EhrEndpoint).filter_by(name=ENDPOINT)).scalar_one()
        endpoint.sms_settings = {**(endpoint.sms_settings or {}), **values}
        db.session.commit()


def send(app, now: datetime) -> int:
    with app.app_context():
        return send_due(now)


@pytest.mark.parametrize(("pid15", "language", "day", "clock"), [
    ("eng", "en", "Mon, Mar 11", "9:30 AM CDT"),
    ("spa", "es", "lun, 11 mar", "9:30 CDT"),
    ("pt-BR", "pt_BR", "seg., 11 de mar.", "09:30 CDT"),
    ("por", "pt_BR", "seg., 11 de mar.", "09:30 CDT"),
])
def test_booking_texts_a_confirmation_in_the_patients_language_at_the_clinics_time(
        sms_app, hl7_key, pid15, language, day, clock):
    filler = f"F-{uuid.uuid4().hex[:8]}"

    assert post(sms_app, hl7_key, siu(filler, language=pid15)) == "AA"
    send(sms_app, utcnow())

    [text] = sent(sms_app)
    assert text["to"] == PHONE
    assert day in text["body"] and clock in text["body"]
    assert "Doe" not in text["body"] and "Jane" not in text["body"]
    assert len(text["body"]) <= 300
    [confirmation] = [m for m in texts(sms_app, filler) if m.kind == "confirmation"]
    assert (confirmation.language, confirmation.status) == (language, "sent")


def test_the_link_in_the_confirmation_opens_the_visit(sms_app, hl7_key):
    filler = f"F-{uuid.uuid4().hex[:8]}"
    post(sms_app, hl7_key, siu(filler, language="eng"))
    send(sms_app, utcnow())

    [text] = sent(sms_app)
    token = re.search(r"https?://\S+/j/([\w-]+)", text["body"]).group(1)
    response = sms_app.test_client().get(f"/j/{token}")

    assert text["body"].endswith("Reply STOP to opt out.")
    assert response.status_code in (302, 303)
    assert response.headers["Location"].endswith("/join")


def test_booking_plans_reminders_a_day_and_a_quarter_hour_before(sms_app, hl7_key):
    filler = f"F-{uuid.uuid4().hex[:8]}"

    post(sms_app, hl7_key, siu(filler))

    assert [p for p in pending(sms_app, filler) if p[0] == "reminder"] == [
        ("reminder", START_UTC - timedelta(days=1)),
        ("reminder", START_UTC - timedelta(minutes=15))]


def test_a_resent_message_plans_no_second_text(sms_app, hl7_key):
    filler = f"F-{uuid.uuid4().hex[:8]}"
    body = siu(filler)

    assert post(sms_app, hl7_key, body) == "AA"
    assert post(sms_app, hl7_key, body) == "AA"
    send(sms_app, utcnow())

    assert len(texts(sms_app, filler)) == 3  # one confirmation, two reminders
    assert len(sent(sms_app)) == 1


def test_reschedule_moves_the_reminders_and_says_the_new_time(sms_app, hl7_key):
    filler = f"F-{uuid.uuid4().hex[:8]}"
    post(sms_app, hl7_key, siu(filler, language="eng"))
    new_start = START_UTC + timedelta(hours=2)

    post(sms_app, hl7_key, siu(filler, trigger="S14", start="20300311113000", language="eng"))
    send(sms_app, utcnow())

    assert pending(sms_app, filler) == [("reminder", new_start - timedelta(days=1)),
                                        ("reminder", new_start - timedelta(minutes=15))]
    [text] = sent(sms_app)  # the old confirmation was never sent: it had the old time
    assert "moved to Mon, Mar 11 at 11:30 AM CDT" in text["body"]
    assert send(sms_app, START_UTC - timedelta(days=1)) == 0  # the old day-before time
    assert send(sms_app, new_start - timedelta(days=1)) == 1
    assert "reminder, your video visit is Mon, Mar 11 at 11:30 AM" in sent(sms_app)[-1]["body"]


def test_links_already_texted_still_work_when_the_visit_moves_later(sms_app, hl7_key):
    # The patient may tap the link in the first text, not the reschedule one.
    filler = f"F-{uuid.uuid4().hex[:8]}"
    post(sms_app, hl7_key, siu(filler, language="eng"))
    with sms_app.app_context():
        first_expiry = db.session.execute(
            sa.select(sa.func.min(JoinLink.expires_at)).join(Participant)
            .join(Appointment).where(Appointment.filler_id == filler)).scalar_one()

    post(sms_app, hl7_key, siu(filler, trigger="S13", start="20300312093000", language="eng"))

    with sms_app.app_context():
        appointment = db.session.execute(
            sa.select(Appointment).filter_by(filler_id=filler)).scalar_one()
        expiries = db.session.execute(
            sa.select(JoinLink.expires_at).join(Participant)
            .where(Participant.appointment_id == appointment.id)).scalars().all()
        wanted = default_expiry(appointment)
    assert len(expiries) >= 2 and first_expiry < wanted
    assert set(expiries) == {wanted}


def test_an_update_that_keeps_the_time_texts_nothing(sms_app, hl7_key):
    filler = f"F-{uuid.uuid4().hex[:8]}"
    post(sms_app, hl7_key, siu(filler))
    send(sms_app, utcnow())

    post(sms_app, hl7_key, siu(filler, trigger="S14"))
    send(sms_app, utcnow())

    assert len(sent(sms_app)) == 1
    assert len(pending(sms_app, filler)) == 2


def test_cancel_texts_the_cancellation_and_no_reminder_ever(sms_app, hl7_key):
    filler = f"F-{uuid.uuid4().hex[:8]}"
    post(sms_app, hl7_key, siu(filler, language="eng"))
    send(sms_app, utcnow())

    post(sms_app, hl7_key, siu(filler, trigger="S15", language="eng"))
    send(sms_app, utcnow())
    for moment in (START_UTC - timedelta(days=1), START_UTC - timedelta(minutes=15)):
        send(sms_app, moment)

    bodies = [t["body"] for t in sent(sms_app)]
    assert len(bodies) == 2
    assert "is cancelled" in bodies[1] and "/j/" not in bodies[1]
    assert {m.status for m in texts(sms_app, filler) if m.kind == "reminder"} == {"cancelled"}


def test_no_show_cancels_reminders_without_a_text(sms_app, hl7_key):
    filler = f"F-{uuid.uuid4().hex[:8]}"
    post(sms_app, hl7_key, siu(filler))
    send(sms_app, utcnow())

    post(sms_app, hl7_key, siu(filler, trigger="S26"))
    send(sms_app, START_UTC - timedelta(minutes=15))

    assert len(sent(sms_app)) == 1
    assert pending(sms_app, filler) == []


def test_landline_texts_are_recorded_as_suppressed_and_never_sent(sms_app, hl7_key):
    # The HL7 feed keeps no landline (tests/integration/test_hl7_siu_rules.py); a number
    # stored as one otherwise (an older row, a carrier lookup) still plans nothing to send.
    filler = f"F-{uuid.uuid4().hex[:8]}"
    post(sms_app, hl7_key, siu(filler, phones=""))
    with sms_app.app_context():
        patient = db.session.execute(sa.select(Participant).join(Appointment).where(
            Appointment.filler_id == filler, Participant.role == "patient")).scalar_one()
        db.session.add(SmsRecipient(participant_id=patient.id, phone_line_type="landline",
                                    phone_encrypted=at_rest.encrypt(PHONE, PHONE_PURPOSE)))
        db.session.commit()

    post(sms_app, hl7_key, siu(filler, trigger="S14", phones=""))
    send(sms_app, START_UTC - timedelta(minutes=15))

    rows = texts(sms_app, filler)
    assert [(m.kind, m.status, m.error_message) for m in rows] == [
        ("confirmation", "suppressed", "landline"), ("reminder", "suppressed", "landline"),
        ("reminder", "suppressed", "landline")]
    assert sent(sms_app) == []


def test_a_patient_without_a_phone_gets_no_rows(sms_app, hl7_key):
    filler = f"F-{uuid.uuid4().hex[:8]}"

    assert post(sms_app, hl7_key, siu(filler, phones="")) == "AA"

    assert texts(sms_app, filler) == []


def test_a_number_that_arrives_with_a_later_update_gets_the_confirmation(sms_app, hl7_key):
    filler = f"F-{uuid.uuid4().hex[:8]}"
    post(sms_app, hl7_key, siu(filler, phones=""))

    post(sms_app, hl7_key, siu(filler, trigger="S14"))
    post(sms_app, hl7_key, siu(filler, trigger="S14"))
    send(sms_app, utcnow())

    assert len(sent(sms_app)) == 1
    assert [kind for kind, _ in pending(sms_app, filler)] == ["reminder", "reminder"]


def test_endpoint_settings_turn_kinds_off_and_choose_reminder_times(sms_app, hl7_key):
    set_sms_settings(sms_app, send_confirmation=False, reminder_offsets_minutes=[60])
    filler = f"F-{uuid.uuid4().hex[:8]}"

    post(sms_app, hl7_key, siu(filler))
    send(sms_app, utcnow())

    assert sent(sms_app) == []
    assert pending(sms_app, filler) == [("reminder", START_UTC - timedelta(hours=1))]


def test_sms_turned_off_for_the_endpoint_plans_nothing(sms_app, hl7_key):
    set_sms_settings(sms_app, enabled=False)
    filler = f"F-{uuid.uuid4().hex[:8]}"

    post(sms_app, hl7_key, siu(filler))

    assert texts(sms_app, filler) == []


def test_reminders_already_past_at_booking_are_not_planned(sms_app, hl7_key):
    filler = f"F-{uuid.uuid4().hex[:8]}"
    soon = datetime.now(timezone.utc) + timedelta(hours=3)
    local = soon.astimezone(__import__("zoneinfo").ZoneInfo("America/Chicago"))

    post(sms_app, hl7_key, siu(filler, start=local.strftime("%Y%m%d%H%M00")))

    assert [kind for kind, _ in pending(sms_app, filler)] == ["confirmation", "reminder"]


def test_outbox_cli_lists_the_texts_with_their_bodies(sms_app, hl7_key):
    filler = f"F-{uuid.uuid4().hex[:8]}"
    post(sms_app, hl7_key, siu(filler, language="eng"))
    with sms_app.app_context():
        appointment_id = db.session.execute(
            sa.select(Appointment.id).filter_by(filler_id=filler)).scalar_one()
    runner = sms_app.test_cli_runner()
    runner.invoke(args=["sms", "send-due"])

    listed = runner.invoke(args=["sms", "outbox", "--json", "--appointment", str(appointment_id)])
    plain = runner.invoke(args=["sms", "outbox", "--status", "sent"])

    rows = json.loads(listed.output)
    assert [(r["kind"], r["status"]) for r in rows][-1] == ("confirmation", "sent")
    assert all("/j/" in r["body"] for r in rows)
    assert "confirmation" in plain.output and "Reply STOP to opt out." in plain.output
    assert "prints the join links" in " ".join(
        runner.invoke(args=["sms", "outbox", "--help"]).output.split())


def test_the_phone_is_kept_encrypted(sms_app, hl7_key):
    filler = f"F-{uuid.uuid4().hex[:8]}"

    post(sms_app, hl7_key, siu(filler))

    with sms_app.app_context():
        phones = db.session.execute(sa.select(SmsRecipient.phone_encrypted)).scalars().all()
        bodies = db.session.execute(sa.select(SmsMessage.body_encrypted)).scalars().all()
    assert phones and all(b"6085550123" not in p for p in phones)
    assert bodies and all(b"/j/" not in b for b in bodies)
