"""A WebSocket subscription (graphql-transport-ws) against the real oidc-provider, two replicas on real Redis."""

from __future__ import annotations

import time
from typing import Any

import pytest

from tests.e2e.conftest import Stack
from tests.graphql.test_subscriptions_ws import connect
from tests.support.browser import signed_in_cookie
from tests.support.servers import RedisServer

ACCESS_TTL = 6  # seconds: the BFF refreshes at half-life


@pytest.fixture
def idp_options() -> dict[str, Any]:
    return {"access_ttl": ACCESS_TTL}


async def test_logout_on_one_replica_ends_the_websocket_subscription_on_the_other_within_a_second(
    stack: Stack, redis_server: RedisServer
) -> None:
    shared = {"session_store": redis_server.url, "session_secret": "shared-secret-for-replicas"}
    stack.upstreams.accounts.state.statuses["o-alice-1"] = "PLACED"
    async with stack.start_bff(0, **shared) as one, stack.start_bff(1, **shared) as two:
        cookie = await signed_in_cookie(two)
        async with connect(one, cookie=cookie, origin=one.settings.public_origin) as ws:
            await ws.subscribe("s")
            first = await ws.next()
            assert first["payload"]["data"]["orderStatusChanged"]["status"] == "PLACED", first
            async with two.client(cookie) as other:
                assert (await other.post("/auth/logout", headers={"X-CSRF": "1"})).status_code < 400
            started = time.monotonic()
            ended = await ws.next()
            assert ended["type"] == "next"
            assert ended["payload"]["errors"][0]["extensions"]["code"] == "UNAUTHENTICATED"
            assert await ws.next() == {"id": "s", "type": "complete"}
            assert time.monotonic() - started < 1.0
            assert await ws.closed() == (4401, "Unauthorized")


async def test_a_revoked_grant_ends_the_websocket_subscription_unauthenticated_then_4401(stack: Stack) -> None:
    """The IdP refuses the next refresh (``invalid_grant``): the operation gets the UNAUTHENTICATED
    error and ``complete``, then the connection closes with 4401 (graphql-ws does not retry it)."""
    stack.upstreams.accounts.state.statuses["o-alice-1"] = "PLACED"
    async with stack.start_bff() as bff:
        cookie = await signed_in_cookie(bff)
        async with connect(bff, cookie=cookie, origin=bff.settings.public_origin) as ws:
            await ws.subscribe("s")
            first = await ws.next()
            assert first["payload"]["data"]["orderStatusChanged"]["status"] == "PLACED", first
            assert stack.idp.revoke("alice") >= 1
            stack.upstreams.accounts.state.statuses["o-alice-1"] = "PACKED"
            # the next refresh (at half-life) is refused
            while True:
                message = await ws.next(timeout=ACCESS_TTL * 3)
                if message["type"] != "next" or "errors" in message["payload"]:
                    break
            assert message["type"] == "next", message
            assert message["payload"]["errors"][0]["extensions"]["code"] == "UNAUTHENTICATED"
            assert await ws.next() == {"id": "s", "type": "complete"}
            assert await ws.closed() == (4401, "Unauthorized")
