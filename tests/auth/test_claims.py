"""No hostage claims (issue 23): the refresh claim is a lease a live holder renews; an overdue refresh
fails its waiters fast; a replica whose own IdP calls hang while its peers' are answered gives its claim
up; a still-valid token is never held past its end. Two `TokenManager`s over one real Redis are two
replicas; respx stands in for the IdP, with a different answer per replica (one cut off, one not)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable

import httpx
import pytest

from bff.auth.oidc import OIDCClient
from bff.auth.tokens import TokenManager
from bff.errors import AuthProviderUnavailable, Unauthenticated
from bff.metrics import Metrics
from bff.sessions.crypto import SessionCrypto
from bff.sessions.models import Session, TokenSet
from bff.sessions.redis import RedisSessionStore
from bff.sessions.store import Claim, claim_holder
from tests.support.servers import RedisServer

ISSUER = "https://idp.test"
DISCOVERY = {
    "issuer": ISSUER,
    "authorization_endpoint": f"{ISSUER}/authorize",
    "token_endpoint": f"{ISSUER}/token",
    "jwks_uri": f"{ISSUER}/jwks",
    "introspection_endpoint": f"{ISSUER}/introspect",
}
#: refresh tokens the (fake) IdP has received: shared by every replica, as one IdP is
USED: set[str] = set()
LIMITS = {"idle_seconds": 3600, "absolute_seconds": 7200}


class Replica:
    """A replica's token layer: its own store client, OIDC client and IdP behaviour (``answer``)."""

    def __init__(self, redis_url: str, name: str, **options: float) -> None:
        self.name = name
        self.store = RedisSessionStore(redis_url, SessionCrypto(["shared"]), **LIMITS)
        self.calls: list[bytes] = []  # grants
        self.probes = 0
        self.answer: Callable[[httpx.Request], object] = lambda request: _arrived(request, f"at-{name}", f"rt-{name}")
        self.oidc = OIDCClient(
            issuer=ISSUER, client_id="bff", client_secret="s", timeout=5, transport=httpx.MockTransport(self._handle)
        )
        settings = {"wait_seconds": 5.0, "refresh_deadline": 30.0, "lease_seconds": 1.5, "overdue_seconds": 1.0}
        settings.update(options)
        self.tokens = TokenManager(self.store, self.oidc, Metrics(), buffer_seconds=300, **settings)

    async def _handle(self, request: httpx.Request) -> httpx.Response:
        if request.url.path.endswith("openid-configuration"):
            return httpx.Response(200, json=DISCOVERY)
        if request.url.path.endswith("/introspect"):
            token = request.content.decode().split("token=", 1)[1].split("&", 1)[0]
            if self.answer is _hang:
                await _hang(request)
            return httpx.Response(200, json={"active": token not in USED})
        probe = b"reachability-probe" in request.content
        if not probe:
            self.calls.append(request.content)
        result = self.answer(request)  # a slow or blackholed IdP is as slow for the probe
        if asyncio.iscoroutine(result):
            result = await result
        if probe:
            self.probes += 1
            return httpx.Response(400, json={"error": "unsupported_grant_type"})
        assert isinstance(result, httpx.Response)
        return result

    async def close(self) -> None:
        self.tokens.wait_seconds = self.tokens.refresh_deadline = 0.01  # nothing left to wait for
        await self.tokens.close()
        await self.oidc.aclose()
        await self.store.close()


def _granted(access: str, refresh: str, expires_in: int = 3600) -> httpx.Response:
    body = {"access_token": access, "refresh_token": refresh, "token_type": "Bearer", "expires_in": expires_in}
    return httpx.Response(200, json=body)


def _arrived(request: httpx.Request, access: str, refresh: str) -> httpx.Response:
    """The IdP got the request: its refresh token is used from now on."""
    if b"refresh_token=" in request.content:
        USED.add(request.content.decode().split("refresh_token=", 1)[1].split("&", 1)[0])
    return _granted(access, refresh)


async def _hang(request: httpx.Request) -> httpx.Response:
    await asyncio.sleep(3600)  # a blackholed connection: accepted, never answered
    raise AssertionError("unreachable")


@pytest.fixture
async def replicas(redis_server: RedisServer) -> AsyncIterator[tuple[Replica, Replica]]:
    USED.clear()
    a, b = Replica(redis_server.url, "a"), Replica(redis_server.url, "b")
    try:
        yield a, b
    finally:
        await a.close()
        await b.close()


