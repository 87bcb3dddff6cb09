"""Refresh semantics of `TokenManager` on failure shapes that a real IdP rarely produces on cue
(respx stands in for the IdP's HTTP answers; the store is the real memory store)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator

import httpx
import pytest
import respx

from bff.auth.oidc import OIDCClient
from bff.auth.tokens import TokenManager
from bff.errors import AuthProviderUnavailable, StoreUnavailable, Unauthenticated
from bff.metrics import Metrics
from bff.sessions.crypto import SessionCrypto
from bff.sessions.memory import MemorySessionStore
from bff.sessions.models import Session, TokenSet
from bff.sessions.store import Claim

ISSUER = "https://idp.test"
DISCOVERY = {
    "issuer": ISSUER,
    "authorization_endpoint": f"{ISSUER}/authorize",
    "token_endpoint": f"{ISSUER}/token",
    "jwks_uri": f"{ISSUER}/jwks",
}


@pytest.fixture
async def parts() -> AsyncIterator[tuple[TokenManager, MemorySessionStore, respx.MockRouter]]:
    with respx.mock(assert_all_called=False) as router:
        router.get(f"{ISSUER}/.well-known/openid-configuration").respond(json=DISCOVERY)
        store = MemorySessionStore(SessionCrypto(["k"]), idle_seconds=3600, absolute_seconds=7200)
        oidc = OIDCClient(issuer=ISSUER, client_id="bff", client_secret="s", timeout=0.5)
        manager = TokenManager(store, oidc, Metrics(), buffer_seconds=300, wait_seconds=0.5, refresh_deadline=3)
        yield manager, store, router
        await oidc.aclose()


async def _session(store: MemorySessionStore, *, left: float = 100, lifetime: float = 3600) -> Session:
    now = time.time()
    session = Session(
        id=Session.new_id(),
        sub="alice",
        tokens=TokenSet(
            access_token="at-1", refresh_token="rt-1", expires_at=now + left, issued_at=now + left - lifetime
        ),
        created_at=now,
        last_seen=now,
    )
    await store.create(session)
    loaded = await store.get(session.id)
    assert loaded is not None
    return loaded


async def _settled(manager: TokenManager) -> None:
    """Wait for background refreshes to end (they run beside the requests)."""
    await asyncio.gather(*manager._inflight.values(), return_exceptions=True)


def _granted(access: str = "at-2", refresh: str | None = "rt-2") -> httpx.Response:
    body: dict[str, object] = {"access_token": access, "token_type": "Bearer", "expires_in": 3600}
    if refresh:
        body["refresh_token"] = refresh
    return httpx.Response(200, json=body)


async def test_concurrent_callers_share_one_refresh(
    parts: tuple[TokenManager, MemorySessionStore, respx.MockRouter],
) -> None:
    manager, store, router = parts

    async def slow(request: httpx.Request) -> httpx.Response:
        await asyncio.sleep(0.1)
        assert b"refresh_token=rt-1" in request.content
        return _granted()

    route = router.post(f"{ISSUER}/token").mock(side_effect=slow)
    session = await _session(store, left=1)  # inside the safety margin: callers must wait for the refresh
    results = await asyncio.gather(*(manager.ensure_fresh(session) for _ in range(20)))
    assert route.call_count == 1
    assert {r.tokens.access_token for r in results} == {"at-2"}
    stored = await store.get(session.id)
    assert stored is not None
    assert (stored.tokens.refresh_token, stored.version) == ("rt-2", 2)
    # a caller still holding the old copy does not refresh again: the store already has fresh tokens
    again = await manager.ensure_fresh(session)
    assert again.tokens.access_token == "at-2"
    assert route.call_count == 1


async def test_idp_without_new_refresh_token_keeps_the_old_one(
    parts: tuple[TokenManager, MemorySessionStore, respx.MockRouter],
) -> None:
    manager, store, router = parts
    router.post(f"{ISSUER}/token").mock(return_value=_granted(refresh=None))
    session = await manager.ensure_fresh(await _session(store, left=1))
    assert (session.tokens.access_token, session.tokens.refresh_token) == ("at-2", "rt-1")


async def test_invalid_grant_ends_the_session(parts: tuple[TokenManager, MemorySessionStore, respx.MockRouter]) -> None:
    manager, store, router = parts
    router.post(f"{ISSUER}/token").respond(400, json={"error": "invalid_grant"})
    session = await _session(store, left=1)
    with pytest.raises(Unauthenticated):
        await manager.ensure_fresh(session)
    assert await store.get(session.id) is None


async def test_invalid_grant_after_someone_else_rotated_is_not_a_logout(
    parts: tuple[TokenManager, MemorySessionStore, respx.MockRouter],
) -> None:
    manager, store, router = parts
    session = await _session(store, left=1)

    async def rotated_meanwhile(request: httpx.Request) -> httpx.Response:
        other = await store.get(session.id)
        assert other is not None
        other.tokens = TokenSet(
            access_token="at-other", refresh_token="rt-other", expires_at=time.time() + 3600, issued_at=time.time()
        )
        assert await store.replace(other) is not None
        return httpx.Response(400, json={"error": "invalid_grant"})

    router.post(f"{ISSUER}/token").mock(side_effect=rotated_meanwhile)
    result = await manager.ensure_fresh(session)
    assert result.tokens.access_token == "at-other"
    assert await store.get(session.id) is not None


@pytest.mark.parametrize(
    "failure",
    [
        httpx.Response(503, text="maintenance"),
        httpx.Response(200, text="<html>gateway</html>"),
        httpx.ConnectError("refused"),
        httpx.ReadTimeout("slow"),
        httpx.Response(401, json={"error": "invalid_client"}),
    ],
    ids=["503", "html", "connect", "timeout", "invalid_client"],
)
async def test_provider_failures_keep_the_session(
    parts: tuple[TokenManager, MemorySessionStore, respx.MockRouter], failure: object
) -> None:
    manager, store, router = parts
    if isinstance(failure, Exception):
        router.post(f"{ISSUER}/token").mock(side_effect=failure)
    else:
        router.post(f"{ISSUER}/token").mock(return_value=failure)
    # still valid: used as is, refreshed beside the request
    valid = await _session(store, left=100)
    assert (await manager.ensure_fresh(valid)).tokens.access_token == "at-1"
    await _settled(manager)
    # expired: AUTH_PROVIDER_UNAVAILABLE, session kept
    expired = await _session(store, left=-1)
    with pytest.raises(AuthProviderUnavailable):
        await manager.ensure_fresh(expired)
    assert await store.get(expired.id) is not None
    metrics = manager.metrics.token_refresh.labels("provider_error")._value.get()
    assert metrics == 2


async def test_forced_refresh_after_upstream_401(
    parts: tuple[TokenManager, MemorySessionStore, respx.MockRouter],
) -> None:
    manager, store, router = parts
    route = router.post(f"{ISSUER}/token").mock(return_value=_granted())
    session = await _session(store, left=3000)  # fresh by the clock
    assert (await manager.ensure_fresh(session)).tokens.access_token == "at-1"
    assert route.call_count == 0
    refreshed = await manager.ensure_fresh(session, rejected_token="at-1")
    assert refreshed.tokens.access_token == "at-2"
    # another resolver that saw the same 401 does not refresh again
    await manager.ensure_fresh(session, rejected_token="at-1")
    assert route.call_count == 1
    assert route.calls.last.request.headers["authorization"].startswith("Basic ")  # client_secret_basic


async def test_a_usable_token_never_waits_for_a_slow_idp(
    parts: tuple[TokenManager, MemorySessionStore, respx.MockRouter],
) -> None:
    """Fault 1: the refresh is due but the token in hand is good: use it, refresh beside it."""
    manager, store, router = parts
    answered = asyncio.Event()

    async def hanging(request: httpx.Request) -> httpx.Response:
        await asyncio.sleep(1.0)
        answered.set()
        return _granted()

    route = router.post(f"{ISSUER}/token").mock(side_effect=hanging)
    session = await _session(store, left=100)  # inside the 300 s buffer, far from expiry
    started = time.monotonic()
    results = await asyncio.gather(*(manager.ensure_fresh(session) for _ in range(40)))
    assert time.monotonic() - started < 0.1
    assert {r.tokens.access_token for r in results} == {"at-1"}
    await _settled(manager)
    assert answered.is_set()
    assert route.call_count == 1
    stored = await store.get(session.id)
    assert stored is not None
    assert stored.tokens.access_token == "at-2"


async def test_a_late_answer_is_kept_and_nobody_resends_meanwhile(
    parts: tuple[TokenManager, MemorySessionStore, respx.MockRouter],
) -> None:
    """Fault 2: the IdP answers after the waiters' budget: they get AUTH_PROVIDER_UNAVAILABLE, the
    call goes on under its own deadline, its answer is stored, and the old refresh token is never
    sent twice."""
    manager, store, router = parts

    async def late(request: httpx.Request) -> httpx.Response:
        await asyncio.sleep(1.2)  # waiters give up after 0.5 s; the call's deadline is 3 s
        return _granted()

    route = router.post(f"{ISSUER}/token").mock(side_effect=late)
    session = await _session(store, left=-1)
    with pytest.raises(AuthProviderUnavailable):
        await manager.ensure_fresh(session)
    with pytest.raises(AuthProviderUnavailable):
        await manager.ensure_fresh(session)  # a second request while the first call is still out
    await _settled(manager)
    assert route.call_count == 1
    stored = await store.get(session.id)
    assert stored is not None
    assert (stored.tokens.access_token, stored.tokens.refresh_token) == ("at-2", "rt-2")
    assert (await manager.ensure_fresh(session)).tokens.access_token == "at-2"
    assert route.call_count == 1


async def test_another_holders_claim_is_respected(
    parts: tuple[TokenManager, MemorySessionStore, respx.MockRouter],
) -> None:
    """Fault 4: a claim in the record (another replica, perhaps dead) is never overridden before it
    ends: no refresh token is sent; a usable token is still served at once."""
    manager, store, router = parts
    route = router.post(f"{ISSUER}/token").mock(return_value=_granted())
    usable = await _session(store, left=100)
    expired = await _session(store, left=-1)
    for session in (usable, expired):
        assert await store.claim_refresh(session.id, session.version, "dead-replica:1", 30) is Claim.TAKEN
    assert (await manager.ensure_fresh(usable)).tokens.access_token == "at-1"
    with pytest.raises(AuthProviderUnavailable):
        await manager.ensure_fresh(expired)
    assert route.call_count == 0
    manager._inflight.clear()


async def test_the_new_tokens_survive_a_store_outage_at_write_time(
    parts: tuple[TokenManager, MemorySessionStore, respx.MockRouter], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Fault 3: the IdP rotated, the store refuses the write: the new tokens serve this process's
    requests, the superseded refresh token is never sent again, the write lands when it can."""
    manager, store, router = parts
    route = router.post(f"{ISSUER}/token").mock(return_value=_granted())
    session = await _session(store, left=-1)
    real_replace = store.replace
    outage = {"left": 3}

    async def flaky_replace(s: Session, **kwargs: object) -> Session | None:
        if outage["left"] > 0:
            outage["left"] -= 1
            raise StoreUnavailable("down")
        return await real_replace(s, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(store, "replace", flaky_replace)
    refreshed = await manager.ensure_fresh(session)
    assert refreshed.tokens.access_token == "at-2"
    # the store still has the old record; this process serves the new tokens and does not refresh again
    again = await manager.ensure_fresh(session)
    assert again.tokens.access_token == "at-2"
    assert route.call_count == 1
    await asyncio.sleep(1.0)  # the deferred write retries (0.1, 0.2, 0.4 s)
    stored = await store.get(session.id)
    assert stored is not None
    assert (stored.tokens.refresh_token, stored.refresh_claim) == ("rt-2", None)
    assert manager.metrics.token_refresh.labels("write_deferred")._value.get() == 1


async def test_a_logout_during_the_refresh_revokes_the_rotated_token(
    parts: tuple[TokenManager, MemorySessionStore, respx.MockRouter],
) -> None:
    manager, store, router = parts
    router.get(f"{ISSUER}/.well-known/openid-configuration").respond(
        json={**DISCOVERY, "revocation_endpoint": f"{ISSUER}/revoke"}
    )
    session = await _session(store, left=-1)

    async def logout_meanwhile(request: httpx.Request) -> httpx.Response:
        await store.delete(session.id)
        return _granted()

    router.post(f"{ISSUER}/token").mock(side_effect=logout_meanwhile)
    revoke = router.post(f"{ISSUER}/revoke").respond(200)
    with pytest.raises(Unauthenticated):
        await manager.ensure_fresh(session)
    assert revoke.call_count == 1
    assert b"token=rt-2" in revoke.calls.last.request.content


async def test_a_rejected_token_is_compared_with_the_newest_not_the_request_snapshot(
    parts: tuple[TokenManager, MemorySessionStore, respx.MockRouter],
) -> None:
    """Fault 8: a request that refreshed and then saw a 401 on the NEW token forces one more refresh."""
    manager, store, router = parts
    route = router.post(f"{ISSUER}/token").mock(side_effect=[_granted("at-2", "rt-2"), _granted("at-3", "rt-3")])
    snapshot = await _session(store, left=-1)
    fresh = await manager.ensure_fresh(snapshot)
    assert fresh.tokens.access_token == "at-2"
    retried = await manager.ensure_fresh(snapshot, rejected_token="at-2")
    assert retried.tokens.access_token == "at-3"
    assert route.call_count == 2
