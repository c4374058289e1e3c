"""A provider launch inside an EHR's frame: the embedding origin checked before anything
runs, a blocked session cookie told apart from a bad state, and the CLI that sets the
frame origins.

The browser is a ``requests.Session`` sending the headers a browser sends for a frame
load (``Sec-Fetch-Dest: iframe``, ``Sec-Fetch-Site``, ``Referer``); a browser that blocks
the cookie in the frame is a session whose cookies are cleared after ``/launch``.
"""
from __future__ import annotations

import json
from urllib.parse import parse_qs, urlsplit

import pytest
import requests
from sqlalchemy import func, select, text

from ehr.models import EhrEndpoint, LaunchState
from ehr.services import ensure_endpoint
from extensions import db
from ops.framing import FrameLoad, frame_load, origin_of
from provider_launch import launch_states
from tests.integration.test_provider_launch import (  # noqa: F401  (the fixture: both databases)
    Launch,
    assert_refused,
    counts,
    live_server_config,
)
from visits.models import utcnow

EHR_WEB = "https://ehr-web.example.org"
OTHER_SITE = "https://elsewhere.example.net"


def framed(referer: str | None = EHR_WEB + "/hyperspace/activity", site: str = "cross-site"):
    headers = {"Sec-Fetch-Dest": "iframe", "Sec-Fetch-Site": site, "Sec-Fetch-Mode": "navigate"}
    if referer:
        headers["Referer"] = referer
    return headers


@pytest.fixture
def endpoint(live_server):
    """The sandbox as an approved EHR allowed to frame us from EHR_WEB (reset per test)."""
    with live_server.app.app_context():
        ensure_endpoint("sandbox", live_server.url + "/sandbox/fhir", client_id="virtual-visits",
                        scopes="launch openid fhirUser user/*.rs", approved_by="test",
                        frame_ancestors=[EHR_WEB])
        row = db.session.scalar(select(EhrEndpoint).filter_by(name="sandbox"))
        row.allowed_frame_ancestors = [EHR_WEB]
        row.approved_by, row.approved_at = "test", row.approved_at or utcnow()
        db.session.commit()
    return "sandbox"


def set_frame_origins(server, origins: list[str]) -> None:
    with server.app.app_context():
        row = db.session.scalar(select(EhrEndpoint).filter_by(name="sandbox"))
        row.allowed_frame_ancestors = origins
        db.session.commit()


def launch_states_count(server) -> int:
    with server.app.app_context():
        return db.session.scalar(select(func.count()).select_from(LaunchState))


@pytest.fixture
def browser() -> requests.Session:
    http = requests.Session()
    http.trust_env = False
    return http


# --- the embedding origin, from what browsers send ---------------------------------------

@pytest.mark.parametrize(("headers", "expected"), [
    ({}, None),
    ({"Sec-Fetch-Dest": "document", "Sec-Fetch-Site": "cross-site", "Referer": EHR_WEB}, None),
    ({"Sec-Fetch-Dest": "iframe", "Sec-Fetch-Site": "same-origin"}, None),
    ({"Sec-Fetch-Dest": "iframe", "Sec-Fetch-Site": "cross-site",
      "Referer": EHR_WEB + ":443/a?b"}, FrameLoad(EHR_WEB)),
    ({"Sec-Fetch-Dest": "frame", "Sec-Fetch-Site": "same-site",
      "Referer": "https://ehr.visits.example.org/x"}, FrameLoad("https://ehr.visits.example.org")),
    ({"Sec-Fetch-Dest": "iframe", "Sec-Fetch-Site": "cross-site"}, FrameLoad(None)),
    ({"Sec-Fetch-Dest": "iframe", "Sec-Fetch-Site": "cross-site",
      "Referer": "https://visits.example.org/visit/1"}, FrameLoad(None)),
])
def test_a_frame_load_names_the_embedding_origin_when_the_browser_does(headers, expected):
    assert frame_load(headers, "https://visits.example.org") == expected


def test_an_unnamed_embedder_passes_only_where_some_origin_is_allowed():
    assert FrameLoad(None).allowed_by([EHR_WEB])
    assert not FrameLoad(None).allowed_by([])
    assert FrameLoad(EHR_WEB).allowed_by(["https://EHR-web.example.org:443"])
    assert not FrameLoad(OTHER_SITE).allowed_by([EHR_WEB])
    assert origin_of("javascript:alert(1)") is None


# --- refused at /launch before anything runs ---------------------------------------------

