"""The patient's join page in real Chromium on a small phone: a join link from the CLI, the
camera preview from the fake camera, help when the camera is blocked, the waiting room
before its opening time, accessibility in three languages, and the sandbox's link."""
from __future__ import annotations

import json
import re
import sqlite3
import time
from contextlib import closing
from datetime import datetime, timedelta, timezone

import pytest
import requests
from playwright.sync_api import expect

from tests.browser.accessibility import serious_violations
from tests.browser.conftest import CHROMIUM, CHROMIUM_ARGS, reschedule, screenshot
from visits.models import JoinLink

pytestmark = pytest.mark.browser

PHONE = {"viewport": {"width": 360, "height": 740}, "is_mobile": True, "has_touch": True,
         "device_scale_factor": 2}
ANDROID_CHROME = ("Mozilla/5.0 (Linux; Android 10; K) AppleWebKit/537.36 (KHTML, like Gecko) "
                  "Chrome/156.0.0.0 Mobile Safari/537.36")
VIDEO_PLAYING = """() => { const v = document.querySelector('[data-testid="preview-video"]');
  return v && v.readyState >= 2 && !v.paused && v.videoWidth > 0; }"""


def join_link(live_app, appointment_id: str, start: datetime | None = None) -> str:
    """The visit made known to the app (the sandbox's "Patient link (SMS)" does it), then a
    join link for its patient from `flask links create`."""
    reschedule(live_app, appointment_id, start or datetime.now(timezone.utc))
    made = requests.post(f"{live_app.url}/sandbox/appointments/{appointment_id}/patient-link",
                         timeout=10)
    assert made.status_code == 200, made.text
    visits = json.loads(live_app.flask("appointments", "list", "--json"))
    visit = next(v for v in visits if v["ehr_appointment_id"] == appointment_id)
    patient = next(p for p in visit["participants"] if p["role"] == "patient")
    created = json.loads(live_app.flask("links", "create", str(patient["id"]), "--hours", "3",
                                        "--json"))
    return created["url"]


@pytest.fixture
def phone(browser):
    """A 360 x 740 touch phone in New York, an hour ahead of the Chicago clinic."""
    context = browser.new_context(**PHONE, locale="en-US", timezone_id="America/New_York")
    context.set_default_timeout(10_000)
    yield context.new_page()
    context.close()


@pytest.fixture(scope="module")
def blocking_browser(browser):
    """Chromium whose permission prompts answer "Block", as a patient who tapped it did.
    Fake devices exist, so the failure is the refusal (NotAllowedError), not a missing camera."""
    args = [arg for arg in CHROMIUM_ARGS if arg != "--use-fake-ui-for-media-stream"]
    launched = browser.browser_type.launch(executable_path=CHROMIUM,
                                           args=[*args, "--deny-permission-prompts"])
    yield launched
    launched.close()


