"""The demo's mutation end to end: placeOrder POSTs once to the accounts upstream, over real HTTP,
behind the CSRF rule; never sent with GET, never retried, an UPSTREAM_* error when it fails."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest

from bff.demo.upstreams import accounts_app, catalog_app
from bff.testing import RunningBFF, dev_token_subject, mock_upstream, running_bff

PLACE = """
mutation Place($items: [OrderLineInput!]!) {
  placeOrder(items: $items) { id totalCents items { quantity product { id priceCents } } }
}
"""
ITEMS = [{"productId": "p1", "quantity": 2}, {"productId": "p2", "quantity": 1}]


class DevTokens:
    """The demo upstreams' TokenValidator for tokens of the test's dev IdP."""

    async def subject(self, token: str) -> str | None:
        return await dev_token_subject(f"Bearer {token}")


@pytest.fixture
async def demo() -> AsyncIterator[tuple[RunningBFF, Any]]:
    accounts = accounts_app(DevTokens())
    catalog = catalog_app(DevTokens())
    async with running_bff(upstreams={"accounts": accounts, "catalog": (catalog, "/graphql")}) as bff:
        yield bff, accounts


async def test_place_order_posts_once_and_the_order_is_then_listed(demo: tuple[RunningBFF, Any]) -> None:
    bff, accounts = demo
    async with bff.client(user="alice") as client:
        body = await client.graphql(PLACE, {"items": ITEMS})
        assert "errors" not in body, body
        order = body["data"]["placeOrder"]
        prices = {item["product"]["id"]: item["product"]["priceCents"] for item in order["items"]}
        assert order["totalCents"] == 2 * prices["p1"] + prices["p2"]
        assert accounts.state.stats.calls["POST /orders"] == 1
        listed = await client.graphql("{ viewer { orders(first: 1) { id } } }")
    assert listed["data"]["viewer"]["orders"] == [{"id": order["id"]}]
    assert [o["id"] for o in accounts.state.placed["alice"]] == [order["id"]]


async def test_mutations_are_refused_over_get_and_across_sites(demo: tuple[RunningBFF, Any]) -> None:
    bff, accounts = demo
    query = 'mutation { placeOrder(items: [{productId: "p1", quantity: 1}]) { id } }'
    async with bff.client(user="alice") as client:
        # a GET carrying the cookie needs X-CSRF (a link cannot send it); with it, a mutation is still refused
        assert (await client.get("/graphql", params={"query": query})).status_code == 403
        over_get = await client.get("/graphql", params={"query": query}, headers={"X-CSRF": "1"})
        assert over_get.status_code == 405
        assert over_get.json()["errors"][0]["extensions"]["code"] == "METHOD_NOT_ALLOWED"
        # a cross-site form post carries the cookie but neither JSON nor X-CSRF
        form = await client.post("/graphql", content=f"query={query}", headers={"Content-Type": "text/plain"})
        assert form.status_code == 403
        foreign = await client.post("/graphql", json={"query": query}, headers={"Origin": "https://evil.example"})
        assert foreign.status_code == 403
        allowed = await client.post("/graphql", json={"query": query})
        assert allowed.status_code == 200 and allowed.json()["data"]["placeOrder"]["id"]
    assert accounts.state.stats.calls["POST /orders"] == 1  # only the last one reached the upstream


async def test_refusals_are_errors_of_the_field_not_500s(demo: tuple[RunningBFF, Any]) -> None:
    bff, accounts = demo
    async with bff.client() as anonymous:
        body = await anonymous.graphql(PLACE, {"items": ITEMS})
        assert body["data"] == {"placeOrder": None}
        assert body["errors"][0]["extensions"]["code"] == "UNAUTHENTICATED"
    async with bff.client(user="bob", scopes=["orders:read", "orders:write"]) as client:
        unknown = await client.graphql(PLACE, {"items": [{"productId": "nope", "quantity": 1}]})
        assert unknown["data"] == {"placeOrder": None}
        assert unknown["errors"][0]["extensions"] == {
            "code": "UPSTREAM_ERROR",
            "upstream": "accounts",
            "requestId": unknown["errors"][0]["extensions"]["requestId"],
        }
        too_many = await client.graphql(PLACE, {"items": [{"productId": "p1", "quantity": 500}]})
        assert too_many["errors"][0]["extensions"]["code"] == "BAD_USER_INPUT"
        wrong_type = await client.post("/graphql", json={"query": PLACE, "variables": {"items": "p1"}})
        assert wrong_type.status_code == 200
        assert wrong_type.json()["errors"][0]["extensions"]["code"] == "BAD_USER_INPUT"
    assert accounts.state.stats.calls["POST /orders"] == 1  # only the unknown product reached it


async def test_a_failed_post_is_never_retried_but_a_get_is() -> None:
    """The connection to the upstream fails: the query's GET is tried twice (nothing reached the
    upstream, it is idempotent); the mutation's POST once, and the mutation says UPSTREAM_ERROR."""
    attempts: list[str] = []

    def refuse(request: httpx.Request) -> httpx.Response:
        attempts.append(f"{request.method} {request.url.path}")
        raise httpx.ConnectError("connection refused", request=request)

    accounts = mock_upstream("http://accounts.test")
    accounts.route(path__regex=r"^/.+").mock(side_effect=refuse)
    async with running_bff(upstreams={"accounts": accounts}) as bff, bff.client(user="alice") as client:
        viewer = await client.graphql("{ viewer { id } }")
        assert viewer["errors"][0]["extensions"]["code"] == "UPSTREAM_ERROR"
        assert attempts == ["GET /me", "GET /me"]
        attempts.clear()
        body = await client.graphql(PLACE, {"items": ITEMS})
    assert body["data"] == {"placeOrder": None}
    assert body["errors"][0]["extensions"]["code"] == "UPSTREAM_ERROR"
    assert attempts == ["POST /orders"]


