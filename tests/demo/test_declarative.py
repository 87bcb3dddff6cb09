"""`bff demo --declarative`: the demo graph from the accounts service's OpenAPI document and the
catalog's SDL, with no resolver code; the viewer query makes the calls of the hand-written demo API
(one /me, one orders call, one catalog batch) and answers what the services hold."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from starlette.routing import Mount

from bff.demo import data
from bff.demo.stack import build_demo_app
from bff.demo.upstreams import ACCOUNTS_OPENAPI, CATALOG_SDL
from tests.demo.test_demo import sign_in
from tests.support.servers import free_port, serve

VIEWER = "{ me { id name orders { id placedAt items { quantity product { id name priceCents } } } } }"


@pytest.fixture
async def declarative() -> AsyncIterator[tuple[Any, str]]:
    port = free_port()
    app = build_demo_app(f"http://127.0.0.1:{port}", schema="bff.demo.declarative:schema")
    async with serve(app, port) as url:
        yield app, url


def _stats(app: Any, path: str) -> Any:
    (mounted,) = [r for r in app.routes if isinstance(r, Mount) and r.path == path]
    return mounted.app.state.stats


async def test_the_viewer_query_makes_the_hand_written_calls(declarative: tuple[Any, str]) -> None:
    app, url = declarative
    async with httpx.AsyncClient(base_url=url, timeout=30) as client:
        await sign_in(client, "alice")
        accounts, catalog = _stats(app, "/demo/accounts"), _stats(app, "/demo/catalog")
        accounts.reset()
        catalog.reset()
        body = (await client.post("/graphql", json={"query": VIEWER})).json()
    assert "errors" not in body, body
    orders = data.orders("alice", 10)
    assert body["data"]["me"] == {
        "id": "alice",
        "name": data.user("alice")["name"],
        "orders": [
            {
                "id": order["id"],
                "placedAt": order["placedAt"],
                "items": [
                    {"quantity": item["quantity"], "product": data.PRODUCTS[item["productId"]]}
                    for item in order["items"]
                ],
            }
            for order in orders
        ],
    }
    assert dict(accounts.calls) == {"GET /me": 1, "GET /users/{id}/orders": 1}
    assert dict(catalog.calls) == {"POST /graphql": 1}  # every product of every order in one batch


async def test_the_services_publish_what_the_declarative_demo_mounts(declarative: tuple[Any, str]) -> None:
    _, url = declarative
    async with httpx.AsyncClient(base_url=url, timeout=30) as client:
        assert (await client.get("/demo/accounts/openapi.json")).json() == ACCOUNTS_OPENAPI
        assert (await client.get("/demo/catalog/schema.graphql")).text.strip() == CATALOG_SDL.strip()
        signed_out = (await client.post("/graphql", json={"query": "{ me { id } }"})).json()
    assert signed_out["data"] == {"me": None}
    assert signed_out["errors"][0]["extensions"]["code"] == "UNAUTHENTICATED"


async def test_bff_demo_serves_configured_sources_alone() -> None:
    """BFF_SCHEMA unset and an upstream with a document: the sources alone, behind the dev IdP."""
    port = free_port()
    spec = "tests/sources/specs/pets.yaml"
    upstreams = {"pets": {"url": "http://127.0.0.1:9", "openapi": spec}}
    app = build_demo_app(f"http://127.0.0.1:{port}", schema=None, upstreams=upstreams, demo_upstreams=False)
    async with serve(app, port) as url, httpx.AsyncClient(base_url=url, timeout=30) as client:
        fields = (
            await client.post("/graphql", json={"query": "{ __schema { queryType { fields { name } } } }"})
        ).json()
        await sign_in(client, "alice")
        down = (await client.post("/graphql", json={"query": "{ get_pet(petId: 1) { name } }"})).json()
    names = {f["name"] for f in fields["data"]["__schema"]["queryType"]["fields"]}
    assert {"listPets", "get_pet", "petsByIds", "ownerAnimals"} <= names and "viewer" not in names
    assert down["data"] == {"get_pet": None}  # signed in; the service is down: that field fails alone
    assert down["errors"][0]["extensions"] == {**down["errors"][0]["extensions"], "upstream": "pets"}
