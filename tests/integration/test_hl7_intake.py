"""POST /hl7/v2/<endpoint> over real HTTP, and `flask certs add`."""
from __future__ import annotations

import base64
import uuid
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest
import requests
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import dsa, ec, padding, rsa
from cryptography.x509.oid import NameOID

import at_rest
from ehr import services
from extensions import db
from hl7feed import certificates
from hl7feed.models import Hl7MessageReceipt
from hl7feed.services import PHONE_PURPOSE
from notifications.models import SmsRecipient
from visits.models import Appointment, ParticipantRole

DATA = Path(__file__).resolve().parent.parent / "data" / "hl7"
ENDPOINT = "epic-test"


def _certificate(key, *, days: int = 30, expired: bool = False) -> x509.Certificate:
    now = datetime.now(timezone.utc)
    start, end = (now - timedelta(days=60), now - timedelta(days=1)) if expired \
        else (now - timedelta(days=1), now + timedelta(days=days))
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, f"hl7-{uuid.uuid4().hex[:6]}")])
    return (x509.CertificateBuilder().subject_name(name).issuer_name(name)
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(start).not_valid_after(end).sign(key, hashes.SHA256()))


@pytest.fixture(scope="module")
def keys():
    rsa_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    ec_key = ec.generate_private_key(ec.SECP256R1())
    return {"rsa": rsa_key, "ec": ec_key}


@pytest.fixture(scope="module")
def endpoint(live_server, keys):
    """An approved endpoint trusting one RSA and one EC certificate."""
    pems = [(f"{kind}.pem", _certificate(key).public_bytes(serialization.Encoding.PEM))
            for kind, key in keys.items()]
    with live_server.app.app_context():
        services.ensure_endpoint(ENDPOINT, "https://epic.example.org/fhir", client_id="vv",
                                 scopes="launch openid", approved_by="tester",
                                 site_timezone="America/Chicago")
        certificates.add_certificates(ENDPOINT, pems)
    return ENDPOINT


def _sign(body: bytes, key) -> str:
    if isinstance(key, rsa.RSAPrivateKey):
        signature = key.sign(body, padding.PKCS1v15(), hashes.SHA256())
    else:
        signature = key.sign(body, ec.ECDSA(hashes.SHA256()))
    return base64.b64encode(signature).decode()


def _post(server, body: bytes, key=None, *, signature: str | None = "sign",
          name: str = ENDPOINT) -> requests.Response:
    headers = {"Content-Type": "x-application/hl7-v2+er7"}
    if signature == "sign":
        signature = _sign(body, key)
    if signature is not None:
        headers["X-Signature"] = signature
    return requests.post(f"{server.url}/hl7/v2/{name}", data=body, headers=headers, timeout=30)


def _msa(response: requests.Response) -> list[str]:
    segments = response.text.rstrip("\r").split("\r")
    separator = response.text[3]  # the ACK answers in the sender's own delimiters
    return next(s for s in segments if s.startswith("MSA")).split(separator)


def _s12(control: str, filler: str, *, trigger: str = "S12", sent: str = "20250310080000",
         start: str = "20250310093000", phones: str = "(608)555-0123^PRN^CP") -> bytes:
    return ("MSH|^~\\&|EPIC|CLINIC|VV|VV|" + sent + "||SIU^" + trigger + "|" + control
            + "|P|2.5.1\r"
            "SCH|P-" + filler + "|" + filler + "|||||||30|MIN|^^30^" + start + "\r"
            "PID|1||MRN-" + filler + "^^^EPI||Doe^Jane||||||||" + phones + "||spa\r"
            "ZXY|whatever|we do not know this segment\r"
            "AIP|1||DOC1^Example^Quinn^^^^^^NPI|||" + start + "\r").encode()


def _appointment(server, filler: str) -> Appointment | None:
    with server.app.app_context():
        appointment = db.session.execute(
            db.select(Appointment).filter_by(filler_id=filler)).scalar_one_or_none()
        if appointment is not None:
            appointment.participants  # noqa: B018  (load before the context closes)
        db.session.expunge_all()
        return appointment


