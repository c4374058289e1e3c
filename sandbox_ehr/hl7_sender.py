"""The sandbox as an Epic interface engine: build an SIU^S12 for one of its appointments,
sign it with its own key, POST it to the app's HL7 intake over HTTP, and read the ACK.

The message goes the way a real EHR's does (``POST <PUBLIC_BASE_URL>/hl7/v2/sandbox``
with ``X-Signature``), so the demo exercises the same intake, signature check and SMS
scheduling as production. The signing key is made by ``flask demo`` and kept in the
sandbox database, encrypted; its certificate is uploaded to the app's ``sandbox``
endpoint through the same service as ``flask certs add``.

Nothing here logs names, phone numbers or the message: ids and ACK codes only.
"""
from __future__ import annotations

import base64
import hashlib
import logging
import re
import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any
from urllib.parse import urlsplit

import requests
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

import at_rest
from extensions import db
from sandbox_ehr import store
from sandbox_ehr.common import public_base, utcnow
from sandbox_ehr.models import SandboxHl7Key

log = logging.getLogger(__name__)

# The endpoint `flask demo` registers for the sandbox (sandbox_ehr.cli).
ENDPOINT_NAME = "sandbox"
KEY_PURPOSE = "sandbox-hl7-key"
SENDING_APPLICATION = "SANDBOX_EHR"
SENDING_FACILITY = "SANDBOX_CLINIC"
ID_NAMESPACE = "SANDBOX"
# A demo certificate lives a year; a new one is made (and uploaded next to the old one,
# as a real EHR rotates) when less than this is left.
CERTIFICATE_DAYS = 365
RENEW_BEFORE = timedelta(days=30)
TIMEOUT_SECONDS = 15
# BCP 47 primary tags of the sandbox patients to the ISO 639-2 codes Epic puts in PID-15.
_ISO_639_2 = {"en": "eng", "es": "spa", "pt": "por", "fr": "fra", "de": "deu", "ar": "ara",
              "zh": "zho", "vi": "vie", "ru": "rus", "ko": "kor"}
_SEX = {"female": "F", "male": "M", "other": "O", "unknown": "U"}


class SendFailed(Exception):
    """The message could not be sent or answered; ``str()`` is safe to show and log."""


class NotSetUp(SendFailed):
    """No ``sandbox`` endpoint or signing key in the app yet: ``flask demo`` makes both."""


class UnknownAppointment(SendFailed):
    """No sandbox Appointment has this id."""


@dataclass(frozen=True)
class SendResult:
    """What the app answered: HTTP status, and for an ACK its MSA-1 code and text."""

    http_status: int
    ack_code: str | None
    ack_text: str
    control_id: str
    placer_id: str
    filler_id: str

    @property
    def accepted(self) -> bool:
        return self.ack_code == "AA"


@dataclass(frozen=True)
class CertificateState:
    """The signing certificate ``flask demo`` made sure of; ``created`` when it is new."""

    fingerprint_sha256: str
    subject: str
    not_after: datetime
    created: bool
    uploaded: bool


# --- signing key and certificate -------------------------------------------------------

def ensure_signing_certificate(endpoint_name: str = ENDPOINT_NAME) -> CertificateState:
    """Make the sandbox's HL7 signing key and self-signed certificate if it has none (or
    its certificate is about to expire) and make sure the app's endpoint trusts it.

    Idempotent: the upload goes through ``hl7feed.certificates.add_certificates``, which
    reports a certificate already present instead of adding it twice."""
    from hl7feed.certificates import add_certificates

    row = _current_key()
    created = row is None or row.not_after - utcnow() < RENEW_BEFORE
    if created:
        row = _create_key()
    added = add_certificates(endpoint_name, [("sandbox HL7 certificate",
                                              row.certificate_pem.encode("ascii"))])
    certificate = x509.load_pem_x509_certificate(row.certificate_pem.encode("ascii"))
    return CertificateState(row.fingerprint_sha256, certificate.subject.rfc4514_string(),
                            row.not_after, created, not added[0].already_present)