async def _session(store: RedisSessionStore, *, left: float, lifetime: float = 3600) -> Session:
    now = store.now()
    session = Session(
        id=Session.new_id(),
        sub="alice",
        tokens=TokenSet(
            access_token="at-1", refresh_token="rt-1", expires_at=now + left, issued_at=now + left - lifetime
        ),
        created_at=time.time(),
        last_seen=time.time(),
    )
    await store.create(session)
    loaded = await store.get(session.id)
    assert loaded is not None
    return loaded


async def test_a_dead_holders_claim_lapses_within_one_lease(replicas: tuple[Replica, Replica]) -> None:
    """A holder killed mid-refresh never renews: its claim is gone within the lease (1.5 s here,
    3 s by default), and a peer refreshes the session."""
    a, b = replicas
    session = await _session(a.store, left=-1)
    dead = claim_holder("dead", 1, a.store.now())
    assert await a.store.claim_refresh(session.id, session.version, dead, 1.5) is Claim.TAKEN
    started = time.monotonic()
    refreshed = None
    while refreshed is None:
        try:
            refreshed = await b.tokens.ensure_fresh(session)
        except AuthProviderUnavailable:
            await asyncio.sleep(0.1)  # a request during the lease fails fast; the user retries
        assert time.monotonic() - started < 3.0
    assert refreshed.tokens.access_token == "at-b"
    assert len(b.calls) == 1


async def test_a_live_holder_renews_its_lease_while_the_idp_is_slow(replicas: tuple[Replica, Replica]) -> None:
    """A slow IdP (every call slow, for everyone) is not a partition: the holder keeps its claim past
    many leases, the peer never replays the refresh token, and the late answer is stored."""
    a, b = replicas

    async def slow(request: httpx.Request) -> httpx.Response:
        answer = _arrived(request, "at-a", "rt-a")  # arrived and rotated; the answer comes late
        await asyncio.sleep(4.0)
        return answer

    a.answer = slow
    b.answer = slow
    session = await _session(a.store, left=-1)
    first = asyncio.create_task(a.tokens.ensure_fresh(session))
    await asyncio.sleep(0.3)
    for _ in range(3):  # peers ask again and again over the 4 s: never a second grant
        with pytest.raises(AuthProviderUnavailable):
            await b.tokens.ensure_fresh(session)
        await asyncio.sleep(0.8)
    assert (await first).tokens.access_token == "at-a"
    assert (len(a.calls), len(b.calls)) == (1, 0)
    stored = await b.store.get(session.id)
    assert stored is not None and stored.tokens.refresh_token == "rt-a"


async def test_an_overdue_refresh_fails_its_waiters_fast(replicas: tuple[Replica, Replica]) -> None:
    """Someone else's refresh is overdue: a request whose token has expired answers
    AUTH_PROVIDER_UNAVAILABLE at once (session kept) instead of waiting out the IdP timeout."""
    a, b = replicas
    session = await _session(a.store, left=-1)
    overdue = claim_holder("slow-peer", 1, a.store.now() - 1.5)  # started 1.5 s ago; overdue after 1 s
    assert await a.store.claim_refresh(session.id, session.version, overdue, 30) is Claim.TAKEN
    started = time.monotonic()
    with pytest.raises(AuthProviderUnavailable):
        await b.tokens.ensure_fresh(session)
    assert time.monotonic() - started < 0.3
    assert b.calls == []
    assert await b.store.get(session.id) is not None
    assert b.tokens.metrics.refresh_claims.labels("overdue")._value.get() >= 1


async def test_a_valid_token_is_never_held_past_its_end(replicas: tuple[Replica, Replica]) -> None:
    """A token with 1.2 s left (inside the safety margin) waits for the peer's refresh at most until
    just before its end, then goes out as it is."""
    a, b = replicas
    session = await _session(a.store, left=1.2, lifetime=20)
    holder = claim_holder("peer", 1, a.store.now())
    assert await a.store.claim_refresh(session.id, session.version, holder, 30) is Claim.TAKEN
    started = time.monotonic()
    result = await b.tokens.ensure_fresh(session)
    assert time.monotonic() - started < 1.0
    assert result.tokens.access_token == "at-1"


