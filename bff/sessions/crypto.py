"""Cookie MAC and at-rest encryption, with key rotation.

Each secret (current first, then ``BFF_SESSION_PREVIOUS_SECRETS``) yields a MAC key and an AES-GCM
key through HKDF. We write with the current keys only and read with any of them, so the secret can
rotate without logging anyone out.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
from dataclasses import dataclass

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

_MAC_LEN = 16
_KID_LEN = 4
_NONCE_LEN = 12
MAX_COOKIE_LEN = 200


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _derive(secret: bytes, info: bytes) -> bytes:
    return HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=info).derive(secret)


@dataclass(frozen=True, slots=True)
class _KeyPair:
    kid: bytes
    mac: bytes
    aead: AESGCM


class DecryptError(Exception):
    """A blob that no known key opens (tampered, or written under a retired secret)."""


class SessionCrypto:
    """Signs session ids for cookies and encrypts session records for the store."""

    def __init__(self, secrets: list[str]) -> None:
        if not secrets:
            raise ValueError("at least one session secret is required")
        self._keys: list[_KeyPair] = []
        for secret in secrets:
            raw = secret.encode()
            enc = _derive(raw, b"bff session encryption v1")
            kid = hashlib.sha256(enc).digest()[:_KID_LEN]
            self._keys.append(_KeyPair(kid, _derive(raw, b"bff cookie mac v1"), AESGCM(enc)))

    # cookies -----------------------------------------------------------------------------------
    def sign(self, session_id: str) -> str:
        return f"{session_id}.{self._mac(self._keys[0].mac, session_id)}"

    def unsign(self, cookie: str | None) -> str | None:
        """The session id if the cookie's MAC checks out under any key, else None (no store lookup)."""
        if not cookie or len(cookie) > MAX_COOKIE_LEN or cookie.count(".") != 1:
            return None
        session_id, mac = cookie.split(".")
        for key in self._keys:
            if hmac.compare_digest(self._mac(key.mac, session_id), mac):
                return session_id
        return None

    @staticmethod
    def _mac(key: bytes, value: str) -> str:
        return _b64(hmac.new(key, value.encode(), hashlib.sha256).digest()[:_MAC_LEN])

    # at rest -----------------------------------------------------------------------------------
    def encrypt(self, plaintext: bytes, associated: bytes) -> bytes:
        """``kid || nonce || ciphertext``; ``associated`` binds the blob to its key in the store."""
        key = self._keys[0]
        nonce = os.urandom(_NONCE_LEN)
        return key.kid + nonce + key.aead.encrypt(nonce, plaintext, associated)

    def decrypt(self, blob: bytes, associated: bytes) -> bytes:
        kid, nonce, body = blob[:_KID_LEN], blob[_KID_LEN : _KID_LEN + _NONCE_LEN], blob[16:]
        for key in self._keys:
            if hmac.compare_digest(key.kid, kid):
                try:
                    return key.aead.decrypt(nonce, body, associated)
                except InvalidTag as exc:
                    raise DecryptError("session record failed authentication") from exc
        raise DecryptError("session record written under an unknown key")

    @staticmethod
    def fingerprint(session_id: str) -> str:
        """A short, non-reversible tag for logs (never log the id itself)."""
        return hashlib.sha256(session_id.encode()).hexdigest()[:12]
