"""Cookie MAC and at-rest encryption, with key rotation.

Each secret (current first, then ``BFF_SESSION_PREVIOUS_SECRETS``) yields MAC keys and an AES-GCM
key through HKDF. We write with the current keys only and read with any of them, so the secret can
rotate without logging anyone out (two phases: first add the new secret everywhere as accepted,
then make it current).

Signed values name their key (a short key id), so "signed under a key this replica does not know
yet" (a rolling rotation in progress) is told apart from tampering: `UnknownKey`, not None.
Cookies and native-app handles are signed for distinct purposes, so neither is accepted as the other.
"""

from __future__ import annotations

import base64
import functools
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
#: cookie and handle values remembered as verified, per process
_MAX_VERIFIED = 4096
_MAC_B64_LEN = 22  # 16 bytes, unpadded base64url
_KID_B64_LEN = 6  # 4 bytes
_B64_CHARS = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_.")


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _derive(secret: bytes, info: bytes) -> bytes:
    return HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=info).derive(secret)


@dataclass(frozen=True, slots=True)
class _KeyPair:
    kid: bytes
    macs: dict[str, bytes]
    legacy_mac: bytes  # 0.1's ``<id>.<mac>`` values (no key id, one purpose), still accepted
    aead: AESGCM


class DecryptError(Exception):
    """A blob that no known key opens (tampered, or written under a retired secret)."""


class UnknownKeyError(DecryptError):
    """Encrypted under a key id this process does not know (yet): a secret rotation in progress,
    not tampering. The caller keeps the session and reports the store as unavailable."""


@dataclass(frozen=True, slots=True)
class UnknownKey:
    """A well-formed signed value whose key id is not ours (yet); its MAC could not be checked."""

    session_id: str


#: what a signed value is for; each purpose has its own MAC key
PURPOSES = ("cookie", "native")


class SessionCrypto:
    """Signs session ids for cookies and encrypts session records for the store."""

    def __init__(self, secrets: list[str]) -> None:
        if not secrets:
            raise ValueError("at least one session secret is required")
        self._keys: list[_KeyPair] = []
        self._name_keys: list[bytes] = []
        for secret in secrets:
            raw = secret.encode()
            enc = _derive(raw, b"bff session encryption v1")
            kid = hashlib.sha256(enc).digest()[:_KID_LEN]
            macs = {purpose: _derive(raw, f"bff {purpose} mac v2".encode()) for purpose in PURPOSES}
            self._keys.append(_KeyPair(kid, macs, _derive(raw, b"bff cookie mac v1"), AESGCM(enc)))
            self._name_keys.append(_derive(raw, b"bff store names v1"))
        self._by_kid = {_b64(key.kid): key for key in reversed(self._keys)}
        #: values that verified, by (value, purpose): every request presents its cookie again, and an
        #: HMAC per request was ~1 % of a worker's CPU (issue 26). Only successes are kept (a value
        #: that verifies needs the secret to make), and a full table is emptied, not managed.
        self._verified: dict[tuple[str, str], str] = {}

    # cookies and handles ---------------------------------------------------------------------------
    def sign(self, session_id: str, purpose: str = "cookie") -> str:
        """``<id>.<kid>.<mac>``; the MAC covers the purpose, the key id and the session id."""
        key = self._keys[0]
        kid = _b64(key.kid)
        return f"{session_id}.{kid}.{self._mac(key.macs[purpose], f'{kid}.{session_id}')}"

    def unsign(self, value: str | None, purpose: str = "cookie") -> str | None:
        """The session id if the value's MAC checks out, else None (no store lookup)."""
        result = self.verify(value, purpose)
        return result if isinstance(result, str) else None

    def verify(self, value: str | None, purpose: str = "cookie") -> str | UnknownKey | None:
        """Like `unsign`, but a well-formed value under a key id we do not know is `UnknownKey`."""
        if not value or len(value) > MAX_COOKIE_LEN or value.count(".") not in (1, 2):
            return None
        if value.count(".") == 1:
            return self._verify_legacy(value)
        session_id, kid, mac = value.split(".")
        if not session_id or len(session_id) > 64 or len(mac) != _MAC_B64_LEN or not _B64_CHARS.issuperset(value):
            return None
        key = self._by_kid.get(kid)
        if key is None:
            return UnknownKey(session_id) if len(kid) == _KID_B64_LEN else None
        known = self._verified.get((value, purpose))
        if known is not None:
            return known
        if hmac.compare_digest(self._mac(key.macs[purpose], f"{kid}.{session_id}"), mac):
            if len(self._verified) >= _MAX_VERIFIED:
                self._verified.clear()
            self._verified[(value, purpose)] = session_id
            return session_id
        return None

    def _verify_legacy(self, value: str) -> str | None:
        session_id, mac = value.split(".")
        for key in self._keys:
            if hmac.compare_digest(self._mac(key.legacy_mac, session_id), mac):
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
        raise UnknownKeyError("session record written under a key this replica does not know")

    def index_names(self, kind: str, value: str) -> list[str]:
        """Keyed names for low-entropy values (subjects, IdP session ids) in the store, one per known
        secret (current first): a read of the store does not tell whose sessions it holds."""
        message = f"{kind}:{value}".encode()
        return [hmac.new(key, message, hashlib.sha256).hexdigest()[:32] for key in self._name_keys]

    @staticmethod
    @functools.lru_cache(maxsize=8192)
    def tag(value: str) -> str:
        """The store's name for a high-entropy value (a session id, a one-time code): its SHA-256.
        256 random bits cannot be recovered from it, so key names and pub/sub messages carry no
        usable credential. Remembered for the values seen last: a request asks for its session's tag
        several times (its store key, its cached copy, its log fingerprint)."""
        return hashlib.sha256(value.encode()).hexdigest()[:32]

    @staticmethod
    def fingerprint(session_id: str) -> str:
        """A short, non-reversible tag for logs (never log the id itself): the start of its `tag`."""
        return SessionCrypto.tag(session_id)[:12]