def _current_key() -> SandboxHl7Key | None:
    return db.session.execute(
        db.select(SandboxHl7Key).order_by(SandboxHl7Key.not_after.desc()).limit(1)
    ).scalar_one_or_none()


def _create_key() -> SandboxHl7Key:
    """EC P-256: quick to make, and the intake verifies ECDSA with SHA-256."""
    key = ec.generate_private_key(ec.SECP256R1())
    now = utcnow()
    name = x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, "Sandbox Community Clinic"),
                      x509.NameAttribute(NameOID.COMMON_NAME, "Sandbox EHR HL7 interface")])
    certificate = (x509.CertificateBuilder().subject_name(name).issuer_name(name)
                   .public_key(key.public_key()).serial_number(x509.random_serial_number())
                   .not_valid_before(now - timedelta(minutes=5))
                   .not_valid_after(now + timedelta(days=CERTIFICATE_DAYS))
                   .add_extension(x509.KeyUsage(
                       digital_signature=True, content_commitment=False, key_encipherment=False,
                       data_encipherment=False, key_agreement=False, key_cert_sign=False,
                       crl_sign=False, encipher_only=False, decipher_only=False), critical=True)
                   .sign(key, hashes.SHA256()))
    pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                            serialization.NoEncryption()).decode("ascii")
    der = certificate.public_bytes(serialization.Encoding.DER)
    row = SandboxHl7Key(
        fingerprint_sha256=hashlib.sha256(der).hexdigest(),
        private_key_encrypted=at_rest.encrypt(pem, KEY_PURPOSE).decode("ascii"),
        certificate_pem=certificate.public_bytes(serialization.Encoding.PEM).decode("ascii"),
        not_after=certificate.not_valid_after_utc, created_at=now)
    db.session.add(row)
    db.session.commit()
    return row


def sign(body: bytes) -> str:
    """``X-Signature`` for ``body``: base64 of an ECDSA SHA-256 (DER) signature."""
    row = _current_key()
    if row is None:
        raise NotSetUp("the sandbox has no HL7 signing key yet: run “flask demo” once")
    pem = at_rest.decrypt(row.private_key_encrypted.encode("ascii"), KEY_PURPOSE)
    key = serialization.load_pem_private_key(pem.encode("ascii"), password=None)
    return base64.b64encode(key.sign(body, ec.ECDSA(hashes.SHA256()))).decode("ascii")


# --- the message ------------------------------------------------------------------------