@pytest.mark.parametrize("kind", ["rsa", "ec"])
def test_signed_s12_is_accepted_and_creates_the_appointment_with_an_encrypted_phone(
        live_server, endpoint, keys, kind):
    filler = f"F-{uuid.uuid4().hex[:8]}"

    response = _post(live_server, _s12(f"C-{filler}", filler), keys[kind])

    assert response.status_code == 200, response.text
    assert _msa(response)[1:3] == ["AA", f"C-{filler}"]
    assert "ACK^S12^ACK" in response.text
    with live_server.app.app_context():
        appointment = db.session.execute(
            db.select(Appointment).filter_by(filler_id=filler)).scalar_one()
        assert appointment.start_at == datetime(2025, 3, 10, 14, 30, tzinfo=timezone.utc)
        assert appointment.placer_id == f"P-{filler}"
        roles = {p.role: p for p in appointment.participants}
        patient = roles[ParticipantRole.PATIENT]
        assert patient.ehr_user_id == f"Patient?identifier=EPI|MRN-{filler}"
        assert patient.display_name is None
        assert roles[ParticipantRole.PROVIDER].display_name == "Quinn Example"
        recipient = db.session.execute(
            db.select(SmsRecipient).filter_by(participant_id=patient.id)).scalar_one()
        assert b"6085550123" not in recipient.phone_encrypted
        assert at_rest.decrypt(recipient.phone_encrypted, PHONE_PURPOSE) == "+16085550123"
        assert (recipient.language, recipient.phone_line_type) == ("es", "mobile")


def test_every_shared_fixture_is_acknowledged(live_server, endpoint, keys):
    expected = {"siu_s12_gmed_fragment_v231.hl7": "AE"}

    for path in sorted(DATA.glob("*.hl7")):
        response = _post(live_server, path.read_bytes(), keys["rsa"])

        assert response.status_code == 200, (path.name, response.text)
        assert _msa(response)[1] == expected.get(path.name, "AA"), (path.name, response.text)


def test_missing_phone_is_still_accepted(live_server, endpoint, keys):
    filler = f"F-{uuid.uuid4().hex[:8]}"

    response = _post(live_server, _s12(f"C-{filler}", filler, phones=""), keys["ec"])

    assert _msa(response)[1] == "AA"
    assert _appointment(live_server, filler) is not None


@pytest.mark.parametrize("signature", [None, "", "not base64!", "tampered", "other-key"])
def test_missing_or_bad_signature_is_401(live_server, endpoint, keys, signature):
    body = _s12("C-sig", "F-sig")
    if signature == "tampered":
        signature = _sign(body + b"X", keys["rsa"])
    elif signature == "other-key":
        signature = _sign(body, rsa.generate_private_key(public_exponent=65537, key_size=2048))

    response = _post(live_server, body, signature=signature)

    assert response.status_code == 401
    assert _appointment(live_server, "F-sig") is None


def test_garbage_is_400(live_server, endpoint, keys):
    response = _post(live_server, b"this is not HL7", keys["rsa"])

    assert response.status_code == 400


def test_over_one_mebibyte_is_413(live_server, endpoint, keys):
    body = _s12("C-big", "F-big") + b"NTE|1||" + b"x" * (1024 * 1024) + b"\r"

    response = _post(live_server, body, keys["rsa"])

    assert response.status_code == 413


def test_unknown_endpoint_is_404(live_server, endpoint, keys):
    response = _post(live_server, _s12("C-x", "F-x"), keys["rsa"], name="nobody")

    assert response.status_code == 404


def test_truncated_message_gets_ae_with_err(live_server, endpoint, keys):
    body = b"MSH|^~\\&|EPIC|CLINIC|VV|VV|20250310080000||SIU^S12|C-trunc|P|2.5.1\rPID|1||M^^^EPI"

    response = _post(live_server, body, keys["rsa"])

    assert response.status_code == 200
    assert _msa(response)[1:3] == ["AE", "C-trunc"]
    assert "\rERR|" in response.text


@pytest.mark.parametrize(("msh9", "version"), [("ADT^A01", "2.5.1"), ("SIU^S12", "3.0")])
def test_unsupported_type_or_version_gets_ar(live_server, endpoint, keys, msh9, version):
    body = _s12("C-ar", "F-ar").replace(b"SIU^S12", msh9.encode()).replace(
        b"|2.5.1\r", f"|{version}\r".encode())

    response = _post(live_server, body, keys["rsa"])

    assert response.status_code == 200
    assert _msa(response)[1] == "AR"
    assert "\rERR|" in response.text


