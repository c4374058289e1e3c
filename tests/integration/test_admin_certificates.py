"""Admin certificate page: upload (PEM, DER, several files, a bundle) with the checks of
``flask certs add``, the list with fingerprint, validity and expiry warnings, removal
after a confirmation, admins only, every change audited."""
from __future__ import annotations

import hashlib
import io
from datetime import datetime, timedelta, timezone

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from cryptography.x509.oid import NameOID
from sqlalchemy import select

from ehr.models import EhrEndpoint, EndpointCertificate
from ehr.services import add_endpoint
from extensions import db
from tests.admin_helpers import csrf_token, signed_in_client
from visits.models import AuditLog

PAGE = "/admin/endpoints/epic-test/certificates"
NOW = datetime.now(timezone.utc)


def certificate(key=None, *, name: str = "hl7.example.org", days_left: float = 365,
                started_days_ago: float = 1) -> x509.Certificate:
    key = key or ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    builder = (x509.CertificateBuilder().subject_name(subject).issuer_name(subject)
               .public_key(key.public_key()).serial_number(x509.random_serial_number())
               .not_valid_before(NOW - timedelta(days=started_days_ago))
               .not_valid_after(NOW + timedelta(days=days_left)))
    algorithm = None if isinstance(key, ed25519.Ed25519PrivateKey) else hashes.SHA256()
    return builder.sign(key, algorithm)


def pem(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(serialization.Encoding.PEM)


def colon_fingerprint(cert: x509.Certificate) -> str:
    digest = hashlib.sha256(cert.public_bytes(serialization.Encoding.DER)).hexdigest().upper()
    return ":".join(digest[i:i + 2] for i in range(0, len(digest), 2))


@pytest.fixture
def app(app_each_db):
    return app_each_db


@pytest.fixture
def endpoint(app):
    with app.app_context():
        add_endpoint("epic-test", "https://fhir.example.org/fhir", client_id="c")


def upload(client, *files: tuple[str, bytes]):
    data = {"csrf_token": csrf_token(client, PAGE),
            "certificates": [(io.BytesIO(content), name) for name, content in files]}
    return client.post(PAGE, data=data, content_type="multipart/form-data")


def stored(app) -> list[EndpointCertificate]:
    with app.app_context():
        rows = list(db.session.scalars(select(EndpointCertificate)))
        for row in rows:
            db.session.expunge(row)
        return rows


def audit(app, action: str) -> list[AuditLog]:
    with app.app_context():
        rows = list(db.session.scalars(select(AuditLog).filter_by(action=f"admin.{action}")))
        for row in rows:
            db.session.expunge(row)
        return rows


def test_upload_pem_and_der_lists_fingerprint_and_validity(app, endpoint):
    client = signed_in_client(app)
    first = certificate(name="first.example.org")
    second = certificate(rsa.generate_private_key(public_exponent=65537, key_size=2048),
                         name="second.example.org")

    response = upload(client, ("first.pem", pem(first)),
                      ("second.cer", second.public_bytes(serialization.Encoding.DER)))
    page = client.get(PAGE).get_data(as_text=True)

    assert response.status_code == 303
    assert len(stored(app)) == 2
    assert "2 certificates added." in page
    for cert in (first, second):
        assert colon_fingerprint(cert) in page
        assert f"{cert.not_valid_after_utc:%Y-%m-%d %H:%M} UTC" in page
        assert f"{cert.not_valid_before_utc:%Y-%m-%d %H:%M} UTC" in page
    assert "CN=first.example.org" in page and "CN=second.example.org" in page
    entries = audit(app, "certificate.add")
    assert len(entries) == 2 and {e.target_id for e in entries} == {"epic-test"}
    assert entries[0].actor == "admin:admin-user"


def test_a_bundle_adds_every_certificate_and_a_repeat_adds_none(app, endpoint):
    client = signed_in_client(app)
    bundle = pem(certificate(name="a.example.org")) + pem(certificate(name="b.example.org"))

    upload(client, ("bundle.pem", bundle))
    again = upload(client, ("bundle.pem", bundle))

    assert len(stored(app)) == 2
    assert "2 certificates were already there." in client.get(again.headers["Location"]) \
        .get_data(as_text=True)
    assert len(audit(app, "certificate.add")) == 2


@pytest.mark.parametrize(("content", "message"), [
    (lambda: pem(certificate(days_left=-1, started_days_ago=30)), "certificate expired on"),
    (lambda: ec.generate_private_key(ec.SECP256R1()).private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption()), "this is a private key"),
    (lambda: pem(certificate(ed25519.Ed25519PrivateKey.generate())), "use an RSA or EC"),
    (lambda: b"hello, not a certificate", "not a PEM or DER certificate"),
])
def test_refused_files_are_explained_and_nothing_is_added(app, endpoint, content,
                                                          message):
    client = signed_in_client(app)

    response = upload(client, ("good.pem", pem(certificate())), ("bad.pem", content()))

    assert response.status_code == 400
    page = response.get_data(as_text=True)
    assert 'role="alert"' in page and "Nothing was added." in page
    assert message in page and "bad.pem" in page
    assert stored(app) == []
    assert audit(app, "certificate.add") == []