async def test_a_cut_off_replica_releases_its_claim_and_peers_refresh(replicas: tuple[Replica, Replica]) -> None:
    """Replica A's IdP traffic is blackholed, B reaches the IdP. A's claimed refresh hangs; once it is
    overdue, B finds the refresh token A sent unused at the IdP, A gives the claim up, B refreshes the
    session, and A takes no new claims meanwhile."""
    a, b = replicas
    a.answer = _hang
    victim = await _session(a.store, left=-1)
    other = await _session(a.store, left=-1)
    hanging = asyncio.create_task(a.tokens.ensure_fresh(victim))  # A claims, its call hangs
    await asyncio.sleep(0.2)
    with pytest.raises(AuthProviderUnavailable):
        await b.tokens.ensure_fresh(victim)  # busy (not overdue yet): B fails within the overdue bound
    assert (await b.tokens.ensure_fresh(other)).tokens.access_token == "at-b"  # B is answered (later call)
    started = time.monotonic()
    refreshed = None
    while refreshed is None:
        try:
            refreshed = await b.tokens.ensure_fresh(victim)
        except AuthProviderUnavailable:
            await asyncio.sleep(0.1)
        assert time.monotonic() - started < 3.0, "the cut-off replica kept the session hostage"
    assert refreshed.tokens.access_token == "at-b"
    assert a.tokens.cut_off()
    assert a.tokens.metrics.refresh_claims.labels("abandoned")._value.get() == 1
    # while cut off, A does not claim: a third session's refresh is left to peers (A's request fails fast)
    third = await _session(a.store, left=-1)
    calls = len(a.calls)
    with pytest.raises(AuthProviderUnavailable):
        await a.tokens.ensure_fresh(third)
    assert len(a.calls) == calls
    hanging.cancel()
    await asyncio.gather(hanging, return_exceptions=True)


async def test_inside_the_reuse_interval_a_peer_takes_over_an_overdue_claim(redis_server: RedisServer) -> None:
    """With BFF_OIDC_REFRESH_REUSE_GRACE_SECONDS (an IdP that accepts a refresh token again for a
    while), an overdue claim is taken over instead of failing requests."""
    b = Replica(redis_server.url, "b", reuse_grace_seconds=30)
    try:
        session = await _session(b.store, left=-1)
        overdue = claim_holder("stuck", 1, b.store.now() - 1.5)
        assert await b.store.claim_refresh(session.id, session.version, overdue, 30) is Claim.TAKEN
        result = await b.tokens.ensure_fresh(session)
        assert result.tokens.access_token == "at-b"
        assert b.tokens.metrics.refresh_claims.labels("taken_over")._value.get() == 1
        # outside the interval (started 40 s ago) it is not taken over
        again = await _session(b.store, left=-1)
        old = claim_holder("stuck", 2, b.store.now() - 40)
        assert await b.store.claim_refresh(again.id, again.version, old, 30) is Claim.TAKEN
        with pytest.raises(AuthProviderUnavailable):
            await b.tokens.ensure_fresh(again)
    finally:
        await b.close()


async def test_a_previous_release_claim_without_a_start_is_waited_for_not_taken(
    replicas: tuple[Replica, Replica],
) -> None:
    """0.2's holders (``replica:n``, a 35 s claim, no start in the id) keep their claim in a mixed
    fleet: never taken over, never replayed."""
    a, b = replicas
    session = await _session(a.store, left=-1)
    assert await a.store.claim_refresh(session.id, session.version, "old-replica:7", 35) is Claim.TAKEN
    with pytest.raises(AuthProviderUnavailable):
        await b.tokens.ensure_fresh(session)
    assert b.calls == []


async def test_a_peer_that_sees_the_token_unused_frees_a_cut_off_holders_claim(
    replicas: tuple[Replica, Replica],
) -> None:
    """No other refresh happens anywhere: B, finding A's refresh overdue, introspects the refresh token
    A sent: still unused, so A's call never arrived. B says so on the claim; A closes its call and
    gives the claim up; B's next request refreshes. Introspection consumes nothing."""
    a, b = replicas
    a.answer = _hang
    victim = await _session(a.store, left=-1)
    hanging = asyncio.create_task(a.tokens.ensure_fresh(victim))
    await asyncio.sleep(1.2)  # A's call is overdue (1 s)
    started = time.monotonic()
    with pytest.raises(AuthProviderUnavailable):
        await b.tokens.ensure_fresh(victim)  # fails fast, probes
    refreshed = None
    while refreshed is None:
        try:
            refreshed = await b.tokens.ensure_fresh(victim)
        except AuthProviderUnavailable:
            await asyncio.sleep(0.05)
        assert time.monotonic() - started < 1.5
    assert refreshed.tokens.access_token == "at-b"
    assert len(b.calls) == 1
    hanging.cancel()
    await asyncio.gather(hanging, return_exceptions=True)


