"""The endpoint self-test: can this EHR and this installation really talk to each other?

Each step is what an EHR analyst would otherwise find out during a failed go-live:
discovery, SMART configuration, our JWKS seen from outside, a backend token, the HL7
certificates, a signed HL7 round trip, a test text and an authorize request. Reachability
steps call our own public URL over real HTTP (as the EHR would), and every HTTP call has a
short timeout so a down EHR makes a red step, never a hung page.

``run_self_test`` takes explicit arguments (no request) so the admin page, a CLI command
or a test can run it; it owns the commits of the temporary HL7 certificate and its
clean-up. Results never carry a phone number, a token or a message body.
"""
from __future__ import annotations

import base64
import hashlib
import html
import logging
import re
import secrets
import time
import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Callable
from urllib.parse import parse_qs, urlsplit
from zoneinfo import ZoneInfo

import requests
from flask_babel import gettext as _
from flask_babel import lazy_gettext as _l

from ehr.models import EhrEndpoint, EndpointCertificate
from extensions import db
from hl7feed.models import Hl7MessageReceipt
from settings import is_loopback
from visits.models import Appointment, utcnow

log = logging.getLogger(__name__)

# Seconds each HTTP call of a step may take; eight steps stay well under a minute.
STEP_TIMEOUT_S = 4.0
# A certificate expiring sooner than this is a warning: rotation takes the EHR team time.
CERT_WARN_DAYS = 30
# Appointment ids of self-test HL7 messages start with this, so they are recognisable.
SELF_TEST_PREFIX = "VV-SELFTEST-"

PASS, WARN, FAIL, SKIPPED = "pass", "warn", "fail", "skipped"


@dataclass(frozen=True)
class StepResult:
    """One step's outcome. ``ok`` is True for pass and warn; ``detail`` says why in words."""

    key: str
    name: str
    ok: bool
    detail: str
    status: str = PASS

    @classmethod
    def passed(cls, key: str, name: str, detail: str) -> StepResult:
        return cls(key, name, True, detail, PASS)

    @classmethod
    def warned(cls, key: str, name: str, detail: str) -> StepResult:
        return cls(key, name, True, detail, WARN)

    @classmethod
    def failed(cls, key: str, name: str, detail: str) -> StepResult:
        return cls(key, name, False, detail, FAIL)

    @classmethod
    def skipped(cls, key: str, name: str, detail: str) -> StepResult:
        return cls(key, name, False, detail, SKIPPED)


class _ShortSession(requests.Session):
    """A session whose every call is capped at ``cap`` seconds, even when the code it
    is handed to (the backend-token client) asks for a longer timeout."""

    def __init__(self, cap: float) -> None:
        super().__init__()
        self.cap = cap

    def request(self, method, url, **kwargs):  # type: ignore[override]
        timeout = kwargs.get("timeout")
        kwargs["timeout"] = self.cap if timeout is None else min(float(timeout), self.cap)
        host = urlsplit(url).hostname or ""
        # Loopback calls (our own server, the sandbox) must never go through a proxy.
        if is_loopback(host):
            kwargs.setdefault("proxies", {"http": "", "https": ""})
        return super().request(method, url, **kwargs)


def _why(exc: Exception, timeout: float) -> str:
    """A connection failure in words (no URL query, no body)."""
    if isinstance(exc, requests.Timeout):
        return _("no answer within %(s)s seconds", s=f"{timeout:g}")
    if isinstance(exc, requests.ConnectionError):
        return _("could not connect (%(kind)s)", kind=type(exc).__name__)
    return type(exc).__name__


def _allowed_url(value: Any) -> bool:
    """https, or plain http on a loopback host (the sandbox, tests)."""
    if not isinstance(value, str):
        return False
    parts = urlsplit(value)
    if not parts.hostname:
        return False
    return parts.scheme == "https" or (parts.scheme == "http" and is_loopback(parts.hostname))


def _short_text(text: str, limit: int = 300) -> str:
    """An EHR error page as one short line of text: its main content when it marks one
    (past headers and menus), tags, scripts and styles dropped."""
    text = text or ""
    main = re.search(r"<main\b[^>]*>(.*?)</main>", text, re.S | re.I)
    if main:
        text = main.group(1)
    text = re.sub(r"<(script|style)\b.*?</\1>", " ", text, flags=re.S | re.I)
    plain = re.sub(r"<[^>]+>", " ", text)
    plain = html.unescape(re.sub(r"\s+", " ", plain)).strip()
    return plain[:limit]


