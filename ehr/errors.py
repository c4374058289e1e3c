"""What can go wrong talking to an EHR, named once so every caller can tell cases apart.

Messages carry URLs, status codes and OAuth error codes at most: never response bodies,
tokens or patient data, because callers log them.
"""
from __future__ import annotations


class EhrError(Exception):
    """Base of every EHR integration failure."""


class EhrUnavailable(EhrError):
    """The EHR did not answer usefully: connection refused, timeout, 5xx, garbage.
    Worth retrying later; nothing is wrong with the request itself."""


class FhirRequestError(EhrError):
    """The FHIR server refused a request (4xx other than those below)."""

    def __init__(self, message: str, *, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status


class FhirUnauthorized(FhirRequestError):
    """401: the access token is unknown, expired or revoked."""


class FhirForbidden(FhirRequestError):
    """403: the token's scopes (or the user's rights) do not allow this."""


class FhirNotFound(FhirRequestError):
    """404: the resource does not exist (or is hidden from us)."""


class UntrustedUrl(EhrError):
    """A server-supplied URL points outside the FHIR base; we will not follow it."""


class SmartError(EhrError):
    """The SMART launch cannot go on: bad discovery document, refused token request."""


class TokenRefused(SmartError):
    """The token endpoint answered with an OAuth error (``error`` is its code)."""

    def __init__(self, error: str, description: str | None = None) -> None:
        super().__init__(f"token request refused: {error}")
        self.error = error
        self.description = description


class InvalidIdToken(SmartError):
    """The id_token failed validation; ``reason`` says which check (no token content)."""

    def __init__(self, reason: str) -> None:
        super().__init__(f"id_token rejected: {reason}")
        self.reason = reason
