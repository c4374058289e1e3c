"""Sandbox domain errors; views turn them into OAuth replies or FHIR OperationOutcomes."""
from __future__ import annotations


class OAuthError(Exception):
    """An RFC 6749 error: ``error`` is the registered code, ``description`` is for developers."""

    status = 400

    def __init__(self, error: str, description: str) -> None:
        super().__init__(f"{error}: {description}")
        self.error = error
        self.description = description


class InvalidClient(OAuthError):
    """Client authentication failed: always 401, whatever the reason."""

    status = 401

    def __init__(self, description: str, *, basic: bool = False) -> None:
        super().__init__("invalid_client", description)
        self.basic = basic


class AuthorizeRejected(Exception):
    """The authorize request cannot be trusted to redirect (unknown client or redirect_uri).

    RFC 6749 4.1.2.1: show an error page instead of redirecting, or we would be an open
    redirector.
    """

    def __init__(self, description: str) -> None:
        super().__init__(description)
        self.description = description


class AuthorizeRedirectError(OAuthError):
    """An authorize error reported back to the client's redirect_uri, with its state."""

    def __init__(self, error: str, description: str, *, redirect_uri: str,
                 state: str | None) -> None:
        super().__init__(error, description)
        self.redirect_uri = redirect_uri
        self.state = state


class FhirError(Exception):
    """A FHIR REST failure answered with an OperationOutcome."""

    def __init__(self, status: int, code: str, diagnostics: str, *,
                 issues: list[dict] | None = None, headers: dict[str, str] | None = None) -> None:
        super().__init__(diagnostics)
        self.status = status
        self.code = code
        self.diagnostics = diagnostics
        self.issues = issues
        self.headers = headers or {}
