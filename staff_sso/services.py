"""Staff sign-in, start to finish, without Flask's request: the routes pass the settings,
the URLs and the session mapping in, so the launch, the admin portal and tests can all
call these.

``start_login`` builds the redirect to the provider, ``complete_login`` checks its answer
and returns who signed in; ``link_for`` / ``link_identity`` / ``record_use`` keep the
EHR user ↔ account links. Failures are ``SsoFailed`` with a reason code for the page.
"""
from __future__ import annotations

import hmac
import logging
import time
from dataclasses import dataclass, field
from typing import Any, Mapping, MutableMapping

from ehr.launch import safe_error_code
from ehr.models import EhrEndpoint
from extensions import db
from ops import pending as held
from staff_sso import oidc
from staff_sso.models import StaffIdentityLink
from staff_sso.oidc import PendingLogin, StaffIdentity
from visits.models import utcnow

log = logging.getLogger(__name__)

PENDING_KEY = "staff_sso_pending"
IDENTITY_KEY = "staff_sso_identity"
# Sign-ins begun but not finished; more than a few at once means abandoned attempts.
MAX_PENDING = 3


class SsoFailed(Exception):
    """A sign-in that cannot go on. ``reason`` picks the page; ``detail`` holds the few
    values it shows (an OAuth error code), never a token or a claim."""

    def __init__(self, reason: str, status: int = 400, **detail: str) -> None:
        super().__init__(reason)
        self.reason = reason
        self.status = status
        self.detail = detail


class LinkConflict(Exception):
    """The EHR user is already linked to another organization account."""


@dataclass(frozen=True)
class SsoConfig:
    """The STAFF_SSO_* settings; ``issuer`` None means single sign-on is off."""

    issuer: str | None
    client_id: str | None
    client_secret: str | None = field(repr=False)
    scopes: str

    @classmethod
    def from_mapping(cls, config: Mapping[str, Any]) -> SsoConfig:
        return cls(issuer=config.get("STAFF_SSO_ISSUER") or None,
                   client_id=config.get("STAFF_SSO_CLIENT_ID") or None,
                   client_secret=config.get("STAFF_SSO_CLIENT_SECRET") or None,
                   scopes=" ".join(str(config.get("STAFF_SSO_SCOPES") or "openid").split()))

    @property
    def is_configured(self) -> bool:
        return bool(self.issuer and self.client_id)


@dataclass(frozen=True)
class LoginStep:
    """Where to send the browser, and what to keep until it comes back."""

    url: str
    pending: PendingLogin


# --- sign-in ----------------------------------------------------------------------------

def start_login(config: SsoConfig, *, redirect_uri: str, next_url: str) -> LoginStep:
    """Discover the provider and build its authorize redirect (nothing is stored)."""
    if not config.is_configured:
        raise SsoFailed("not_configured", 503)
    try:
        metadata = oidc.discover(config.issuer or "")
    except oidc.IdpUnavailable as exc:
        _log_failure("idp_unavailable", exc)
        raise SsoFailed("idp_unavailable", 503) from None
    except oidc.IdpMisconfigured as exc:
        _log_failure("idp_misconfigured", exc)
        raise SsoFailed("idp_misconfigured", 502) from None
    url, pending = oidc.authorization_request(
        metadata, client_id=config.client_id or "", client_secret=config.client_secret,
        redirect_uri=redirect_uri, scope=config.scopes, next_url=next_url)
    return LoginStep(url=url, pending=pending)


