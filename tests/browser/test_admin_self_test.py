"""An admin copies an integration value and runs the self-test against the sandbox EHR
that `flask demo` registered, in a real browser against the real (gevent) server."""
from __future__ import annotations

import uuid
from datetime import datetime, timedelta, timezone

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from playwright.sync_api import expect

from tests.admin_helpers import sign_in_page
from tests.browser.accessibility import serious_violations
from tests.browser.conftest import screenshot

PASSWORD = "browser-admin-password-123"


def _upload_certificate(live_app, tmp_path) -> None:
    """The EHR's HL7 signing certificate, as the admin uploads it with `flask certs add`."""
    key = ec.generate_private_key(ec.SECP256R1())
    now = datetime.now(timezone.utc)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "sandbox-hl7")])
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name)
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - timedelta(days=1)).not_valid_after(now + timedelta(days=365))
            .sign(key, hashes.SHA256()))
    path = tmp_path / "sandbox-hl7.pem"
    path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    live_app.flask("certs", "add", "sandbox", str(path))


def test_admin_copies_a_value_and_every_self_test_step_passes(live_app, browser, tmp_path):
    username = f"admin-{uuid.uuid4().hex[:6]}"
    live_app.flask("admin", "create-user", username, "--role", "admin", "--password", PASSWORD)
    _upload_certificate(live_app, tmp_path)
    # bypass_csp: the axe script is injected inline, which the admin pages' CSP forbids.
    context = browser.new_context(locale="en-US", bypass_csp=True)
    context.grant_permissions(["clipboard-read", "clipboard-write"], origin=live_app.url)
    context.set_default_timeout(15_000)
    page = context.new_page()
    try:
        sign_in_page(page, live_app.url, username, PASSWORD)
        expect(page.get_by_test_id("admin-user")).to_contain_text(username)

        page.goto(f"{live_app.url}/admin/endpoints/sandbox/integration")
        page.get_by_role("button", name="Copy Provider launch URL").click()

        expect(page.get_by_role("status").filter(has_text="Copied")).to_contain_text(
            "Copied: Provider launch URL")
        assert page.evaluate("navigator.clipboard.readText()") == f"{live_app.url}/launch"
        assert serious_violations(page) == []

        page.goto(f"{live_app.url}/admin/endpoints/sandbox/self-test")
        page.get_by_label("Test phone number (optional)").fill("+1 608 555 0123")
        page.get_by_test_id("run-self-test").click()

        summary = page.get_by_test_id("self-test-summary")
        expect(summary).to_have_text("8 of 8 steps passed", timeout=40_000)
        steps = page.get_by_test_id("self-test-step")
        expect(steps).to_have_count(8)
        statuses = {steps.nth(i).get_attribute("data-step"): steps.nth(i).get_attribute(
            "data-status") for i in range(8)}
        details = page.get_by_test_id("self-test-detail").all_inner_texts()
        assert set(statuses.values()) == {"pass"}, (statuses, details)
        expect(page.get_by_role("heading", name="Signed HL7 test message accepted")).to_be_visible()
        assert "608 555 0123" not in page.content()
        assert serious_violations(page) == []

        page.set_viewport_size({"width": 360, "height": 740})
        assert page.evaluate("document.documentElement.scrollWidth") <= 360
        screenshot(page, "admin-self-test-360")
        page.goto(f"{live_app.url}/admin/endpoints/sandbox/integration")
        assert page.evaluate("document.documentElement.scrollWidth") <= 360
        screenshot(page, "admin-integration-360")
    finally:
        context.close()