def test_link_opens_the_join_page_with_a_live_camera_preview(live_app, phone):
    url = join_link(live_app, "appt-5")

    phone.goto(url)

    expect(phone.get_by_test_id("join-button")).to_be_visible()
    assert phone.url == live_app.url + "/join"
    token = url.rsplit("/", 1)[1]
    assert token not in phone.url
    assert phone.evaluate("history.length") >= 1 and token not in phone.evaluate("location.href")
    expect(phone.get_by_test_id("providers")).to_have_text("Dr. Robin Sampleton")
    expect(phone.get_by_test_id("local-time")).to_contain_text("where you are")
    # The fake-UI flag grants camera and microphone as a returning patient's browser would:
    # the preview starts by itself, with no button to find.
    phone.wait_for_function(VIDEO_PLAYING)
    expect(phone.get_by_test_id("preview-start")).to_be_hidden()
    expect(phone.locator("#preview-status")).to_contain_text("camera and microphone are on")
    expect(phone.get_by_test_id("media-problem")).to_be_hidden()
    expect(phone.get_by_test_id("join-button")).to_be_enabled()
    expect(phone.get_by_test_id("join-button")).to_have_text("Join")
    device_test = phone.get_by_test_id("device-test-link")
    expect(device_test).to_be_visible()
    if device_test.evaluate("el => el.tagName") == "A":
        assert device_test.get_attribute("href").startswith("/device-test")
    else:
        expect(device_test).to_be_disabled()
    overflow = phone.evaluate(
        "document.documentElement.scrollWidth - document.documentElement.clientWidth")
    assert overflow <= 0, "the join page scrolls sideways on a 360 px phone"
    assert serious_violations(phone) == []
    screenshot(phone, "patient-join-phone-en")

    phone.get_by_test_id("join-button").tap()

    expect(phone.get_by_test_id("lobby")).to_be_visible()
    expect(phone.get_by_test_id("lobby")).to_have_attribute("data-state", "waiting")
    expect(phone.locator("#prejoin")).to_be_hidden()
    screenshot(phone, "patient-join-phone-lobby")
    # Opening the link only read; its use and the usage report's join route were written
    # behind by the server's writer, and reach the database.
    used, route = _link_record(live_app, token)
    assert used is not None and route == "sms"


def _link_record(live_app, token: str, timeout: float = 15.0) -> tuple:
    """The link's ``last_used_at`` and its participant's ``join_route``, once written."""
    path = live_app.env["VV_DATABASE_URL"].removeprefix("sqlite:///")
    deadline = time.monotonic() + timeout
    while True:
        with closing(sqlite3.connect(path)) as connection:
            row = connection.execute(
                "SELECT l.last_used_at, p.join_route FROM join_links l JOIN participants p "
                "ON p.id = l.participant_id WHERE l.token_hash = ?",
                (JoinLink.hash_token(token),)).fetchone()
        if (row and row[0] and row[1]) or time.monotonic() > deadline:
            return row or (None, None)
        time.sleep(0.1)


@pytest.mark.parametrize("lang, expected", [("es", "Su videoconsulta"),
                                            ("pt_BR", "Sua consulta por vídeo")])
def test_join_page_is_accessible_in_spanish_and_portuguese(live_app, phone, lang, expected):
    phone.goto(join_link(live_app, "appt-5"))
    phone.get_by_test_id("join-button").wait_for()

    phone.goto(f"{live_app.url}/join?lang={lang}")

    expect(phone.locator("h1").first).to_have_text(expected)
    assert phone.locator("html").get_attribute("lang") == lang.replace("_", "-")
    phone.wait_for_function(VIDEO_PLAYING)
    assert serious_violations(phone) == []
    screenshot(phone, f"patient-join-phone-{lang}")


def test_blocked_camera_shows_how_to_allow_it_in_this_browser(live_app, blocking_browser):
    context = blocking_browser.new_context(**PHONE, locale="en-US", user_agent=ANDROID_CHROME)
    context.set_default_timeout(10_000)
    page = context.new_page()
    page.goto(join_link(live_app, "appt-5"))

    page.get_by_test_id("preview-start").tap()

    problem = page.get_by_test_id("media-problem")
    expect(problem).to_be_visible()
    expect(problem).to_have_attribute("data-kind", "denied")
    expect(problem).to_have_attribute("data-browser", "chrome_android")
    expect(problem).to_contain_text("Camera and microphone are blocked")
    expect(page.get_by_test_id("media-help")).to_contain_text("Permissions")
    page.get_by_text("Help for other browsers").tap()
    expect(problem).to_contain_text("Samsung Internet")
    expect(problem).to_contain_text("Safari on iPhone or iPad")
    expect(page.get_by_test_id("join-button")).to_be_visible()
    assert serious_violations(page) == []
    screenshot(page, "patient-join-camera-blocked")
    context.close()


