"""Issue 14, item 10: the call on a phone (360 x 740) and on a desktop, measured with
bounding boxes: the other person's video is large, your own picture is a small tile in its
corner, Leave and the other controls are on screen without scrolling, and your own picture
is mirrored the same way everywhere (join preview, waiting room, call, the provider's call,
device test) while nobody else's is."""
from __future__ import annotations

import pytest
from playwright.sync_api import expect

from tests.browser.accessibility import serious_violations
from tests.browser.conftest import screenshot, start_server, stop_server
from tests.browser.test_honest_visit import SCREENS, no_sideways_scroll
from tests.browser.test_provider_visit import launch_visit, patient_token

pytestmark = pytest.mark.browser

MIRROR = "matrix(-1, 0, 0, 1, 0, 0)"


@pytest.fixture(scope="module")
def live_app(tmp_path_factory):
    """A server of its own: these tests admit and end visits."""
    server = start_server(tmp_path_factory.mktemp("call-layout"))
    yield server
    stop_server(server)


def transform(locator) -> str:
    return locator.evaluate("element => getComputedStyle(element).transform")


def assert_call_layout(page, viewport: dict, from_top: bool = True) -> None:
    """The other side large, you small in its corner, every control on screen: wherever
    the page is scrolled (``from_top``: the patient's page, whose call is all it shows), or
    from the call's title down (the provider's page, where the call follows the visit's
    people)."""
    remote = page.get_by_test_id("remote-video")
    expect(remote).to_have_count(1)
    # Let the video's size settle (its metadata arrives after "connected").
    page.wait_for_function("""() => {
      const video = document.querySelector('[data-testid="remote-video"]');
      return video && video.videoWidth > 0;
    }""", timeout=15_000)
    grid = page.locator("#call .video-grid").bounding_box()
    big = remote.bounding_box()
    small = page.locator("#call .tile.self").bounding_box()
    card = page.get_by_test_id("call").bounding_box()
    assert big["width"] >= 0.9 * grid["width"], (big, grid)
    assert big["width"] * big["height"] >= 8 * small["width"] * small["height"], (big, small)
    # The self tile sits inside the others' area, in its bottom right corner.
    assert grid["x"] <= small["x"] and small["x"] + small["width"] <= grid["x"] + grid["width"]
    assert grid["y"] <= small["y"] and small["y"] + small["height"] <= grid["y"] + grid["height"]
    assert small["x"] > grid["x"] + grid["width"] / 2
    assert small["y"] > grid["y"] + grid["height"] / 2
    assert card["width"] <= viewport["width"]
    # The patient's page: wherever it is scrolled. The provider's: from the call's title.
    if from_top:
        places = ["window.scrollTo(0, 0)", "window.scrollTo(0, document.body.scrollHeight)"]
    else:
        places = ["document.querySelector('#call').scrollIntoView({block: 'start'})"]
    for place in places:
        page.evaluate(place)
        for control in (".leave-call", ".toggle-mic", ".toggle-camera"):
            box = page.locator(f"#call {control}").bounding_box()
            assert box["y"] >= 0 and box["y"] + box["height"] <= viewport["height"], (control, box)
            assert box["x"] >= 0 and box["x"] + box["width"] <= viewport["width"], (control, box)
        # The others' video is on screen too, whole, above the controls.
        big = remote.bounding_box()
        controls = page.locator("#call .call-controls").bounding_box()
        if place == places[0]:
            assert big["y"] >= 0 and big["y"] + big["height"] <= controls["y"] + 1, (big, controls)


@pytest.mark.parametrize(("screen", "sandbox_id"), [("phone", "appt-1"), ("desktop", "appt-2")])
def test_the_call_shows_the_others_large_you_small_and_the_controls_on_screen(
        live_app, browser, screen, sandbox_id):
    provider_context = browser.new_context(**SCREENS[screen], locale="en-US")
    provider_context.set_default_timeout(15_000)
    provider = provider_context.new_page()
    provider.on("dialog", lambda dialog: dialog.accept())
    appointment_id = launch_visit(live_app, provider, sandbox_id)
    context = browser.new_context(**SCREENS[screen], locale="en-US")
    context.set_default_timeout(15_000)
    patient = context.new_page()
    errors: list[str] = []
    patient.on("pageerror", lambda error: errors.append(str(error)))
    patient.goto(f"{live_app.url}/j/{patient_token(live_app, appointment_id)}")
    # Allowed already (the fake prompt): the preview starts by itself.
    expect(patient.locator("body")).to_have_attribute("data-preview", "video")

    # Your own picture is a mirror before Join and in the waiting room.
    assert transform(patient.get_by_test_id("preview-video")) == MIRROR
    patient.get_by_test_id("join-button").click()
    expect(patient.get_by_test_id("lobby")).to_have_attribute("data-state", "waiting")
    assert transform(patient.locator("#lobby-preview")) == MIRROR
    provider.get_by_test_id("admit").click()

    call = patient.get_by_test_id("call")
    expect(call).to_have_attribute("data-state", "connected", timeout=20_000)
    expect(provider.get_by_test_id("call")).to_have_attribute("data-state", "connected",
                                                              timeout=20_000)
    viewport = SCREENS[screen]["viewport"]
    screenshot(patient, f"call-layout-patient-{screen}")
    screenshot(provider, f"call-layout-provider-{screen}")
    assert_call_layout(patient, viewport)
    assert_call_layout(provider, viewport, from_top=False)
    for page in (patient, provider):
        assert transform(page.locator("#call .tile.self video")) == MIRROR
        assert transform(page.get_by_test_id("remote-video")) == "none"
    no_sideways_scroll(patient)
    assert serious_violations(patient) == []

    provider.locator("#end-visit").click()

    expect(patient.get_by_test_id("lobby")).to_have_attribute("data-state", "ended")
    assert errors == []
    context.close()
    provider_context.close()


def test_the_device_tests_camera_is_a_mirror_and_its_call_picture_is_not(live_app, browser):
    context = browser.new_context(**SCREENS["phone"], locale="en-US")
    page = context.new_page()
    page.goto(f"{live_app.url}/device-test")

    assert transform(page.locator("#camera-preview")) == MIRROR
    assert transform(page.get_by_test_id("test-call-video")) == "none"
    context.close()
