"""Admin sign-in in Chromium, on a 360x740 phone and a desktop: a local account signs in,
sees the portal, gets a clear error for a wrong password, can do it all from the keyboard,
and signs out; the sign-in and audit pages pass axe under the portal's strict CSP; an
analyst linked to the sandbox provider's demo user signs in with the organization."""
from __future__ import annotations

import uuid

import pytest

from tests.browser.accessibility import serious_violations
from tests.browser.conftest import free_port, screenshot, start_server, stop_server

pytestmark = pytest.mark.browser

PASSWORD = "correct horse battery"
VIEWPORTS = {"phone": {"width": 360, "height": 740}, "desktop": {"width": 1280, "height": 800}}


@pytest.fixture
def admin_name(live_app) -> str:
    name = f"ada-{uuid.uuid4().hex[:6]}"
    live_app.flask("admin", "create-user", name, "--role", "admin", "--password", PASSWORD)
    return name


def _context(browser, viewport: str, **options):
    context = browser.new_context(viewport=VIEWPORTS[viewport], locale="en-US",
                                  is_mobile=viewport == "phone", has_touch=viewport == "phone",
                                  **options)
    context.set_default_timeout(10_000)
    return context


def _watch_csp(page) -> list[str]:
    """Console errors: a blocked style or script would show up here under the CSP."""
    errors: list[str] = []
    page.on("console", lambda message: errors.append(message.text)
            if message.type == "error" else None)
    return errors


def _overflow(page) -> int:
    page.wait_for_load_state("load")  # measured with the stylesheet applied
    return page.evaluate("document.documentElement.scrollWidth - "
                         "document.documentElement.clientWidth")


@pytest.mark.parametrize("viewport", ["phone", "desktop"])
def test_sign_in_see_the_portal_and_sign_out(live_app, browser, admin_name, viewport):
    context = _context(browser, viewport)
    page = context.new_page()
    errors = _watch_csp(page)

    page.goto(live_app.url + "/admin/")
    page.get_by_label("Username").fill(admin_name)
    page.get_by_label("Password").fill("not the password")
    page.get_by_test_id("login-submit").click()
    alert = page.get_by_role("alert")
    alert.wait_for()
    alert_text = alert.inner_text()
    refused_overflow = _overflow(page)
    screenshot(page, f"admin-login-error-{viewport}")
    page.get_by_label("Username").fill(admin_name)
    page.get_by_label("Password").fill(PASSWORD)
    page.get_by_test_id("login-submit").click()
    page.get_by_test_id("admin-logout").wait_for()
    home_url, home_overflow = page.url, _overflow(page)
    screenshot(page, f"admin-home-{viewport}")
    page.get_by_test_id("admin-nav-audit").click()
    page.get_by_test_id("audit-list").wait_for()
    first_row = page.get_by_test_id("audit-row").first
    first_row_text = first_row.inner_text()
    audit_overflow = _overflow(page)
    screenshot(page, f"admin-audit-{viewport}")
    page.get_by_test_id("admin-logout").click()
    page.get_by_text("You are signed out.").wait_for()
    signed_out_url = page.url
    page.goto(live_app.url + "/admin/audit")

    assert "Wrong username or password" in alert_text
    assert home_url == live_app.url + "/admin/"
    assert page.get_by_test_id("admin-nav-endpoints").count() == 0
    assert admin_name in first_row_text and "login" in first_row_text
    assert signed_out_url == live_app.url + "/admin/login"
    assert page.url.startswith(live_app.url + "/admin/login?next=/admin/audit")
    assert refused_overflow <= 0 and home_overflow <= 0 and audit_overflow <= 0
    assert not [e for e in errors if "Content Security Policy" in e], errors
    context.close()


def test_keyboard_only_sign_in_and_sign_out(live_app, browser, admin_name):
    context = _context(browser, "desktop")
    page = context.new_page()
    page.goto(live_app.url + "/admin/login")

    page.wait_for_function("document.activeElement && document.activeElement.id === 'username'")
    page.keyboard.type(admin_name)  # the username field has focus on arrival
    page.keyboard.press("Tab")
    page.keyboard.type(PASSWORD)
    page.keyboard.press("Enter")
    page.get_by_test_id("admin-logout").wait_for()
    for _ in range(30):  # Tab through the page until the sign-out button has focus
        page.keyboard.press("Tab")
        if page.evaluate("document.activeElement.dataset.testid") == "admin-logout":
            break
    focused = page.evaluate("document.activeElement.dataset.testid")
    page.keyboard.press("Enter")
    page.get_by_text("You are signed out.").wait_for()

    assert focused == "admin-logout"
    assert page.url == live_app.url + "/admin/login"
    context.close()