# --- the run -----------------------------------------------------------------------------

@dataclass
class _Run:
    endpoint: EhrEndpoint
    public_base_url: str
    timeout: float
    now: datetime
    http: _ShortSession
    smart_config: dict[str, Any] | None = None


def run_self_test(endpoint: EhrEndpoint, *, public_base_url: str, test_phone: str | None = None,
                  language: str = "en", now: datetime | None = None,
                  timeout: float = STEP_TIMEOUT_S) -> list[StepResult]:
    """Run every step against ``endpoint`` and return their results in order.

    A step that raises unexpectedly is reported red with the error's type; the others
    still run, so one surprise does not hide the rest."""
    run = _Run(endpoint, public_base_url.rstrip("/"), timeout, now or utcnow(),
               _ShortSession(timeout))
    steps: list[Callable[[_Run], StepResult]] = [
        check_discovery, check_smart_configuration, check_jwks, check_backend_token,
        check_certificates, check_hl7_round_trip,
        lambda r: check_test_sms(r, test_phone, language), check_test_launch,
    ]
    results = []
    try:
        for step in steps:
            try:
                results.append(step(run))
            except Exception as exc:  # an edge: one broken step must not hide the others
                db.session.rollback()
                log.exception("self-test step crashed", extra={"endpoint": endpoint.name})
                key, name = _STEP_NAMES[len(results)]
                results.append(StepResult.failed(key, str(name), _("unexpected error: %(kind)s",
                                                              kind=type(exc).__name__)))
    finally:
        run.http.close()
    return results


def step_names() -> list[tuple[str, str]]:
    """(key, heading) of every step, in the order they run."""
    return [(key, str(name)) for key, name in _STEP_NAMES]


_STEP_NAMES: list[tuple[str, Any]] = [
    ("discovery", _l("EHR discovery reachable")),
    ("smart_configuration", _l("SMART configuration usable")),
    ("jwks", _l("Our public keys (JWKS) reachable")),
    ("backend_services", _l("Backend services token")),
    ("certificates", _l("HL7 signing certificates valid")),
    ("hl7", _l("Signed HL7 test message accepted")),
    ("sms", _l("Test text message")),
    ("launch", _l("Test launch accepted by the EHR")),
]


# The steps' keys in order (as recorded in the audit entry), usable without a request.
STEP_KEYS = tuple(key for key, _name in _STEP_NAMES)


def _name(key: str) -> str:
    return next(str(name) for k, name in _STEP_NAMES if k == key)


# --- (a) discovery -----------------------------------------------------------------------

def check_discovery(run: _Run) -> StepResult:
    """GET <fhir base>/.well-known/smart-configuration answers with a JSON object."""
    key, name = "discovery", _name("discovery")
    url = run.endpoint.fhir_base_url.rstrip("/") + "/.well-known/smart-configuration"
    started = time.monotonic()
    try:
        response = run.http.get(url, headers={"Accept": "application/json"},
                                timeout=run.timeout)
    except requests.RequestException as exc:
        return StepResult.failed(key, name, _("%(url)s: %(why)s", url=url,
                                              why=_why(exc, run.timeout)))
    elapsed = int((time.monotonic() - started) * 1000)
    if response.status_code != 200:
        return StepResult.failed(key, name, _("%(url)s answered HTTP %(status)s",
                                              url=url, status=response.status_code))
    try:
        document = response.json()
    except ValueError:
        document = None
    if not isinstance(document, dict):
        return StepResult.failed(key, name, _("%(url)s did not answer with a JSON object",
                                              url=url))
    run.smart_config = document
    return StepResult.passed(key, name, _("%(url)s answered in %(ms)s ms", url=url, ms=elapsed))


# --- (b) SMART configuration ---------------------------------------------------------------

