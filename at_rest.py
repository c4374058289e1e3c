"""Encryption at rest for the few secrets we must keep: EHR access tokens, our private
signing keys, SMS phone numbers and bodies.

Fernet (AES-128-CBC + HMAC-SHA256, from ``cryptography``) with a key derived from
``SECRET_KEY`` by HKDF, one derived key per purpose, so a database dump alone reveals
nothing. Changing ``SECRET_KEY`` makes stored ciphertext unreadable: rotate signing keys
afterwards (``flask keys rotate``); tokens and phones are short-lived anyway.
"""
from __future__ import annotations

import base64

from cryptography.fernet import Fernet, InvalidToken
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from flask import current_app

__all__ = ["InvalidToken", "decrypt", "encrypt"]


def _fernet(purpose: str) -> Fernet:
    secret = current_app.config["SECRET_KEY"]
    if not secret:
        raise RuntimeError("SECRET_KEY is not set; nothing can be encrypted at rest")
    key = HKDF(algorithm=hashes.SHA256(), length=32, salt=b"virtual-visits at rest v1",
               info=purpose.encode("utf-8")).derive(secret.encode("utf-8"))
    return Fernet(base64.urlsafe_b64encode(key))


def encrypt(plaintext: str, purpose: str) -> bytes:
    """Ciphertext of ``plaintext`` for ``purpose`` (e.g. "access-token", "signing-key")."""
    return _fernet(purpose).encrypt(plaintext.encode("utf-8"))


def decrypt(ciphertext: bytes, purpose: str) -> str:
    """The plaintext; raises InvalidToken if the data was altered or SECRET_KEY changed."""
    return _fernet(purpose).decrypt(ciphertext).decode("utf-8")