def test_upload_without_a_file_asks_for_one(app, endpoint):
    client = signed_in_client(app)

    response = client.post(PAGE, data={"csrf_token": csrf_token(client, PAGE)})

    assert response.status_code == 400
    assert "Choose at least one certificate file" in response.get_data(as_text=True)


def test_expiring_and_expired_certificates_are_flagged(app, endpoint):
    client = signed_in_client(app)
    soon = certificate(name="soon.example.org", days_left=12.5)
    upload(client, ("soon.pem", pem(soon)), ("fine.pem", pem(certificate(name="fine.example.org"))))
    with app.app_context():  # an upload that expired since (uploads of expired ones fail)
        row = db.session.scalars(select(EndpointCertificate)
                                 .filter(EndpointCertificate.subject == "CN=fine.example.org")
                                 ).one()
        row.not_after = NOW - timedelta(days=2)
        db.session.commit()

    page = client.get(PAGE).get_data(as_text=True)

    soon_row = page[page.index(f'data-fingerprint="{colon_fingerprint(soon)}"'):]
    assert 'data-state="expiring"' in soon_row[:200]
    assert "Expires in 12 days" in soon_row
    assert 'data-state="expired"' in page and "Expired" in page


def test_removal_needs_a_confirmation_and_is_audited(app, endpoint):
    client = signed_in_client(app)
    cert = certificate(name="old.example.org")
    upload(client, ("old.pem", pem(cert)))
    (row,) = stored(app)
    remove = f"{PAGE}/{row.id}/remove"

    confirm = client.get(remove).get_data(as_text=True)
    assert stored(app) != []
    response = client.post(remove, data={"csrf_token": csrf_token(client, remove)})

    assert "Remove this certificate?" in confirm and colon_fingerprint(cert) in confirm
    assert response.status_code == 303
    assert stored(app) == []
    (entry,) = audit(app, "certificate.remove")
    assert entry.detail["sha256"] == row.fingerprint_sha256
    assert "removed" in client.get(PAGE).get_data(as_text=True)


def test_analyst_reads_but_cannot_upload_or_remove(app, endpoint):
    admin = signed_in_client(app)
    upload(admin, ("one.pem", pem(certificate())))
    (row,) = stored(app)
    analyst = signed_in_client(app, "analyst")

    page = analyst.get(PAGE).get_data(as_text=True)
    token = csrf_token(analyst, PAGE)
    posted = analyst.post(PAGE, data={"csrf_token": token,
                                      "certificates": (io.BytesIO(pem(certificate())), "x.pem")},
                          content_type="multipart/form-data")
    removed = analyst.post(f"{PAGE}/{row.id}/remove", data={"csrf_token": token})

    assert 'data-testid="certificate-row"' in page
    assert 'type="file"' not in page and "Only an admin account" in page
    assert posted.status_code == 403 and removed.status_code == 403
    assert len(stored(app)) == 1


def test_certificate_of_another_endpoint_cannot_be_removed_here(app, endpoint):
    with app.app_context():
        add_endpoint("other", "https://other.example/fhir", client_id="c")
    client = signed_in_client(app)
    client.post("/admin/endpoints/other/certificates", data={
        "csrf_token": csrf_token(client, PAGE),
        "certificates": (io.BytesIO(pem(certificate())), "o.pem")},
        content_type="multipart/form-data")
    (row,) = stored(app)

    response = client.post(f"{PAGE}/{row.id}/remove",
                           data={"csrf_token": csrf_token(client, PAGE)})

    assert response.status_code == 404
    assert len(stored(app)) == 1
    with app.app_context():
        assert db.session.get(EhrEndpoint, row.endpoint_id).name == "other"