async def test_an_upstream_5xx_on_the_post_is_an_upstream_error_sent_once() -> None:
    accounts = mock_upstream("http://accounts.test")
    failing = accounts.post("/orders").respond(503, json={"error": "down"})
    async with (
        running_bff(upstreams={"accounts": accounts}) as bff,
        bff.client(user="carol", scopes=["orders:write"]) as client,
    ):
        body = await client.graphql(PLACE, {"items": ITEMS})
        assert body["data"] == {"placeOrder": None}
        assert body["errors"][0]["extensions"]["code"] == "UPSTREAM_ERROR"
        assert failing.call_count == 1
        # the user's own token, from the dev IdP (checked against its published keys)
        assert await dev_token_subject(failing.calls.last.request.headers["authorization"]) == "carol"
        assert await dev_token_subject("Bearer " + "x.y.z") is None


async def test_place_order_needs_the_orders_write_scope() -> None:
    """``placeOrder`` carries ``@requiresScopes(scopes: [["orders:write"]])``: the demo's bob is
    granted ``orders:read`` only, so his order is FORBIDDEN before anything is sent upstream."""
    accounts = mock_upstream("http://accounts.test")
    posted = accounts.post("/orders").respond(201, json={"id": "o9", "placedAt": "2026-01-01T00:00:00Z", "items": []})
    async with running_bff(upstreams={"accounts": accounts}) as bff:
        async with bff.client(user="bob") as bob:
            body = await bob.graphql(PLACE, {"items": ITEMS})
            assert body["data"] == {"placeOrder": None}
            assert [e["extensions"]["code"] for e in body["errors"]] == ["FORBIDDEN"]
            assert body["errors"][0]["path"] == ["placeOrder"]
        assert posted.call_count == 0
        async with bff.client(user="alice") as alice:
            body = await alice.graphql(PLACE, {"items": ITEMS})
            assert body["data"]["placeOrder"]["id"] == "o9"
        assert posted.call_count == 1