def smart_configuration_problems(document: dict[str, Any]) -> list[str]:
    """What in a discovery document stops our launches (empty: nothing)."""
    problems = []
    for field in ("authorization_endpoint", "token_endpoint"):
        value = document.get(field)
        if not value:
            problems.append(_("%(field)s is missing", field=field))
        elif not _allowed_url(value):
            problems.append(_("%(field)s is not an https URL", field=field))
    issuer = document.get("issuer")
    if issuer is not None and not _allowed_url(issuer):
        problems.append(_("issuer is not an https URL"))
    if document.get("jwks_uri") is not None and not _allowed_url(document.get("jwks_uri")):
        problems.append(_("jwks_uri is not an https URL"))
    response_types = document.get("response_types_supported")
    if isinstance(response_types, list) and "code" not in response_types:
        problems.append(_("response_types_supported does not include code"))
    methods = document.get("code_challenge_methods_supported")
    if not isinstance(methods, list) or "S256" not in methods:
        problems.append(_("code_challenge_methods_supported does not include S256 (PKCE)"))
    auth_methods = document.get("token_endpoint_auth_methods_supported")
    if isinstance(auth_methods, list) and "private_key_jwt" not in auth_methods:
        problems.append(_("token_endpoint_auth_methods_supported does not include "
                          "private_key_jwt, the method Virtual Visits signs in with"))
    return problems


def check_smart_configuration(run: _Run) -> StepResult:
    """The discovery document names what our launch needs: code flow, PKCE S256,
    private_key_jwt, and https endpoints (loopback allowed)."""
    key, name = "smart_configuration", _name("smart_configuration")
    if run.smart_config is None:
        return StepResult.failed(key, name, _("not checked: the discovery document could "
                                              "not be read (see the step above)"))
    problems = smart_configuration_problems(run.smart_config)
    if problems:
        return StepResult.failed(key, name, "; ".join(problems))
    return StepResult.passed(key, name, _("authorize and token endpoints, PKCE S256 and "
                                          "private_key_jwt are all offered"))


# --- (c) our JWKS ----------------------------------------------------------------------------

def check_jwks(run: _Run) -> StepResult:
    """Our JWKS as the EHR fetches it: over HTTP from PUBLIC_BASE_URL, listing our
    current signing key."""
    from ehr import keys

    key, name = "jwks", _name("jwks")
    url = run.public_base_url + "/.well-known/jwks.json"
    current = keys.active_key().kid
    db.session.commit()  # active_key() may have made one; the server must see it
    try:
        response = run.http.get(url, timeout=run.timeout, allow_redirects=False)
    except requests.RequestException as exc:
        return StepResult.failed(key, name, _("%(url)s: %(why)s", url=url,
                                              why=_why(exc, run.timeout)))
    if response.status_code != 200:
        return StepResult.failed(key, name, _("%(url)s answered HTTP %(status)s", url=url,
                                              status=response.status_code))
    try:
        published = response.json().get("keys") or []
    except (ValueError, AttributeError):
        return StepResult.failed(key, name, _("%(url)s did not answer with a JWKS", url=url))
    kids = [k.get("kid") for k in published if isinstance(k, dict)]
    if current not in kids:
        return StepResult.failed(key, name, _(
            "%(url)s does not list our current key %(kid)s: is PUBLIC_BASE_URL pointing at "
            "this installation?", url=url, kid=current))
    return StepResult.passed(key, name, _("%(url)s lists %(count)s key(s), including the "
                                          "current one (%(kid)s)", url=url,
                                          count=len(kids), kid=current))


# --- (d) backend services token -----------------------------------------------------------

def check_backend_token(run: _Run) -> StepResult:
    """A client_credentials token with our private_key_jwt, which write-backs use."""
    from ehr import backend_auth
    from ehr.errors import EhrUnavailable, SmartError, TokenRefused, UntrustedUrl

    key, name = "backend_services", _name("backend_services")
    grants = (run.smart_config or {}).get("grant_types_supported")
    if isinstance(grants, list) and "client_credentials" not in grants:
        return StepResult.skipped(key, name, _(
            "not configured: the EHR does not offer client_credentials (SMART "
            "Backend Services), so write-backs to the chart are not possible"))
    backend_auth.forget(run.endpoint)  # a cached token would prove nothing about today
    try:
        backend_auth.access_token(run.endpoint, session=run.http)
    except TokenRefused as exc:
        return StepResult.failed(key, name, _("the EHR refused the token request: %(error)s",
                                              error=str(exc)))
    except (EhrUnavailable, SmartError, UntrustedUrl) as exc:
        return StepResult.failed(key, name, str(exc))
    finally:
        db.session.commit()  # client_assertion() may have created our first key
    return StepResult.passed(key, name, _("a token for %(scopes)s was issued to client %(id)s",
                                          scopes=backend_auth.BACKEND_SCOPES,
                                          id=run.endpoint.client_id))