def test_before_the_waiting_room_opens_the_page_says_when_to_come_back(live_app, phone):
    url = join_link(live_app, "appt-6", start=datetime.now(timezone.utc) + timedelta(hours=3))

    phone.goto(url)

    button = phone.get_by_test_id("join-button")
    expect(button).to_be_disabled()
    expect(button).to_contain_text("The waiting room opens at")
    expect(phone.get_by_test_id("lobby-closed")).to_contain_text("Come back at")
    expect(phone.get_by_test_id("device-test-link")).to_be_visible()
    assert serious_violations(phone) == []
    screenshot(phone, "patient-join-too-early")


def test_sandbox_patient_link_opens_the_join_page(live_app, page):
    reschedule(live_app, "appt-4", datetime.now(timezone.utc))
    page.goto(live_app.url + "/sandbox")
    row = page.locator('[data-testid="sandbox-appointment"][data-appointment-id="appt-4"]')

    row.get_by_test_id("sandbox-patient-link").click()

    link = page.get_by_test_id("join-link")
    expect(link).to_have_value(re.compile(r"/j/[A-Za-z0-9_-]{43}$"))
    assert serious_violations(page) == []
    screenshot(page, "sandbox-patient-link")
    page.goto(link.input_value())
    expect(page.get_by_test_id("join-button")).to_be_visible()
    assert page.url.endswith("/join")


@pytest.mark.parametrize("user_agent, touch_points, expected", [
    (ANDROID_CHROME, 5, "chrome_android"),
    ("Mozilla/5.0 (Linux; Android 13; SM-A515F) AppleWebKit/537.36 (KHTML, like Gecko) "
     "SamsungBrowser/23.0 Chrome/115.0.0.0 Mobile Safari/537.36", 5, "samsung"),
    ("Mozilla/5.0 (iPhone; CPU iPhone OS 17_4 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like "
     "Gecko) Version/17.4 Mobile/15E148 Safari/604.1", 5, "safari_ios"),
    ("Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/605.1.15 (KHTML, like Gecko) "
     "Version/17.4 Safari/605.1.15", 5, "safari_ios"),  # iPadOS asks for the desktop site
    ("Mozilla/5.0 (iPhone; CPU iPhone OS 17_4 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like "
     "Gecko) CriOS/124.0.6367.88 Mobile/15E148 Safari/604.1", 5, "ios_app"),
    ("Mozilla/5.0 (Android 14; Mobile; rv:125.0) Gecko/125.0 Firefox/125.0", 5, "firefox"),
    ("Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/605.1.15 (KHTML, like Gecko) "
     "Version/17.4 Safari/605.1.15", 0, "safari_mac"),
    ("Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) "
     "Chrome/124.0.0.0 Safari/537.36 Edg/124.0.0.0", 0, "chrome"),
])
def test_blocked_camera_help_matches_the_browser(live_app, page, user_agent, touch_points,
                                                 expected):
    page.goto(live_app.url + "/healthz")  # any page of ours: the module loads same-origin

    described = page.evaluate("""async ([ua, touch]) => {
      const media = await import('/static/js/media.js');
      const strings = { denied_title: 'T', denied: 'M', other_title: 'OT', other: 'O' };
      for (const family of ['chrome_android', 'samsung', 'safari_ios', 'ios_app', 'firefox',
                            'safari_mac', 'chrome']) strings['help_' + family] = 'H';
      const error = new DOMException('blocked', 'NotAllowedError');
      return { family: media.browserFamily(ua, touch),
               described: media.describeMediaError(error, strings, ua),
               busy: media.describeMediaError(new DOMException('x', 'NotReadableError'), strings).kind,
               missing: media.describeMediaError(new DOMException('x', 'NotFoundError'), strings).kind,
               odd: media.describeMediaError(new Error('x'), strings).kind };
    }""", [user_agent, touch_points])

    assert described["family"] == expected
    assert described["described"]["kind"] == "denied"
    assert described["described"]["help"] == "H"
    assert (described["busy"], described["missing"], described["odd"]) == \
        ("in_use", "no_device", "other")
