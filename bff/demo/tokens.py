"""Bearer-token validation for the demo upstreams: a JWT checked against the issuer's JWKS, or an
opaque token checked by RFC 7662 introspection."""

from __future__ import annotations

import base64
import hashlib
import json
import time
from dataclasses import dataclass, field
from typing import Any, Protocol

import httpx
from joserfc import jwt
from joserfc.errors import JoseError
from joserfc.jwk import KeySet
from joserfc.jwt import JWTClaimsRegistry


class TokenValidator(Protocol):
    async def subject(self, token: str) -> str | None:
        """The token's subject if it is valid now, else None."""
        ...


async def token_expiry(validator: TokenValidator, token: str) -> float | None:
    """When a token ``validator`` has just accepted expires (epoch seconds): the validator's own
    answer if it has one (`IntrospectionValidator` remembers the IdP's ``exp``), else a JWT's
    ``exp`` claim (its signature was checked by the validator), else None (not known). An
    upstream stream is closed then, as real resource servers do."""
    known = getattr(validator, "expires_at", None)
    if known is not None:
        value = known(token)
        return None if value is None else float(value)
    try:
        payload = token.split(".")[1]
        claims = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
        return float(claims["exp"])
    except (IndexError, ValueError, KeyError, TypeError):
        return None


@dataclass
class JWKSValidator:
    """JWT access tokens: signature by the issuer's keys, ``exp``, ``iss`` and optional ``aud``."""

    issuer: str | None = None
    keys: KeySet | None = None
    audience: str | None = None
    http: httpx.AsyncClient = field(default_factory=lambda: httpx.AsyncClient(timeout=5))

    async def _keyset(self) -> KeySet:
        if self.keys is None:
            if not self.issuer:
                raise ValueError("JWKSValidator needs an issuer or keys")
            meta = (await self.http.get(f"{self.issuer}/.well-known/openid-configuration")).json()
            self.keys = KeySet.import_key_set((await self.http.get(meta["jwks_uri"])).json())
        return self.keys

    async def subject(self, token: str) -> str | None:
        try:
            decoded = jwt.decode(token, await self._keyset())
            checks: dict[str, Any] = {"exp": {"essential": True}}
            if self.issuer:
                checks["iss"] = {"essential": True, "value": self.issuer}
            if self.audience:
                checks["aud"] = {"essential": True, "value": self.audience}
            JWTClaimsRegistry(leeway=0, **checks).validate(decoded.claims)
        except (JoseError, ValueError):
            return None
        subject = decoded.claims.get("sub") or decoded.claims.get("client_id")
        return str(subject) if subject else None


@dataclass
class IntrospectionValidator:
    """Opaque tokens: RFC 7662 introspection with the resource server's own client credentials.
    An active answer is remembered until the token's ``exp`` (as resource servers commonly do), so
    a token already seen keeps working while the IdP is briefly unreachable."""

    issuer: str
    client_id: str
    client_secret: str
    http: httpx.AsyncClient = field(default_factory=lambda: httpx.AsyncClient(timeout=5))
    _endpoint: str | None = None
    _active: dict[str, tuple[str, float]] = field(default_factory=dict)

    async def subject(self, token: str) -> str | None:
        key = hashlib.sha256(token.encode()).hexdigest()
        known = self._active.get(key)
        if known is not None and known[1] > time.time():
            return known[0]
        if self._endpoint is None:
            meta = (await self.http.get(f"{self.issuer}/.well-known/openid-configuration")).json()
            self._endpoint = str(meta["introspection_endpoint"])
        response = await self.http.post(
            self._endpoint,
            data={"token": token, "token_type_hint": "access_token"},
            auth=(self.client_id, self.client_secret),
        )
        response.raise_for_status()  # the IdP could not answer: the caller says 503, not 401
        body = response.json()
        if not body.get("active") or float(body.get("exp", 0)) <= time.time():
            return None
        subject = body.get("sub") or body.get("client_id")  # client_credentials tokens name the client
        if not subject:
            return None
        if len(self._active) >= 10_000:
            self._active.clear()  # a demo's bound: forget everything rather than grow
        self._active[key] = (str(subject), float(body["exp"]))
        return str(subject)

    def expires_at(self, token: str) -> float | None:
        """The ``exp`` of a token `subject` accepted (from the IdP's introspection answer)."""
        known = self._active.get(hashlib.sha256(token.encode()).hexdigest())
        return None if known is None else known[1]