def build_s12(appointment_id: str, *, control_id: str, now: datetime | None = None) -> str:
    """An HL7 2.5.1 SIU^S12 for the sandbox Appointment ``appointment_id``, segments ending
    in ``\\r``, as Epic's scheduling interface would send it for a new booking."""
    appointment = store.read("Appointment", appointment_id)
    if appointment is None:
        raise UnknownAppointment(f"no sandbox appointment {appointment_id!r}")
    now = now or utcnow()
    actors = _actors(appointment)
    patient = actors.get("Patient") or {}
    practitioner = actors.get("Practitioner") or {}
    location = actors.get("Location") or {}
    start = datetime.fromisoformat(appointment["start"])
    end = datetime.fromisoformat(appointment["end"]) if appointment.get("end") else None
    minutes = appointment.get("minutesDuration") or (
        int((end - start).total_seconds() // 60) if end else 30)
    placer, filler = appointment["id"], _filler_id(appointment)
    when, until = _ts(start), _ts(end) if end else ""
    visit_type = f"VIDEO^{_e('Video visit')}^{ID_NAMESPACE}"
    segments = [
        ["MSH", "^~\\&", SENDING_APPLICATION, SENDING_FACILITY, "VIRTUAL_VISITS", "VV",
         _ts(now), "", "SIU^S12^SIU_S12", control_id, "P", "2.5.1", "", "", "AL", "NE", "",
         "UNICODE UTF-8"],
        ["SCH", f"{_e(placer)}^{ID_NAMESPACE}", f"{_e(filler)}^{ID_NAMESPACE}", "", "", "",
         "", "", visit_type, str(minutes), "MIN", f"^^{minutes}^{when}^{until}", "", "", "",
         "", "", "", "", "", "", "", "", "", "", "Booked"],
        ["TQ1", "1", "", "", "", "", "", when, until],
        ["PID", "1", "", _patient_identifiers(patient), "", _patient_name(patient), "",
         (patient.get("birthDate") or "").replace("-", ""),
         _SEX.get(patient.get("gender", ""), "U"), "", "", "", "",
         _telecom(patient), "", _language(patient)],
        ["PV1", "1", "O", f"{_e(location.get('id', ''))}^^^{SENDING_FACILITY}"],
        ["RGS", "1", "A"],
        ["AIS", "1", "A", visit_type, when, "", "", str(minutes), "MIN"],
        ["AIP", "1", "A", _practitioner(practitioner), "D^Doctor^HL70182", "", when, "", "",
         str(minutes), "MIN"],
        ["AIL", "1", "A", _location(location), "D^Department^HL70305", "", when, "", "",
         str(minutes), "MIN"],
    ]
    return "".join("|".join(fields) + "\r" for fields in segments)


def _actors(appointment: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """The Patient, Practitioner and Location of the appointment, read live (``id`` set)."""
    found: dict[str, dict[str, Any]] = {}
    for participant in appointment.get("participant", []):
        reference = (participant.get("actor") or {}).get("reference", "")
        kind, _, ident = reference.partition("/")
        if kind in found or not ident:
            continue
        resource = store.read(kind, ident) or {}
        found[kind] = {**resource, "id": ident,
                       "display": (participant.get("actor") or {}).get("display", "")}
    return found


def _filler_id(appointment: dict[str, Any]) -> str:
    """SCH-2: the scheduling system's appointment number (``A1001``), which its FHIR
    Appointment also lists in ``identifier``, as Epic's does; else the FHIR id. SCH-1
    (placer) carries the FHIR id, so either can tie the S12 to the FHIR resource."""
    for identifier in appointment.get("identifier", []):
        if identifier.get("value"):
            return identifier["value"]
    return appointment["id"]


def _ts(moment: datetime) -> str:
    """HL7 DTM with the offset the resource was written in (clinic time)."""
    offset = moment.strftime("%z") or "+0000"
    return moment.strftime("%Y%m%d%H%M%S") + offset


def _e(text: str) -> str:
    """HL7-escape a value for the default delimiters ``|^~\\&``."""
    out = str(text).replace("\\", "\\E\\")
    for char, code in (("|", "F"), ("^", "S"), ("~", "R"), ("&", "T")):
        out = out.replace(char, f"\\{code}\\")
    return out.replace("\r", " ").replace("\n", " ")


def _patient_identifiers(patient: dict[str, Any]) -> str:
    """PID-3 CX: MRN^^^SANDBOX^MR, the FHIR id as a second repetition."""
    reps = [f"{_e(i['value'])}^^^{ID_NAMESPACE}^MR" for i in patient.get("identifier", [])
            if i.get("value")]
    if patient.get("id"):
        reps.append(f"{_e(patient['id'])}^^^{ID_NAMESPACE}_FHIR^PI")
    return "~".join(reps)


def _patient_name(patient: dict[str, Any]) -> str:
    for name in patient.get("name", []):
        return f"{_e(name.get('family', ''))}^{_e(' '.join(name.get('given', [])))}"
    return ""


def _telecom(patient: dict[str, Any]) -> str:
    """PID-13 XTN repetitions, mobiles first: ``(312)555-0101^PRN^CP^^1^312^5550101``."""
    reps = []
    for telecom in sorted(patient.get("telecom", []), key=lambda t: t.get("use") != "mobile"):
        if telecom.get("system") == "email":
            reps.append(f"^NET^Internet^{_e(telecom.get('value', ''))}")
            continue
        if telecom.get("system") not in ("phone", "sms") or not telecom.get("value"):
            continue
        digits = re.sub(r"\D", "", telecom["value"])
        if len(digits) == 11 and digits.startswith("1"):
            digits = digits[1:]
        equipment = "CP" if telecom.get("use") == "mobile" else "PH"
        use = "WPN" if telecom.get("use") == "work" else "PRN"
        if len(digits) == 10:
            reps.append(f"({digits[:3]}){digits[3:6]}-{digits[6:]}^{use}^{equipment}^^1^"
                        f"{digits[:3]}^{digits[3:]}")
        else:
            reps.append(f"{_e(telecom['value'])}^{use}^{equipment}")
    return "~".join(reps)


def _language(patient: dict[str, Any]) -> str:
    """PID-15 CE from Patient.communication: ISO 639-2 code, name, ``ISO6392``."""
    communications = patient.get("communication", [])
    preferred = next((c for c in communications if c.get("preferred")),
                     communications[0] if communications else None)
    if not preferred:
        return ""
    concept = preferred.get("language") or {}
    coding = next(iter(concept.get("coding") or []), {})
    tag = (coding.get("code") or "").split("-")[0].lower()
    if not tag:
        return ""
    name = concept.get("text") or coding.get("display") or ""
    return f"{_e(_ISO_639_2.get(tag, tag))}^{_e(name)}^ISO6392"


def _practitioner(practitioner: dict[str, Any]) -> str:
    """AIP-3 XCN: NPI^family^given^^^prefix^^^NPI, as Epic sends providers."""
    npi = next((i.get("value") for i in practitioner.get("identifier", []) if i.get("value")),
               practitioner.get("id", ""))
    name = next(iter(practitioner.get("name", [])), {})
    prefix = " ".join(name.get("prefix", []))
    return (f"{_e(npi)}^{_e(name.get('family', ''))}^{_e(' '.join(name.get('given', [])))}"
            f"^^^{_e(prefix)}^^^NPI")


def _location(location: dict[str, Any]) -> str:
    """AIL-3 PL: department id as point of care, the clinic as facility, the name as
    PL-9 description (what the app shows as the department)."""
    name = location.get("name") or location.get("display") or ""
    return f"{_e(location.get('id', ''))}^^^{SENDING_FACILITY}^^^^^{_e(name)}"


# --- sending ------------------------------------------------------------------------------

def send_appointment_message(appointment_id: str, *, now: datetime | None = None
                             ) -> SendResult:
    """Build, sign and POST an S12 for ``appointment_id``; returns the app's answer.

    Raises NotSetUp (no endpoint or key: run ``flask demo``), UnknownAppointment, or
    SendFailed when the app cannot be reached."""
    from ehr.services import get_endpoint

    if get_endpoint(ENDPOINT_NAME) is None:
        raise NotSetUp("the app does not know this sandbox yet: run “flask demo” once")
    control_id = "SBX" + secrets.token_hex(8).upper()
    appointment = store.read("Appointment", appointment_id)
    if appointment is None:
        raise UnknownAppointment(f"no sandbox appointment {appointment_id!r}")
    body = build_s12(appointment_id, control_id=control_id, now=now).encode("utf-8")
    signature = sign(body)
    # The intake answers in another request of this same app: end our read transactions
    # first so a SQLite database is not held while it writes.
    db.session.commit()
    url = f"{public_base()}/hl7/v2/{ENDPOINT_NAME}"
    http = requests.Session()
    # Loopback calls must not go through a proxy from the environment.
    http.trust_env = urlsplit(url).hostname not in ("127.0.0.1", "localhost", "::1")
    try:
        response = http.post(url, data=body, timeout=TIMEOUT_SECONDS, headers={
            "Content-Type": "x-application/hl7-v2+er7", "X-Signature": signature})
    except requests.RequestException as exc:
        log.warning("sandbox hl7 message not delivered",
                    extra={"control_id": control_id, "error": type(exc).__name__})
        raise SendFailed(f"the app did not answer at {url} ({type(exc).__name__})") from None
    finally:
        http.close()
    code, text = parse_ack(response.text) if response.status_code == 200 else (None, "")
    log.info("sandbox hl7 message sent", extra={
        "control_id": control_id, "http_status": response.status_code, "ack_code": code})
    return SendResult(http_status=response.status_code, ack_code=code,
                      ack_text=text or (response.text.strip()[:300]
                                        if response.status_code != 200 else ""),
                      control_id=control_id, placer_id=appointment_id,
                      filler_id=_filler_id(appointment))


def parse_ack(text: str) -> tuple[str | None, str]:
    """MSA-1 and a readable reason (MSA-3, else ERR-8) of an HL7 ACK; (None, "") when the
    text holds no MSA segment."""
    segments = [s for s in re.split(r"\r\n|\r|\n", text) if s]
    if not segments or not segments[0].startswith("MSH") or len(segments[0]) < 4:
        return None, ""
    separator = segments[0][3]
    fields = {s[:3]: s.split(separator) for s in reversed(segments)}
    msa = fields.get("MSA")
    if not msa or len(msa) < 2:
        return None, ""
    reason = msa[3] if len(msa) > 3 else ""
    err = fields.get("ERR")
    if not reason and err and len(err) > 8:
        reason = err[8]
    return msa[1].strip() or None, _unescape(reason)


def _unescape(text: str) -> str:
    simple = {"F": "|", "S": "^", "T": "&", "R": "~", "E": "\\"}
    return re.sub(r"\\([FSTRE])\\", lambda m: simple[m.group(1)], text)



# --- what came of it ----------------------------------------------------------------------

@dataclass(frozen=True)
class PatientMessage:
    """One text the app queued for the patient of an appointment, decrypted for the demo."""

    kind: str
    status: str
    scheduled_for: datetime
    sent_at: datetime | None
    body: str | None
    error: str | None


def messages_for(appointment_id: str) -> list[PatientMessage] | None:
    """The texts of the app appointment the sandbox's S12 made for ``appointment_id``
    (found by endpoint and SCH-2 filler id, else SCH-1 placer id), earliest first; None
    when the app has no such appointment yet."""
    from ehr.services import get_endpoint
    from notifications.models import BODY_PURPOSE, SmsMessage
    from visits.models import Appointment

    endpoint = get_endpoint(ENDPOINT_NAME)
    resource = store.read("Appointment", appointment_id)
    if endpoint is None or resource is None:
        return None
    appointment = None
    for column, value in ((Appointment.filler_id, _filler_id(resource)),
                          (Appointment.placer_id, appointment_id)):
        appointment = db.session.execute(
            db.select(Appointment).where(Appointment.endpoint_id == endpoint.id, column == value)
            .order_by(Appointment.id).limit(1)).scalar_one_or_none()
        if appointment is not None:
            break
    if appointment is None:
        return None
    rows = db.session.execute(
        db.select(SmsMessage).where(SmsMessage.appointment_id == appointment.id)
        .order_by(SmsMessage.scheduled_for, SmsMessage.id)).scalars().all()
    found = []
    for row in rows:
        body = None
        if row.body_encrypted:
            try:
                body = at_rest.decrypt(row.body_encrypted, BODY_PURPOSE)
            except at_rest.InvalidToken:  # SECRET_KEY changed since it was queued
                body = None
        found.append(PatientMessage(kind=row.kind, status=row.status,
                                    scheduled_for=row.scheduled_for, sent_at=row.sent_at,
                                    body=body, error=row.error_message))
    return found


def run_sending_pass(now: datetime | None = None) -> int:
    """Send the texts that are due now, so the demo shows the confirmation as sent
    without waiting for the background poll; returns how many were handled."""
    from notifications.sending import send_due

    return send_due(now or utcnow())
