"""Subscriptions against the real oidc-provider with short access tokens, two replicas on real Redis."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import pytest

from tests.e2e.conftest import Stack
from tests.graphql.test_subscriptions_sse import subscribe
from tests.support.browser import signed_in_cookie
from tests.support.servers import RedisServer

ACCESS_TTL = 6  # seconds: the BFF refreshes at half-life, so a rotation every ~3 s


@pytest.fixture
def idp_options() -> dict[str, Any]:
    return {"access_ttl": ACCESS_TTL}


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
