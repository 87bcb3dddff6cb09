"""DPoP (RFC 9449): sender-constrained tokens. Each session has its own key pair (EC P-256), sealed in
its record like the tokens; every token request and every upstream call with a DPoP-bound token carries
a fresh proof (a JWS of ``htm``, ``htu``, ``iat``, ``jti`` and, for resource calls, ``ath``) signed by
that key, so a stolen access token is useless without the session's key. joserfc does the JOSE; the
proof's claims are RFC 9449 section 4.2, written here because no library we use builds them.

Servers may require a nonce (section 8 and 9): they answer ``use_dpop_nonce`` with a ``DPoP-Nonce``
header, and the request is sent once more with it. `NonceCache` keeps the newest nonce per server.
"""

from __future__ import annotations

import base64
import hashlib
import json
import secrets
import time
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from joserfc import jws
from joserfc.jwk import ECKey

#: the proof's algorithm; P-256 keys are small and every DPoP server supports ES256
ALGORITHM = "ES256"


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def htu(url: str) -> str:
    """The URL a proof names: without query and fragment (RFC 9449 section 4.2)."""
    parts = urlsplit(url)
    return urlunsplit((parts.scheme, parts.netloc, parts.path or "/", "", ""))


class DPoPKey:
    """A session's DPoP key pair. Kept as a private JWK in the (encrypted) session record."""

    __slots__ = ("_key", "_public")

    def __init__(self, key: ECKey) -> None:
        self._key = key
        self._public = key.as_dict(private=False)

    @classmethod
    def generate(cls) -> DPoPKey:
        return cls(ECKey.generate_key("P-256"))

    @classmethod
    def from_jwk(cls, jwk: dict[str, Any]) -> DPoPKey:
        return cls(ECKey.import_key(jwk))

    def to_jwk(self) -> dict[str, Any]:
        return dict(self._key.as_dict(private=True))

    def proof(self, method: str, url: str, *, access_token: str | None = None, nonce: str | None = None) -> str:
        """A fresh proof for one request (a new ``jti`` each time)."""
        claims: dict[str, Any] = {
            "htm": method.upper(),
            "htu": htu(url),
            "iat": int(time.time()),
            "jti": secrets.token_urlsafe(16),
        }
        if access_token is not None:
            claims["ath"] = _b64(hashlib.sha256(access_token.encode()).digest())
        if nonce is not None:
            claims["nonce"] = nonce
        header = {"typ": "dpop+jwt", "alg": ALGORITHM, "jwk": self._public}
        payload = json.dumps(claims, separators=(",", ":")).encode()
        return str(jws.serialize_compact(header, payload, self._key, algorithms=[ALGORITHM]))

    def __repr__(self) -> str:  # never print the private key
        return "DPoPKey(...)"


class NonceCache:
    """The newest ``DPoP-Nonce`` each server sent (by origin). Nonces are the server's, shared by
    every session; bounded (a handful of servers in practice)."""

    _MAX = 256

    def __init__(self) -> None:
        self._nonces: dict[str, str] = {}

    @staticmethod
    def _origin(url: str) -> str:
        parts = urlsplit(url)
        return f"{parts.scheme}://{parts.netloc}"

    def get(self, url: str) -> str | None:
        return self._nonces.get(self._origin(url))

    def remember(self, url: str, nonce: str | None) -> None:
        if not nonce or len(nonce) > 1024:
            return
        if len(self._nonces) >= self._MAX:
            self._nonces.clear()
        self._nonces[self._origin(url)] = nonce
