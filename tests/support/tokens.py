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
