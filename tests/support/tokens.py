"""A test issuer: an RSA key that signs JWT access tokens the demo upstreams accept."""

from __future__ import annotations

import time

from joserfc import jwt
from joserfc.jwk import KeySet, RSAKey

from bff.demo.tokens import JWKSValidator


class TestIssuer:
    __test__ = False

    def __init__(self) -> None:
        self.key = RSAKey.generate_key(2048, parameters={"kid": "test", "alg": "RS256", "use": "sig"})
        self.keys = KeySet([self.key])

    def token(self, sub: str = "alice", ttl: float = 3600) -> str:
        now = int(time.time())
        return jwt.encode({"alg": "RS256", "kid": "test"}, {"sub": sub, "iat": now, "exp": now + int(ttl)}, self.key)

    def validator(self) -> JWKSValidator:
        return JWKSValidator(keys=self.keys)


class CountingTokens:
    """A token source for an upstream client: "t-1", and "t-2" once asked to refresh (counted)."""

    def __init__(self) -> None:
        self.refreshes = 0

    async def access_token(self) -> str:
        return "t-1"

    async def refreshed_access_token(self, rejected: str) -> str:
        self.refreshes += 1
        return "t-2"
