"""The authorization directives against the real oidc-provider granting scopes per account, with two
BFF replicas sharing a real Redis: anonymous, signed-in-without-the-scope (bob: read-only scopes) and
signed-in-with-it (alice) users, each operation sent to both replicas, through fragments, aliases,
variables, ``@include``, persisted documents, GET, SSE and WebSocket; exact answers and codes, and no
resolver (no upstream) call for a denied field. Then the demo schema: ``placeOrder`` needs
``orders:write``, and bob's order never reaches the accounts service."""

from __future__ import annotations

import contextlib
import hashlib
import json
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from redis.asyncio import Redis

from tests.conftest import Bff
from tests.e2e.conftest import Stack
from tests.graphql import authz_schema
from tests.graphql.test_subscriptions_sse import SSE, Events
from tests.support.browser import browser_login
from tests.support.servers import RedisServer

TEST_SCOPES = "secret:read contact:read vault ticks"
ASKED = f"openid profile email offline_access {TEST_SCOPES} orders:read orders:write"
DOCUMENT = """
query Probe($yes: Boolean!, $owner: String!) {
  public
  s1: secret
  ...Secrets
  me { name email }
  vault { code }
  either
  owned(owner: $owner)
  nodes { id ... on Vault { code } }
  hidden: secret @include(if: $yes)
}
fragment Secrets on Query { s2: secret }
"""


@pytest.fixture
def idp_options() -> dict[str, Any]:
    return {"access_ttl": 60, "scopes": f"{TEST_SCOPES} orders:read orders:write"}


@pytest.fixture
async def shared(redis_server: RedisServer) -> AsyncIterator[dict[str, Any]]:
    url = redis_server.url.rsplit("/", 1)[0] + "/12"
    redis = Redis.from_url(url)
    await redis.flushdb()
    await redis.aclose()
    yield {"session_store": url, "session_secret": "shared-secret-for-replicas", "oidc_scopes": ASKED}


@contextlib.asynccontextmanager
async def replicas(stack: Stack, **settings: Any) -> AsyncIterator[list[Bff]]:
    async with stack.start_bff(0, **settings) as a, stack.start_bff(1, **settings) as b:
        yield [a, b]


async def signed_in(bff: Bff, user: str) -> httpx.AsyncClient:
    client = httpx.AsyncClient(base_url=bff.url, timeout=30)
    await browser_login(client, bff.url, user)  # ends at return_to "/", which this BFF does not serve
    if not client.cookies.get("bff_session"):
        await client.aclose()
        raise AssertionError(f"{user} was not signed in")
    return client


def outcome(body: dict[str, Any]) -> tuple[Any, dict[str, str]]:
    return body.get("data"), {json.dumps(e.get("path")): e["extensions"]["code"] for e in body.get("errors", [])}


