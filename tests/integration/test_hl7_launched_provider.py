"""One provider per EHR user in a visit, whichever comes first: the provider's launch
(``Practitioner/<id>``) or the sandbox's signed HL7 booking over HTTP, whose AIP-3 names
the same Practitioner by NPI (``Practitioner?identifier=NPI|<npi>``), where the FHIR
Practitioner has ``http://hl7.org/fhir/sid/us-npi|<npi>``."""
from __future__ import annotations

import pytest
import requests

from extensions import db
from tests.integration.test_provider_launch import Launch
from visits.models import Appointment, ParticipantRole


@pytest.fixture(scope="module")
def demo(live_server):
    """`flask demo` against the live server: the sandbox endpoint and its HL7 certificate."""
    result = live_server.app.test_cli_runner().invoke(args=["demo"])
    assert result.exit_code == 0, result.output
    return live_server


@pytest.fixture
def browser() -> requests.Session:
    http = requests.Session()
    http.trust_env = False  # loopback calls must not go through a proxy
    return http


def send_booking(server, appointment_id: str) -> None:
    """The sandbox's "Send appointment message": a signed SIU^S12 to our HL7 intake."""
    response = requests.post(f"{server.url}/sandbox/appointments/{appointment_id}/messages",
                             timeout=30)
    assert response.status_code == 200, response.text
    assert 'data-ack-code="AA"' in response.text, response.text


def providers(server, sandbox_id: str) -> list[tuple[str, str | None]]:
    """(EHR user id, display name) of the visit's providers."""
    with server.app.app_context():
        appointment = db.session.execute(db.select(Appointment).filter_by(
            ehr_appointment_id=sandbox_id)).scalar_one_or_none() or db.session.execute(
            db.select(Appointment).filter_by(placer_id=sandbox_id)).scalar_one()
        return [(p.ehr_user_id, p.display_name) for p in appointment.participants
                if p.role == ParticipantRole.PROVIDER]


def test_a_booking_after_the_launch_updates_the_launched_provider(demo, browser):
    launched = Launch(demo, browser, "appt-4").run()
    assert launched.status_code == 302, launched.text
    before = providers(demo, "appt-4")

    send_booking(demo, "appt-4")

    assert before == [("Practitioner/prac-3", "Dr. Sam Fixture")]
    assert providers(demo, "appt-4") == before


def test_a_launch_after_the_booking_takes_over_the_booked_provider(demo, browser):
    send_booking(demo, "appt-6")
    booked = providers(demo, "appt-6")

    launched = Launch(demo, browser, "appt-6").run()

    # The sandbox writes NPI as AIP-3's assigning authority (XCN-9).
    assert booked == [("Practitioner?identifier=NPI|1999999903", "Sam Fixture")]
    assert launched.status_code == 302, launched.text
    assert providers(demo, "appt-6") == [("Practitioner/prac-3", "Dr. Sam Fixture")]
    send_booking(demo, "appt-6")  # and a later update still finds them
    assert providers(demo, "appt-6") == [("Practitioner/prac-3", "Dr. Sam Fixture")]


def test_a_booking_naming_another_practitioner_adds_them(demo, browser):
    launched = Launch(demo, browser, "appt-5").run()
    assert launched.status_code == 302, launched.text
    with demo.app.test_request_context():
        from sandbox_ehr import hl7_sender

        text = hl7_sender.build_s12("appt-5", control_id="SBXOTHER5")
        body = text.replace("1999999902^Sampleton^Robin", "1999999901^Example^Quinn").encode()
        signature = hl7_sender.sign(body)
        db.session.commit()

    answer = requests.post(f"{demo.url}/hl7/v2/sandbox", data=body, timeout=30,
                           headers={"X-Signature": signature})

    assert answer.status_code == 200 and "MSA|AA" in answer.text, answer.text
    assert sorted(providers(demo, "appt-5")) == [
        ("Practitioner/prac-2", "Dr. Robin Sampleton"),
        ("Practitioner?identifier=NPI|1999999901", "Quinn Example")]