def test_duplicate_control_id_is_acknowledged_aa_and_applied_once(live_server, endpoint, keys):
    filler = f"F-{uuid.uuid4().hex[:8]}"
    first = _s12(f"C-{filler}", filler)
    changed = _s12(f"C-{filler}", filler, trigger="S13", start="20250311093000")

    replies = [_post(live_server, body, keys["rsa"]) for body in (first, first, changed)]

    assert [_msa(r)[1] for r in replies] == ["AA", "AA", "AA"]
    appointment = _appointment(live_server, filler)
    assert appointment.start_at == datetime(2025, 3, 10, 14, 30, tzinfo=timezone.utc)
    with live_server.app.app_context():
        receipts = db.session.execute(db.select(Hl7MessageReceipt).filter_by(
            control_id=f"C-{filler}")).scalars().all()
    assert [r.ack_code for r in receipts] == ["AA"]


def test_s13_reschedules_and_s15_cancels(live_server, endpoint, keys):
    filler = f"F-{uuid.uuid4().hex[:8]}"
    _post(live_server, _s12(f"A-{filler}", filler), keys["rsa"])

    _post(live_server, _s12(f"B-{filler}", filler, trigger="S13", sent="20250310081000",
                            start="20250310110000"), keys["rsa"])
    rescheduled = _appointment(live_server, filler)
    _post(live_server, _s12(f"C-{filler}", filler, trigger="S15", sent="20250310082000"),
          keys["ec"])

    assert rescheduled.start_at == datetime(2025, 3, 10, 16, 0, tzinfo=timezone.utc)
    assert rescheduled.status == "booked"
    assert _appointment(live_server, filler).status == "cancelled"


def test_s26_marks_a_no_show(live_server, endpoint, keys):
    filler = f"F-{uuid.uuid4().hex[:8]}"
    _post(live_server, _s12(f"A-{filler}", filler), keys["rsa"])

    _post(live_server, _s12(f"B-{filler}", filler, trigger="S26", sent="20250310100000"),
          keys["rsa"])

    assert _appointment(live_server, filler).status == "noshow"


def test_an_older_update_arriving_late_does_not_roll_back(live_server, endpoint, keys):
    filler = f"F-{uuid.uuid4().hex[:8]}"
    _post(live_server, _s12(f"A-{filler}", filler), keys["rsa"])
    _post(live_server, _s12(f"C-{filler}", filler, trigger="S13", sent="20250310090000",
                            start="20250310120000"), keys["rsa"])

    late = _post(live_server, _s12(f"B-{filler}", filler, trigger="S13",
                                   sent="20250310085000", start="20250310100000"),
                 keys["rsa"])

    assert _msa(late)[1] == "AA"
    assert _appointment(live_server, filler).start_at == datetime(
        2025, 3, 10, 17, 0, tzinfo=timezone.utc)


# `flask certs add`


@pytest.fixture
def cli_endpoint(app):
    with app.app_context():
        services.ensure_endpoint("cli-ehr", "https://cli.example.org/fhir", client_id="vv",
                                 scopes="launch openid")
    return "cli-ehr"


def _write(tmp_path, name: str, data: bytes) -> str:
    path = tmp_path / name
    path.write_bytes(data)
    return str(path)


def test_certs_add_takes_pem_and_der_at_once(app, runner, cli_endpoint, keys, tmp_path):
    pem = _write(tmp_path, "a.pem", _certificate(keys["rsa"]).public_bytes(
        serialization.Encoding.PEM))
    der = _write(tmp_path, "b.cer", _certificate(keys["ec"]).public_bytes(
        serialization.Encoding.DER))

    result = runner.invoke(args=["certs", "add", cli_endpoint, pem, der])
    again = runner.invoke(args=["certs", "add", cli_endpoint, der])

    assert result.exit_code == 0, result.output
    assert result.output.count("added:") == 2
    assert "already present" in again.output
    with app.app_context():
        endpoint = services.get_endpoint(cli_endpoint)
        assert len(endpoint.certificates) == 2


def _dsa_certificate() -> bytes:
    key = dsa.generate_private_key(key_size=2048)
    return _certificate(key).public_bytes(serialization.Encoding.PEM)


