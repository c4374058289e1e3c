"""The report pages' browser tests share this: an analyst signed in to the admin portal."""
from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from tests.admin_helpers import sign_in_page

ANALYST, PASSWORD = "ana", "correct horse battery"


def create_analyst(live) -> None:
    live.flask("admin", "create-user", ANALYST, "--role", "analyst", "--password", PASSWORD)


@contextmanager
def signed_in_page(browser, live, lang: str = "en", *, timeout_ms: int = 15_000) -> Iterator:
    """A desktop page (1280 x 800) signed in as the analyst, the portal in ``lang``; closed
    after. The admin CSP is bypassed: axe is injected as an inline script."""
    context = browser.new_context(locale="en-US", viewport={"width": 1280, "height": 800},
                                  bypass_csp=True)
    context.set_default_timeout(timeout_ms)
    page = context.new_page()
    try:
        sign_in_page(page, live.url, ANALYST, PASSWORD, lang)
        yield page
    finally:
        context.close()
