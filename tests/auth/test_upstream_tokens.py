"""Tokens per upstream (issue 23): each upstream with a `TokenTarget` gets its own token from a grant on
the session's one refresh-token chain; grants are serialized, each uses the newest refresh token, the
session's login token is left alone unless used, and a refused target fails only that upstream.
respx stands in for the IdP (failure shapes on cue); the store is the real memory store."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator
from urllib.parse import parse_qs

import httpx
import pytest
import respx

from bff.auth.oidc import OIDCClient, TokenTarget
from bff.auth.tokens import TokenManager
from bff.errors import Unauthenticated, UpstreamTokenRefused
from bff.metrics import Metrics
from bff.sessions.crypto import SessionCrypto
from bff.sessions.memory import MemorySessionStore
from bff.sessions.models import Session, TokenSet

ISSUER = "https://idp.test"
DISCOVERY = {
    "issuer": ISSUER,
    "authorization_endpoint": f"{ISSUER}/authorize",
    "token_endpoint": f"{ISSUER}/token",
    "jwks_uri": f"{ISSUER}/jwks",
}
TARGETS = {
    "accounts": TokenTarget(resource="https://accounts.example"),
    "graph": TokenTarget(scopes="api://graph/.default"),
    "orders": TokenTarget(audience="https://orders.example"),
    "exchanged": TokenTarget(resource="https://x.example", exchange=True),
}


class FakeIdP:
    """A rotating token endpoint: every refresh token works once, like oidc-provider's rotation."""

    def __init__(self) -> None:
        self.valid = {"rt-1"}
        self.grants: list[dict[str, str]] = []
        self.counter = 1

    async def token(self, request: httpx.Request) -> httpx.Response:
        form = {k: v[0] for k, v in parse_qs(request.content.decode()).items()}
        self.grants.append(form)
        await asyncio.sleep(0.02)
        if form.get("resource") == "https://refused.example":
            return httpx.Response(400, json={"error": "invalid_target"})
        if form["grant_type"] == "urn:ietf:params:oauth:grant-type:token-exchange":
            return httpx.Response(
                200, json={"access_token": f"x-for-{form['subject_token']}", "token_type": "Bearer", "expires_in": 600}
            )
        if form["refresh_token"] not in self.valid:
            return httpx.Response(400, json={"error": "invalid_grant", "error_description": "reused"})
        self.valid.discard(form["refresh_token"])
        self.counter += 1
        rotated = f"rt-{self.counter}"
        self.valid.add(rotated)
        audience = form.get("resource") or form.get("audience") or form.get("scope") or "session"
        body = {"access_token": f"at-{self.counter}@{audience}", "refresh_token": rotated, "expires_in": 600}
        return httpx.Response(200, json={**body, "token_type": "Bearer"})


@pytest.fixture
async def parts() -> AsyncIterator[tuple[TokenManager, MemorySessionStore, FakeIdP]]:
    idp = FakeIdP()
    with respx.mock(assert_all_called=False) as router:
        router.get(f"{ISSUER}/.well-known/openid-configuration").respond(json=DISCOVERY)
        router.post(f"{ISSUER}/token").mock(side_effect=idp.token)
        store = MemorySessionStore(SessionCrypto(["k"]), idle_seconds=3600, absolute_seconds=7200)
        oidc = OIDCClient(issuer=ISSUER, client_id="bff", client_secret="s", timeout=2)
        targets = {
            **TARGETS,
            "broken": TokenTarget(resource="https://refused.example"),
            "accounts-admin": TokenTarget(resource="https://accounts.example"),  # same token as accounts
        }
        manager = TokenManager(store, oidc, Metrics(), buffer_seconds=300, wait_seconds=2, targets=targets)
        yield manager, store, idp
        await manager.close()
        await oidc.aclose()


async def _session(store: MemorySessionStore, *, left: float = 3000) -> Session:
    now = time.time()
    session = Session(
        id=Session.new_id(),
        sub="alice",
        tokens=TokenSet(access_token="at-1", refresh_token="rt-1", expires_at=now + left, issued_at=now - 600),
        created_at=now,
        last_seen=now,
    )
    await store.create(session)
    loaded = await store.get(session.id)
    assert loaded is not None
    return loaded


async def test_each_upstream_gets_its_own_token_from_the_one_chain(
    parts: tuple[TokenManager, MemorySessionStore, FakeIdP],
) -> None:
    manager, store, idp = parts
    session = await _session(store)
    # two upstreams asked for at the same moment: two grants, serialized, each on the newest refresh token
    accounts, graph = await asyncio.gather(
        manager.ensure_fresh(session, upstream="accounts"), manager.ensure_fresh(session, upstream="graph")
    )
    assert len(idp.grants) == 2
    assert [g["refresh_token"] for g in idp.grants] == ["rt-1", "rt-2"]
    by_param = {g.get("resource") or g.get("scope"): g for g in idp.grants}
    assert set(by_param) == {"https://accounts.example", "api://graph/.default"}
    stored = await store.get(session.id)
    assert stored is not None
    assert stored.tokens.refresh_token == "rt-3"
    assert stored.tokens.access_token == "at-1"  # the login token was not refreshed: nothing used it
    assert stored.upstream_tokens["accounts"].access_token.endswith("@https://accounts.example")
    assert stored.upstream_tokens["graph"].access_token.endswith("@api://graph/.default")
    assert accounts.upstream_tokens["accounts"].access_token == stored.upstream_tokens["accounts"].access_token
    assert graph.upstream_tokens["graph"].access_token == stored.upstream_tokens["graph"].access_token
    # asked again: no grant (each token is fresh), and an upstream without a target gets the session's
    for name in ("accounts", "graph", "catalog"):
        again = await manager.ensure_fresh(stored, upstream=name)
        assert again.tokens.access_token == "at-1"
    assert len(idp.grants) == 2


