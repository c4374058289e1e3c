"""Property tests for ``POST /hl7/v2/<endpoint>``: damaged but signed messages always get
HTTP 200 with a readable ACK (MSA-1 AA, AE or AR) or a 4xx the contract names (400 no
MSH, 401 signature, 413 size), never a 500, on SQLite and on PostgreSQL."""
from __future__ import annotations

import base64
from datetime import datetime, timedelta, timezone

import flask_migrate
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from hypothesis import HealthCheck, example, given, settings, strategies as st

from app import create_app
from ehr import services
from extensions import db
from hl7feed import certificates, hl7
from tests.conftest import make_config
from tests.unit.test_hl7_fuzz import FIXTURES, damaged, odd_stored_values

ENDPOINT = "fuzz-ehr"
KEY = ec.generate_private_key(ec.SECP256R1())
# Each example is a full request with its database writes, twice (SQLite, PostgreSQL):
# fewer examples than the parser-only unit fuzz, which covers the mutations widely.
FUZZ = settings(derandomize=True, max_examples=50, deadline=None, database=None,
                suppress_health_check=[HealthCheck.function_scoped_fixture,
                                       HealthCheck.too_slow, HealthCheck.data_too_large])


def _certificate_pem() -> bytes:
    now = datetime.now(timezone.utc)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "fuzz")])
    certificate = (x509.CertificateBuilder().subject_name(name).issuer_name(name)
                   .public_key(KEY.public_key()).serial_number(x509.random_serial_number())
                   .not_valid_before(now - timedelta(days=1))
                   .not_valid_after(now + timedelta(days=30)).sign(KEY, hashes.SHA256()))
    return certificate.public_bytes(serialization.Encoding.PEM)


@pytest.fixture
def fuzz_client(database_url, tmp_path, monkeypatch):
    """A migrated app on SQLite or a PostgreSQL schema, with an endpoint trusting KEY."""
    monkeypatch.chdir(tmp_path)
    app = create_app(make_config(tmp_path, DATABASE_URL=database_url, SANDBOX=False))
    with app.app_context():
        flask_migrate.upgrade()
        services.ensure_endpoint(ENDPOINT, "https://ehr.example.org/fhir", client_id="vv",
                                 scopes="launch openid", approved_by="fuzz",
                                 site_timezone="America/Chicago")
        certificates.add_certificates(ENDPOINT, [("fuzz.pem", _certificate_pem())])
    yield app.test_client()
    with app.app_context():
        db.session.remove()
        db.engine.dispose()


def _signature(body: bytes, mode: str) -> str | None:
    if mode == "missing":
        return None
    if mode == "garbage":
        return "not base64 at all!"
    signed = body if mode == "good" else body + b"x"
    return base64.b64encode(KEY.sign(signed, ec.ECDSA(hashes.SHA256()))).decode()


def _check(client, body: bytes, mode: str = "good") -> None:
    headers = {"Content-Type": "x-application/hl7-v2+er7"}
    signature = _signature(body, mode)
    if signature is not None:
        headers["X-Signature"] = signature

    response = client.post(f"/hl7/v2/{ENDPOINT}", data=body, headers=headers)

    if mode != "good":
        assert response.status_code == 401, response.get_data(as_text=True)
        return
    assert response.status_code in (200, 400, 413), response.get_data(as_text=True)
    if response.status_code != 200:
        return
    reply = response.get_data(as_text=True)
    header = hl7.read_header(reply)
    assert header.message_type == "ACK"
    separator = reply[3]
    msa = next(s for s in reply.split("\r") if s.startswith("MSA")).split(separator)
    assert msa[1] in ("AA", "AE", "AR"), reply
    # AR with this text means storage failed: a message it can never store is not
    # "temporary", and the EHR would resend it forever.
    assert "temporary failure" not in reply, reply


@FUZZ
@given(body=damaged())
@example(body=FIXTURES[0])
def test_damaged_signed_messages_get_an_ack_or_a_4xx(fuzz_client, body):
    _check(fuzz_client, body)


@FUZZ
@given(body=odd_stored_values())
def test_odd_values_in_stored_fields_get_an_ack_not_a_storage_failure(fuzz_client, body):
    _check(fuzz_client, body)


@FUZZ
@given(body=st.binary(max_size=1024), mode=st.sampled_from(["good", "missing", "garbage",
                                                            "other"]))
def test_random_bodies_and_signatures_never_get_a_500(fuzz_client, body, mode):
    _check(fuzz_client, body, mode)


def test_oversized_body_is_413(fuzz_client):
    body = FIXTURES[0] + b"A" * (1024 * 1024)

    _check(fuzz_client, body)
    response = fuzz_client.post(f"/hl7/v2/{ENDPOINT}", data=body,
                                headers={"X-Signature": _signature(body, "good")})
    assert response.status_code == 413


_S12 = ("MSH|^~\\&|EPIC|CLINIC|VV|VV|20250310080000||SIU^S12|{control}|P|2.5.1\r"
        "SCH|{placer}|{filler}|||||||30|MIN|^^30^20250310093000\r"
        "PID|1||MRN1^^^EPI||Doe^Jane||||||||(608)555-0123^PRN^CP||{language}\r"
        "AIP|1||DOC1^Example^Quinn^^^^^^NPI|||20250310093000\r")


def _msa(client, **fields) -> list[str]:
    body = _S12.format(**fields).encode()
    response = client.post(f"/hl7/v2/{ENDPOINT}", data=body,
                           headers={"X-Signature": _signature(body, "good")})
    assert response.status_code == 200
    reply = response.get_data(as_text=True)
    assert "\x00" not in reply
    return next(s for s in reply.split("\r") if s.startswith("MSA")).split("|")


# Regressions found by the fuzz tests on PostgreSQL, which refuses NUL in text and
# over-long values: both came back as AR "temporary failure, please resend".
@pytest.mark.parametrize("fields", [
    {"control": "C\x001", "placer": "P1", "filler": "F1", "language": "spa"},
    {"control": "C2", "placer": "P\x002", "filler": "F\\X00\\2", "language": "spa"},
    {"control": "C\\X00\\3", "placer": "P3", "filler": "F3", "language": "s\x00pa"},
], ids=["nul-in-control-id", "nul-in-ids", "escaped-nul-and-nul-in-language"])
def test_nul_characters_are_dropped_not_stored(fuzz_client, fields):
    msa = _msa(fuzz_client, **fields)

    assert msa[1] == "AA", msa
    assert msa[2] == fields["control"].replace("\x00", "").replace("\\X00\\", "")


def test_appointment_id_longer_than_its_column_is_an_error_not_a_retry(fuzz_client):
    msa = _msa(fuzz_client, control="C-long", placer="P" * 129, filler="F" * 129,
               language="spa")

    assert msa[1] == "AE"
    assert "longer than 128" in msa[3]
