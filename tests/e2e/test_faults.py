"""Token lifecycle under single, realistic faults: three replicas on one real Redis, the real
oidc-provider with refresh-token rotation and reuse detection (replaying a rotated refresh token
revokes the whole grant), and a forward proxy in front of the IdP for one replica that holds,
delays or refuses its token requests.

Every test ends with the same checks: the session is alive, the IdP saw no reuse, and requests that
held a valid token were answered within their budget (one second here).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Iterator
from typing import Any

import httpx
import pytest

from tests.conftest import Bff
from tests.e2e.conftest import Stack
from tests.support.browser import signed_in_cookie
from tests.support.faults import FaultProxy, fault_proxy
from tests.support.servers import RedisServer, free_port

ACCESS_TTL = 10  # seconds: refresh is due at half-life (5 s left), the token is usable until 2.5 s left
VIEWER = {"query": "{ viewer { id name } }"}
BUDGET = 1.0  # the most a request holding a valid token may take


@pytest.fixture
def idp_options() -> dict[str, Any]:
    return {"access_ttl": ACCESS_TTL}


@pytest.fixture
def bff_ports() -> list[int]:
    return [free_port(), free_port(), free_port()]


@pytest.fixture
def persistent_redis() -> Iterator[RedisServer]:
    server = RedisServer(persistent=True)
    server.start()
    try:
        yield server
    finally:
        server.cleanup()


@contextlib.asynccontextmanager
async def _replicas(stack: Stack, redis: RedisServer, *per_replica: dict[str, Any]) -> AsyncIterator[list[Bff]]:
    shared = {"session_store": redis.url, "session_secret": "shared-secret-for-replicas"}
    async with contextlib.AsyncExitStack() as stack_of:
        bffs = [
            await stack_of.enter_async_context(stack.start_bff(i, **{**shared, **options}))
            for i, options in enumerate(per_replica)
        ]
        yield bffs


async def _record(bff: Bff, cookie: str) -> Any:
    return await bff.resources.store.get(bff.resources.crypto.unsign(cookie))


async def _until(bff: Bff, cookie: str, fraction_left: float) -> None:
    """Sleep until the stored access token has ``fraction_left`` of its life left."""
    session = await _record(bff, cookie)
    lifetime = session.tokens.expires_at - session.tokens.issued_at
    wake = session.tokens.expires_at - lifetime * fraction_left
    await asyncio.sleep(max(0.0, wake - bff.resources.store.now()))


async def _viewer(bff: Bff, cookie: str) -> tuple[httpx.Response, float]:
    async with bff.client(cookie) as client:
        started = time.monotonic()
        response = await client.post("/graphql", json=VIEWER)
        return response, time.monotonic() - started


def _ok(response: httpx.Response) -> None:
    assert response.status_code == 200
    body = response.json()
    assert "errors" not in body, body
    assert body["data"]["viewer"]["id"] == "alice"
    assert "set-cookie" not in response.headers


def _data(response: httpx.Response) -> bool:
    return response.status_code == 200 and "errors" not in response.json()


def _code(response: httpx.Response) -> str:
    return str(response.json()["errors"][0]["extensions"]["code"])


async def _wait_for(predicate: Any, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not await predicate():
        assert time.monotonic() < deadline, "condition not met in time"
        await asyncio.sleep(0.05)


def _proxied(proxy: FaultProxy) -> dict[str, Any]:
    return {"transports": {"oidc": proxy.transport()}}


async def test_a_held_refresh_neither_stalls_valid_tokens_nor_is_replayed_when_keys_vanish(
    stack: Stack, redis_server: RedisServer
) -> None:
    """Faults 1 and 4: the replica that took the claim hangs at the IdP (its token request held before
    the IdP: a blackhole); the other replicas serve the valid token at once, and after every other key
    is deleted (an eviction, a failover) and the token has expired, nobody sends its refresh token while
    the holder's claim stands: a request that needs it fails fast. That request's probe shows the IdP
    answers the others, so the holder gives its hung call (closed: the held request is dropped, never
    delivered) and its claim up, and a healthy replica refreshes: one grant, no replay (issue 23)."""
    async with fault_proxy() as proxy, _replicas(stack, redis_server, {}, {}, _proxied(proxy)) as replicas:
        one, two, holder = replicas
        cookie = await signed_in_cookie(one)
        await _until(one, cookie, 0.45)  # refresh due, token still good
        before = stack.idp.stats()
        proxy.mode = "hold"
        response, _ = await _viewer(holder, cookie)
        _ok(response)  # served at once; its refresh runs beside it, held at the proxy
        await _wait_for(lambda: _true(proxy.token_requests == 1))

        timings = []
        for bff in (one, two) * 10:
            response, elapsed = await _viewer(bff, cookie)
            _ok(response)
            timings.append(elapsed)
        assert max(timings) < BUDGET, timings

        redis = one.resources.store.redis
        for key in await redis.keys("*"):
            if not key.endswith(b":s"):
                await redis.delete(key)  # everything but the session records
        assert stack.idp.stats()["refreshGrants"] == before["refreshGrants"]  # nobody else sent it

        # once the holder's refresh is overdue (2 s), a peer's request finds the refresh token unused at
        # the IdP (introspection) and says so on the claim; the holder closes its call (the held request
        # is dropped, never delivered) and gives the claim up; a healthy replica refreshes, all while
        # the token is still valid: no request fails, none waits
        async def rotated() -> bool:
            response, elapsed = await _viewer((one, two)[int(time.monotonic() * 10) % 2], cookie)
            _ok(response)
            assert elapsed < BUDGET
            return await _rotated(one, cookie, before_version=1)

        await _wait_for(rotated, timeout=4)
        assert proxy.dropped == 1
        proxy.release()
        for bff in (one, two, holder):
            _ok((await _viewer(bff, cookie))[0])
        after = stack.idp.stats()
        assert after["refreshGrants"] - before["refreshGrants"] == 1
        assert after["refreshReuse"] == 0
        assert holder.resources.metrics.refresh_claims.labels("abandoned")._value.get() == 1


async def test_an_answer_after_the_timeout_is_stored_not_lost(stack: Stack, redis_server: RedisServer) -> None:
    """Fault 2: the IdP rotates but answers after the waiters' budget (2 s); the answer is kept and
    no replica replays the old refresh token meanwhile."""
    async with fault_proxy() as proxy, _replicas(stack, redis_server, {}, {}, _proxied(proxy)) as (one, two, late):
        cookie = await signed_in_cookie(one)
        before = stack.idp.stats()
        proxy.mode, proxy.late_seconds = "late", 3.5
        await _until(one, cookie, -0.05)  # expired: a refresh must happen before any upstream call
        first, elapsed = await _viewer(late, cookie)
        assert _code(first) == "AUTH_PROVIDER_UNAVAILABLE"
        assert elapsed < late.settings.oidc_timeout_seconds + BUDGET
        others = await asyncio.gather(_viewer(one, cookie), _viewer(two, cookie))
        for response, _ in others:  # they wait for the holder's claim, never resend
            assert response.status_code == 200
            assert "set-cookie" not in response.headers
        await _wait_for(lambda: _true(proxy.answered == 1))
        await _wait_for(lambda: _rotated(one, cookie, before_version=1))
        for bff in (one, two, late):
            _ok((await _viewer(bff, cookie))[0])
        after = stack.idp.stats()
        assert after["refreshGrants"] - before["refreshGrants"] == 1
        assert after["refreshReuse"] == 0


async def test_redis_stopped_right_after_the_rotation_loses_nothing(
    stack: Stack, persistent_redis: RedisServer
) -> None:
    """Fault 3: Redis (AOF on) goes away after the IdP rotated and before the write; the new tokens
    stay with the replica that got them, the write lands when Redis is back."""
    async with fault_proxy() as proxy, _replicas(stack, persistent_redis, {}, {}, _proxied(proxy)) as replicas:
        one, two, writer = replicas
        cookie = await signed_in_cookie(one)
        await _until(one, cookie, 0.45)
        before = stack.idp.stats()
        proxy.mode, proxy.late_seconds = "late", 1.0
        request = asyncio.create_task(_viewer(writer, cookie))  # its refresh starts (beside it)
        await _wait_for(lambda: _true(proxy.token_requests == 1))
        persistent_redis.stop()  # the IdP has rotated; its answer reaches the replica in ~1 s
        await asyncio.sleep(3.0)
        persistent_redis.start()
        _ok((await request)[0])  # it held a valid token: served without waiting for the refresh
        await _wait_for(lambda: _rotated(one, cookie, before_version=1), timeout=15)
        for bff in (one, two, writer):
            _ok((await _viewer(bff, cookie))[0])
        after = stack.idp.stats()
        assert after["refreshGrants"] - before["refreshGrants"] == 1
        assert after["refreshReuse"] == 0
        metrics = await _metrics(writer)
        assert 'bff_token_refresh_total{outcome="write_deferred"} 1.0' in metrics


async def test_a_rolling_secret_rotation_logs_nobody_out(stack: Stack, redis_server: RedisServer) -> None:
    """Fault 6: one replica already has the new secret (old one accepted), the others not yet.
    A record re-encrypted under the new key is "not readable yet" for them: SESSION_STORE_UNAVAILABLE,
    cookie and session kept; after phase one of the documented rotation (new secret accepted
    everywhere) every replica serves it."""
    new = {"session_secret": "the-new-secret", "session_previous_secrets": ["shared-secret-for-replicas"]}
    async with _replicas(stack, redis_server, {}, new) as (old, rotated):
        cookie = await signed_in_cookie(old)
        fresh_cookie = await signed_in_cookie(rotated)  # signed and encrypted under the new key
        await _until(old, cookie, 0.45)
        _ok((await _viewer(rotated, cookie))[0])  # refreshed beside it, re-encrypted under the new key
        await _wait_for(lambda: _rotated(rotated, cookie, before_version=1))
        for token in (cookie, fresh_cookie):
            response, _ = await _viewer(old, token)
            assert _code(response) == "SESSION_STORE_UNAVAILABLE"
            assert "set-cookie" not in response.headers
    phase_one = {"session_previous_secrets": ["the-new-secret"]}
    async with _replicas(stack, redis_server, phase_one, new) as (old, rotated):
        for token in (cookie, fresh_cookie):
            for bff in (old, rotated):
                _ok((await _viewer(bff, token))[0])
    assert stack.idp.stats()["refreshReuse"] == 0


async def test_an_upstream_that_rejects_valid_tokens_causes_no_refresh_storm(
    stack: Stack, redis_server: RedisServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Fault 7: the accounts upstream refuses every token for a while. One forced refresh per
    replica, then UPSTREAM_UNAUTHORIZED with the session (and cookie) kept; normal service after."""
    async with _replicas(stack, redis_server, {}, {}, {}) as bffs:
        cookie = await signed_in_cookie(bffs[0])
        before = stack.idp.stats()
        assert stack.validator is not None

        async def refuse(token: str) -> None:
            return None

        monkeypatch.setattr(stack.validator, "subject", refuse)
        codes = set()
        for i in range(30):
            response, _ = await _viewer(bffs[i % 3], cookie)
            assert "set-cookie" not in response.headers
            codes.add(_code(response))
        assert codes == {"UPSTREAM_UNAUTHORIZED"}
        grants = stack.idp.stats()["refreshGrants"] - before["refreshGrants"]
        assert 1 <= grants <= 3, grants  # at most one forced refresh per replica and cooldown
        monkeypatch.undo()
        for bff in bffs:
            # the cooldown only stops forced refreshes: requests go on, and work once the upstream does
            _ok((await _viewer(bff, cookie))[0])
        assert stack.idp.stats()["refreshReuse"] == 0