# --- (e) certificates -------------------------------------------------------------------------

def check_certificates(run: _Run) -> StepResult:
    """At least one uploaded HL7 certificate, none expired; warn when one expires soon."""
    key, name = "certificates", _name("certificates")
    certificates = list(run.endpoint.certificates)
    if not certificates:
        return StepResult.failed(key, name, _("no certificate uploaded: HL7 messages from this "
                                              "EHR cannot be verified"))
    expired = [c for c in certificates if c.not_after < run.now]
    if expired:
        return StepResult.failed(key, name, _(
            "%(count)s certificate(s) expired, e.g. %(subject)s on %(day)s: upload the "
            "renewed one and remove the old", count=len(expired), subject=expired[0].subject,
            day=f"{expired[0].not_after:%Y-%m-%d}"))
    soonest = min(certificates, key=lambda c: c.not_after)
    days = (soonest.not_after - run.now).days
    if days < CERT_WARN_DAYS:
        return StepResult.warned(key, name, _(
            "%(subject)s expires in %(days)s days (%(day)s): ask the EHR team for the next "
            "one", subject=soonest.subject, days=days, day=f"{soonest.not_after:%Y-%m-%d}"))
    return StepResult.passed(key, name, _("%(count)s certificate(s), the first to expire on "
                                          "%(day)s", count=len(certificates),
                                          day=f"{soonest.not_after:%Y-%m-%d}"))


# --- (f) HL7 round trip ------------------------------------------------------------------------

