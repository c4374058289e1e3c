"""The sandbox's "Send appointment message": its signing certificate from `flask demo`, a
signed SIU^S12 over real HTTP to the app's intake, and the texts the app queued for it."""
from __future__ import annotations

import re
from datetime import datetime, timedelta, timezone

import pytest
import requests

import at_rest
from ehr.models import EhrEndpoint, EndpointCertificate
from extensions import db
from hl7feed import hl7
from notifications.models import BODY_PURPOSE, PHONE_PURPOSE, SmsMessage, SmsRecipient
from sandbox_ehr import hl7_sender
from sandbox_ehr.models import SandboxHl7Key
from visits.models import Appointment, ParticipantRole


@pytest.fixture(scope="module")
def demo(live_server):
    """`flask demo` run twice against the live server's databases, as a re-run would."""
    runner = live_server.app.test_cli_runner()
    outputs = [runner.invoke(args=["demo"]) for _ in range(2)]
    return live_server, outputs


def _send(server, appointment_id: str) -> requests.Response:
    return requests.post(f"{server.url}/sandbox/appointments/{appointment_id}/messages",
                         timeout=30)


def _app_appointment(server, sandbox_id: str) -> Appointment:
    """The app's appointment for a sandbox one: SCH-1 (placer id) carries the FHIR id."""
    with server.app.app_context():
        appointment = db.session.execute(db.select(Appointment).filter_by(
            placer_id=sandbox_id)).scalar_one()
        appointment.participants  # noqa: B018  (load before the context closes)
        db.session.expunge_all()
        return appointment


def test_flask_demo_twice_uploads_one_sandbox_certificate(demo):
    server, outputs = demo

    assert [o.exit_code for o in outputs] == [0, 0], [o.output for o in outputs]
    assert "HL7 signing cert" in outputs[0].output and "uploaded" in outputs[0].output
    assert "already trusted" in outputs[1].output
    with server.app.app_context():
        endpoint = db.session.execute(db.select(EhrEndpoint).filter_by(name="sandbox")).scalar_one()
        certificates = db.session.execute(db.select(EndpointCertificate).filter_by(
            endpoint_id=endpoint.id)).scalars().all()
        keys = db.session.execute(db.select(SandboxHl7Key)).scalars().all()
        assert len(certificates) == 1 and len(keys) == 1
        assert certificates[0].fingerprint_sha256 == keys[0].fingerprint_sha256
        assert "PRIVATE KEY" not in keys[0].private_key_encrypted
        assert "PRIVATE KEY" in at_rest.decrypt(keys[0].private_key_encrypted.encode(),
                                                hl7_sender.KEY_PURPOSE)


def test_built_s12_reads_back_as_the_sandbox_appointment(demo):
    server, _ = demo

    with server.app.test_request_context():
        text = hl7_sender.build_s12("appt-2", control_id="SBXTEST1")
        parsed = hl7.parse_siu(text, site_timezone="America/Chicago", phone_region="US")
        appointment = hl7_sender.store.read("Appointment", "appt-2")

    assert text.count("\r") == len(text.splitlines()) and "\n" not in text
    assert (parsed.trigger, parsed.header.version, parsed.header.control_id) == \
        ("S12", "2.5.1", "SBXTEST1")
    assert parsed.header.sending_application == "SANDBOX_EHR"
    assert abs(parsed.header.message_time - datetime.now(timezone.utc)) < timedelta(minutes=1)
    assert (parsed.placer_id, parsed.filler_id) == ("appt-2", "A1002")
    assert parsed.start == datetime.fromisoformat(appointment["start"])
    assert parsed.start_source == "TQ1-7"
    assert parsed.end - parsed.start == timedelta(minutes=20)
    assert (parsed.phone, parsed.phone_line_type, parsed.language) == \
        ("+13125550102", "mobile", "es")
    assert parsed.patient_id == "SANDBOX|MRN000002"
    assert [(p.identifier, p.display_name) for p in parsed.providers] == \
        [("NPI|1999999901", "Quinn Example")]
    assert parsed.department == "Family Medicine"


