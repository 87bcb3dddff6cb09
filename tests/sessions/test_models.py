"""The record's two parts: format 1 stays exactly what 0.2 reads, everything newer goes to extras."""

from __future__ import annotations

import dataclasses
import json

import pytest

from bff import User
from bff.sessions.models import Session, TokenSet


def _session(scope: str | None) -> Session:
    tokens = TokenSet(
        access_token="AT-secret", expires_at=200.0, issued_at=100.0, refresh_token="RT-secret", scope=scope
    )
    return Session(id="s", sub="alice", tokens=tokens, created_at=1.0, last_seen=2.0, claims={"name": "Alice"})


def test_granted_scopes_travel_in_extras_never_in_the_part_0_2_reads() -> None:
    session = _session("openid orders:read")
    first = json.loads(session.to_json())
    assert "scope" not in first["tokens"]  # 0.2 builds its TokenSet from these keys and refuses others
    extras = session.extras_json()
    assert extras is not None and json.loads(extras)["scope"] == "openid orders:read"
    back = Session.from_json(session.to_json(), 3, extras)
    assert back.tokens.scope == "openid orders:read"
    assert User.of(back).scopes == frozenset({"openid", "orders:read"})
    assert _session(None).extras_json() is None  # nothing beyond format 1: written as 0.2 writes it


def test_a_user_is_frozen_and_holds_no_token() -> None:
    user = User.of(_session("openid"))
    assert (user.sub, user.name, user.scopes) == ("alice", "Alice", frozenset({"openid"}))
    assert "secret" not in repr(user) and "secret" not in str(vars_of(user))
    with pytest.raises(TypeError):
        user.claims["name"] = "Mallory"  # type: ignore[index]
    with pytest.raises(dataclasses.FrozenInstanceError):
        user.sub = "mallory"  # type: ignore[misc]


def vars_of(user: User) -> dict[str, object]:
    return {field.name: getattr(user, field.name) for field in dataclasses.fields(user)}


async def test_the_memory_store_forgets_the_index_entries_of_expired_sessions() -> None:
    """Sessions that expire (TTL) rather than end leave their per-subject index entries behind until
    a prune, which asks the cache which keys still live (its public API, not its private dict)."""
    import asyncio

    from bff.sessions.crypto import SessionCrypto
    from bff.sessions.memory import MemorySessionStore

    store = MemorySessionStore(SessionCrypto(["k"]), idle_seconds=1, absolute_seconds=60)
    for n in range(3):
        session = _session(None)
        session.id = f"s{n}"
        await store.create(session)
    assert len(store._index["sub:alice"]) == 3
    await asyncio.sleep(1.2)
    await store._prune()
    assert "sub:alice" not in store._index
    await store.close()


def _jwt(payload: dict[str, object]) -> str:
    import base64

    def part(data: dict[str, object]) -> str:
        return base64.urlsafe_b64encode(json.dumps(data).encode()).decode().rstrip("=")

    return f"{part({'alg': 'RS256'})}.{part(payload)}.c2ln"


def test_scopes_from_a_configured_claim_of_the_access_or_id_token() -> None:
    """BFF_SCOPES_CLAIM: an IdP that puts the scopes in the access token (Entra's ``scp``, Auth0's
    ``permissions`` list) or only in the ID token; the token response's scope otherwise."""
    session = _session("openid profile")
    session.tokens.access_token = _jwt({"sub": "ada", "scp": "orders:read orders:write"})
    assert User.of(session).scopes == {"openid", "profile"}
    assert User.of(session, scopes_claim="scp").scopes == {"orders:read", "orders:write"}
    session.tokens.access_token = _jwt({"sub": "ada", "permissions": ["billing:read", 7, "billing:write"]})
    assert User.of(session, scopes_claim="permissions").scopes == {"billing:read", "billing:write"}
    session.tokens.access_token = "opaque-token"
    session.tokens.id_token = _jwt({"sub": "ada", "roles": ["admin"]})
    assert User.of(session, scopes_claim="roles").scopes == {"admin"}
    session.tokens.id_token = "not.a.jwt"
    assert User.of(session, scopes_claim="roles").scopes == frozenset()


def test_acr_amr_and_auth_time_come_from_the_kept_claims() -> None:
    session = _session(None)
    session.claims = {"acr": "urn:bff:loa:2", "amr": ["pwd", "otp"], "auth_time": 1700000000}
    user = User.of(session)
    assert (user.acr, user.amr, user.auth_time) == ("urn:bff:loa:2", ("pwd", "otp"), 1700000000.0)
    session.claims = {"acr": 2, "amr": "pwd", "auth_time": True}
    user = User.of(session)
    assert (user.acr, user.amr, user.auth_time) == (None, (), None)
