"""The provider launch inside another site's frame, in real Chromium.

A fake EHR page on ``http://localhost:<port>`` (a small server of its own: Chromium's
local network access checks refuse a loopback frame in a page with no address) frames the sandbox's "Start virtual visit" URL on ``http://127.0.0.1``:
another site, so Chromium sends ``Sec-Fetch-Dest: iframe``, ``Sec-Fetch-Site: cross-site``
and the EHR page's origin as ``Referer``. Over plain http the session cookie is
``SameSite=Lax``, which Chromium neither stores nor sends in a cross-site frame: the
same thing a browser blocking third-party cookies does to the https cookie. The https
stack test (tests/stack/) runs the launch that works in the frame.
"""
from __future__ import annotations

import re
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlsplit

import pytest
from playwright.sync_api import expect

from tests.browser.accessibility import serious_violations
from tests.browser.conftest import OUTPUT, start_server, stop_server

pytestmark = pytest.mark.browser

SIZES = [{"width": 360, "height": 740}, {"width": 1280, "height": 800}]


class _EhrPage(BaseHTTPRequestHandler):
    """``/hyperspace?src=URL``: a page that frames URL, as a web EHR's activity does."""

    def do_GET(self):
        src = parse_qs(urlsplit(self.path).query).get("src", [""])[0].replace("'", "%27")
        body = (f"<!doctype html><html lang='en'><title>EHR</title><body style='margin:0'>"
                f"<iframe title='Virtual visit' src='{src}' allow='camera; microphone'"
                f" style='border:0;width:100vw;height:100vh'></iframe></body></html>").encode()
        self.send_response(200)
        self.send_header("Content-Type", "text/html; charset=utf-8")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


@pytest.fixture(scope="module")
def ehr_origin():
    """The fake EHR's origin: localhost, another site than our 127.0.0.1."""
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), _EhrPage)
    thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.05},
                              daemon=True)
    thread.start()
    yield f"http://localhost:{httpd.server_port}"
    httpd.shutdown()
    httpd.server_close()
    thread.join(timeout=5)


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    """A server of its own: the test changes the sandbox endpoint's frame origins."""
    started = start_server(tmp_path_factory.mktemp("frame"))
    yield started
    stop_server(started)


def ehr_page(browser, server, ehr_origin: str, size: dict, appointment: str = "appt-1"):
    """A page of the fake EHR holding the launch in an iframe, and its context."""
    context = browser.new_context(viewport=size, locale="en-US")
    context.set_default_timeout(20_000)
    page = context.new_page()
    launch = f"{server.url}/sandbox/launch/provider/{appointment}"
    page.goto(f"{ehr_origin}/hyperspace?src={launch}")
    return context, page


def framed_page(page):
    """The launch's frame, once it shows a launch page."""
    frame = page.frame_locator("iframe")
    expect(frame.locator('[data-testid="launch-error"]')).to_be_visible()
    return frame, next(f for f in page.frames if f != page.main_frame)


def frame_shot(page, name: str) -> None:
    """The frame as the clinician sees it (a full-page shot of the EHR page can come out
    before the frame paints on a small screen)."""
    OUTPUT.mkdir(parents=True, exist_ok=True)
    page.locator("iframe").screenshot(path=str(OUTPUT / f"{name}.png"))


@pytest.mark.parametrize("size", SIZES, ids=["phone", "desktop"])
def test_a_frame_from_a_site_not_allowed_shows_the_refusal_not_a_blank_frame(browser, server,
                                                                            ehr_origin, size):
    server.flask("endpoints", "frame-origins", "clear", "sandbox")
    server.flask("endpoints", "approve", "sandbox", "--by", "browser-test")
    context, page = ehr_page(browser, server, ehr_origin, size)
    try:
        frame, inner = framed_page(page)

        expect(frame.locator('[data-testid="launch-error"]')).to_have_attribute(
            "data-reason", "frame_not_allowed")
        expect(frame.locator("h1")).to_have_text("This EHR may not show visits inside its window")
        expect(frame.locator("pre")).to_contain_text(
            f"flask endpoints frame-origins add sandbox {ehr_origin}")
        assert serious_violations(inner) == []
        frame_shot(page, f"launch-frame-refused-{size['width']}")
    finally:
        context.close()


@pytest.mark.parametrize("size", SIZES, ids=["phone", "desktop"])
def test_a_cookie_blocked_in_the_frame_offers_a_new_window_that_opens_the_visit(
        browser, server, ehr_origin, size):
    server.flask("endpoints", "frame-origins", "clear", "sandbox")
    server.flask("endpoints", "frame-origins", "add", "sandbox", ehr_origin)
    server.flask("endpoints", "approve", "sandbox", "--by", "browser-test")
    context, page = ehr_page(browser, server, ehr_origin, size)
    try:
        frame, inner = framed_page(page)
        expect(frame.locator('[data-testid="launch-error"]')).to_have_attribute(
            "data-reason", "cookie_blocked")
        assert serious_violations(inner) == []
        frame_shot(page, f"launch-frame-cookie-blocked-{size['width']}")

        with context.expect_page() as opened:
            frame.get_by_test_id("open-in-new-window").click()
        window = opened.value

        window.wait_for_url(re.compile(r"/visit/\d+$"), timeout=30_000)
        expect(window.locator('[data-testid="participant"][data-role="provider"]')).to_have_attribute(
            "data-presence", "connected", timeout=20_000)
    finally:
        context.close()