def test_send_button_gets_aa_and_the_app_has_the_visit_and_the_phone(demo):
    server, _ = demo

    response = _send(server, "appt-2")

    assert response.status_code == 200, response.text
    assert 'data-ack-code="AA"' in response.text
    assert "AA: accepted" in response.text
    assert 'role="status"' in response.text
    appointment = _app_appointment(server, "appt-2")
    assert appointment.filler_id == "A1002"
    assert appointment.department_display == "Family Medicine"
    patient = next(p for p in appointment.participants if p.role == ParticipantRole.PATIENT)
    provider = next(p for p in appointment.participants if p.role == ParticipantRole.PROVIDER)
    assert patient.display_name is None
    assert provider.display_name == "Quinn Example"
    with server.app.app_context():
        recipient = db.session.execute(db.select(SmsRecipient).filter_by(
            participant_id=patient.id)).scalar_one()
        assert at_rest.decrypt(recipient.phone_encrypted, PHONE_PURPOSE) == "+13125550102"
        assert (recipient.phone_line_type, recipient.language) == ("mobile", "es")


def test_sending_again_is_a_new_message_for_the_same_visit(demo):
    server, _ = demo

    first, second = _send(server, "appt-3"), _send(server, "appt-3")

    ids = [re.search(r"MSH-10 <code>(\w+)</code>", r.text).group(1) for r in (first, second)]
    assert ids[0] != ids[1]
    assert all('data-ack-code="AA"' in r.text for r in (first, second))
    with server.app.app_context():
        count = db.session.execute(db.select(db.func.count()).select_from(Appointment)
                                   .filter_by(placer_id="appt-3")).scalar_one()
        assert count == 1


def test_messages_list_shows_texts_with_a_link_and_escaped_text(demo):
    server, _ = demo
    _send(server, "appt-5")
    appointment = _app_appointment(server, "appt-5")
    patient = next(p for p in appointment.participants if p.role == ParticipantRole.PATIENT)
    body = (f"Video visit <b>tomorrow</b> & more. Join: {server.url}/j/tok-123. "
            "Reply STOP to opt out.")
    with server.app.app_context():
        db.session.add(SmsMessage(
            appointment_id=appointment.id, participant_id=patient.id, kind="reminder",
            language="es", scheduled_for=datetime.now(timezone.utc) + timedelta(days=1),
            status="scheduled", body_encrypted=at_rest.encrypt(body, BODY_PURPOSE)))
        db.session.commit()

    page = requests.get(f"{server.url}/sandbox/appointments/appt-5/messages", timeout=10)

    assert page.status_code == 200
    assert page.headers["Cache-Control"] == "no-store"
    assert "Messages sent to patient" in page.text
    assert f'<a href="{server.url}/j/tok-123" data-testid="sms-link">' in page.text
    assert "&lt;b&gt;tomorrow&lt;/b&gt; &amp; more" in page.text
    assert 'data-kind="reminder"' in page.text and 'data-status="scheduled"' in page.text


def test_schedule_offers_the_button_as_a_form(demo):
    server, _ = demo

    page = requests.get(f"{server.url}/sandbox", timeout=10)

    assert page.text.count('data-testid="sandbox-send-hl7"') == 6
    assert 'action="/sandbox/appointments/appt-1/messages"' in page.text


def test_unknown_appointment_is_404(demo):
    server, _ = demo

    assert _send(server, "appt-999").status_code == 404


def test_before_flask_demo_the_page_says_what_to_run(client):
    response = client.post("/sandbox/appointments/appt-1/messages")

    assert response.status_code == 409
    assert "flask demo" in response.get_data(as_text=True)
    assert 'role="alert"' in response.get_data(as_text=True)


def test_parse_ack_reads_code_and_reason():
    text = ("MSH|^~\\&|VV|VV|SANDBOX_EHR|X|20260101000000+0000||ACK^S12^ACK|A1|P|2.5.1\r"
            "MSA|AE|C1|SCH-1 and SCH-2 \\T\\ more\r"
            "ERR||SCH^1|101^Required field missing^HL70357|E\r")

    assert hl7_sender.parse_ack(text) == ("AE", "SCH-1 and SCH-2 & more")
    assert hl7_sender.parse_ack("not hl7") == (None, "")


