"""A small FHIR R4 REST client: read, search, and nothing the app does not need.

HTTP status codes become the named exceptions of ``ehr.errors`` here and only here, so
callers never look at responses. URLs the server hands us (fhirUser, Bundle paging
links, fullUrls) are followed only when they sit under the FHIR base we were configured
with: a compromised or confused server must not send our bearer token elsewhere
(fhirclient's ``server.py`` does the same check).
"""
from __future__ import annotations

import logging
import re
from typing import Any
from urllib.parse import urlsplit

import requests

from ehr.errors import (EhrUnavailable, FhirForbidden, FhirNotFound, FhirRequestError,
                        FhirUnauthorized, UntrustedUrl)

log = logging.getLogger(__name__)

FHIR_JSON = "application/fhir+json"
DEFAULT_TIMEOUT_S = 10.0
# A search that needs more pages than this is not one the app should be making.
MAX_PAGES = 5
_RESOURCE_TYPE = re.compile(r"^[A-Z][A-Za-z]{1,63}$")
_RESOURCE_ID = re.compile(r"^[A-Za-z0-9\-.]{1,64}$")


def split_reference(reference: str) -> tuple[str, str]:
    """``("Practitioner", "abc")`` from ``"Practitioner/abc"``; ValueError when malformed."""
    resource_type, _, resource_id = reference.partition("/")
    if not _RESOURCE_TYPE.match(resource_type) or not _RESOURCE_ID.match(resource_id):
        raise ValueError("not a relative FHIR reference (Type/id)")
    return resource_type, resource_id


def is_under(url: str, base_url: str) -> bool:
    """Whether ``url`` is ``base_url`` itself or below it (same scheme, host, port, path)."""
    target, base = urlsplit(url), urlsplit(base_url.rstrip("/"))
    if (target.scheme.lower(), target.netloc.lower()) != (base.scheme.lower(),
                                                          base.netloc.lower()):
        return False
    return target.path == base.path or target.path.startswith(base.path + "/")


def relative_reference(value: str, base_url: str) -> str:
    """``Type/id`` from a relative reference or an absolute URL under ``base_url``.

    Raises UntrustedUrl for absolute URLs elsewhere and ValueError for anything that is
    not a plain ``Type/id`` reference (versioned or contained references included)."""
    if "://" in value:
        if not is_under(value, base_url):
            raise UntrustedUrl(f"reference outside the FHIR base: {urlsplit(value).netloc}")
        value = urlsplit(value).path[len(urlsplit(base_url.rstrip('/')).path):].lstrip("/")
    resource_type, resource_id = split_reference(value)
    return f"{resource_type}/{resource_id}"


class FhirClient:
    """Bearer-token FHIR client for one server; one instance per access token."""

    def __init__(self, base_url: str, access_token: str | None = None, *,
                 timeout: float = DEFAULT_TIMEOUT_S,
                 session: requests.Session | None = None) -> None:
        self.base_url = base_url.rstrip("/")
        self.timeout = timeout
        self._http = session or requests.Session()
        self._headers = {"Accept": FHIR_JSON}
        if access_token:
            self._headers["Authorization"] = f"Bearer {access_token}"

    def read(self, resource_type: str, resource_id: str) -> dict[str, Any]:
        """GET ``[base]/Type/id``; checks the server returned that very resource."""
        resource_type, resource_id = split_reference(f"{resource_type}/{resource_id}")
        resource = self._get(f"{self.base_url}/{resource_type}/{resource_id}")
        if resource.get("resourceType") != resource_type:
            raise EhrUnavailable(f"read {resource_type} returned "
                                 f"{resource.get('resourceType')!r}")
        return resource

    def read_reference(self, reference: str) -> dict[str, Any]:
        """Read ``Type/id`` or an absolute URL under our base."""
        return self.read(*split_reference(relative_reference(reference, self.base_url)))

    def search(self, resource_type: str, **params: str) -> list[dict[str, Any]]:
        """GET ``[base]/Type?params``: the matching resources of every page (``mode=match``)."""
        split_reference(f"{resource_type}/x")  # validates the type name
        url: str | None = f"{self.base_url}/{resource_type}"
        query: dict[str, str] | None = params
        found: list[dict[str, Any]] = []
        for _page in range(MAX_PAGES):
            bundle = self._get(url, params=query)
            if bundle.get("resourceType") != "Bundle":
                raise EhrUnavailable("search did not return a Bundle")
            for entry in bundle.get("entry") or []:
                resource = entry.get("resource") or {}
                mode = (entry.get("search") or {}).get("mode", "match")
                if mode == "match" and resource.get("resourceType") == resource_type:
                    found.append(resource)
            url = next((link.get("url") for link in bundle.get("link") or []
                        if link.get("relation") == "next"), None)
            if not url:
                return found
            if not is_under(url, self.base_url):
                raise UntrustedUrl(f"next page outside the FHIR base: {urlsplit(url).netloc}")
            query = None
        log.warning("FHIR search stopped after %d pages", MAX_PAGES,
                    extra={"resource_type": resource_type})
        return found

    def _get(self, url: str, params: dict[str, str] | None = None) -> dict[str, Any]:
        try:
            response = self._http.get(url, params=params, headers=self._headers,
                                      timeout=self.timeout, allow_redirects=False)
        except requests.RequestException as exc:
            raise EhrUnavailable(f"FHIR server unreachable: {type(exc).__name__}") from None
        _raise_for_status(response)
        try:
            body = response.json()
        except ValueError:
            raise EhrUnavailable("FHIR server answered with something that is not JSON") \
                from None
        if not isinstance(body, dict):
            raise EhrUnavailable("FHIR server answered with JSON that is not a resource")
        return body


def _raise_for_status(response: requests.Response) -> None:
    """The one place HTTP statuses turn into exceptions (bodies may echo PHI: not kept)."""
    status = response.status_code
    if status < 300:
        return
    path = urlsplit(response.url).path
    if status == 401:
        raise FhirUnauthorized(f"401 from {path}", status=status)
    if status == 403:
        raise FhirForbidden(f"403 from {path}", status=status)
    if status in (404, 410):
        raise FhirNotFound(f"{status} from {path}", status=status)
    if status >= 500 or status in (429, 502, 503, 504) or status < 400:
        # 3xx too: we never follow redirects with a bearer token attached.
        raise EhrUnavailable(f"FHIR server answered {status} for {path}")
    raise FhirRequestError(f"{status} from {path}", status=status)
