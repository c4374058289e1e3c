"""Issue 14, "weight": the device test page loads only the script it uses. Opening it
fetches its small entry module; the checks and the socket client come when Start is
pressed (the socket client only for the connection check), at 360 x 740 and on a desktop."""
from __future__ import annotations

import re

import pytest
from playwright.sync_api import expect

from tests.browser.accessibility import serious_violations
from tests.browser.test_honest_visit import SCREENS

pytestmark = pytest.mark.browser


def scripts(page) -> set[str]:
    return set(page.evaluate("""() => performance.getEntriesByType('resource')
      .map(entry => entry.name.split('?')[0]).filter(url => url.endsWith('.js'))
      .map(url => url.split('/static/')[1])"""))


@pytest.mark.parametrize("screen", ["phone", "desktop"])
def test_the_device_test_loads_its_checks_only_when_started(live_app, browser, screen):
    context = browser.new_context(**SCREENS[screen], locale="en-US")
    context.set_default_timeout(15_000)
    page = context.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda error: errors.append(str(error)))
    page.goto(f"{live_app.url}/device-test")
    page.wait_for_load_state("networkidle")

    at_load = scripts(page)
    page.get_by_test_id("device-test-start").click()
    page.get_by_test_id("speaker-yes").click()
    expect(page.get_by_test_id("check-connection")).to_have_attribute(
        "data-status", re.compile("^(pass|warn|fail)$"), timeout=60_000)

    assert at_load == {"device_test/device_test.js"}, at_load
    assert {"device_test/checks.js", "device_test/grading.js", "js/media.js",
            "js/socket.js", "vendor/socket.io-4.8.4.esm.min.js"} <= scripts(page)
    assert serious_violations(page) == []
    assert errors == []
    context.close()