def test_confirmation_is_sent_at_once_and_its_link_opens_the_join_page(demo):
    server, _ = demo
    with server.app.app_context():
        resource = hl7_sender.store.read("Appointment", "appt-6")
        start = datetime.now(timezone.utc).replace(microsecond=0) + timedelta(hours=2)
        resource.update(start=start.isoformat(), end=(start + timedelta(minutes=30)).isoformat())
        hl7_sender.store.upsert("Appointment", "appt-6", resource)
        db.session.commit()

    page = _send(server, "appt-6")

    assert 'data-ack-code="AA"' in page.text
    confirmation = re.search(r'<li class="sms" data-testid="sandbox-sms" '
                             r'data-kind="confirmation" data-status="(\w+)">(.*?)</li>',
                             page.text, re.S)
    assert confirmation, page.text
    assert confirmation.group(1) in ("sent", "delivered")
    link = re.search(r'<a href="([^"]+)" data-testid="sms-link">', confirmation.group(2))
    assert link and link.group(1).startswith(f"{server.url}/j/")
    patient = requests.Session()
    joined = patient.get(link.group(1), timeout=10)
    assert joined.status_code == 200 and joined.url == f"{server.url}/join"
    assert 'data-testid="join-button"' in joined.text


def _visit_from_fhir(server, sandbox_id: str) -> int:
    """What a provider launch does with the EHR's Appointment: upsert the visit."""
    from ehr.services import get_endpoint
    from visits.appointments import upsert_from_fhir

    with server.app.test_request_context():
        resource = hl7_sender.store.read("Appointment", sandbox_id)
    with server.app.app_context():
        appointment = upsert_from_fhir(get_endpoint("sandbox"), resource)
        db.session.commit()
        return appointment.id


def _fhir_patient(server, sandbox_id: str) -> str:
    with server.app.test_request_context():
        resource = hl7_sender.store.read("Appointment", sandbox_id)
    return next(p["actor"]["reference"] for p in resource["participant"]
                if p["actor"]["reference"].startswith("Patient/"))


def _patients(server, appointment_id: int) -> list[tuple[str, bool]]:
    with server.app.app_context():
        appointment = db.session.get(Appointment, appointment_id)
        return [(p.ehr_user_id, p.sms_recipient is not None) for p in appointment.participants
                if p.role == ParticipantRole.PATIENT]


def test_texted_patient_and_launching_provider_share_one_visit(demo):
    # HL7 first (the usual order: booked, texted), then the provider launches from the EHR.
    server, _ = demo
    assert 'data-ack-code="AA"' in _send(server, "appt-4").text
    texted = _app_appointment(server, "appt-4")

    launched = _visit_from_fhir(server, "appt-4")

    assert launched == texted.id
    with server.app.app_context():
        assert db.session.get(Appointment, launched).ehr_appointment_id == "appt-4"
    # One patient: the row the text's link belongs to, now known by its FHIR id too.
    assert _patients(server, launched) == [(_fhir_patient(server, "appt-4"), True)]


def test_an_hl7_message_after_a_launch_updates_that_visit(demo):
    server, _ = demo
    launched = _visit_from_fhir(server, "appt-6")

    assert 'data-ack-code="AA"' in _send(server, "appt-6").text

    with server.app.app_context():
        count = db.session.execute(db.select(db.func.count()).select_from(Appointment).where(
            (Appointment.placer_id == "appt-6") | (Appointment.ehr_appointment_id == "appt-6"))
        ).scalar_one()
    assert count == 1
    assert _patients(server, launched) == [(_fhir_patient(server, "appt-6"), True)]


def test_a_visit_already_over_says_why_no_text_was_planned(demo):
    server, _ = demo
    with server.app.test_request_context():
        resource = hl7_sender.store.read("Appointment", "appt-1")
        start = datetime.now(timezone.utc) - timedelta(hours=3)
        hl7_sender.store.upsert("Appointment", "appt-1", {
            **resource, "start": start.isoformat(),
            "end": (start + timedelta(minutes=20)).isoformat()})
        db.session.commit()

    page = _send(server, "appt-1")

    assert 'data-ack-code="AA"' in page.text
    assert "this visit is already over" in page.text