async def test_each_directive_for_each_kind_of_user_on_both_replicas(stack: Stack, shared: dict[str, Any]) -> None:
    async with replicas(stack, schema_ref="tests.graphql.authz_schema:schema", **shared) as (a, b):
        alice = await signed_in(a, "alice")
        bob = await signed_in(b, "bob")
        anonymous = httpx.AsyncClient(base_url=a.url, timeout=30)
        variables = {"yes": True, "owner": "bob"}
        digest = hashlib.sha256(DOCUMENT.encode()).hexdigest()
        apq = {"persistedQuery": {"version": 1, "sha256Hash": digest}}
        try:
            for client, user in ((alice, "alice"), (bob, "bob"), (anonymous, None)):
                answers = []
                for replica in (a, b):
                    authz_schema.calls.clear()
                    post = await client.post(f"{replica.url}/graphql", json={"query": DOCUMENT, "variables": variables})
                    get = await client.get(
                        f"{replica.url}/graphql",
                        params={"query": DOCUMENT, "variables": json.dumps(variables)},
                        headers={"X-CSRF": "1"},
                    )
                    registered = await client.post(
                        f"{replica.url}/graphql", json={"query": DOCUMENT, "variables": variables, "extensions": apq}
                    )
                    by_hash = await client.post(
                        f"{replica.url}/graphql", json={"variables": variables, "extensions": apq}
                    )
                    for response in (post, get, registered, by_hash):
                        assert response.status_code == 200, response.text
                        answers.append(outcome(response.json()))
                    if user == "bob":  # his read-only scopes hold secret:read and contact:read, not vault
                        assert authz_schema.calls["vault"] == 0 and authz_schema.calls["either"] == 0
                    if user is None:
                        assert authz_schema.calls["secret"] == 0 and authz_schema.calls["me"] == 0
                assert all(answer == answers[0] for answer in answers), answers
                data, codes = answers[0]
                assert data["public"] == "hello"
                if user == "alice":  # every scope; the policy: owner "bob" is not alice
                    assert data["s1"] == data["s2"] == data["hidden"] == "42"
                    assert data["me"] == {"name": "Ada", "email": "me@example.com"}
                    assert data["vault"] == {"code": "1234"}
                    assert data["nodes"] == [{"id": "d1"}, {"id": "v1", "code": "1234"}]
                    assert codes == {'["either"]': "FORBIDDEN", '["owned"]': "FORBIDDEN"}
                elif user == "bob":  # the read-only scopes: secret:read and contact:read, not vault
                    assert data["s1"] == data["s2"] == data["hidden"] == "42"
                    assert data["me"] == {"name": "Ada", "email": "me@example.com"}
                    assert data["owned"] == "bob's"
                    assert data["vault"] is None and data["nodes"] is None and data["either"] is None
                    assert codes == {
                        '["vault"]': "FORBIDDEN",
                        '["nodes", 1, "id"]': "FORBIDDEN",
                        '["either"]': "FORBIDDEN",
                    }
                else:
                    assert {k for k, v in data.items() if v is not None} == {"public"}
                    assert set(codes.values()) == {"UNAUTHENTICATED"}
                    assert "42" not in json.dumps(data)
        finally:
            for client in (alice, bob, anonymous):
                await client.aclose()


async def test_subscriptions_are_checked_on_every_replica(stack: Stack, shared: dict[str, Any]) -> None:
    async with replicas(stack, schema_ref="tests.graphql.authz_schema:schema", **shared) as (a, b):
        alice = await signed_in(a, "alice")
        bob = await signed_in(a, "bob")
        try:
            async with alice.stream(
                "POST", f"{b.url}/graphql", json={"query": "subscription { ticks(every: 0.05) }"}, headers=SSE
            ) as response:
                events = Events(response)
                assert await events.next() == ("next", {"data": {"ticks": 0}})
                assert await events.next() == ("next", {"data": {"ticks": 1}})
            authz_schema.calls.clear()
            async with bob.stream(
                "POST", f"{b.url}/graphql", json={"query": "subscription { ticks }"}, headers=SSE
            ) as response:
                events = Events(response)
                name, data = await events.next()
                assert name == "next" and outcome(data)[1] == {'["ticks"]': "FORBIDDEN"}, data
                assert await events.next() == ("complete", None)
            assert authz_schema.calls["ticks"] == 0
        finally:
            await alice.aclose()
            await bob.aclose()


async def test_place_order_needs_orders_write(stack: Stack, shared: dict[str, Any]) -> None:
    items = {"items": [{"productId": "p1", "quantity": 1}]}
    mutation = "mutation($items: [OrderLineInput!]!) { placeOrder(items: $items) { id } }"
    stats = stack.upstreams.accounts.state.stats
    async with replicas(stack, **shared) as (a, b):
        bob = await signed_in(a, "bob")
        alice = await signed_in(b, "alice")
        try:
            before = stats.calls["POST /orders"]
            refused = (await bob.post(f"{b.url}/graphql", json={"query": mutation, "variables": items})).json()
            assert outcome(refused) == ({"placeOrder": None}, {'["placeOrder"]': "FORBIDDEN"})
            assert stats.calls["POST /orders"] == before
            placed = (await alice.post(f"{a.url}/graphql", json={"query": mutation, "variables": items})).json()
            assert placed["data"]["placeOrder"]["id"]
            assert stats.calls["POST /orders"] == before + 1
            # bob may still read: the viewer (@authenticated) and his orders
            viewer = (await bob.post(f"{b.url}/graphql", json={"query": "{ viewer { id orders { id } } }"})).json()
            assert "errors" not in viewer and viewer["data"]["viewer"]["id"] == "bob"
        finally:
            await bob.aclose()
            await alice.aclose()