@pytest.mark.parametrize(("origins", "referer", "named"), [
    ([EHR_WEB], OTHER_SITE + "/page", OTHER_SITE),
    ([], EHR_WEB + "/page", EHR_WEB),
    ([], None, None),
])
def test_a_frame_from_an_origin_not_allowed_is_refused_before_anything_runs(
        live_server, endpoint, browser, origins, referer, named):
    set_frame_origins(live_server, origins)
    launch_url = Launch(live_server, browser, "appt-1").ehr_launch()
    before, states = counts(live_server), launch_states_count(live_server)

    response = browser.get(launch_url, headers=framed(referer), allow_redirects=False)

    assert_refused(response, 403, "frame_not_allowed")
    # Seen in the frame that asked: no frame-ancestors limit, no X-Frame-Options.
    assert response.headers["Content-Security-Policy"] == "frame-ancestors *"
    assert "X-Frame-Options" not in response.headers
    assert "flask endpoints frame-origins add sandbox" in response.text
    assert "flask endpoints approve sandbox --by YOUR_NAME" in response.text
    if named:
        assert named in response.text
    else:
        assert "A page of another site" in response.text
    assert "Set-Cookie" not in response.headers
    assert counts(live_server) == before and launch_states_count(live_server) == states
    assert "<form" not in response.text and "<button" not in response.text


@pytest.mark.parametrize("headers", [
    framed(),  # the allowed EHR
    framed(referer=None),  # unnamed, and the endpoint allows some origin
    framed(site="same-origin"),  # our own page
    {"Sec-Fetch-Dest": "document", "Sec-Fetch-Site": "cross-site",
     "Referer": OTHER_SITE + "/"},  # top level: frame-ancestors does not apply
    {},  # no Fetch Metadata: the browser's frame-ancestors check decides
])
def test_allowed_or_unframed_launches_go_on_to_the_ehr(live_server, endpoint, browser, headers):
    launch_url = Launch(live_server, browser, "appt-1").ehr_launch()

    response = browser.get(launch_url, headers=headers, allow_redirects=False)

    assert response.status_code == 302, response.text
    assert response.headers["Content-Security-Policy"] == f"frame-ancestors 'self' {EHR_WEB}"


def test_the_refusal_is_in_spanish_for_a_spanish_browser(live_server, endpoint, browser):
    set_frame_origins(live_server, [])
    launch_url = Launch(live_server, browser, "appt-1").ehr_launch()

    response = browser.get(launch_url, headers={**framed(), "Accept-Language": "es"},
                           allow_redirects=False)

    assert_refused(response, 403, "frame_not_allowed")
    assert "Orígenes autorizados a incrustar visitas" in response.text


# --- a blocked session cookie at the callback ---------------------------------------------

def test_a_blocked_cookie_offers_the_same_launch_in_a_new_window(live_server, endpoint,
                                                                 browser):
    flow = Launch(live_server, browser, "appt-1")
    launch_url = flow.ehr_launch()
    ours = browser.get(launch_url, headers=framed(), allow_redirects=False)
    assert ours.status_code == 302
    browser.cookies.clear()  # the browser refused our third-party cookie in the frame
    callback = browser.get(ours.headers["Location"], allow_redirects=False).headers["Location"]

    page = browser.get(callback, headers=framed(), allow_redirects=False)

    assert_refused(page, 400, "cookie_blocked")
    assert page.headers["Content-Security-Policy"] == f"frame-ancestors 'self' {EHR_WEB}"
    assert page.headers["Cache-Control"] == "no-store"
    assert page.headers["Referrer-Policy"] == "no-referrer"
    assert 'data-testid="open-in-new-window"' in page.text and 'target="_blank"' in page.text
    href = page.text.split('data-testid="open-in-new-window"')[0].rsplit('href="', 1)[1]
    href = href.split('"', 1)[0].replace("&amp;", "&")
    expected = parse_qs(urlsplit(launch_url).query)
    assert urlsplit(href).path == "/launch"
    assert parse_qs(urlsplit(href).query) == expected
    # The state was used: the same answer again is a bad state, not a second offer.
    again = browser.get(callback, headers=framed(), allow_redirects=False)
    assert_refused(again, 400, "bad_state")
    # In the new (top-level) window the launch runs as usual and opens the visit.
    top = requests.Session()
    top.trust_env = False
    opened = Launch(live_server, top, "appt-1")
    done = top.get(opened.to_callback(live_server.url + href), allow_redirects=False)
    assert done.status_code == 302 and done.headers["Location"].startswith("/visit/"), done.text


def test_the_cookie_still_decides_and_the_server_copy_is_used_once(live_server, endpoint,
                                                                   browser):
    before = launch_states_count(live_server)

    response = Launch(live_server, browser, "appt-1").run()

    assert response.status_code == 302 and response.headers["Location"].startswith("/visit/")
    assert launch_states_count(live_server) == before


def test_an_unknown_state_without_a_cookie_stays_a_bad_state(live_server, endpoint, browser):
    response = browser.get(f"{live_server.url}/launch/callback?state=nope&code=x",
                           allow_redirects=False)

    assert_refused(response, 400, "bad_state")