@pytest.mark.parametrize(("kind", "message"), [
    ("expired", "expired"),
    ("private-pem", "private key"),
    ("private-der", "private key"),
    ("dsa", "RSA or EC"),
    ("junk", "not a PEM or DER certificate"),
])
def test_certs_add_refuses_with_a_clear_message(app, runner, cli_endpoint, keys, tmp_path,
                                                kind, message):
    good = _write(tmp_path, "good.pem", _certificate(keys["rsa"]).public_bytes(
        serialization.Encoding.PEM))
    data = {
        "expired": lambda: _certificate(keys["rsa"], expired=True).public_bytes(
            serialization.Encoding.PEM),
        "private-pem": lambda: keys["ec"].private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption()),
        "private-der": lambda: keys["ec"].private_bytes(
            serialization.Encoding.DER, serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption()),
        "dsa": _dsa_certificate,
        "junk": lambda: b"\x00\x01 nothing here",
    }[kind]()
    bad = _write(tmp_path, "bad.cer", data)

    result = runner.invoke(args=["certs", "add", cli_endpoint, good, bad])

    assert result.exit_code != 0
    assert message in result.output
    with app.app_context():
        assert services.get_endpoint(cli_endpoint).certificates == []  # all or nothing


def test_certs_add_to_an_unknown_endpoint_fails(runner, keys, tmp_path):
    pem = _write(tmp_path, "a.pem", _certificate(keys["rsa"]).public_bytes(
        serialization.Encoding.PEM))

    result = runner.invoke(args=["certs", "add", "nobody", pem])

    assert result.exit_code != 0
    assert "no endpoint named 'nobody'" in result.output


# The service on each storage backend (PostgreSQL too when DATABASE_URL is set).


@pytest.fixture
def backend_app(tmp_path, database_url, monkeypatch):
    import flask_migrate

    from app import create_app
    from tests.conftest import make_config

    monkeypatch.chdir(tmp_path)
    application = create_app(make_config(tmp_path, DATABASE_URL=database_url))
    with application.app_context():
        flask_migrate.upgrade()
        yield application
        db.session.remove()
        db.engine.dispose()


def test_intake_dedupes_and_applies_on_each_backend(backend_app, keys):
    from hl7feed import services as hl7_intake

    services.ensure_endpoint("pg-ehr", "https://pg.example.org/fhir", client_id="vv",
                             scopes="launch openid", approved_by="tester")
    certificates.add_certificates("pg-ehr", [("a.pem", _certificate(keys["ec"]).public_bytes(
        serialization.Encoding.PEM))])
    body = _s12("C-pg", "F-pg")
    cancel = _s12("C-pg-2", "F-pg", trigger="S17", sent="20250310090000")

    first = hl7_intake.receive("pg-ehr", body, _sign(body, keys["ec"]))
    again = hl7_intake.receive("pg-ehr", body, _sign(body, keys["ec"]))
    deleted = hl7_intake.receive("pg-ehr", cancel, _sign(cancel, keys["ec"]))

    assert (first.code, first.applied) == ("AA", True)
    assert (again.code, again.applied) == ("AA", False)
    assert deleted.code == "AA"
    appointments = db.session.execute(db.select(Appointment)).scalars().all()
    assert [(a.filler_id, a.status) for a in appointments] == [("F-pg", "cancelled")]
    assert hl7_intake.has_sms_phone(appointments[0])


def _acks(server, code: str) -> float:
    """``vv_hl7_messages_total`` for this module's endpoint and ``code`` (0 before any)."""
    text = requests.get(f"{server.url}/metrics", timeout=30).text
    line = f'vv_hl7_messages_total{{ack="{code}",endpoint="{ENDPOINT}"}} '
    return next((float(row[len(line):]) for row in text.splitlines() if row.startswith(line)),
                0.0)


def test_metrics_count_each_message_once_by_the_code_it_got(live_server, endpoint, keys):
    filler = f"F-{uuid.uuid4().hex[:8]}"
    accepted, refused = _acks(live_server, "AA"), _acks(live_server, "AE")
    message = _s12(f"C-{filler}", filler)

    first = _post(live_server, message, keys["rsa"])
    again = _post(live_server, message, keys["rsa"])  # a resend: acknowledged, not counted
    broken = _post(live_server, message.replace(b"SCH|", b"SCX|").replace(
        f"C-{filler}".encode(), f"B-{filler}".encode()), keys["rsa"])

    assert [_msa(r)[1] for r in (first, again, broken)] == ["AA", "AA", "AE"]
    assert _acks(live_server, "AA") == accepted + 1
    assert _acks(live_server, "AE") == refused + 1