def _temporary_certificate(endpoint: EhrEndpoint, now: datetime):
    """An EC key and a one-hour self-signed certificate, stored for ``endpoint``."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME,
                                            f"virtual-visits-self-test-{uuid.uuid4().hex[:8]}")])
    certificate = (x509.CertificateBuilder().subject_name(subject).issuer_name(subject)
                   .public_key(key.public_key()).serial_number(x509.random_serial_number())
                   .not_valid_before(now - timedelta(minutes=5))
                   .not_valid_after(now + timedelta(hours=1)).sign(key, hashes.SHA256()))
    der = certificate.public_bytes(serialization.Encoding.DER)
    row = EndpointCertificate(
        endpoint_id=endpoint.id, subject=certificate.subject.rfc4514_string(),
        fingerprint_sha256=hashlib.sha256(der).hexdigest(),
        not_before=certificate.not_valid_before_utc, not_after=certificate.not_valid_after_utc,
        pem=certificate.public_bytes(serialization.Encoding.PEM).decode("ascii"))
    return key, row


def self_test_siu(trigger: str, appointment_id: str, control_id: str, start: datetime,
                  zone: ZoneInfo) -> bytes:
    """A minimal SIU for the self-test appointment: no patient name, no phone."""
    sent = datetime.now(zone).strftime("%Y%m%d%H%M%S")
    local_start = start.astimezone(zone).strftime("%Y%m%d%H%M%S")
    return ("MSH|^~\\&|VV-SELFTEST|VV|VV|VV|" + sent + "||SIU^" + trigger + "|" + control_id
            + "|P|2.5.1\r"
            "SCH|" + appointment_id + "|" + appointment_id + "|||||||30|MIN|^^30^" + local_start
            + "\r"
            "AIP|1||SELFTEST^Self-test^Virtual Visits|||" + local_start + "\r").encode()


def _sign(key, body: bytes) -> str:
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.asymmetric import ec

    return base64.b64encode(key.sign(body, ec.ECDSA(hashes.SHA256()))).decode("ascii")


def _msa(text: str) -> tuple[str, str]:
    """MSA-1 and MSA-3 (the code and the EHR-facing error text) of an ACK."""
    separator = text[3] if len(text) > 3 else "|"
    for segment in text.replace("\n", "\r").split("\r"):
        if segment.startswith("MSA"):
            fields = segment.split(separator)
            return (fields[1] if len(fields) > 1 else "",
                    fields[3] if len(fields) > 3 else "")
    return "", ""


def _post_hl7(run: _Run, key, body: bytes) -> tuple[str | None, str]:
    """POST one signed body; (MSA-1, problem) — MSA-1 None when no ACK came back."""
    url = f"{run.public_base_url}/hl7/v2/{run.endpoint.name}"
    try:
        response = run.http.post(url, data=body, timeout=run.timeout, allow_redirects=False,
                                 headers={"Content-Type": "x-application/hl7-v2+er7",
                                          "X-Signature": _sign(key, body)})
    except requests.RequestException as exc:
        return None, _("%(url)s: %(why)s", url=url, why=_why(exc, run.timeout))
    if response.status_code != 200:
        return None, _("%(url)s answered HTTP %(status)s: %(text)s", url=url,
                       status=response.status_code, text=_short_text(response.text, 120))
    code, error = _msa(response.text)
    return code, error


def _remove_self_test_rows(endpoint_id: int, appointment_id: str, control_ids: list[str],
                           certificate_id: int | None) -> None:
    """Delete the temporary certificate, the self-test appointment (its participants and
    texts go with it) and its HL7 receipts. Commits."""
    from notifications.models import SmsMessage

    db.session.rollback()
    appointments = db.session.execute(db.select(Appointment).where(
        Appointment.endpoint_id == endpoint_id,
        (Appointment.filler_id == appointment_id) | (Appointment.placer_id == appointment_id))
    ).scalars().all()
    for appointment in appointments:
        db.session.execute(db.delete(SmsMessage).where(
            SmsMessage.appointment_id == appointment.id))
        db.session.delete(appointment)
    if control_ids:
        db.session.execute(db.delete(Hl7MessageReceipt).where(
            Hl7MessageReceipt.endpoint_id == endpoint_id,
            Hl7MessageReceipt.control_id.in_(control_ids)))
    if certificate_id is not None:
        db.session.execute(db.delete(EndpointCertificate).where(
            EndpointCertificate.id == certificate_id))
    db.session.commit()


def check_hl7_round_trip(run: _Run) -> StepResult:
    """A signed S12 then S15 for a unique self-test appointment, both acknowledged AA,
    through our public HL7 URL; everything it created is removed afterwards."""
    key_name, name = "hl7", _name("hl7")
    endpoint = run.endpoint
    appointment_id = SELF_TEST_PREFIX + uuid.uuid4().hex[:12]
    control_ids = [f"{appointment_id}-S12", f"{appointment_id}-S15"]
    zone = ZoneInfo(endpoint.site_timezone or "UTC")
    start = run.now + timedelta(days=1)
    key, row = _temporary_certificate(endpoint, run.now)
    endpoint_id = endpoint.id
    certificate_id = None
    try:
        db.session.add(row)
        db.session.commit()  # the intake (maybe another process) must see it
        certificate_id = row.id
        for trigger, control_id in zip(("S12", "S15"), control_ids):
            body = self_test_siu(trigger, appointment_id, control_id, start, zone)
            code, problem = _post_hl7(run, key, body)
            if code is None:
                return StepResult.failed(key_name, name, problem)
            if code != "AA":
                return StepResult.failed(key_name, name, _(
                    "SIU^%(trigger)s was answered %(code)s: %(error)s", trigger=trigger,
                    code=code or "?", error=problem or "-"))
    finally:
        try:
            _remove_self_test_rows(endpoint_id, appointment_id, control_ids, certificate_id)
        except Exception:  # clean-up failing must not mask the step's own result
            db.session.rollback()
            log.exception("self-test HL7 clean-up failed", extra={"endpoint": endpoint.name})
    return StepResult.passed(key_name, name, _(
        "SIU^S12 and SIU^S15 for %(id)s, signed with a temporary certificate, were both "
        "acknowledged AA; the test appointment and certificate were removed",
        id=appointment_id))


# --- (g) test text ----------------------------------------------------------------------------

def check_test_sms(run: _Run, phone: str | None, language: str) -> StepResult:
    """A text to the number the admin typed, through the sender in use."""
    key, name = "sms", _name("sms")
    phone = (phone or "").strip()
    if not phone:
        return StepResult.skipped(key, name, _("no test number was entered"))
    try:
        from notifications import sending
        send_test_message = sending.send_test_message
    except (ImportError, AttributeError):
        return StepResult.failed(key, name, _("SMS sending is not available in this "
                                              "installation (notifications.sending)"))

    def scrub(text: str) -> str:  # an error may echo the number; never show or keep it
        digits = re.sub(r"\D", "", phone)
        text = text.replace(phone, "…")
        return text.replace(digits, "…") if len(digits) >= 4 else text

    try:
        message = send_test_message(run.endpoint, phone, language, run.now)
    except Exception as exc:  # a typed number the service refuses, or the sender failing
        db.session.rollback()
        return StepResult.failed(key, name, scrub(str(exc)) or type(exc).__name__)
    status = str(getattr(message, "status", ""))
    if status in ("sent", "delivered"):
        return StepResult.passed(key, name, _("handed to the %(sender)s sender (status "
                                              "%(status)s)", sender=_sender_name(),
                                              status=status))
    reason = scrub(getattr(message, "error_message", None) or "") or status or "?"
    return StepResult.failed(key, name, _("not sent (%(status)s): %(reason)s",
                                          status=status or "?", reason=reason))


def _sender_name() -> str:
    from flask import current_app

    return str(current_app.config.get("SMS_SENDER", "outbox"))


# --- (h) test launch ----------------------------------------------------------------------------

# Answers that mean the EHR checked our client id and redirect URI and only objects to
# a test request arriving without an EHR launch context.
_LAUNCH_CONTEXT_ERRORS = ("invalid_request", "invalid_scope")


def check_test_launch(run: _Run) -> StepResult:
    """A standalone authorize request (client id, our redirect URI, PKCE) without
    following redirects: a login page or a redirect back to us means the EHR knows our
    client and redirect URI; an error page or ``error=`` says what it objects to."""
    key, name = "launch", _name("launch")
    authorize = (run.smart_config or {}).get("authorization_endpoint")
    if not _allowed_url(authorize):
        return StepResult.failed(key, name, _("not tried: no usable authorization_endpoint in "
                                              "the SMART configuration"))
    redirect_uri = run.public_base_url + "/launch/callback"
    verifier = secrets.token_urlsafe(48)
    challenge = base64.urlsafe_b64encode(
        hashlib.sha256(verifier.encode()).digest()).rstrip(b"=").decode()
    # Standalone: who signs in, nothing more, so no EHR launch context is needed.
    params = {"response_type": "code", "client_id": run.endpoint.client_id,
              "redirect_uri": redirect_uri, "scope": "openid fhirUser",
              "state": secrets.token_urlsafe(16), "aud": run.endpoint.fhir_base_url,
              "code_challenge": challenge, "code_challenge_method": "S256"}
    try:
        response = run.http.get(authorize, params=params, timeout=run.timeout,
                                allow_redirects=False)
    except requests.RequestException as exc:
        return StepResult.failed(key, name, _("%(url)s: %(why)s", url=authorize,
                                              why=_why(exc, run.timeout)))
    if response.status_code in (301, 302, 303, 307, 308):
        location = response.headers.get("Location", "")
        target = urlsplit(location)
        back_to_us = location.startswith(redirect_uri)
        query = parse_qs(target.query)
        error = (query.get("error") or [""])[0]
        description = (query.get("error_description") or [""])[0]
        if not back_to_us:
            return StepResult.passed(key, name, _(
                "the EHR accepted client %(id)s and sent the browser on to %(where)s (its "
                "sign-in)", id=run.endpoint.client_id,
                where=f"{target.scheme}://{target.netloc}{target.path}"))
        if not error:
            return StepResult.passed(key, name, _("the EHR sent the browser back to our "
                                                  "redirect URI without an error"))
        if error in _LAUNCH_CONTEXT_ERRORS and "launch" in description.lower():
            return StepResult.passed(key, name, _(
                "the EHR accepted client %(id)s and the redirect URI; it only asks for an EHR "
                "launch context, as expected for a test without one (%(error)s: %(text)s)",
                id=run.endpoint.client_id, error=error, text=description[:200]))
        return StepResult.failed(key, name, _("the EHR answered %(error)s: %(text)s",
                                              error=error, text=description[:200] or "-"))
    if response.status_code == 200:
        return StepResult.passed(key, name, _("the EHR showed its sign-in page: client and "
                                              "redirect URI accepted"))
    return StepResult.failed(key, name, _("the EHR refused the request (HTTP %(status)s): "
                                          "%(text)s", status=response.status_code,
                                          text=_short_text(response.text) or "-"))


def summary_counts(results: list[StepResult]) -> tuple[int, int, int]:
    """(passed, total, skipped); a warning counts as passed."""
    return (sum(1 for r in results if r.ok), len(results),
            sum(1 for r in results if r.status == SKIPPED))