async def _metrics(bff: Bff) -> str:
    async with bff.client() as client:
        return (await client.get("/metrics")).text


async def _true(value: bool) -> bool:
    return value


async def _rotated(bff: Bff, cookie: str, *, before_version: int) -> bool:
    with contextlib.suppress(Exception):
        session = await _record(bff, cookie)
        return session is not None and session.version > before_version and session.refresh_claim is None
    return False


async def test_a_logout_racing_a_refresh_leaves_no_refresh_token_live(
    stack: Stack, redis_server: RedisServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Issue 12 §10: a logout lands on one replica while another is refreshing the same session
    (the IdP has rotated, its answer is still on the way). The rotated refresh token must not
    outlive the logout: the refreshing replica finds the session gone and revokes what it got."""
    async with fault_proxy() as proxy, _replicas(stack, redis_server, {}, _proxied(proxy)) as replicas:
        one, refresher = replicas
        cookie = await signed_in_cookie(one)
        await _until(one, cookie, 0.45)
        revoked: list[str] = []
        oidc = refresher.resources.oidc
        real_revoke = oidc.revoke

        async def recording_revoke(token: str, *, hint: str = "refresh_token") -> bool:
            revoked.append(token)
            return bool(await real_revoke(token, hint=hint))

        monkeypatch.setattr(oidc, "revoke", recording_revoke)
        proxy.mode, proxy.late_seconds = "late", 1.5
        _ok((await _viewer(refresher, cookie))[0])  # its refresh starts beside it
        await _wait_for(lambda: _true(proxy.token_requests == 1))
        await asyncio.sleep(0.3)  # the IdP has rotated by now; the answer is held back
        async with one.client(cookie) as client:
            response = await client.post("/auth/logout", headers={"X-CSRF": "1"})
        assert response.json()["loggedOut"] is True
        await _wait_for(lambda: _true(bool(revoked)), timeout=10)
        async with httpx.AsyncClient(timeout=10) as client:
            meta = (await client.get(f"{stack.idp.issuer}/.well-known/openid-configuration")).json()
            introspection = await client.post(
                meta["introspection_endpoint"],
                data={"token": revoked[-1], "token_type_hint": "refresh_token"},
                auth=("resource-server", "resource-secret"),
            )
        assert introspection.json()["active"] is False
        response, _ = await _viewer(one, cookie)
        assert _code(response) == "UNAUTHENTICATED"