def complete_login(config: SsoConfig, pending: PendingLogin, *, code: str | None,
                   error: str | None, redirect_uri: str) -> StaffIdentity:
    """Check the provider's answer for ``pending`` and return who signed in."""
    if not config.is_configured:
        raise SsoFailed("not_configured", 503)
    if pending.is_expired():
        raise SsoFailed("login_expired", 400)
    if pending.issuer.rstrip("/") != (config.issuer or "").rstrip("/"):
        raise SsoFailed("bad_state", 400)  # the issuer changed while the user was away
    if error:
        raise SsoFailed("idp_refused", 400, error=safe_error_code(error))
    if not code:
        raise SsoFailed("missing_code", 400)
    try:
        id_token = oidc.exchange_code(pending, code=code, client_id=config.client_id or "",
                                      client_secret=config.client_secret,
                                      redirect_uri=redirect_uri)
        identity = oidc.verify_id_token(id_token, pending, client_id=config.client_id or "")
    except oidc.IdpRefused as exc:
        _log_failure("token_refused", exc)
        raise SsoFailed("token_refused", 400, error=safe_error_code(exc.error)) from None
    except oidc.IdpUnavailable as exc:
        _log_failure("idp_unavailable", exc)
        raise SsoFailed("idp_unavailable", 503) from None
    except oidc.IdTokenRejected as exc:
        log.warning("staff sign-in id_token rejected", extra={"check": exc.reason})
        raise SsoFailed("id_token_invalid", 400) from None
    log.info("staff signed in", extra={"sso_issuer": identity.issuer})
    return identity


# --- what the browser holds --------------------------------------------------------------

def remember_pending(session: MutableMapping[str, Any], pending: PendingLogin) -> None:
    """Keep ``pending`` under its state until the provider sends the browser back."""
    held.hold(session, PENDING_KEY, pending.state, pending.to_dict(), limit=MAX_PENDING)


def take_pending(session: MutableMapping[str, Any], state: str | None) -> PendingLogin | None:
    """The pending sign-in for ``state``, removed so an answer cannot be replayed."""
    data = held.take(session, PENDING_KEY, state)
    return PendingLogin.from_dict(data) if data else None


def remember_identity(session: MutableMapping[str, Any], identity: StaffIdentity) -> None:
    """Keep who just signed in for the page the sign-in was started from."""
    session[IDENTITY_KEY] = identity.to_dict()


def take_identity(session: MutableMapping[str, Any], *, not_before: float,
                  max_age: float = oidc.PENDING_TTL_S,
                  now: float | None = None) -> StaffIdentity | None:
    """The identity of a sign-in finished after ``not_before`` and at most ``max_age``
    seconds ago, removed from the session: on a shared clinic workstation an earlier
    sign-in must never stand in for the person launching now."""
    data = session.pop(IDENTITY_KEY, None)
    if not isinstance(data, dict):
        return None
    identity = StaffIdentity.from_dict(data)
    at = identity.authenticated_at
    if not isinstance(at, int) or at < int(not_before) or at < (now or time.time()) - max_age:
        return None
    return identity


# --- links ------------------------------------------------------------------------------

def link_for(endpoint: EhrEndpoint, ehr_user_id: str | None) -> StaffIdentityLink | None:
    """The link of this EHR user on this endpoint, if they signed in before."""
    if not ehr_user_id:
        return None
    return db.session.execute(db.select(StaffIdentityLink).filter_by(
        endpoint_id=endpoint.id, ehr_user_id=ehr_user_id)).scalar_one_or_none()


def link_identity(endpoint: EhrEndpoint, ehr_user_id: str,
                  identity: StaffIdentity) -> StaffIdentityLink:
    """Link the EHR user to the account that just signed in (the caller commits).

    An existing link to the same account is reused; one to another account raises
    LinkConflict rather than being replaced, since that is for IT to look at."""
    link = link_for(endpoint, ehr_user_id)
    if link is None:
        link = StaffIdentityLink(endpoint_id=endpoint.id, ehr_user_id=ehr_user_id,
                                 sso_issuer=identity.issuer, sso_subject=identity.subject)
        db.session.add(link)
        log.info("staff identity linked", extra={"endpoint": endpoint.name})
        return link
    same = (link.sso_issuer.rstrip("/") == identity.issuer.rstrip("/")
            and hmac.compare_digest(link.sso_subject, identity.subject))
    if not same:
        raise LinkConflict(endpoint.name)
    record_use(link)
    return link


def record_use(link: StaffIdentityLink) -> None:
    """Note that the link let a launch through (the caller commits)."""
    link.last_used_at = utcnow()


def _log_failure(reason: str, exc: BaseException) -> None:
    log.warning("staff sign-in failed", extra={"reason": reason, "error": type(exc).__name__})
