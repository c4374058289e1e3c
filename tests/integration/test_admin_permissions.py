"""The permission matrix of /admin, read from ``app.url_map`` so pages added later are
covered without touching this file: signed out, every page sends you to sign in and every
form is refused; an analyst is refused (403) wherever only an admin may go.

Open to everyone: the sign-in page, the organization sign-in (``/admin/sso/*``) and
sign-out (which only ends a session there may not be). The roles a page allows are the
ones its ``@require_role(...)`` names (kept on the view as ``admin_roles``)."""
from __future__ import annotations

from dataclasses import dataclass
from urllib.parse import urlsplit

import pytest
from werkzeug.routing import Rule

from admin.models import AdminRole
from ehr.services import ensure_endpoint
from extensions import db
from tests.admin_helpers import create_account, csrf_token, sign_in

OPEN = {"admin.login", "admin.logout", "admin.sso_login", "admin.sso_callback"}
ENDPOINT_NAME = "epic-test"


@dataclass(frozen=True)
class Page:
    endpoint: str
    path: str
    methods: frozenset[str]
    roles: tuple[AdminRole, ...]

    def allows(self, role: AdminRole) -> bool:
        """``require_role()`` with no roles lets every signed-in user in."""
        return not self.roles or role in self.roles

    def __str__(self) -> str:
        return f"{self.endpoint} {self.path}"


def _path(rule: Rule) -> str:
    """The rule's URL with its parameters filled: endpoint names with a real endpoint."""
    values = {}
    for argument in rule.arguments:
        converter = type(rule._converters[argument]).__name__
        values[argument] = 1 if converter in ("IntegerConverter", "NumberConverter") \
            else ENDPOINT_NAME
    return rule.build(values, append_unknown=False)[1]


def admin_pages(app) -> list[Page]:
    pages = []
    for rule in app.url_map.iter_rules():
        if not rule.rule.startswith("/admin") or rule.endpoint in OPEN:
            continue
        view = app.view_functions[rule.endpoint]
        pages.append(Page(rule.endpoint, _path(rule), frozenset(rule.methods or ()),
                          getattr(view, "admin_roles", None)))
    return sorted(pages, key=str)


@pytest.fixture
def pages(app) -> list[Page]:
    with app.app_context():
        ensure_endpoint(ENDPOINT_NAME, "https://fhir.example.org/api/FHIR/R4",
                        client_id="vv", scopes="launch openid fhirUser")
        db.session.commit()
    return admin_pages(app)


def signed_in(client, runner, role: str):
    """Sign the fixture's ``client`` in as a new account ``<role>-user``."""
    create_account(runner, f"{role}-user", role)
    return sign_in(client, f"{role}-user")


def test_the_matrix_sees_the_pages_of_the_portal(pages):
    endpoints = {page.endpoint for page in pages}

    assert {"admin.home", "admin.audit", "admin.endpoint"} <= endpoints


def test_every_admin_page_is_guarded_by_require_role(pages):
    unguarded = [str(page) for page in pages if page.roles is None]

    assert unguarded == []


def test_signed_out_every_page_redirects_to_sign_in(client, pages):
    for page in pages:
        if "GET" not in page.methods:
            continue
        response = client.get(page.path)

        assert response.status_code == 302, page
        location = urlsplit(response.headers["Location"])
        assert location.path == "/admin/login", page


def test_signed_out_every_form_is_refused(client, pages):
    token = csrf_token(client)
    for page in pages:
        for method in sorted(page.methods - {"GET", "HEAD", "OPTIONS"}):
            with_token = client.open(page.path, method=method, data={"csrf_token": token})
            without = client.open(page.path, method=method, data={})

            assert with_token.status_code == 401, (page, method)
            assert without.status_code == 400, (page, method)
            assert "You are signed out" in with_token.get_data(as_text=True)


@pytest.mark.parametrize("role", [AdminRole.ANALYST, AdminRole.ADMIN])
def test_a_role_is_refused_where_the_page_names_only_other_roles(client, runner, pages, role):
    signed_in(client, runner, role.value)
    token = csrf_token(client, "/admin/")

    for page in pages:
        if page.allows(role):
            continue
        for method in sorted(page.methods - {"HEAD", "OPTIONS"}):
            data = {"csrf_token": token} if method != "GET" else None
            response = client.open(page.path, method=method, data=data)

            assert response.status_code == 403, (page, method)
            assert "Your role cannot do this" in response.get_data(as_text=True)


@pytest.mark.parametrize("role", [AdminRole.ANALYST, AdminRole.ADMIN])
def test_a_role_opens_every_page_it_is_allowed(client, runner, pages, role):
    signed_in(client, runner, role.value)

    for page in pages:
        if not page.allows(role) or "GET" not in page.methods:
            continue
        response = client.get(page.path)

        assert response.status_code not in (302, 401, 403), page


def test_configuration_changes_are_for_admins_only(pages):
    """Analysts approve; they do not configure: every admin-only page refuses them."""
    admin_only = [page for page in pages if page.roles == (AdminRole.ADMIN,)]

    assert admin_only, "no page is restricted to admins yet"
