"""The admin portal in real Chromium against the real server: an admin adds and edits
endpoints, the sandbox's launches are refused until an analyst approves the endpoint by
signing in to the sandbox EHR, then work; a certificate upload shows its fingerprint and
expiry; changing the client id withdraws the approval and launches are refused again.

`flask demo` (run by ``start_server``) already registers the sandbox as the approved
endpoint "sandbox", and a FHIR base URL can belong to one endpoint only. So the admin's
new endpoint for the sandbox is refused as a duplicate (naming "sandbox"), and the story
goes on with that endpoint: the admin's first edit (an embedding origin) withdraws the
demo's approval, and the analyst approves it again through the sandbox's sign-in. The
server is this module's own, since it changes the demo endpoint other tests launch from.
"""
from __future__ import annotations

import re
from datetime import datetime, timedelta, timezone

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from playwright.sync_api import expect

from tests.browser.accessibility import serious_violations
from tests.browser.conftest import reschedule, screenshot, start_server, stop_server

pytestmark = pytest.mark.browser

PASSWORD = "correct horse battery"


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    live = start_server(tmp_path_factory.mktemp("admin-endpoints"))
    live.flask("admin", "create-user", "adam", "--role", "admin", "--password", PASSWORD)
    live.flask("admin", "create-user", "ana", "--role", "analyst", "--password", PASSWORD)
    yield live
    stop_server(live)


def new_page(browser, width: int = 1280):
    # bypass_csp: axe is injected as an inline script, which the admin CSP forbids.
    context = browser.new_context(locale="en-US", viewport={"width": width, "height": 800},
                                  bypass_csp=True)
    context.set_default_timeout(10_000)
    return context.new_page()


def sign_in(page, server, name: str) -> None:
    page.goto(server.url + "/admin/login")
    page.get_by_label("Username").fill(name)
    page.get_by_label("Password").fill(PASSWORD)
    page.get_by_test_id("login-submit").click()
    page.wait_for_url(server.url + "/admin/")


def assert_accessible(page, label: str) -> None:
    assert serious_violations(page) == [], label


def launch_outcome(page, server) -> str:
    """"Start virtual visit" on the sandbox schedule: 'visit' or the refusal's reason."""
    reschedule(server, "appt-1", datetime.now(timezone.utc))
    page.goto(server.url + "/sandbox")
    row = page.locator('[data-testid="sandbox-appointment"][data-appointment-id="appt-1"]')
    row.get_by_role("link", name=re.compile(r"^Start virtual visit")).click()
    page.wait_for_url(re.compile(r"/(visit/\d+|launch\?.*)$"))
    if re.search(r"/visit/\d+$", page.url):
        return "visit"
    return page.get_by_test_id("launch-error").get_attribute("data-reason")


