"""Admin sign-in: local accounts (argon2, lockout, no enumeration, rate limit), the
session (fixation, idle timeout, sign-out), CSRF, security headers, the audit page, and
single sign-on with the organization's provider (the sandbox's ``/sandbox/idp``, over
real HTTP)."""
from __future__ import annotations

import json
import re
import time
from datetime import timedelta
from urllib.parse import parse_qs, urlsplit

import pytest
import requests
from sqlalchemy import select

from admin import auth
from admin.models import AdminUser
from extensions import db
from tests.admin_helpers import PASSWORD, create_account, csrf_token, new_session, post_login
from tests.integration.conftest import use_sandbox_idp
from visits.models import AuditLog, utcnow

REFUSAL = "Wrong username or password, or the account is locked for a while."


@pytest.fixture
def app(app_each_db):
    return app_each_db


def audit_rows(app) -> list[tuple[str, str, dict]]:
    with app.app_context():
        return [(row.actor, row.action, row.detail or {}) for row in db.session.scalars(
            select(AuditLog).order_by(AuditLog.id))]


def user_row(app, name: str) -> AdminUser:
    with app.app_context():
        user = db.session.execute(select(AdminUser).filter_by(username=name)).scalar_one()
        db.session.expunge(user)
        return user


# --- accounts ---------------------------------------------------------------------------

def test_create_user_stores_an_argon2id_hash_never_the_password(app, runner):
    create_account(runner, "ada", "analyst")

    user = user_row(app, "ada")
    listed = json.loads(runner.invoke(args=["admin", "list-users", "--json"]).output)
    assert user.role == "analyst"
    assert user.password_hash.startswith("$argon2id$") and PASSWORD not in user.password_hash
    assert listed == [{"username": "ada", "role": "analyst", "sso": False, "locked_until": None,
                       "disabled": False}]
    assert ("admin:cli", "admin.user.create") in [row[:2] for row in audit_rows(app)]
    assert PASSWORD not in json.dumps(audit_rows(app))


@pytest.mark.parametrize("args, message", [
    (["admin", "create-user", "bob", "--password", "short"], "too short"),
    (["admin", "create-user", "  ", "--password", PASSWORD], "empty"),
    (["admin", "create-user", "bob", "--sso-only"], "--sso-only needs --sso-subject"),
    (["admin", "create-user", "bob", "--role", "root", "--password", PASSWORD], "Invalid value"),
])
def test_create_user_refuses_bad_input(app, runner, args, message):
    result = runner.invoke(args=args)

    assert result.exit_code != 0 and message in result.output
    with app.app_context():
        assert db.session.scalars(select(AdminUser)).all() == []


def test_create_user_refuses_a_taken_name_or_sso_subject(runner):
    create_account(runner, "ada", "admin", "--sso-subject", "sub-1")

    again = runner.invoke(args=["admin", "create-user", "ada", "--password", PASSWORD])
    same_subject = runner.invoke(args=["admin", "create-user", "bob", "--password", PASSWORD,
                                       "--sso-subject", "sub-1"])

    assert again.exit_code != 0 and "already exists" in again.output
    assert same_subject.exit_code != 0 and "already linked to 'ada'" in same_subject.output


# --- signing in -------------------------------------------------------------------------

def test_sign_in_opens_the_portal_and_is_recorded(app, client, runner):
    create_account(runner, "ada", "analyst")

    response = post_login(client, "ada", PASSWORD)
    home = client.get("/admin/")

    assert response.status_code == 302 and response.headers["Location"] == "/admin/"
    assert home.status_code == 200
    text = home.get_data(as_text=True)
    assert "ada" in text and "analyst" in text and 'data-testid="admin-logout"' in text
    assert ("admin:ada", "admin.login", {"method": "password"}) in audit_rows(app)
    assert user_row(app, "ada").last_login_at is not None


