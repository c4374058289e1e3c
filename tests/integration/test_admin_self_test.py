"""The endpoint self-test, over real HTTP: our own server answers the JWKS and HL7 steps,
the sandbox EHR (served by the same app under /sandbox/fhir) the SMART ones, and small
local servers stand in for a down EHR and a badly configured one."""
from __future__ import annotations

import re
import socket
import uuid
from contextlib import contextmanager
from datetime import datetime, timedelta, timezone

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from admin import checks
from ehr.models import EndpointCertificate
from extensions import db
from hl7feed.models import Hl7MessageReceipt
from tests.admin_helpers import create_account, csrf_from, signed_in_session
from tests.local_http import JsonHandler, serving
from visits.models import Appointment, AuditLog

TEST_PHONE = "+1 608 555 0123"


def _certificate_pem(days: int) -> bytes:
    key = ec.generate_private_key(ec.SECP256R1())
    now = datetime.now(timezone.utc)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, f"epic-{uuid.uuid4().hex[:6]}")])
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name)
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - timedelta(days=1)).not_valid_after(now + timedelta(days=days))
            .sign(key, hashes.SHA256()))
    return cert.public_bytes(serialization.Encoding.PEM)


@pytest.fixture(scope="module")
def sandbox(live_server):
    """The sandbox registered as `flask demo` does, with an HL7 certificate uploaded."""
    from hl7feed import certificates
    from ehr.services import ensure_endpoint
    from sandbox_ehr.clients import APP_CLIENT_ID, register_app_client
    from sandbox_ehr.common import fhir_base

    with live_server.app.app_context():
        register_app_client()
        ensure_endpoint("sandbox", fhir_base(), client_id=APP_CLIENT_ID,
                        scopes="launch openid fhirUser user/*.rs user/AuditEvent.c",
                        approved_by="flask demo", site_timezone="America/Chicago")
        certificates.add_certificates("sandbox", [("epic.pem", _certificate_pem(365))])
    create_account(live_server.app, "st-admin", "admin")
    create_account(live_server.app, "st-analyst", "analyst")
    return "sandbox"


@pytest.fixture(scope="module")
def broken_ehr():
    """A FHIR server whose smart-configuration is reachable but unusable."""
    document = {"issuer": "http://ehr.example.org/fhir",
                "authorization_endpoint": "http://ehr.example.org/authorize",
                "code_challenge_methods_supported": ["plain"],
                "grant_types_supported": ["authorization_code"],
                "token_endpoint_auth_methods_supported": ["client_secret_basic"]}

    class Handler(JsonHandler):
        def do_GET(self):  # noqa: N802
            if self.path != "/fhir/.well-known/smart-configuration":
                self.send_error(404)
                return
            self.send_json(200, document)

    with serving(Handler) as base:
        yield base


def _closed_port_url() -> str:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    return f"http://127.0.0.1:{port}/fhir"


def _endpoint(server, name: str, fhir_base: str, *, client_id: str = "vv",
              approved: bool = True) -> str:
    from ehr.services import ensure_endpoint

    with server.app.app_context():
        ensure_endpoint(name, fhir_base, client_id=client_id, scopes="launch openid",
                        approved_by="tester" if approved else None)
    return name


def _run(server, name: str, *, public: str | None = None, phone: str | None = None
         ) -> dict[str, checks.StepResult]:
    """The self-test service, as the page calls it, keyed by step."""
    from ehr.services import get_endpoint

    with server.app.test_request_context():
        results = checks.run_self_test(get_endpoint(name), public_base_url=public or server.url,
                                       test_phone=phone, timeout=3.0)
        db.session.remove()
    assert [r.key for r in results] == list(checks.STEP_KEYS)
    return {r.key: r for r in results}


def _leftovers(server, name: str) -> dict[str, int]:
    from ehr.services import get_endpoint

    with server.app.app_context():
        endpoint = get_endpoint(name)
        counts = {
            "certs": db.session.scalar(db.select(db.func.count()).select_from(
                EndpointCertificate).where(EndpointCertificate.endpoint_id == endpoint.id,
                                           EndpointCertificate.subject.like("%self-test%"))),
            "appointments": db.session.scalar(db.select(db.func.count()).select_from(
                Appointment).where(Appointment.filler_id.like(f"{checks.SELF_TEST_PREFIX}%"))),
            "receipts": db.session.scalar(db.select(db.func.count()).select_from(
                Hl7MessageReceipt).where(
                Hl7MessageReceipt.control_id.like(f"{checks.SELF_TEST_PREFIX}%"))),
        }
        db.session.remove()
    return counts