@pytest.mark.parametrize("viewport", ["phone", "desktop"])
def test_sign_in_and_audit_pages_pass_axe(live_app, browser, admin_name, viewport):
    # axe is injected as an inline script, which the admin CSP rightly blocks.
    context = _context(browser, viewport, bypass_csp=True)
    page = context.new_page()

    page.goto(live_app.url + "/admin/login")
    login_clean = serious_violations(page)
    page.get_by_label("Username").fill(admin_name)
    page.get_by_label("Password").fill("wrong password!")
    page.get_by_test_id("login-submit").click()
    page.get_by_role("alert").wait_for()
    error_clean = serious_violations(page)
    page.get_by_label("Username").fill(admin_name)
    page.get_by_label("Password").fill(PASSWORD)
    page.get_by_test_id("login-submit").click()
    page.get_by_test_id("admin-logout").wait_for()
    page.goto(live_app.url + "/admin/audit?action=login")
    page.get_by_test_id("audit-list").wait_for()
    audit_clean = serious_violations(page)

    assert login_clean == [] and error_clean == [] and audit_clean == []
    context.close()


@pytest.fixture(scope="module")
def sso_app(tmp_path_factory):
    """A server whose admin SSO points at its own sandbox provider (demo user staff-0001)."""
    port = free_port()
    server = start_server(tmp_path_factory.mktemp("admin-sso"), port=port,
                          VV_STAFF_SSO_ISSUER=f"http://127.0.0.1:{port}/sandbox/idp",
                          VV_STAFF_SSO_CLIENT_ID="vv-admin-browser",
                          VV_STAFF_SSO_CLIENT_SECRET="admin-browser-sso-secret")
    server.flask("admin", "create-user", "robin", "--role", "analyst",
                 "--sso-subject", "staff-0001", "--sso-only")
    yield server
    stop_server(server)


def test_sign_in_with_the_organization(sso_app, browser):
    context = _context(browser, "phone")
    page = context.new_page()

    page.goto(sso_app.url + "/admin/audit")
    button = page.get_by_role("link", name="Sign in with your organization")
    button.wait_for()
    screenshot(page, "admin-login-sso-phone")
    button.click()
    page.get_by_test_id("admin-logout").wait_for()

    assert page.url == sso_app.url + "/admin/audit"
    assert "robin" in page.get_by_test_id("admin-user").inner_text()
    assert "analyst" in page.get_by_test_id("admin-user").inner_text()
    first_row = page.get_by_test_id("audit-row").first
    assert first_row.get_attribute("data-action") == "admin.login"
    assert "sso" in first_row.inner_text()
    context.close()


@pytest.mark.parametrize("language, heading", [("es", "Endpoints del EHR"),
                                               ("pt_BR", "Endpoints do EHR")])
def test_every_admin_page_reads_in_spanish_and_portuguese_and_passes_axe(
        live_app, browser, admin_name, language, heading):
    # The phone a hospital IT person might have in hand; language chosen with ?lang=.
    context = _context(browser, "phone", bypass_csp=True)
    page = context.new_page()
    page.goto(f"{live_app.url}/admin/login?lang={language}")
    page.locator("#username").fill(admin_name)
    page.locator("#password").fill(PASSWORD)
    page.get_by_test_id("login-submit").click()
    page.get_by_test_id("admin-logout").wait_for()

    home_heading = page.get_by_role("heading", level=1).inner_text()
    found = {}
    for path in ("/admin/", "/admin/endpoints/sandbox", "/admin/endpoints/sandbox/certificates",
                 "/admin/endpoints/sandbox/integration", "/admin/endpoints/sandbox/sms",
                 "/admin/endpoints/sandbox/self-test", "/admin/sms", "/admin/audit"):
        page.goto(live_app.url + path)
        found[path] = (page.evaluate("document.documentElement.lang"),
                       serious_violations(page), _overflow(page))
    screenshot(page, f"admin-audit-phone-{language}")

    assert home_heading == heading
    assert {lang for lang, _v, _o in found.values()} == {language.replace("_", "-")}
    assert {path: v for path, (_l, v, _o) in found.items() if v} == {}
    assert {path: o for path, (_l, _v, o) in found.items() if o > 0} == {}
    context.close()