def test_sign_in_returns_to_the_page_asked_for_but_never_off_site(client, runner):
    create_account(runner)
    asked = client.get("/admin/audit?actor=ada")
    assert asked.status_code == 302
    next_path = parse_qs(urlsplit(asked.headers["Location"]).query)["next"][0]

    back = post_login(client, "ada", PASSWORD, next=next_path)
    client.post("/admin/logout", data={"csrf_token": csrf_token(client, "/admin/")})
    off_site = post_login(client, "ada", PASSWORD, next="//evil.example/admin")

    assert next_path == "/admin/audit?actor=ada"
    assert back.headers["Location"] == "/admin/audit?actor=ada"
    assert off_site.headers["Location"] == "/admin/"


def _refusal_text(response) -> str:
    match = re.search(r'data-testid="login-error">([^<]+)<', response.get_data(as_text=True))
    assert match, response.get_data(as_text=True)
    return match.group(1)


def test_unknown_name_wrong_password_and_locked_account_look_the_same(app, client, runner):
    create_account(runner, "ada")
    create_account(runner, "locked-lou")
    with app.app_context():
        lou = db.session.execute(select(AdminUser).filter_by(username="locked-lou")).scalar_one()
        lou.locked_until = utcnow() + timedelta(minutes=10)
        db.session.commit()

    unknown = post_login(client, "nobody", PASSWORD)
    wrong = post_login(client, "ada", "not the password")
    locked = post_login(client, "locked-lou", PASSWORD)  # the right password, but locked

    assert unknown.status_code == wrong.status_code == locked.status_code == 401
    assert _refusal_text(unknown) == _refusal_text(wrong) == _refusal_text(locked)
    assert REFUSAL in _refusal_text(unknown)
    assert 'role="alert"' in unknown.get_data(as_text=True)
    failures = [(actor, detail["reason"]) for actor, action, detail in audit_rows(app)
                if action == "admin.login.failed"]
    # What was typed as an unknown name is never stored: it may be a misplaced password.
    assert failures == [(f"admin:{auth.UNKNOWN_ACTOR}", "unknown account"),
                        ("admin:ada", "wrong password"), ("admin:locked-lou", "locked")]
    assert "nobody" not in json.dumps(audit_rows(app))


def test_an_unknown_name_takes_as_long_as_a_wrong_password(app, client, runner):
    """Each refusal verifies one argon2 hash, so response time does not reveal names."""
    create_account(runner, "ada")
    app.config["ADMIN_MAX_FAILED_LOGINS"] = 100

    def timed(username: str) -> float:
        token = csrf_token(client)
        started = time.perf_counter()
        client.post("/admin/login", data={"csrf_token": token, "username": username,
                                          "password": "wrong password!"})
        return time.perf_counter() - started

    def one_hash() -> float:
        started = time.perf_counter()
        auth._hasher.verify(auth._DUMMY_HASH, "not-a-real-password")
        return time.perf_counter() - started

    # Interleaved, and the fastest of each kept, so load on a shared machine hits all alike.
    samples = [(timed("ada"), timed("nobody"), one_hash()) for _ in range(5)]
    wrong, unknown, bare = (min(column) for column in zip(*samples))

    assert unknown >= 0.5 * bare and wrong >= 0.5 * bare
    assert 0.25 < unknown / wrong < 4


def test_consecutive_failures_lock_the_account_until_the_lockout_passes(app, client, runner):
    create_account(runner, "ada")
    limit = app.config["ADMIN_MAX_FAILED_LOGINS"]

    for _ in range(limit):
        assert post_login(client, "ada", "wrong password!").status_code == 401
    while_locked = post_login(client, "ada", PASSWORD)
    locked_until = user_row(app, "ada").locked_until
    with app.app_context():  # the lockout's minutes pass
        user = db.session.execute(select(AdminUser).filter_by(username="ada")).scalar_one()
        user.locked_until = utcnow() - timedelta(seconds=1)
        db.session.commit()
    after = post_login(client, "ada", PASSWORD)

    assert limit == 5
    assert while_locked.status_code == 401 and REFUSAL in _refusal_text(while_locked)
    minutes = app.config["ADMIN_LOCKOUT_MINUTES"]
    assert timedelta(minutes=minutes - 1) < locked_until - utcnow() <= timedelta(minutes=minutes)
    assert after.status_code == 302
    details = [detail for _a, action, detail in audit_rows(app) if action == "admin.login.failed"]
    assert details[limit - 1]["locked_minutes"] == minutes
    assert details[-1]["reason"] == "locked"


