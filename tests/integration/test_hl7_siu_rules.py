"""The shared SIU fixtures, each with one field changed, through the signed HTTP intake:
which phone is kept and texted (PID-13), who becomes a participant (AIP, AIG)."""
from __future__ import annotations

import uuid
from pathlib import Path

import pytest
import sqlalchemy as sa

from extensions import db
from notifications.models import SmsRecipient
from tests.integration.test_sms_scheduling import (  # noqa: F401  (hl7_key is a fixture)
    hl7_key,
    post,
    send,
    sent,
    sms_app,
    texts,
)
from visits.models import Appointment, ParticipantRole, utcnow

DATA = Path(__file__).resolve().parent.parent / "data" / "hl7"


def fixture(name: str, **fields: str) -> tuple[bytes, str]:
    """The fixture ``name`` with a fresh MSH-10 and SCH-1/SCH-2 (so it is a new
    appointment, never a duplicate) and ``fields`` set, e.g. ``PID_13="..."``; returns
    the body and its filler id. ``|``-delimited fixtures only."""
    filler = f"F-{uuid.uuid4().hex[:8]}"
    changes = {"MSH_10": f"C-{filler}", "SCH_1": f"P-{filler}", "SCH_2": filler, **fields}
    lines = (DATA / name).read_bytes().decode("utf-8").split("\r")
    for key, value in changes.items():
        segment, position = key.split("_")[0], int(key.split("_")[1])
        index = next(i for i, line in enumerate(lines) if line.startswith(segment + "|"))
        parts = lines[index].split("|")
        at = position - 1 if segment == "MSH" else position
        parts += [""] * (at + 1 - len(parts))
        parts[at] = value
        lines[index] = "|".join(parts)
    return "\r".join(lines).encode("utf-8"), filler


def corepoint(pid13: str) -> tuple[bytes, str]:
    """Corepoint's v2.3 S14, moved to 09:30 on 11 March 2030 so its texts are planned."""
    return fixture("siu_s14_corepoint_v23.hl7", SCH_11="^^^203003110930", PID_13=pid13)


def participants(app, filler: str) -> list[tuple[str, str, str | None]]:
    """(role, EHR user id, display name) of the appointment's participants, sorted."""
    with app.app_context():
        appointment = db.session.execute(
            sa.select(Appointment).filter_by(filler_id=filler)).scalar_one()
        return sorted((p.role, p.ehr_user_id, p.display_name)
                      for p in appointment.participants)


def recipient(app, filler: str) -> SmsRecipient | None:
    with app.app_context():
        appointment = db.session.execute(
            sa.select(Appointment).filter_by(filler_id=filler)).scalar_one()
        patient = next(p for p in appointment.participants
                       if p.role == ParticipantRole.PATIENT)
        found = db.session.execute(
            sa.select(SmsRecipient).filter_by(participant_id=patient.id)).scalar_one_or_none()
        db.session.expunge_all()
        return found


@pytest.mark.parametrize("pid13", ["(832)795-8259^PRN", "(832)795-8259^WPN",
                                   "(832)795-8259^HOME"])
def test_a_number_with_a_use_code_and_no_equipment_type_is_texted(sms_app, hl7_key, pid13):
    body, filler = corepoint(pid13)

    assert post(sms_app, hl7_key, body) == "AA"
    send(sms_app, utcnow())

    assert recipient(sms_app, filler).phone_line_type == "unknown"
    assert [text["to"] for text in sent(sms_app)] == ["+18327958259"]
    assert {m.status for m in texts(sms_app, filler)} == {"sent", "scheduled"}


@pytest.mark.parametrize("pid13", [
    "(832)795-8259^PRN^PH",
    "(832)795-8259^PRN^PH~(713)555-0100^WPN^PH",
    "(832)795-8259^HOME~(713)555-0100^WPN^PH",  # HOME untyped beside a typed entry
])
def test_landlines_only_store_no_phone_and_plan_no_text(sms_app, hl7_key, pid13):
    body, filler = corepoint(pid13)

    assert post(sms_app, hl7_key, body) == "AA"
    send(sms_app, utcnow())

    assert recipient(sms_app, filler) is None
    assert texts(sms_app, filler) == []
    assert sent(sms_app) == []


@pytest.mark.parametrize(("name", "fields"), [
    # Epic-style: AIG-4 2^RESOURCE, the FastCare clinic's own schedule, not a person.
    ("siu_s12_rethinkhealth_epiclike_v251.hl7", {}),
    # FHIR-Converter's colonoscope, typed as a device rather than "Equipment".
    ("siu_s12_fhirconverter_v28.hl7", {"AIG_4": "D^Device^L"}),
    ("siu_s12_fhirconverter_v28.hl7", {"AIG_3": "R12^Video room 12^L", "AIG_4": "RM^Room"}),
])
def test_a_general_resource_in_aig_is_no_practitioner(sms_app, hl7_key, name, fields):
    body, filler = fixture(name, **fields)

    assert post(sms_app, hl7_key, body) == "AA"

    providers = [p for p in participants(sms_app, filler) if p[0] != ParticipantRole.PATIENT]
    assert providers == ([("provider", "Practitioner?identifier=1210", "Robert GE")]
                         if "fhirconverter" in name else [])


def test_a_person_in_aig_is_a_practitioner(sms_app, hl7_key):
    body, filler = fixture("siu_s12_rethinkhealth_epiclike_v251.hl7", AIG_4="1^PERSON")

    assert post(sms_app, hl7_key, body) == "AA"

    assert ("provider", "Practitioner?identifier=EPC|102204", "FASTCARE, MEIJER SUSSEX") \
        in participants(sms_app, filler)


def test_an_npi_typed_in_xcn_13_keeps_the_us_npi_system(sms_app, hl7_key):
    # FHIR-Converter's S12 with its own SCH-12 person (NPI in XCN-13) as the AIP.
    aip3 = ("9941339109^Smith&Mr.&Smith^Adam^Mellie^Jr^Dr^MD^^NPIID&2.16.840.1.113883.4.6"
            "&ISO^L^^^NPI^^^^^^20100115^20200115^GP")
    body, filler = fixture("siu_s12_fhirconverter_v28.hl7", AIP_3=aip3)

    assert post(sms_app, hl7_key, body) == "AA"

    assert ("provider", "Practitioner?identifier=http://hl7.org/fhir/sid/us-npi|9941339109",
            "Adam Smith") in participants(sms_app, filler)
