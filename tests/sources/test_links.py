"""Links between sources against real services: ``OrderItem.pet`` (an orders service's type) is
resolved by the pets service's batch operation with the keys of every item in the request, in ONE
upstream call; ``Order.firstPet`` by a plain operation; both declared in Python or in a file."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from bff import build_schema
from bff.app import create_app
from bff.graphql.schema import SchemaError
from bff.sources import link, openapi, read_links
from tests.conftest import Bff, make_settings
from tests.sources.services import ORDERS_SPEC, PETS, Calls, orders_app, pets_app
from tests.support.servers import serve
from tests.support.tokens import TestIssuer

PETS_SPEC = str(Path(__file__).parent / "specs" / "pets.yaml")
QUERY = "{ orders { id firstPet { name } items { quantity pet { id name status } } } }"
LINKS = [
    link("OrderItem.pet", "pets.petsByIds", ids="[$.petId]", key="id"),
    link("Order.firstPet", "pets.get_pet", petId="$.firstPetId"),
]


@contextlib.asynccontextmanager
async def fleet(sources: list[Any]) -> AsyncIterator[tuple[Bff, Calls, Calls]]:
    pet_calls, order_calls = Calls(), Calls()
    async with serve(pets_app(pet_calls)) as pets_url, serve(orders_app(order_calls)) as orders_url:
        settings = make_settings(upstreams={"pets": {"url": pets_url}, "orders": {"url": orders_url}})
        app = create_app(settings, schema=build_schema(sources=sources))
        async with serve(app) as url:
            yield Bff(app, url, settings), pet_calls, order_calls


def _expected() -> dict[str, Any]:
    def pet(pet_id: int) -> dict[str, Any] | None:
        found = next((p for p in PETS.values() if p["id"] == pet_id), None)
        return None if found is None else {"id": found["id"], "name": found["name"], "status": found["status"]}

    return {
        "orders": [
            {
                "id": "o1",
                "firstPet": {"name": "Rex"},
                "items": [{"quantity": 2, "pet": pet(1)}, {"quantity": 1, "pet": pet(9_000_000_000)}],
            },
            {
                "id": "o2",
                "firstPet": None,
                "items": [{"quantity": 5, "pet": pet(9_000_000_000)}, {"quantity": 1, "pet": None}],
            },
        ]
    }


@pytest.mark.parametrize("declared", ["python", "toml", "yaml"])
async def test_a_batched_link_is_one_upstream_call(declared: str, issuer: TestIssuer, tmp_path: Path) -> None:
    links: list[Any] = LINKS
    if declared == "toml":
        path = tmp_path / "links.toml"
        path.write_text(
            '[[links]]\non = "OrderItem.pet"\nto = "pets.petsByIds"\nkey = "id"\narguments = { ids = "[$.petId]" }\n\n'
            '[[links]]\non = "Order.firstPet"\nto = "pets.get_pet"\narguments = { petId = "$.firstPetId" }\n'
        )
        links = read_links(str(path))
    elif declared == "yaml":
        path = tmp_path / "links.yaml"
        path.write_text(
            "links:\n  - {on: OrderItem.pet, to: pets.petsByIds, key: id, arguments: {ids: '[$.petId]'}}\n"
            "  - {on: Order.firstPet, to: pets.get_pet, arguments: {petId: $.firstPetId}}\n"
        )
        links = read_links(str(path))
    async with fleet([openapi("orders", ORDERS_SPEC), openapi("pets", PETS_SPEC), *links]) as (bff, pets, orders):
        cookie = await bff.session_for(issuer.token("alice"))
        async with bff.client(cookie) as client:
            body = (await client.post("/graphql", json={"query": QUERY})).json()
        assert body == {"data": _expected()}
        assert orders.count() == 1
        # the four items' pets in one call (keys deduplicated), the first pet of o1 in another
        assert [p for _, p, _, _ in pets.seen if p.startswith("/v1/pets/batch")] == [
            "/v1/pets/batch?ids=1&ids=9000000000&ids=77"
        ]
        assert pets.count("GET", "/v1/pets/1") == 1
        assert pets.count() == 2


async def test_a_link_whose_upstream_fails_nulls_only_its_fields(issuer: TestIssuer) -> None:
    settings_pets = "http://127.0.0.1:9"  # nothing listens: the pets upstream is down
    order_calls = Calls()
    async with serve(orders_app(order_calls)) as orders_url:
        settings = make_settings(upstreams={"pets": {"url": settings_pets}, "orders": {"url": orders_url}})
        schema = build_schema(sources=[openapi("orders", ORDERS_SPEC), openapi("pets", PETS_SPEC), *LINKS])
        app = create_app(settings, schema=schema)
        async with serve(app) as url:
            bff = Bff(app, url, settings)
            cookie = await bff.session_for(issuer.token("alice"))
            async with bff.client(cookie) as client:
                body = (
                    await client.post("/graphql", json={"query": "{ orders { id items { quantity pet { name } } } }"})
                ).json()
    assert [o["id"] for o in body["data"]["orders"]] == ["o1", "o2"]
    assert all(item["pet"] is None for o in body["data"]["orders"] for item in o["items"])
    assert {e["extensions"]["upstream"] for e in body["errors"]} == {"pets"}


def test_links_that_do_not_fit_are_schema_errors() -> None:
    sources: list[Any] = [openapi("orders", ORDERS_SPEC), openapi("pets", PETS_SPEC)]
    cases = [
        (link("Nope.pet", "pets.petsByIds", ids="[$.petId]"), "no source has a type 'Nope'"),
        (link("OrderItem.pet", "pets.nope", ids="[$.petId]"), "has no query field 'nope'"),
        (link("OrderItem.pet", "pets.petsByIds", nope="[$.petId]"), "has no argument 'nope'"),
        (link("OrderItem.pet", "pets.petsByIds", ids="[$.missing]"), "has no property 'missing'"),
        (link("OrderItem.pet", "shop.petsByIds", ids="[$.petId]"), "there is no source 'shop'"),
    ]
    for bad, message in cases:
        with pytest.raises(SchemaError, match=message.replace("(", r"\(")):
            build_schema(sources=[*sources, bad])


async def test_a_link_named_like_its_key_property_replaces_it(issuer: TestIssuer) -> None:
    """``OrderItem.petId`` the number becomes ``OrderItem.petId`` the pet: the property stays as the
    link's key, no longer on the graph."""
    replacing = link("OrderItem.petId", "pets.petsByIds", ids="[$.petId]", key="id")
    async with fleet([openapi("orders", ORDERS_SPEC), openapi("pets", PETS_SPEC), replacing]) as (bff, pets, _):
        assert (
            "petId: Pet\n"
            in build_schema(sources=[openapi("orders", ORDERS_SPEC), openapi("pets", PETS_SPEC), replacing]).as_str()
        )
        cookie = await bff.session_for(issuer.token("alice"))
        async with bff.client(cookie) as client:
            body = (await client.post("/graphql", json={"query": "{ orders { items { petId { name } } } }"})).json()
        names = [[i["petId"] and i["petId"]["name"] for i in o["items"]] for o in body["data"]["orders"]]
        assert names == [["Rex", "Tom"], ["Tom", None]]
        assert pets.count() == 1