def test_a_success_resets_the_failure_count(app, client, runner):
    create_account(runner, "ada")

    for _ in range(4):
        post_login(client, "ada", "wrong password!")
    post_login(client, "ada", PASSWORD)
    client.post("/admin/logout", data={"csrf_token": csrf_token(client, "/admin/")})
    for _ in range(4):
        post_login(client, "ada", "wrong password!")

    assert user_row(app, "ada").locked_until is None
    assert post_login(client, "ada", PASSWORD).status_code == 302


def test_cli_unlock_lifts_a_lockout(app, client, runner):
    create_account(runner, "ada")
    for _ in range(5):
        post_login(client, "ada", "wrong password!")

    result = runner.invoke(args=["admin", "unlock", "ada"])

    assert result.exit_code == 0
    assert post_login(client, "ada", PASSWORD).status_code == 302


def test_sign_in_attempts_are_rate_limited_per_client(client):
    token = csrf_token(client)
    statuses = [client.post("/admin/login", data={"csrf_token": token, "username": "x",
                                                  "password": "y"}).status_code
                for _ in range(21)]

    assert statuses[:20] == [401] * 20
    assert statuses[20] == 429
    limited = client.post("/admin/login", data={"csrf_token": token})
    assert "Too many attempts" in limited.get_data(as_text=True)
    assert limited.headers["Cache-Control"] == "no-store"


# --- the session ------------------------------------------------------------------------

def test_sign_in_replaces_the_session_so_a_planted_one_is_worthless(app, client, runner):
    create_account(runner, "ada")
    token_before = csrf_token(client)
    with client.session_transaction() as session:
        session["planted"] = "by someone else"
        session["lang"] = "es"

    post_login(client, "ada", PASSWORD)
    with client.session_transaction() as session:
        after = dict(session)

    assert "planted" not in after and after["lang"] == "es"
    assert after["admin"]["user_id"] == user_row(app, "ada").id
    assert csrf_token(client, "/admin/") != token_before


def test_an_idle_session_is_signed_out_after_the_idle_minutes(app, client, runner):
    create_account(runner, "ada")
    post_login(client, "ada", PASSWORD)
    idle = app.config["ADMIN_IDLE_MINUTES"] * 60

    with client.session_transaction() as session:
        session["admin"] = {**session["admin"], "seen": time.time() - idle + 60}  # 14 min ago
    still_in = client.get("/admin/")
    with client.session_transaction() as session:
        refreshed = session["admin"]["seen"]
        session["admin"] = {**session["admin"], "seen": time.time() - idle - 1}  # 15 min 1 s
    timed_out = client.get("/admin/audit")
    login_page = client.get(timed_out.headers["Location"])

    assert app.config["ADMIN_IDLE_MINUTES"] == 15
    assert still_in.status_code == 200 and refreshed > time.time() - 5
    assert timed_out.status_code == 302
    query = parse_qs(urlsplit(timed_out.headers["Location"]).query)
    assert query["expired"] == ["1"] and query["next"] == ["/admin/audit"]
    assert "signed out after a period without activity" in login_page.get_data(as_text=True)
    with client.session_transaction() as session:
        assert "admin" not in session


def test_sign_out_needs_a_post_with_the_form_token(app, client, runner):
    create_account(runner, "ada")
    post_login(client, "ada", PASSWORD)

    by_link = client.get("/admin/logout")
    forged = client.post("/admin/logout")
    still_in = client.get("/admin/")
    signed_out = client.post("/admin/logout", data={"csrf_token": csrf_token(client, "/admin/")})
    after = client.get("/admin/")

    assert by_link.status_code == 405 and forged.status_code == 400
    assert still_in.status_code == 200
    assert signed_out.status_code == 302 and signed_out.headers["Location"] == "/admin/login"
    assert "You are signed out." in client.get("/admin/login").get_data(as_text=True)
    assert after.status_code == 302 and after.headers["Location"].startswith("/admin/login")
    assert ("admin:ada", "admin.logout", {}) in audit_rows(app)


