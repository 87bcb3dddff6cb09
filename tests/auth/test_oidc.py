"""ID-token and logout-token validation, and JWKS rotation, against IdP answers made with respx."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from typing import Any

import pytest
import respx
from joserfc import jwt
from joserfc.jwk import KeySet, RSAKey

from bff.auth.oidc import LOGOUT_TOKEN_MAX_AGE, OIDCClient
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


def _logout(**overrides: Any) -> dict[str, Any]:
    now = int(time.time())
    claims = {"jti": "j-1", "sid": "s-1", "events": EVENT, "iat": now, "exp": now + 120, "nonce": None}
    return _claims(**{**claims, **overrides})


async def test_logout_token_rules(oidc: tuple[OIDCClient, respx.MockRouter]) -> None:
    client, _ = oidc
    base = _logout()
    token = await client.verify_logout_token(_sign(base, typ="logout+jwt"))
    assert (token.sid, token.sub) == ("s-1", "alice")
    for bad in (
        {**base, "events": {}},
        {**base, "nonce": "n"},
        {k: v for k, v in base.items() if k not in ("sid", "sub")},
        {k: v for k, v in base.items() if k != "jti"},
        {**base, "aud": "other"},
        {**base, "sid": 42},
    ):
        with pytest.raises(LoginError):
            await client.verify_logout_token(_sign(bad))


@pytest.mark.parametrize(
    "claims",
    [
        _logout(exp=None),  # section 2.4: exp is REQUIRED
        _logout(exp="later"),
        _logout(iat=int(time.time()) - 30 * 86400, exp=int(time.time()) + 86400),  # 30 days old, still "valid"
        _logout(iat=int(time.time()) - 600, exp=int(time.time()) + 600),  # a few minutes too old
        _logout(iat=int(time.time()) + 3600, exp=int(time.time()) + 7200),  # from the future
        _logout(exp=int(time.time()) - 3600),  # expired
    ],
    ids=["no-exp", "exp-not-a-date", "iat-30-days", "iat-10-minutes", "iat-future", "expired"],
)
async def test_logout_tokens_must_be_fresh(oidc: tuple[OIDCClient, respx.MockRouter], claims: dict[str, Any]) -> None:
    client, _ = oidc
    with pytest.raises(LoginError):
        await client.verify_logout_token(_sign(claims, typ="logout+jwt"))


async def test_logout_token_replay_key_and_how_long_to_remember_it(
    oidc: tuple[OIDCClient, respx.MockRouter],
) -> None:
    client, _ = oidc
    now = int(time.time())
    first = await client.verify_logout_token(_sign(_logout(jti="j-1")))
    again = await client.verify_logout_token(_sign(_logout(jti="j-1", exp=now + 60)))
    other = await client.verify_logout_token(_sign(_logout(jti="j-2")))
    assert first.replay_key == again.replay_key != other.replay_key
    assert "j-1" not in first.replay_key  # a hash, not the identifier itself
    # until exp (plus leeway) ...
    assert 170 <= first.remember_seconds <= 181
    # ... but never longer than the token could be accepted: its iat turns stale first
    late = await client.verify_logout_token(_sign(_logout(exp=now + 86400)))
    assert LOGOUT_TOKEN_MAX_AGE <= late.remember_seconds <= LOGOUT_TOKEN_MAX_AGE + 61


def test_token_lifetime_without_expires_in() -> None:
    from bff.auth.oidc import _token_set

    now = time.time()
    jwt_access = _sign({"sub": "alice", "exp": int(now) + 120})
    assert 110 < _token_set({"access_token": jwt_access}, now).expires_at - now <= 121
    assert 3590 < _token_set({"access_token": "opaque"}, now).expires_at - now <= 3601
    assert 59 < _token_set({"access_token": "opaque", "expires_in": 60}, now).expires_at - now <= 61