def _steps(html: str) -> dict[str, str]:
    return dict(re.findall(r'data-testid="self-test-step" data-step="(\w+)" '
                           r'data-status="(\w+)"', html))


# --- the page -------------------------------------------------------------------------------

def test_admin_runs_it_against_the_sandbox_and_every_step_passes(live_server, sandbox):
    http = signed_in_session(live_server, "st-admin")
    form = http.get(f"{live_server.url}/admin/endpoints/sandbox/self-test").text

    response = http.post(f"{live_server.url}/admin/endpoints/sandbox/self-test", data={
        "csrf_token": csrf_from(form), "test_phone": TEST_PHONE, "language": "es"})

    assert response.status_code == 200
    html = response.text
    assert _steps(html) == {key: "pass" for key in checks.STEP_KEYS}, \
        re.findall(r'data-testid="self-test-detail">([^<]*)<', html)
    assert re.search(r'role="status" data-testid="self-test-summary"[^>]*>8 of 8 steps passed<',
                     html)
    assert html.count("<h3>") == 8 and html.count("✓ Passed") == 8
    assert "608 555 0123" not in html and "6085550123" not in html
    assert _leftovers(live_server, "sandbox") == {"certs": 0, "appointments": 0, "receipts": 0}
    with live_server.app.app_context():
        from notifications.models import SmsMessage

        text = db.session.execute(db.select(SmsMessage).filter_by(kind="test")
                                  .order_by(SmsMessage.id.desc()).limit(1)).scalar_one()
        assert (text.language, text.status) == ("es", "delivered")
        entry = db.session.execute(db.select(AuditLog).filter_by(
            action="admin.endpoint.self_test", target_id="sandbox")
            .order_by(AuditLog.id.desc()).limit(1)).scalar_one()
        assert entry.actor == "admin:st-admin"
        assert entry.detail == {key: True for key in checks.STEP_KEYS}
        db.session.remove()


def test_analyst_sees_the_last_run_but_cannot_start_one(live_server, sandbox):
    admin = signed_in_session(live_server, "st-admin")
    form = admin.get(f"{live_server.url}/admin/endpoints/sandbox/self-test").text
    admin.post(f"{live_server.url}/admin/endpoints/sandbox/self-test",
               data={"csrf_token": csrf_from(form), "test_phone": ""})
    analyst = signed_in_session(live_server, "st-analyst")

    page = analyst.get(f"{live_server.url}/admin/endpoints/sandbox/self-test").text
    refused = analyst.post(f"{live_server.url}/admin/endpoints/sandbox/self-test",
                           data={"csrf_token": csrf_from(page)})

    assert "run-self-test" not in page
    assert "Run by st-admin" in page
    last = dict(re.findall(r'data-testid="self-test-last-step" data-step="(\w+)">[^<]*'
                           r'<span class="(status-\w+)"', page))
    assert last["sms"] == "status-bad"  # skipped: no number was typed
    assert last["hl7"] == "status-ok"
    assert refused.status_code == 403


# --- each step red ----------------------------------------------------------------------------

def test_a_down_ehr_fails_fast_with_the_reason(live_server):
    name = _endpoint(live_server, f"down-{uuid.uuid4().hex[:6]}", _closed_port_url())

    results = _run(live_server, name)

    assert results["discovery"].status == "fail"
    assert "could not connect" in results["discovery"].detail
    assert "not checked" in results["smart_configuration"].detail
    assert results["backend_services"].status == "fail"
    assert results["launch"].status == "fail"
    assert results["jwks"].status == "pass"  # our side is fine
    assert results["sms"].status == "skipped"