def test_a_disabled_account_is_signed_out_at_its_next_request(app, client, runner):
    create_account(runner, "ada")
    post_login(client, "ada", PASSWORD)
    with app.app_context():
        db.session.execute(select(AdminUser)).scalar_one().disabled = True
        db.session.commit()

    assert client.get("/admin/").status_code == 302
    assert post_login(client, "ada", PASSWORD).status_code == 401


# --- CSRF and headers -------------------------------------------------------------------

@pytest.mark.parametrize("token", [None, "not-the-token"])
def test_a_form_without_the_right_token_is_refused_with_a_clear_page(client, runner, token):
    create_account(runner, "ada")
    csrf_token(client)  # the session has a token; the form does not carry it
    form = {"username": "ada", "password": PASSWORD}
    if token:
        form["csrf_token"] = token

    response = client.post("/admin/login", data=form)

    assert response.status_code == 400
    text = response.get_data(as_text=True)
    assert "This form has expired or did not come from this site" in text
    assert 'role="alert"' in text and "Reload the page" in text
    assert client.get("/admin/").status_code == 302  # not signed in


@pytest.mark.parametrize("path, status", [("/admin/login", 200), ("/admin/", 302),
                                          ("/admin/no-such-page", 404)])
def test_every_admin_response_carries_the_security_headers(client, path, status):
    response = client.get(path)

    assert response.status_code == status
    csp = response.headers["Content-Security-Policy"]
    assert "frame-ancestors 'none'" in csp and "default-src 'self'" in csp
    assert response.headers["X-Content-Type-Options"] == "nosniff"
    assert response.headers["X-Frame-Options"] == "DENY"
    assert response.headers["Cache-Control"] == "no-store"
    assert response.headers["Referrer-Policy"] == "no-referrer"


def test_pages_outside_admin_keep_their_own_headers(client):
    assert "frame-ancestors 'none'" not in client.get("/healthz").headers.get(
        "Content-Security-Policy", "")


# --- the audit page ---------------------------------------------------------------------

def test_the_audit_page_lists_sign_ins_newest_first_and_filters(app, client, runner):
    create_account(runner, "ada", "analyst")
    post_login(client, "ada", "wrong password!")
    post_login(client, "nobody", "hunter2-secret")
    post_login(client, "ada", PASSWORD)

    page = client.get("/admin/audit").get_data(as_text=True)
    rows = re.findall(r'data-testid="audit-row" data-action="([^"]+)" data-actor="([^"]+)"', page)
    failed = client.get("/admin/audit?action=login.failed").get_data(as_text=True)
    by_ada = client.get("/admin/audit?actor=ada").get_data(as_text=True)

    assert rows[:4] == [("admin.login", "admin:ada"),
                        ("admin.login.failed", f"admin:{auth.UNKNOWN_ACTOR}"),
                        ("admin.login.failed", "admin:ada"),
                        ("admin.user.create", "admin:cli")]
    assert failed.count('data-testid="audit-row"') == 2
    assert by_ada.count('data-testid="audit-row"') == 2
    assert "hunter2" not in page and PASSWORD not in page and "$argon2" not in page


def test_the_audit_page_pages_by_fifty_and_never_shows_secret_values(app, client, runner):
    create_account(runner, "ada")
    with app.app_context():
        for number in range(60):
            auth.record("endpoint.update", target=f"endpoint:ep-{number:02d}", actor="ada",
                        details={"field": "client_id", "client_secret": "s3cr3t-value"})
        db.session.commit()
    post_login(client, "ada", PASSWORD)

    first = client.get("/admin/audit?action=endpoint").get_data(as_text=True)
    second = client.get("/admin/audit?action=endpoint&page=2").get_data(as_text=True)

    assert first.count('data-testid="audit-row"') == 50
    assert second.count('data-testid="audit-row"') == 10
    assert "ep-59" in first and "ep-00" in second and "ep-00" not in first
    assert "60 entries" in first and "Page 1 of 2" in first
    assert 'data-testid="audit-older"' in first and "page=2" in first
    assert "s3cr3t" not in first + second and "[redacted]" in first


def test_the_audit_filter_treats_wildcards_literally(app, client, runner):
    create_account(runner, "ada")
    post_login(client, "ada", PASSWORD)

    everything = client.get("/admin/audit?actor=%25").get_data(as_text=True)

    assert everything.count('data-testid="audit-row"') == 0
    assert "Nothing recorded matches." in everything