async def test_a_late_answer_for_one_replica_is_never_replayed(replicas: tuple[Replica, Replica]) -> None:
    """The other reading of a hung call: A's refresh reached the IdP (rotated) and only its answer is
    late, while B reaches the IdP fine. B fails fast, finds the token used (not unused), never sends it
    again; A keeps its claim and stores the late answer. A takes no new claims meanwhile."""
    a, b = replicas

    async def late(request: httpx.Request) -> httpx.Response:
        answer = _arrived(request, "at-a", "rt-a")
        await asyncio.sleep(3.0)
        return answer

    a.answer = late
    victim = await _session(a.store, left=-1)
    first = asyncio.create_task(a.tokens.ensure_fresh(victim))
    await asyncio.sleep(0.2)
    other = await _session(a.store, left=-1)
    assert (await b.tokens.ensure_fresh(other)).tokens.access_token == "at-b"  # B is answered meanwhile
    for _ in range(4):
        with pytest.raises(AuthProviderUnavailable):
            await b.tokens.ensure_fresh(victim)
        await asyncio.sleep(0.4)
    assert (await first).tokens.access_token == "at-a"
    stored = await b.store.get(victim.id)
    assert stored is not None and stored.tokens.access_token == "at-a"
    assert (len(a.calls), len(b.calls)) == (1, 1)  # B's one grant was for the other session
    assert a.tokens.metrics.refresh_claims.labels("abandoned")._value.get() == 0


async def test_a_frozen_holders_used_token_is_not_replayed_after_its_lease(redis_server: RedisServer) -> None:
    """A holder frozen (SIGSTOP) after its refresh reached the IdP: its lease lapses, but the peer that
    takes the lapsed claim finds the refresh token used and does not replay it; when the holder wakes,
    its write lands and the peer serves the new tokens. A holder that never wakes (it died with the new
    tokens) ends the session once no refresh could still be answered."""
    USED.clear()
    b = Replica(redis_server.url, "b", refresh_deadline=2.0)
    try:
        session = await _session(b.store, left=-1)
        frozen = claim_holder("frozen", 1, b.store.now())
        assert await b.store.claim_refresh(session.id, session.version, frozen, 0.3) is Claim.TAKEN
        USED.add("rt-1")  # its refresh reached the IdP before it froze
        await asyncio.sleep(0.4)  # its lease lapsed
        with pytest.raises(AuthProviderUnavailable):
            await b.tokens.ensure_fresh(session)
        assert b.calls == []
        woken = await b.store.get(session.id)
        assert woken is not None
        woken.tokens = TokenSet(
            access_token="at-woken", refresh_token="rt-woken", expires_at=b.store.now() + 600, issued_at=b.store.now()
        )
        assert await b.store.replace(woken, end_claim=frozen) is not None  # the holder wakes and writes
        assert (await b.tokens.ensure_fresh(session)).tokens.access_token == "at-woken"

        dead = await _session(b.store, left=-1)
        gone = claim_holder("dead-after-rotation", 1, b.store.now())
        assert await b.store.claim_refresh(dead.id, dead.version, gone, 0.3) is Claim.TAKEN
        await asyncio.sleep(0.4)
        with pytest.raises(AuthProviderUnavailable):
            await b.tokens.ensure_fresh(dead)
        await asyncio.sleep(2.2)  # past the refresh deadline: nobody can still write that rotation
        outcome: BaseException | None = None
        for _ in range(20):  # our own lapsed-claim lease (3 s here is 1.5 s) must run out too
            try:
                await b.tokens.ensure_fresh(dead)
            except Unauthenticated as exc:
                outcome = exc
                break
            except AuthProviderUnavailable:
                await asyncio.sleep(0.2)
        assert isinstance(outcome, Unauthenticated)
        assert await b.store.get(dead.id) is None
        assert b.calls == []  # never replayed
    finally:
        await b.close()
