"""A subscription fed by an upstream's event stream, against the real oidc-provider with short access
tokens: the demo accounts service closes its stream when the token it was opened with expires, and
the BFF reopens it with a fresh token and ``Last-Event-ID``."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import pytest

from tests.e2e.conftest import Stack
from tests.graphql.test_subscriptions_sse import subscribe
from tests.support.browser import signed_in_cookie

ACCESS_TTL = 5  # seconds
OPENED = "GET /orders/{id}/events"
CLOSED = "closed on expiry /orders/{id}/events"


@pytest.fixture
def idp_options() -> dict[str, Any]:
    return {"access_ttl": ACCESS_TTL}


def _successes(metrics: str) -> float:
    for line in metrics.splitlines():
        if line.startswith('bff_token_refresh_total{outcome="success"}'):
            return float(line.split()[-1])
    return 0.0


async def test_the_upstream_stream_closes_at_each_expiry_and_the_subscription_goes_on(stack: Stack) -> None:
    accounts = stack.upstreams.accounts.state
    accounts.statuses["o-alice-1"] = "S0"
    async with stack.start_bff() as bff:
        cookie = await signed_in_cookie(bff)
        before = stack.idp.stats()["refreshGrants"]
        seen: list[str] = []
        async with bff.client(cookie) as client, subscribe(client) as events:
            _name, first = await events.next()
            seen.append(first["data"]["orderStatusChanged"]["status"])
            started = time.monotonic()
            n = 0
            # changes until one is delivered over the stream reopened after the third close
            while True:
                assert time.monotonic() - started < 6 * ACCESS_TTL, "the upstream did not close three streams"
                closed = accounts.stats.calls[CLOSED]
                n += 1
                accounts.statuses["o-alice-1"] = f"S{n}"
                name, data = await events.next(timeout=2 * ACCESS_TTL)
                assert name == "next", data
                assert "errors" not in data, data
                seen.append(data["data"]["orderStatusChanged"]["status"])
                if closed >= 3:
                    break
                await asyncio.sleep(0.3)
            assert "access_token" not in "\n".join(events.raw)
        async with bff.client() as plain:
            committed = _successes((await plain.get("/metrics")).text)
    grants = stack.idp.stats()["refreshGrants"] - before
    assert seen == [f"S{i}" for i in range(n + 1)]  # every change once, none twice
    closes = accounts.stats.calls[CLOSED]
    assert closes >= 3
    assert accounts.stats.calls[OPENED] == closes + 1  # each close: one reconnection
    assert grants == closes  # one refresh grant per rotation
    assert committed == grants
    assert stack.idp.stats()["refreshErrors"] == 0
    assert accounts.stats.unauthorized == 0  # the new token was fresh before it was sent


async def test_a_revoked_grant_ends_the_stream_at_the_next_expiry(stack: Stack) -> None:
    accounts = stack.upstreams.accounts.state
    accounts.statuses["o-alice-1"] = "PLACED"
    async with stack.start_bff() as bff:
        cookie = await signed_in_cookie(bff)
        async with bff.client(cookie) as client, subscribe(client) as events:
            await events.next()
            assert stack.idp.revoke("alice") >= 1
            # the open stream still delivers until its token expires; then the refresh is refused
            accounts.statuses["o-alice-1"] = "PACKED"
            name, data = await events.next()
            assert data["data"]["orderStatusChanged"]["status"] == "PACKED"
            name, data = await events.next(timeout=3 * ACCESS_TTL)
            assert name == "next"
            assert data["errors"][0]["extensions"]["code"] == "UNAUTHENTICATED"
            assert (await events.next())[0] == "complete"