# --- single sign-on ---------------------------------------------------------------------

SSO_CLIENT_ID = "vv-admin-sso-test"
SSO_SECRET = "admin-sso-test-secret"
DEMO_SUBJECT = "staff-0001"  # the sandbox provider's demo user


@pytest.fixture(scope="module")
def sso(live_server):
    use_sandbox_idp(live_server, SSO_CLIENT_ID, SSO_SECRET)
    return live_server


@pytest.fixture
def http() -> requests.Session:
    return new_session()


def _set_linked_user(server, subject: str | None, role: str = "analyst") -> None:
    with server.app.app_context():
        db.session.execute(AdminUser.__table__.delete())
        db.session.execute(AuditLog.__table__.delete())
        db.session.add(AdminUser(username="sso-sam", role=role, sso_subject=subject))
        db.session.commit()


def _sso_sign_in(server, http: requests.Session, next_path: str = "/admin/audit"):
    """Login page → our /admin/sso/login → the provider → /admin/sso/callback."""
    page = http.get(f"{server.url}/admin/login", params={"next": next_path})
    button = re.search(r'href="(/admin/sso/login[^"]*)" data-testid="login-sso"', page.text)
    assert button, page.text
    start = http.get(server.url + button.group(1).replace("&amp;", "&"), allow_redirects=False)
    assert start.status_code == 302, start.text
    at_idp = http.get(start.headers["Location"], allow_redirects=False)
    assert at_idp.status_code == 302, at_idp.text
    callback = at_idp.headers["Location"]
    assert callback.startswith(server.url + "/admin/sso/callback?")
    return http.get(callback, allow_redirects=False), callback


def test_login_page_offers_sso_only_when_it_is_configured(client):
    assert 'data-testid="login-sso"' not in client.get("/admin/login").get_data(as_text=True)
    assert client.get("/admin/sso/login").status_code == 503


def test_sso_signs_in_the_linked_account_with_its_own_role(sso, http):
    _set_linked_user(sso, DEMO_SUBJECT, role="analyst")

    answer, _callback = _sso_sign_in(sso, http)
    audit = http.get(sso.url + answer.headers["Location"])

    assert answer.status_code == 302 and answer.headers["Location"] == "/admin/audit"
    assert audit.status_code == 200 and "sso-sam" in audit.text and "analyst" in audit.text
    assert 'data-action="admin.login" data-actor="admin:sso-sam"' in audit.text
    # Roles come only from our rows: an analyst may not use admin-only pages.
    with sso.app.app_context():
        rows = [(r.actor, r.action, r.detail) for r in db.session.scalars(select(AuditLog))]
    assert ("admin:sso-sam", "admin.login", {"method": "sso"}) in rows


def test_sso_with_no_linked_account_is_refused_and_recorded(sso, http):
    _set_linked_user(sso, "someone-else")

    answer, _callback = _sso_sign_in(sso, http)
    after = http.get(sso.url + "/admin/", allow_redirects=False)

    assert answer.status_code == 403
    assert "No admin account is linked to this sign-in" in answer.text
    assert "Ask an administrator" in answer.text and DEMO_SUBJECT in answer.text
    assert "frame-ancestors 'none'" in answer.headers["Content-Security-Policy"]
    assert after.status_code == 302
    with sso.app.app_context():
        rows = [(r.actor, r.action, r.detail) for r in db.session.scalars(select(AuditLog))]
    assert rows == [(f"admin:{auth.UNKNOWN_ACTOR}", "admin.login.failed",
                     {"method": "sso", "reason": "no linked account",
                      "sso_subject": DEMO_SUBJECT})]


def test_an_sso_answer_cannot_be_replayed(sso, http):
    _set_linked_user(sso, DEMO_SUBJECT)
    answer, callback = _sso_sign_in(sso, http)
    assert answer.status_code == 302

    replay = new_session()
    replayed = replay.get(callback, allow_redirects=False)

    assert replayed.status_code == 400
    assert "This sign-in cannot be used" in replayed.text
    assert replay.get(sso.url + "/admin/", allow_redirects=False).status_code == 302
