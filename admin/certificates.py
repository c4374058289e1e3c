"""Admin: the certificates an endpoint signs its HL7 messages with.

Upload takes the same files and makes the same checks as ``flask certs add``
(``hl7feed.certificates``): PEM or DER, several files or a PEM bundle, all or nothing;
expired certificates, private keys and keys other than RSA or EC are refused with the
reason. The list warns from 30 days before a certificate expires, so the EHR team can
send the next one while both still overlap.
"""
from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from flask import abort, flash, redirect, render_template, request, url_for
from flask_babel import gettext as _
from flask_babel import ngettext

from admin import bp
from admin.auth import current_user, record, require_role
from admin.lookup import endpoint_or_404
from admin.models import AdminRole
from ehr.models import EhrEndpoint, EndpointCertificate
from extensions import db
from hl7feed import certificates as hl7_certificates
from ops.payloads import MAX_ID
from visits.models import utcnow

# From this many days before expiry the list warns.
WARN_DAYS = 30
# One upload: a handful of certificates is a few KiB; anything near this is not one.
MAX_FILE_BYTES = 256 * 1024
MAX_FILES = 10


@dataclass(frozen=True)
class CertificateRow:
    """A stored certificate as the list shows it."""

    id: int
    subject: str
    fingerprint: str  # colon-separated upper-case hex, as certificate viewers show it
    not_before: datetime
    not_after: datetime
    days_left: int
    state: str  # "ok", "expiring", "expired", "not_yet_valid"


def colon_hex(hex_digest: str) -> str:
    """``ab12…`` as ``AB:12:…``."""
    upper = hex_digest.upper()
    return ":".join(upper[i:i + 2] for i in range(0, len(upper), 2))


def certificate_rows(endpoint: EhrEndpoint, now: datetime | None = None) -> list[CertificateRow]:
    """The endpoint's certificates, soonest to expire first, with their state at ``now``."""
    now = now or utcnow()
    rows = []
    for cert in sorted(endpoint.certificates, key=lambda c: c.not_after):
        days_left = (cert.not_after - now).days
        if cert.not_after < now:
            state = "expired"
        elif cert.not_before > now:
            state = "not_yet_valid"
        elif days_left < WARN_DAYS:
            state = "expiring"
        else:
            state = "ok"
        rows.append(CertificateRow(cert.id, cert.subject, colon_hex(cert.fingerprint_sha256),
                                   cert.not_before, cert.not_after, max(days_left, 0), state))
    return rows


def _render(endpoint: EhrEndpoint, *, error: str | None = None, status: int = 200,
            confirm: CertificateRow | None = None):
    user = current_user()
    return render_template(
        "admin/certificates.html", endpoint=endpoint, rows=certificate_rows(endpoint),
        can_edit=user is not None and user.role == AdminRole.ADMIN, error=error,
        confirm=confirm, warn_days=WARN_DAYS, max_kib=MAX_FILE_BYTES // 1024), status


@bp.route("/endpoints/<name>/certificates")
@require_role()
def certificates(name):
    """The endpoint's HL7 signing certificates, with expiry warnings."""
    return _render(endpoint_or_404(name))


@bp.route("/endpoints/<name>/certificates", methods=["POST"])
@require_role(AdminRole.ADMIN)
def certificates_upload(name):
    """Add the uploaded certificate files (all of them, or none if one is refused)."""
    endpoint = endpoint_or_404(name)
    uploads = [f for f in request.files.getlist("certificates") if f and f.filename]
    if not uploads:
        return _render(endpoint, error=_("Choose at least one certificate file (.pem, .crt "
                                         "or .cer)."), status=400)
    if len(uploads) > MAX_FILES:
        return _render(endpoint, error=_("Upload at most %(n)d files at once.", n=MAX_FILES),
                       status=400)
    files = []
    for upload in uploads:
        data = upload.read(MAX_FILE_BYTES + 1)
        label = (upload.filename or "file")[:120]
        if len(data) > MAX_FILE_BYTES:
            return _render(endpoint, status=400, error=_(
                "%(file)s is larger than %(kib)d KiB: that is not a certificate.",
                file=label, kib=MAX_FILE_BYTES // 1024))
        files.append((label, data))
    try:
        added = hl7_certificates.add_certificates(endpoint.name, files)
    except hl7_certificates.CertificateRefused as exc:
        db.session.rollback()
        return _render(endpoint, error=_("Nothing was added. %(reason)s", reason=str(exc)),
                       status=400)
    new = [item for item in added if not item.already_present]
    for item in new:
        record("certificate.add", target=f"endpoint:{endpoint.name}",
               details={"subject": item.subject, "sha256": item.fingerprint_sha256,
                        "not_after": item.not_after})
    db.session.commit()
    if new:
        flash(ngettext("%(num)d certificate added.", "%(num)d certificates added.", len(new)))
    present = len(added) - len(new)
    if present:
        flash(ngettext("%(num)d certificate was already there.",
                       "%(num)d certificates were already there.", present))
    return redirect(url_for("admin.certificates", name=endpoint.name), code=303)


def _certificate_or_404(endpoint: EhrEndpoint, certificate_id: int) -> EndpointCertificate:
    certificate = db.session.get(EndpointCertificate, certificate_id)
    if certificate is None or certificate.endpoint_id != endpoint.id:
        abort(404)
    return certificate


# Ids beyond a bigint are no row: 404 from the URL map, not an overflow in the driver.
@bp.route(f"/endpoints/<name>/certificates/<int(max={MAX_ID}):certificate_id>/remove",
          methods=["GET", "POST"])
@require_role(AdminRole.ADMIN)
def certificate_remove(name, certificate_id):
    """Remove a certificate after a confirmation page: HL7 signed with it is refused."""
    endpoint = endpoint_or_404(name)
    certificate = _certificate_or_404(endpoint, certificate_id)
    if request.method == "GET":
        row = next(r for r in certificate_rows(endpoint) if r.id == certificate.id)
        return _render(endpoint, confirm=row)
    record("certificate.remove", target=f"endpoint:{endpoint.name}",
           details={"subject": certificate.subject, "sha256": certificate.fingerprint_sha256,
                    "not_after": f"{certificate.not_after:%Y-%m-%d}"})
    db.session.delete(certificate)
    db.session.commit()
    flash(_("Certificate %(fingerprint)s removed.",
            fingerprint=colon_hex(certificate.fingerprint_sha256)[:23] + "…"))
    return redirect(url_for("admin.certificates", name=endpoint.name), code=303)
