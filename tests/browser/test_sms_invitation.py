"""A provider texts a guest's invitation link from the visit page on a phone-sized
screen: the page says it was texted, the text (in the outbox) carries the same link, and
a number that cannot be texted is refused with an alert."""
from __future__ import annotations

import json
import re

import pytest
from playwright.sync_api import expect

from tests.browser.accessibility import serious_violations
from tests.browser.conftest import screenshot
from tests.browser.test_provider_visit import launch_visit

pytestmark = pytest.mark.browser


def test_provider_texts_an_invitation_from_a_small_screen(live_app, page):
    page.set_viewport_size({"width": 360, "height": 800})
    appointment_id = launch_visit(live_app, page, "appt-6")
    page.get_by_label("Role").select_option("guest")
    page.get_by_label("Name", exact=True).fill("Maria Example")
    phone = page.get_by_label("Mobile number to text the link to (optional)")

    phone.fill("12")
    page.get_by_role("button", name="Create invitation link").click()
    expect(page.get_by_role("alert")).to_contain_text("phone number")

    phone.fill("(608) 555-0177")
    page.get_by_role("button", name="Create invitation link").click()
    expect(page.get_by_test_id("invite-texted")).to_have_text("Texted the link to them.")

    link = page.locator("#invite-link").input_value()
    assert re.search(r"/j/[\w-]+$", link)
    assert page.evaluate("document.documentElement.scrollWidth") <= 360
    assert serious_violations(page) == []
    screenshot(page, "provider-visit-invitation-texted")
    texts = json.loads(live_app.flask("sms", "outbox", "--json", "--appointment",
                                      str(appointment_id)))
    invitations = [t for t in texts if t["kind"] == "invitation"]
    assert [(t["status"], link in t["body"]) for t in invitations] == [("delivered", True)]