def test_a_cookie_without_this_launch_is_a_bad_state_not_a_blocked_cookie(live_server,
                                                                          endpoint, browser):
    flow = Launch(live_server, browser, "appt-1")
    callback = flow.to_callback()
    other = requests.Session()  # another browser, with a session cookie of its own
    other.trust_env = False
    Launch(live_server, other, "appt-1").to_callback()

    response = other.get(callback, allow_redirects=False)

    assert_refused(response, 400, "bad_state")


def test_an_expired_launch_without_a_cookie_says_it_took_too_long(live_server, endpoint,
                                                                  browser):
    flow = Launch(live_server, browser, "appt-1")
    callback = flow.to_callback()
    browser.cookies.clear()
    with live_server.app.app_context():
        db.session.execute(text("UPDATE launch_states SET expires_at = created_at"))
        db.session.commit()

    response = browser.get(callback, allow_redirects=False)

    assert_refused(response, 400, "launch_expired")


def test_the_state_is_hashed_and_the_launch_value_encrypted_at_rest(live_server, endpoint,
                                                                    browser):
    flow = Launch(live_server, browser, "appt-1")
    launch_url = flow.ehr_launch()
    ours = browser.get(launch_url, allow_redirects=False)
    state = parse_qs(urlsplit(ours.headers["Location"]).query)["state"][0]
    launch_value = parse_qs(urlsplit(launch_url).query)["launch"][0]

    with live_server.app.app_context():
        rows = db.session.execute(text("SELECT * FROM launch_states")).all()
        stored = repr(rows)
        row = db.session.get(LaunchState, launch_states.hash_state(state))
        assert row is not None
        assert (row.expires_at - row.created_at).total_seconds() == 600
    assert state not in stored and launch_value not in stored


def test_expired_rows_are_deleted_when_a_later_launch_begins(live_server, endpoint, browser):
    Launch(live_server, browser, "appt-1").to_callback()
    with live_server.app.app_context():
        db.session.execute(text("UPDATE launch_states SET expires_at = created_at"))
        db.session.commit()
    assert launch_states_count(live_server) >= 1

    Launch(live_server, browser, "appt-1").to_callback()

    assert launch_states_count(live_server) == 1


# --- flask endpoints frame-origins --------------------------------------------------------

def test_frame_origins_cli_adds_removes_and_clears(live_server, endpoint):
    runner = live_server.app.test_cli_runner()

    added = runner.invoke(args=["endpoints", "frame-origins", "add", "sandbox",
                                "https://Second.example.org/"])
    listed = runner.invoke(args=["endpoints", "frame-origins", "list", "sandbox", "--json"])

    assert added.exit_code == 0, added.output
    assert "approval was withdrawn" in added.output
    assert json.loads(listed.output) == [EHR_WEB, "https://second.example.org"]

    removed = runner.invoke(args=["endpoints", "frame-origins", "remove", "sandbox", EHR_WEB])
    assert removed.exit_code == 0, removed.output
    assert json.loads(runner.invoke(args=["endpoints", "frame-origins", "list", "sandbox",
                                          "--json"]).output) == ["https://second.example.org"]

    missing = runner.invoke(args=["endpoints", "frame-origins", "remove", "sandbox", OTHER_SITE])
    assert missing.exit_code != 0
    assert "does not allow https://elsewhere.example.net" in missing.output

    cleared = runner.invoke(args=["endpoints", "frame-origins", "clear", "sandbox"])
    assert cleared.exit_code == 0, cleared.output
    assert "none (only our own pages)" in cleared.output
    assert json.loads(runner.invoke(args=["endpoints", "frame-origins", "list", "sandbox",
                                          "--json"]).output) == []
    with live_server.app.app_context():
        actions = db.session.execute(text(
            "SELECT action FROM audit_log WHERE actor = 'admin:cli' "
            "AND target_id = 'sandbox'")).scalars().all()
    assert actions.count("admin.endpoint.update") >= 3


@pytest.mark.parametrize("args", [
    ["add", "no-such-endpoint", EHR_WEB],
    ["add", "sandbox", "https://ehr.example.org/with/path"],
    ["add", "sandbox", "http://plain.example.org"],
    ["clear", "no-such-endpoint"],
])
def test_frame_origins_cli_refuses_with_a_reason(live_server, endpoint, args):
    result = live_server.app.test_cli_runner().invoke(args=["endpoints", "frame-origins", *args])

    assert result.exit_code != 0
    assert "Error:" in result.output


def test_frame_origins_cli_has_help():
    from click.testing import CliRunner

    from ehr.cli import endpoints_cli

    result = CliRunner().invoke(endpoints_cli, ["frame-origins", "--help"])

    assert result.exit_code == 0
    for command in ("add", "remove", "clear", "list"):
        assert command in result.output
    assert "withdraws" in result.output
