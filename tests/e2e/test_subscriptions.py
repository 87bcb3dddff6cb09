"""Subscriptions against the real oidc-provider with short access tokens, two replicas on real Redis."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from typing import Any

import pytest
import strawberry
from strawberry.types import Info

from bff import Context, Unauthenticated, build_schema
from tests.e2e.conftest import Stack
from tests.graphql.test_subscriptions_sse import Events, subscribe
from tests.support.browser import browser_login, sign_in_at_idp, signed_in_cookie
from tests.support.faults import fault_proxy
from tests.support.servers import RedisServer

ACCESS_TTL = 6  # seconds: the BFF refreshes at half-life, so a rotation every ~3 s


@pytest.fixture
def idp_options() -> dict[str, Any]:
    return {"access_ttl": ACCESS_TTL}


@strawberry.type
class Query:
    ok: bool = True


@strawberry.type
class Subscription:
    @strawberry.subscription
    async def ticks(self, info: Info[Context, None]) -> AsyncIterator[int]:
        """A signed-in user's ticks: the session is read once, so only the stream registry's
        watcher can notice that it ended."""
        if await info.context.user() is None:
            raise Unauthenticated()
        n = 0
        while True:
            yield n
            n += 1
            await asyncio.sleep(0.2)


#: served with ``BFF_SCHEMA=tests.e2e.test_subscriptions:ticking``
ticking = build_schema(query=Query, subscription=Subscription)
TICKING = "tests.e2e.test_subscriptions:ticking"
TICKS = {"query": "subscription { ticks }"}


def _shared(redis_server: RedisServer) -> dict[str, Any]:
    return {"session_store": redis_server.url, "session_secret": "shared-secret-for-replicas"}


def _successes(metrics: str) -> float:
    for line in metrics.splitlines():
        if line.startswith('bff_token_refresh_total{outcome="success"}'):
            return float(line.split()[-1])
    return 0.0


async def test_a_stream_outlives_three_token_lifetimes_one_grant_per_rotation(
    stack: Stack, redis_server: RedisServer
) -> None:
    statuses = stack.upstreams.accounts.state.statuses
    statuses["o-alice-1"] = "S0"
    async with stack.start_bff(0, **_shared(redis_server)) as one, stack.start_bff(1, **_shared(redis_server)) as two:
        cookie = await signed_in_cookie(one)
        before = stack.idp.stats()["refreshGrants"]
        seen: list[str] = []
        async with one.client(cookie) as client, two.client(cookie) as other, subscribe(client) as events:
            _, first = await events.next()
            seen.append(first["data"]["orderStatusChanged"]["status"])
            started = time.monotonic()
            n = 0
            while time.monotonic() - started < 3 * ACCESS_TTL + 1:
                n += 1
                statuses["o-alice-1"] = f"S{n}"
                # the same session's ordinary requests on the other replica share the refreshes
                assert (await other.post("/graphql", json={"query": "{ viewer { id } }"})).json()["data"]
                name, data = await events.next()
                assert name == "next", data
                assert "errors" not in data, data
                seen.append(data["data"]["orderStatusChanged"]["status"])
                await asyncio.sleep(0.5)
            assert "access_token" not in "\n".join(events.raw)
        assert seen == [f"S{i}" for i in range(n + 1)]
        grants = stack.idp.stats()["refreshGrants"] - before
        async with one.client() as a, two.client() as b:
            committed = _successes((await a.get("/metrics")).text) + _successes((await b.get("/metrics")).text)
    assert grants >= 3  # at least one rotation per lifetime
    assert grants == committed  # and every grant was one committed rotation: no duplicate refresh
    assert stack.idp.stats()["refreshErrors"] == 0
    assert stack.upstreams.accounts.state.stats.unauthorized == 0


async def test_logout_on_one_replica_ends_the_stream_on_the_other_within_a_second(
    stack: Stack, redis_server: RedisServer
) -> None:
    stack.upstreams.accounts.state.statuses["o-alice-1"] = "PLACED"
    async with stack.start_bff(0, **_shared(redis_server)) as one, stack.start_bff(1, **_shared(redis_server)) as two:
        cookie = await signed_in_cookie(one)
        async with two.client(cookie) as client, subscribe(client) as events:
            await events.next()
            async with one.client(cookie) as other:
                assert (await other.post("/auth/logout", headers={"X-CSRF": "1"})).status_code < 400
            started = time.monotonic()
            _name, data = await events.next()
            assert data["errors"][0]["extensions"]["code"] == "UNAUTHENTICATED"
            assert (await events.next())[0] == "complete"
            assert time.monotonic() - started < 1.0


async def test_a_revoked_grant_ends_the_stream_unauthenticated(stack: Stack) -> None:
    stack.upstreams.accounts.state.statuses["o-alice-1"] = "PLACED"
    async with stack.start_bff() as bff:
        cookie = await signed_in_cookie(bff)
        async with bff.client(cookie) as client, subscribe(client) as events:
            await events.next()
            assert stack.idp.revoke("alice") >= 1
            stack.upstreams.accounts.state.statuses["o-alice-1"] = "PACKED"
            # the next refresh (at half-life) is refused: one error event, then complete
            while True:
                name, data = await events.next(timeout=ACCESS_TTL * 3)
                if name != "next" or "errors" in data:
                    break
            assert name == "next"
            assert data["errors"][0]["extensions"]["code"] == "UNAUTHENTICATED"
            assert (await events.next())[0] == "complete"


async def _until_session_ended(events: Events, timeout: float) -> float:
    """Reads ticks until the session-ended error event, then ``complete``; when that event came
    (the store's clock, ``time.time``)."""
    while True:
        name, data = await events.next(timeout=timeout)
        assert name == "next", (name, data)
        if "errors" in data:
            at = time.time()
            assert data["errors"][0]["extensions"]["code"] == "UNAUTHENTICATED"
            assert (await events.next())[0] == "complete"
            return at


async def test_backchannel_logout_ends_the_streams_on_every_replica_within_a_second(
    stack: Stack, redis_server: RedisServer
) -> None:
    """The user signs out at the IdP: its logout token reaches replica 0 (the back-channel URI),
    which deletes the session; the streams on both replicas end UNAUTHENTICATED."""
    stack.upstreams.accounts.state.statuses["o-alice-1"] = "PLACED"
    async with stack.start_bff(0, **_shared(redis_server)) as one, stack.start_bff(1, **_shared(redis_server)) as two:
        async with one.client() as browser:
            await browser_login(browser, one.url)
            cookie = browser.cookies["bff_session"]
            async with (
                one.client(cookie) as a,
                two.client(cookie) as b,
                subscribe(a) as here,
                subscribe(b) as there,
            ):
                await here.next()
                await there.next()
                ended: dict[str, float] = {}

                async def watch(name: str, events: Events) -> None:
                    _, data = await events.next(timeout=30)
                    ended[name] = time.monotonic()
                    assert data["errors"][0]["extensions"]["code"] == "UNAUTHENTICATED", data
                    assert (await events.next())[0] == "complete"

                watchers = asyncio.gather(watch("one", here), watch("two", there))
                page = await browser.get(f"{stack.idp.issuer}/session/end")
                await sign_in_at_idp(browser, page)  # confirms; the IdP then calls the back channel
                done = time.monotonic()
                assert stack.idp.stats()["backchannel"] == 1
                await asyncio.wait_for(watchers, 5)
        assert max(ended.values()) - done < 1.0, (ended, done)


async def _heartbeats_only(events: Events, seconds: float) -> int:
    """For ``seconds``: nothing but keep-alive comments and error-free ``next`` events (never an
    error, never ``complete``); the number of keep-alive comments seen."""
    # no timeout around the read: cancelling it would close the response's line iterator; with
    # heartbeats every 0.5 s a line comes soon enough
    until = time.monotonic() + seconds
    beats = 0
    while time.monotonic() < until:
        line = await anext(events.lines)
        events.raw.append(line)
        assert not line.startswith("event: complete"), events.raw[-10:]
        assert '"errors"' not in line, line
        beats += line.startswith(":")
    return beats


async def test_an_idp_outage_while_the_token_expires_keeps_the_stream_open(stack: Stack) -> None:
    """Every token request of the replica is refused (connection closed) from before the refresh is
    due until after the access token has expired: the stream stays open on heartbeats; once the
    IdP answers again, events resume with a fresh token."""
    statuses = stack.upstreams.accounts.state.statuses
    statuses["o-alice-1"] = "PLACED"
    async with (
        fault_proxy() as proxy,
        stack.start_bff(0, transports={"oidc": proxy.transport()}, stream_heartbeat_seconds=0.5) as bff,
    ):
        cookie = await signed_in_cookie(bff)
        session_id = bff.resources.crypto.unsign(cookie)
        first = (await bff.resources.store.get(session_id, touch=False)).tokens
        async with bff.client(cookie) as client, subscribe(client) as events:
            assert (await events.next())[1]["data"]["orderStatusChanged"]["status"] == "PLACED"
            proxy.mode = "refuse"
            statuses["o-alice-1"] = "PACKED"  # still delivered: the token is valid for a while
            _, data = await events.next()
            assert data["data"]["orderStatusChanged"]["status"] == "PACKED", data
            # past the token's expiry, and then some
            await asyncio.sleep(max(0.0, first.expires_at - time.time()))
            assert await _heartbeats_only(events, 3.0) >= 3
            refused = proxy.token_requests
            assert refused >= 1
            assert (await bff.resources.store.get(session_id, touch=False)) is not None
            proxy.mode = "pass"
            statuses["o-alice-1"] = "SHIPPED"
            while True:
                _, data = await events.next(timeout=ACCESS_TTL)
                assert "errors" not in data, data
                if data["data"]["orderStatusChanged"]["status"] == "SHIPPED":
                    break
            fresh = (await bff.resources.store.get(session_id, touch=False)).tokens
            assert fresh.access_token != first.access_token
            assert fresh.expires_at > time.time()
    assert stack.idp.stats()["refreshErrors"] == 0


@pytest.mark.parametrize("timeout", ["idle", "absolute"])
async def test_session_expiry_ends_a_stream_within_a_second_of_the_deadline(
    stack: Stack, redis_server: RedisServer, timeout: str
) -> None:
    """Nobody announces an expiry: the stream registry's watcher must look when the session's idle
    or absolute deadline is due. The stream reads the session only once, at its start."""
    limits = {"session_idle_timeout_seconds": 4} if timeout == "idle" else {"session_absolute_timeout_seconds": 5}
    async with stack.start_bff(0, **_shared(redis_server), **limits, BFF_SCHEMA=TICKING) as bff:
        cookie = await signed_in_cookie(bff)
        async with bff.client(cookie) as client, subscribe(client, TICKS) as events:
            assert (await events.next())[0] == "next"
            session = await bff.resources.store.get(bff.resources.crypto.unsign(cookie), touch=False)
            store = bff.resources.store
            deadline = min(session.created_at + store.absolute_seconds, session.last_seen + store.idle_seconds)
            offset = store.now() - time.time()  # the store's clock may be Redis's
            ended = await _until_session_ended(events, timeout=60) + offset
        assert deadline - 0.1 <= ended < deadline + 1.0, f"ended {ended - deadline:+.2f} s from the deadline"