def certificate_file(tmp_path, days_left: int) -> tuple[str, str]:
    """A self-signed EC certificate as a PEM file; returns its path and colon fingerprint."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "hl7-signing.example.org")])
    now = datetime.now(timezone.utc)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name)
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - timedelta(days=1))
            .not_valid_after(now + timedelta(days=days_left, hours=12))
            .sign(key, hashes.SHA256()))
    path = tmp_path / "hl7-signing.pem"
    path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    digest = cert.fingerprint(hashes.SHA256()).hex().upper()
    return str(path), ":".join(digest[i:i + 2] for i in range(0, len(digest), 2))


def fill_endpoint(page, **fields: str) -> None:
    for field, value in fields.items():
        page.locator(f"#{field}").fill(value)


def test_add_approve_certificate_and_withdraw(server, browser, tmp_path):
    admin = new_page(browser)
    analyst = new_page(browser)
    clinician = new_page(browser)
    sandbox_base = server.url + "/sandbox/fhir"

    # The admin adds the sandbox: already registered by `flask demo`, so refused, nothing lost.
    sign_in(admin, server, "adam")
    assert_accessible(admin, "endpoint list")
    admin.get_by_test_id("endpoint-add").click()
    fill_endpoint(admin, name="sandbox-clinic", fhir_base_url=sandbox_base + "/",
                  client_id="virtual-visits")
    admin.get_by_test_id("endpoint-save").click()
    errors = admin.get_by_test_id("form-errors")
    expect(errors).to_contain_text("already registered as sandbox")
    expect(admin.locator("#fhir_base_url")).to_have_attribute("aria-invalid", "true")
    expect(admin.locator("#name")).to_have_value("sandbox-clinic")
    assert_accessible(admin, "form with errors")
    screenshot(admin, "admin-endpoint-form-errors")
    # A second EHR goes in fine, waiting for approval.
    fill_endpoint(admin, name="epic-test", fhir_base_url="https://fhir.epic-test.example/R4",
                  client_id="epic-client-1")
    admin.get_by_test_id("endpoint-save").click()
    admin.wait_for_url(server.url + "/admin/endpoints/epic-test")
    expect(admin.get_by_test_id("endpoint-approval")).to_have_attribute("data-approved", "false")

    # The admin edits the sandbox endpoint: an embedding origin withdraws the demo approval.
    admin.goto(server.url + "/admin/endpoints/sandbox")
    expect(admin.get_by_test_id("endpoint-approval")).to_have_attribute("data-approved", "true")
    assert_accessible(admin, "endpoint page")
    admin.locator("#allowed_frame_ancestors").fill("https://hyperspace.example.org")
    admin.get_by_test_id("endpoint-save").click()
    expect(admin.get_by_role("status")).to_contain_text("The approval was withdrawn")
    expect(admin.get_by_test_id("endpoint-approval")).to_have_attribute("data-approved", "false")
    assert launch_outcome(clinician, server) == "unapproved_endpoint"

    # The analyst approves by signing in to the sandbox EHR.
    sign_in(analyst, server, "ana")
    analyst.goto(server.url + "/admin/endpoints/sandbox")
    assert_accessible(analyst, "endpoint page, analyst")
    analyst.get_by_test_id("endpoint-approve").click()
    analyst.wait_for_url(server.url + "/admin/endpoints/sandbox")  # back from the sandbox
    expect(analyst.get_by_test_id("endpoint-approval")).to_have_attribute("data-approved", "true")
    expect(analyst.get_by_role("status")).to_contain_text(
        "approved by ana as Practitioner/prac-1")
    assert_accessible(analyst, "approved page")
    screenshot(analyst, "admin-endpoint-approved")
    assert launch_outcome(clinician, server) == "visit"

    # The admin uploads the EHR's certificate and sees its fingerprint and expiry.
    path, fingerprint = certificate_file(tmp_path, days_left=20)
    admin.goto(server.url + "/admin/endpoints/sandbox")
    admin.get_by_test_id("endpoint-certificates-link").click()
    admin.locator("#certificates").set_input_files(path)
    admin.get_by_test_id("certificate-upload").click()
    row = admin.locator(f'[data-testid="certificate-row"][data-fingerprint="{fingerprint}"]')
    expect(row).to_contain_text("Expires in 20 days")
    expect(row).to_contain_text("CN=hl7-signing.example.org")
    expect(admin.get_by_role("status")).to_contain_text("1 certificate added.")
    assert_accessible(admin, "certificates page")
    screenshot(admin, "admin-certificates")

    # Changing the client id withdraws the approval: launches are refused again.
    admin.goto(server.url + "/admin/endpoints/sandbox")
    admin.locator("#client_id").fill("virtual-visits-2")
    admin.get_by_test_id("endpoint-save").click()
    expect(admin.get_by_role("status")).to_contain_text("The approval was withdrawn")
    assert launch_outcome(clinician, server) == "unapproved_endpoint"
    assert "Not approved" in admin.get_by_test_id("endpoint-approval").inner_text()


def test_pages_fit_a_360px_phone(server, browser):
    phone = new_page(browser, width=360)
    sign_in(phone, server, "adam")

    for path, name in (("/admin/", "admin-endpoints-360"),
                       ("/admin/endpoints/sandbox", "admin-endpoint-360"),
                       ("/admin/endpoints/sandbox/certificates", "admin-certificates-360"),
                       ("/admin/endpoints/new", "admin-endpoint-new-360")):
        phone.goto(server.url + path)
        overflow = phone.evaluate(
            "document.documentElement.scrollWidth - document.documentElement.clientWidth")
        assert overflow <= 0, (f"{path} scrolls sideways on a 360 px phone: " + phone.evaluate(
            """() => [...document.querySelectorAll('body *')].filter(e =>
                 e.getBoundingClientRect().right > innerWidth + 1).slice(0, 5)
                 .map(e => e.tagName + '.' + e.className).join(', ')"""))
        assert_accessible(phone, path)
        screenshot(phone, name)