def test_a_broken_smart_configuration_lists_each_problem(live_server, broken_ehr):
    name = _endpoint(live_server, f"broken-{uuid.uuid4().hex[:6]}", broken_ehr + "/fhir")

    results = _run(live_server, name)

    assert results["discovery"].status == "pass"
    detail = results["smart_configuration"].detail
    assert results["smart_configuration"].status == "fail"
    for problem in ("token_endpoint is missing", "authorization_endpoint is not an https URL",
                    "issuer is not an https URL", "S256", "private_key_jwt"):
        assert problem in detail
    assert results["backend_services"].status == "skipped"
    assert "not configured" in results["backend_services"].detail
    assert "no usable authorization_endpoint" in results["launch"].detail


def test_jwks_step_fails_when_the_public_url_is_not_this_installation(live_server, sandbox,
                                                                      broken_ehr):
    results = _run(live_server, sandbox, public=broken_ehr)

    assert results["jwks"].status == "fail"
    assert "HTTP 404" in results["jwks"].detail


@contextmanager
def _sandbox_alias(server, client_id: str):
    """The sandbox reached as "localhost" (another FHIR base URL) under ``client_id``."""
    from ehr.services import get_endpoint

    port = server.url.rsplit(":", 1)[1]
    name = _endpoint(server, f"alias-{uuid.uuid4().hex[:6]}",
                     f"http://localhost:{port}/sandbox/fhir", client_id=client_id)
    try:
        yield name
    finally:
        with server.app.app_context():
            db.session.delete(get_endpoint(name))
            db.session.commit()
            db.session.remove()


def test_unknown_client_is_refused_for_backend_token_and_launch(live_server):
    with _sandbox_alias(live_server, "not-registered") as name:
        results = _run(live_server, name)

    assert results["discovery"].status == "pass"
    assert results["backend_services"].status == "fail"
    assert "refused" in results["backend_services"].detail
    assert results["launch"].status == "fail"
    assert "Unknown client_id" in results["launch"].detail


@pytest.mark.parametrize(("days", "status", "words"), [
    (None, "fail", "no certificate uploaded"),
    (-3, "fail", "expired"),
    (10, "warn", "expires in"),
    (200, "pass", "1 certificate(s)"),
])
def test_certificate_step(live_server, broken_ehr, days, status, words):
    from ehr.services import get_endpoint

    suffix = uuid.uuid4().hex[:6]
    name = _endpoint(live_server, f"certs-{suffix}", f"{broken_ehr}/certs-{suffix}")
    if days is not None:
        now = datetime.now(timezone.utc)
        with live_server.app.app_context():
            db.session.add(EndpointCertificate(
                endpoint_id=get_endpoint(name).id, subject="CN=epic", pem="-",
                fingerprint_sha256=uuid.uuid4().hex, not_before=now - timedelta(days=400),
                not_after=now + timedelta(days=days)))
            db.session.commit()
            db.session.remove()

    result = _run(live_server, name)["certificates"]

    assert result.status == status and words in result.detail
    assert result.ok == (status != "fail")


def test_hl7_step_fails_when_the_intake_refuses_and_still_cleans_up(live_server):
    # Not approved: the intake answers 404, as it does for an endpoint it does not trust.
    name = _endpoint(live_server, f"unapproved-{uuid.uuid4().hex[:6]}", _closed_port_url(),
                     approved=False)

    result = _run(live_server, name)["hl7"]

    assert result.status == "fail"
    assert "HTTP 404" in result.detail and "unknown or unapproved endpoint" in result.detail
    assert _leftovers(live_server, name)["certs"] == 0


def test_sms_step_fails_for_a_number_that_cannot_be_texted_without_echoing_it(live_server,
                                                                               sandbox):
    result = _run(live_server, sandbox, phone="+1 608 555")["sms"]

    assert result.status == "fail"
    assert "not valid" in result.detail or "not a phone number" in result.detail
    assert "608 555" not in result.detail


def test_launch_step_reports_the_ehrs_error_from_the_redirect(live_server, sandbox):
    from sandbox_ehr.clients import APP_CLIENT_ID

    # The sandbox requires aud to be its own FHIR base, which "localhost" is not.
    with _sandbox_alias(live_server, APP_CLIENT_ID) as name:
        result = _run(live_server, name)["launch"]

    assert result.status == "fail"
    assert "invalid_request" in result.detail and "aud" in result.detail
