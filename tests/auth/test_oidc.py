"""ID-token and logout-token validation, and JWKS rotation, against IdP answers made with respx."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from typing import Any

import pytest
import respx
from joserfc import jwt
from joserfc.jwk import KeySet, RSAKey

from bff.auth.oidc import OIDCClient
from bff.errors import LoginError

ISSUER = "https://idp.test"
EVENT = {"http://schemas.openid.net/event/backchannel-logout": {}}


def _key(kid: str) -> RSAKey:
    return RSAKey.generate_key(2048, parameters={"kid": kid, "alg": "RS256", "use": "sig"})


KEY, ROTATED, FOREIGN = _key("k1"), _key("k2"), _key("k1")


def _sign(claims: dict[str, Any], key: RSAKey = KEY, **header: Any) -> str:
    return jwt.encode({"alg": "RS256", "kid": key.kid, **header}, claims, key)


def _claims(**overrides: Any) -> dict[str, Any]:
    now = int(time.time())
    claims = {"iss": ISSUER, "aud": "bff", "sub": "alice", "iat": now, "exp": now + 300, "nonce": "n-1"}
    claims.update(overrides)
    return {k: v for k, v in claims.items() if v is not None}


@pytest.fixture
async def oidc() -> AsyncIterator[tuple[OIDCClient, respx.MockRouter]]:
    with respx.mock(assert_all_called=False) as router:
        router.get(f"{ISSUER}/.well-known/openid-configuration").respond(
            json={
                "issuer": ISSUER,
                "authorization_endpoint": f"{ISSUER}/a",
                "token_endpoint": f"{ISSUER}/t",
                "jwks_uri": f"{ISSUER}/jwks",
            }
        )
        router.get(f"{ISSUER}/jwks").respond(json=KeySet([KEY]).as_dict(private=False))
        client = OIDCClient(issuer=ISSUER, client_id="bff", client_secret="s")
        yield client, router
        await client.aclose()


async def test_valid_id_token(oidc: tuple[OIDCClient, respx.MockRouter]) -> None:
    client, _ = oidc
    claims = await client.validate_id_token(_sign(_claims()), nonce="n-1")
    assert claims["sub"] == "alice"


@pytest.mark.parametrize(
    ("claims", "key"),
    [
        (_claims(nonce="other"), KEY),
        (_claims(nonce=None), KEY),
        (_claims(aud="someone-else"), KEY),
        (_claims(iss="https://evil.test"), KEY),
        (_claims(exp=int(time.time()) - 3600), KEY),
        (_claims(iat=None), KEY),
        (_claims(aud=["bff", "other"]), KEY),  # several audiences without azp=bff
        (_claims(), FOREIGN),  # same kid, other key: bad signature
    ],
    ids=["nonce", "no-nonce", "aud", "iss", "expired", "no-iat", "azp", "signature"],
)
async def test_invalid_id_tokens(
    oidc: tuple[OIDCClient, respx.MockRouter], claims: dict[str, Any], key: RSAKey
) -> None:
    client, _ = oidc
    with pytest.raises(LoginError):
        await client.validate_id_token(_sign(claims, key), nonce="n-1")


async def test_unsigned_and_garbage_tokens(oidc: tuple[OIDCClient, respx.MockRouter]) -> None:
    client, _ = oidc
    for token in ("garbage", "a.b.c", "eyJhbGciOiJub25lIn0.eyJzdWIiOiJhbGljZSJ9."):
        with pytest.raises(LoginError):
            await client.validate_id_token(token, nonce="n-1")
        with pytest.raises(LoginError):
            await client.verify_logout_token(token)


async def test_jwks_refetched_on_unknown_kid(oidc: tuple[OIDCClient, respx.MockRouter]) -> None:
    client, router = oidc
    await client.validate_id_token(_sign(_claims()), nonce="n-1")  # caches k1
    client._jwks_fetched_at = 0  # the refetch guard's 30 s are over
    router.get(f"{ISSUER}/jwks").respond(json=KeySet([KEY, ROTATED]).as_dict(private=False))
    claims = await client.validate_id_token(_sign(_claims(), ROTATED), nonce="n-1")
    assert claims["sub"] == "alice"


async def test_logout_token_rules(oidc: tuple[OIDCClient, respx.MockRouter]) -> None:
    client, _ = oidc
    base = _claims(nonce=None, jti="j-1", sid="s-1", events=EVENT)
    assert (await client.verify_logout_token(_sign(base, typ="logout+jwt")))["sid"] == "s-1"
    for bad in (
        {**base, "events": {}},
        {**base, "nonce": "n"},
        {k: v for k, v in base.items() if k not in ("sid", "sub")},
        {k: v for k, v in base.items() if k != "jti"},
        {**base, "aud": "other"},
    ):
        with pytest.raises(LoginError):
            await client.verify_logout_token(_sign(bad))


def test_token_lifetime_without_expires_in() -> None:
    from bff.auth.oidc import _token_set

    now = time.time()
    jwt_access = _sign({"sub": "alice", "exp": int(now) + 120})
    assert 110 < _token_set({"access_token": jwt_access}).expires_at - now <= 121
    assert 3590 < _token_set({"access_token": "opaque"}).expires_at - now <= 3601
    assert 59 < _token_set({"access_token": "opaque", "expires_in": 60}).expires_at - now <= 61
