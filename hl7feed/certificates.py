"""The certificates an EHR signs HL7 bodies with: upload checks and signature checks.

An endpoint may hold several certificates at once so the EHR can rotate without a gap:
a body is accepted when any certificate valid today verifies it.
"""
from __future__ import annotations

import base64
import binascii
import hashlib
from dataclasses import dataclass

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature

from ehr.models import EhrEndpoint, EndpointCertificate
from ehr.services import UnknownEndpoint, get_endpoint
from extensions import db
from visits.models import utcnow


class CertificateRefused(ValueError):
    """A file cannot be used as an HL7 signing certificate; the message says why."""


@dataclass(frozen=True)
class AddedCertificate:
    subject: str
    fingerprint_sha256: str
    not_after: str
    already_present: bool


def load_certificates(data: bytes, label: str) -> list[x509.Certificate]:
    """Every certificate in a PEM or DER file, checked: not expired, RSA or EC key, and
    not a private key (someone about to paste their signing key into our database)."""
    if b"PRIVATE KEY-----" in data:
        raise CertificateRefused(f"{label}: this is a private key; upload the certificate "
                                 "(public part) instead, and keep the key secret")
    if b"-----BEGIN" in data:
        try:
            certificates = x509.load_pem_x509_certificates(data)
        except ValueError:
            raise CertificateRefused(f"{label}: no readable PEM certificate in it") from None
    else:
        try:
            certificates = [x509.load_der_x509_certificate(data)]
        except ValueError:
            if _is_der_private_key(data):
                raise CertificateRefused(f"{label}: this is a private key; upload the "
                                         "certificate (public part) instead") from None
            raise CertificateRefused(f"{label}: not a PEM or DER certificate") from None
    now = utcnow()
    for certificate in certificates:
        key = certificate.public_key()
        if not isinstance(key, (rsa.RSAPublicKey, ec.EllipticCurvePublicKey)):
            raise CertificateRefused(f"{label}: key type {type(key).__name__} is not "
                                     "supported; use an RSA or EC certificate")
        if certificate.not_valid_after_utc < now:
            raise CertificateRefused(f"{label}: certificate expired on "
                                     f"{certificate.not_valid_after_utc:%Y-%m-%d}")
    return certificates


def _is_der_private_key(data: bytes) -> bool:
    try:
        serialization.load_der_private_key(data, password=None)
    except (ValueError, TypeError):
        return False
    return True


def add_certificates(endpoint_name: str, files: list[tuple[str, bytes]]
                     ) -> list[AddedCertificate]:
    """Add every certificate of ``files`` (label, content) to the endpoint, or none of
    them if one is refused; a certificate already there is reported, not duplicated."""
    endpoint = get_endpoint(endpoint_name)
    if endpoint is None:
        raise UnknownEndpoint(f"no endpoint named {endpoint_name!r} (see `flask endpoints list`)")
    loaded = [cert for label, data in files for cert in load_certificates(data, label)]
    known = {c.fingerprint_sha256 for c in endpoint.certificates}
    added: list[AddedCertificate] = []
    for certificate in loaded:
        der = certificate.public_bytes(serialization.Encoding.DER)
        fingerprint = hashlib.sha256(der).hexdigest()
        present = fingerprint in known
        if not present:
            known.add(fingerprint)
            endpoint.certificates.append(EndpointCertificate(
                subject=certificate.subject.rfc4514_string()[:500],
                fingerprint_sha256=fingerprint,
                not_before=certificate.not_valid_before_utc,
                not_after=certificate.not_valid_after_utc,
                pem=certificate.public_bytes(serialization.Encoding.PEM).decode("ascii")))
        added.append(AddedCertificate(certificate.subject.rfc4514_string(), fingerprint,
                                      f"{certificate.not_valid_after_utc:%Y-%m-%d}", present))
    db.session.commit()
    return added


def verify_signature(endpoint: EhrEndpoint, body: bytes, signature_b64: str | None) -> bool:
    """True when one of the endpoint's currently valid certificates signed ``body``:
    RSA PKCS#1 v1.5 or ECDSA (DER, or raw r||s as some HSMs emit), both with SHA-256."""
    if not signature_b64:
        return False
    try:
        signature = base64.b64decode(signature_b64.strip(), validate=True)
    except (binascii.Error, ValueError):
        return False
    now = utcnow()
    for stored in endpoint.certificates:
        if not stored.is_valid_at(now):
            continue
        key = x509.load_pem_x509_certificate(stored.pem.encode("ascii")).public_key()
        try:
            if isinstance(key, rsa.RSAPublicKey):
                key.verify(signature, body, padding.PKCS1v15(), hashes.SHA256())
                return True
            if isinstance(key, ec.EllipticCurvePublicKey):
                for candidate in _ecdsa_forms(signature, key):
                    try:
                        key.verify(candidate, body, ec.ECDSA(hashes.SHA256()))
                        return True
                    except InvalidSignature:
                        continue
        except (InvalidSignature, ValueError):
            continue
    return False


def _ecdsa_forms(signature: bytes, key: ec.EllipticCurvePublicKey) -> list[bytes]:
    forms = [signature]
    size = (key.curve.key_size + 7) // 8
    if len(signature) == 2 * size:
        r = int.from_bytes(signature[:size], "big")
        s = int.from_bytes(signature[size:], "big")
        forms.append(encode_dss_signature(r, s))
    return forms