async def test_audience_parameter_and_concurrent_storm_one_grant_per_audience(
    parts: tuple[TokenManager, MemorySessionStore, FakeIdP],
) -> None:
    manager, store, idp = parts
    session = await _session(store)
    calls = [manager.ensure_fresh(session, upstream=name) for name in ("orders", "accounts") * 20]
    await asyncio.gather(*calls)
    assert sorted(g.get("audience") or g.get("resource") for g in idp.grants) == [
        "https://accounts.example",
        "https://orders.example",
    ]
    assert all("resource" not in g for g in idp.grants if "audience" in g)


async def test_a_refused_target_fails_only_that_upstream(
    parts: tuple[TokenManager, MemorySessionStore, FakeIdP],
) -> None:
    manager, store, idp = parts
    session = await _session(store)
    with pytest.raises(UpstreamTokenRefused) as refused:
        await manager.ensure_fresh(session, upstream="broken")
    assert refused.value.upstream == "broken"
    assert refused.value.code == "UPSTREAM_TOKEN_REFUSED"
    # backed off: asked again at once, no grant at the IdP
    with pytest.raises(UpstreamTokenRefused):
        await manager.ensure_fresh(session, upstream="broken")
    assert len(idp.grants) == 1
    # the session and its chain are intact; another upstream still gets its token
    stored = await store.get(session.id)
    assert stored is not None and stored.tokens.refresh_token == "rt-1" and stored.refresh_claim is None
    assert (await manager.ensure_fresh(stored, upstream="accounts")).upstream_tokens["accounts"]


async def test_invalid_grant_on_an_audience_ends_the_session(
    parts: tuple[TokenManager, MemorySessionStore, FakeIdP],
) -> None:
    manager, store, idp = parts
    session = await _session(store)
    idp.valid.clear()  # the grant was revoked at the IdP
    with pytest.raises(Unauthenticated):
        await manager.ensure_fresh(session, upstream="accounts")
    assert await store.get(session.id) is None


async def test_token_exchange_uses_a_fresh_session_token(
    parts: tuple[TokenManager, MemorySessionStore, FakeIdP],
) -> None:
    manager, store, idp = parts
    fresh = await _session(store)
    result = await manager.ensure_fresh(fresh, upstream="exchanged")
    assert result.upstream_tokens["exchanged"].access_token == "x-for-at-1"
    assert [g["grant_type"] for g in idp.grants] == ["urn:ietf:params:oauth:grant-type:token-exchange"]
    assert idp.grants[0]["resource"] == "https://x.example"
    # with the session's token expired, it is refreshed first, then exchanged
    expired = await _session(store, left=-1)
    result = await manager.ensure_fresh(expired, upstream="exchanged")
    assert [g["grant_type"] for g in idp.grants[1:]] == [
        "refresh_token",
        "urn:ietf:params:oauth:grant-type:token-exchange",
    ]
    assert result.upstream_tokens["exchanged"].access_token == f"x-for-{result.tokens.access_token}"
    assert result.tokens.access_token != "at-1"


async def test_the_record_keeps_a_format_the_previous_release_reads(
    parts: tuple[TokenManager, MemorySessionStore, FakeIdP],
) -> None:
    """Format 2 = 0.2's JSON (its keys only) + sealed extras: what 0.2's `Session.from_json`
    (``cls(**data)``, refusing unknown keys) reads, and what this release reads back whole."""
    manager, store, _ = parts
    session = await manager.ensure_fresh(await _session(store), upstream="accounts")
    legacy = json.loads(session.to_json())
    assert set(legacy) == {"id", "sub", "tokens", "created_at", "last_seen", "claims", "sid", "kind"}
    assert set(legacy["tokens"]) == {
        "access_token",
        "expires_at",
        "issued_at",
        "refresh_token",
        "id_token",
        "token_type",
    }
    extras = session.extras_json()
    assert extras is not None and json.loads(extras)["format"] == 2
    again = Session.from_json(session.to_json(), 3, extras)
    assert again.upstream_tokens["accounts"].access_token == session.upstream_tokens["accounts"].access_token
    # a reader of this release ignores keys a later release may add
    future = json.loads(session.to_json())
    future["added_later"] = True
    assert Session.from_json(json.dumps(future).encode(), 1).sub == "alice"
    assert "at-" not in repr(session.upstream_tokens["accounts"])  # no token in a repr (logs)


async def test_upstreams_asking_for_the_same_token_share_it(
    parts: tuple[TokenManager, MemorySessionStore, FakeIdP],
) -> None:
    manager, store, idp = parts
    assert manager.slot("accounts-admin") == manager.slot("accounts") == "accounts"
    session = await _session(store)
    await asyncio.gather(
        manager.ensure_fresh(session, upstream="accounts"), manager.ensure_fresh(session, upstream="accounts-admin")
    )
    assert len(idp.grants) == 1
