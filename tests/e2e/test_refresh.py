"""Token lifecycle against the real oidc-provider (rotating refresh tokens, short access tokens)."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import httpx
import pytest

from tests.conftest import Bff
from tests.e2e.conftest import Stack
from tests.support.browser import signed_in_cookie
from tests.support.servers import RedisServer

ACCESS_TTL = 8  # seconds; the BFF refreshes at half-life (4 s) since 8 < 2 x the 300 s buffer
VIEWER = {"query": "{ viewer { id name } }"}


@pytest.fixture
def idp_options() -> dict[str, Any]:
    return {"access_ttl": ACCESS_TTL}


async def _until_refresh_due(bff: Bff, cookie: str) -> None:
    session_id = bff.resources.crypto.unsign(cookie)
    session = await bff.resources.store.get(session_id)
    half_life = (session.tokens.expires_at - session.tokens.issued_at) / 2
    await asyncio.sleep(max(0.0, session.tokens.issued_at + half_life - time.time()) + 0.3)


async def _burst(clients: list[httpx.AsyncClient], n: int) -> list[httpx.Response]:
    return await asyncio.gather(*(clients[i % len(clients)].post("/graphql", json=VIEWER) for i in range(n)))


def _assert_all_data(responses: list[httpx.Response]) -> None:
    for response in responses:
        assert response.status_code == 200
        body = response.json()
        assert "errors" not in body, body
        assert body["data"]["viewer"]["id"] == "alice"


async def test_fifty_concurrent_requests_one_refresh(stack: Stack) -> None:
    async with stack.start_bff() as bff:
        cookie = await signed_in_cookie(bff)
        await _until_refresh_due(bff, cookie)
        before = stack.idp.stats()["refreshGrants"]
        async with bff.client(cookie) as client:
            responses = await _burst([client], 50)
        _assert_all_data(responses)
        assert stack.idp.stats()["refreshGrants"] - before == 1
        assert stack.idp.stats()["refreshErrors"] == 0
        assert stack.upstreams.accounts.state.stats.unauthorized == 0
        async with bff.client() as client:
            metrics = (await client.get("/metrics")).text
        assert 'bff_token_refresh_total{outcome="success"} 1.0' in metrics


async def test_two_replicas_sharing_redis_one_refresh(stack: Stack, redis_server: RedisServer) -> None:
    shared = {"session_store": redis_server.url, "session_secret": "shared-secret-for-replicas"}
    async with stack.start_bff(0, **shared) as one, stack.start_bff(1, **shared) as two:
        cookie = await signed_in_cookie(one)
        await _until_refresh_due(one, cookie)
        before = stack.idp.stats()["refreshGrants"]
        async with one.client(cookie) as a, two.client(cookie) as b:
            responses = await _burst([a, b], 50)
        _assert_all_data(responses)
        assert stack.idp.stats()["refreshGrants"] - before == 1
        assert stack.idp.stats()["refreshErrors"] == 0
        assert stack.upstreams.accounts.state.stats.unauthorized == 0


async def test_revoked_grant_ends_the_session(stack: Stack) -> None:
    async with stack.start_bff() as bff:
        cookie = await signed_in_cookie(bff)
        assert stack.idp.revoke("alice") >= 1
        await _until_refresh_due(bff, cookie)
        async with bff.client(cookie) as client:
            response = await client.post("/graphql", json=VIEWER)
            body = response.json()
            assert response.status_code == 200
            assert body["data"]["viewer"] is None
            assert body["errors"][0]["extensions"]["code"] == "UNAUTHENTICATED"
            assert (
                "bff_session=;" in response.headers["set-cookie"] or 'bff_session=""' in response.headers["set-cookie"]
            )
            assert "Max-Age=0" in response.headers["set-cookie"]
        assert await bff.resources.store.get(bff.resources.crypto.unsign(cookie)) is None


async def test_idp_down_valid_token_keeps_working_expired_token_waits(stack: Stack) -> None:
    async with stack.start_bff() as bff:
        cookie = await signed_in_cookie(bff)
        await _until_refresh_due(bff, cookie)
        stack.idp.pause()
        try:
            async with bff.client(cookie) as client:
                # inside the refresh window but still valid: the request works on the current token
                body = (await client.post("/graphql", json={"query": "{ __typename }"})).json()
                assert body == {"data": {"__typename": "Query"}}
                session_id = bff.resources.crypto.unsign(cookie)
                session = await bff.resources.store.get(session_id)
                # force the stored token to look expired (the upstream would refuse it anyway)
                session.tokens.expires_at = time.time() - 1
                await bff.resources.store.replace(session)
                started = time.monotonic()
                response = await client.post("/graphql", json=VIEWER)
                elapsed = time.monotonic() - started
                body = response.json()
                assert body["data"]["viewer"] is None
                assert body["errors"][0]["extensions"]["code"] == "AUTH_PROVIDER_UNAVAILABLE"
                assert elapsed < bff.settings.oidc_timeout_seconds + 1.5
                assert "set-cookie" not in response.headers  # the session is kept
        finally:
            stack.idp.resume()
        async with bff.client(cookie) as client:
            body = (await client.post("/graphql", json=VIEWER)).json()
        assert "errors" not in body, body
        assert body["data"]["viewer"]["id"] == "alice"


async def test_valid_token_used_while_idp_paused(stack: Stack) -> None:
    async with stack.start_bff() as bff:
        cookie = await signed_in_cookie(bff)
        async with bff.client(cookie) as client:
            # the upstreams remember this token's introspection, so they need no IdP for it later
            _assert_all_data([await client.post("/graphql", json=VIEWER)])
        await _until_refresh_due(bff, cookie)
        before = stack.idp.stats()["refreshGrants"]
        stack.idp.pause()
        try:
            # the refresh hangs (IdP paused): the still-valid token is used at once, beside the refresh
            async with bff.client(cookie) as client:
                info = await client.get("/auth/session")
                body = (await client.post("/graphql", json={"query": "{ __typename }"})).json()
                started = time.monotonic()
                viewer = await client.post("/graphql", json=VIEWER)
                elapsed = time.monotonic() - started
            assert info.json()["authenticated"] is True
            assert body == {"data": {"__typename": "Query"}}
            _assert_all_data([viewer])
            assert elapsed < 1.0
        finally:
            stack.idp.resume()
        # the refresh call, once sent, was allowed to finish: its answer is stored
        deadline = time.monotonic() + 10
        while stack.idp.stats()["refreshGrants"] == before:
            assert time.monotonic() < deadline
            await asyncio.sleep(0.1)
        async with bff.client(cookie) as client:
            _assert_all_data([await client.post("/graphql", json=VIEWER)])
            metrics = (await client.get("/metrics")).text
        assert 'bff_token_refresh_total{outcome="success"} 1.0' in metrics
        assert stack.idp.stats()["refreshReuse"] == 0


async def test_upstream_401_forces_one_refresh_and_retries(stack: Stack) -> None:
    async with stack.start_bff() as bff:
        cookie = await signed_in_cookie(bff)
        session = await bff.resources.store.get(bff.resources.crypto.unsign(cookie))
        # the upstream will refuse this token although the BFF believes it fresh (revoked early,
        # clock skew...); revoking it at the IdP would end the whole grant in oidc-provider
        session.tokens.access_token = "revoked-early"
        assert await bff.resources.store.replace(session) is not None
        before = stack.idp.stats()["refreshGrants"]
        async with bff.client(cookie) as client:
            body = (await client.post("/graphql", json={"query": "{ viewer { id orders(first: 1) { id } } }"})).json()
        assert "errors" not in body, body
        assert stack.idp.stats()["refreshGrants"] - before == 1
        # the upstream refused the stale token once; one forced refresh, then the retry succeeded
        assert stack.upstreams.accounts.state.stats.unauthorized == 1
