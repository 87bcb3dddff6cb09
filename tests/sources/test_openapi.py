"""OpenAPI sources against real services over real HTTP: a hand-written 3.1 document (``allOf``, a
discriminated ``oneOf``, enums, nullable, arrays of objects, path/query/header parameters, bodies)
and a FastAPI app's own document. Answers are compared with what the services return directly, and
every upstream call is counted."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import strawberry

from bff import build_schema
from bff.app import create_app, settings_schema
from bff.graphql.schema import SchemaError
from bff.sources import openapi
from tests.conftest import Bff, make_settings
from tests.sources.services import ANIMALS, ITEMS, PETS, Calls, inventory_app, pets_app, query_bff, running
from tests.support.servers import serve
from tests.support.tokens import TestIssuer

SPECS = Path(__file__).parent / "specs"
PETS_SPEC = str(SPECS / "pets.yaml")


@pytest.fixture
async def pets() -> AsyncIterator[tuple[str, Calls]]:
    calls = Calls()
    async with serve(pets_app(calls)) as url:
        yield url, calls


@pytest.fixture
async def inventory() -> AsyncIterator[tuple[str, Calls]]:
    calls = Calls()
    async with serve(inventory_app(calls)) as url:
        yield url, calls


def _pet(pet: dict[str, Any]) -> dict[str, Any]:
    """A pet as the GraphQL answer shows it (the document's names; ``first-name`` is not a GraphQL
    name and is served as ``first_name``)."""
    owner = pet["owner"]
    return {
        **pet,
        "owner": None if owner is None else {"first_name": owner["first-name"], "ids": owner["ids"]},
    }


PET_FIELDS = "id createdAt name tag status owner { first_name ids } photos { url width }"


async def test_the_pets_document_answers_like_the_service(pets: tuple[str, Calls], issuer: TestIssuer) -> None:
    url, calls = pets
    schema = build_schema(sources=[openapi("pets", PETS_SPEC)])
    async with running(schema, pets=url) as bff:
        token = issuer.token("alice")
        cookie = await bff.session_for(token)
        body = await query_bff(bff, cookie, f"{{ listPets {{ {PET_FIELDS} }} }}")
        assert body == {"data": {"listPets": [_pet(p) for p in PETS.values()]}}
        assert calls.seen == [("GET", "/v1/pets", f"Bearer {token}", None)]

        # query parameters (an enum, a repeated array), a header parameter
        calls.clear()
        body = await query_bff(
            bff, cookie, '{ listPets(status: sold, tags: ["cat", "x"], limit: 5, X_Tenant: "t1") { id name } }'
        )
        assert body == {"data": {"listPets": [{"id": 9_000_000_000, "name": "Tom@t1"}]}}
        assert calls.seen[0][1] == "/v1/pets?limit=5&status=sold&tags=cat&tags=x"

        # a path parameter; the same GET twice in one operation is sent once
        calls.clear()
        body = await query_bff(bff, cookie, "{ a: get_pet(petId: 1) { name } b: get_pet(petId: 1) { id } }")
        assert body == {"data": {"a": {"name": "Rex"}, "b": {"id": 1}}}
        assert calls.count("GET", "/v1/pets/1") == 1

        # a discriminated oneOf: a union with __typename from the discriminator
        body = await query_bff(
            bff,
            cookie,
            '{ ownerAnimals(ownerId: "ann") { __typename ... on Dog { name barks } ... on Cat { name lives } } }',
        )
        expected = [{"__typename": a["kind"].title(), **{k: v for k, v in a.items() if k != "kind"}} for a in ANIMALS]
        assert body == {"data": {"ownerAnimals": expected}}


async def test_mutations_send_bodies_and_are_never_retried(pets: tuple[str, Calls], issuer: TestIssuer) -> None:
    url, calls = pets
    schema = build_schema(sources=[openapi("pets", PETS_SPEC)])
    async with running(schema, pets=url) as bff:
        cookie = await bff.session_for(issuer.token("alice"))
        body = await query_bff(
            bff,
            cookie,
            "mutation($pet: NewPetInput!) { createPet(input: $pet) { id name status photos { url } } }",
            {"pet": {"name": "Nemo", "status": "pending", "photos": [{"url": "u"}]}},
        )
        assert body == {"data": {"createPet": {"id": 3, "name": "Nemo", "status": "pending", "photos": [{"url": "u"}]}}}
        # unset input fields are left out of the JSON body; readOnly `id` is not an input field
        assert calls.seen[-1][3] == {"name": "Nemo", "status": "pending", "photos": [{"url": "u"}]}
        body = await query_bff(bff, cookie, "mutation { deletePet(petId: 3) }")
        assert body == {"data": {"deletePet": True}}
        assert calls.count("DELETE", "/v1/pets/3") == 1
    # a service that is down: the field is null with an error naming the upstream, nothing else fails
    async with running(schema, pets="http://127.0.0.1:9") as bff:
        cookie = await bff.session_for(issuer.token("alice"))
        body = await query_bff(bff, cookie, 'mutation { createPet(input: {name: "x"}) { id } }')
        assert body["data"] == {"createPet": None}
        assert body["errors"][0]["extensions"]["upstream"] == "pets"


async def test_partial_failures_null_only_their_fields(pets: tuple[str, Calls], issuer: TestIssuer) -> None:
    url, _ = pets
    schema = build_schema(sources=[openapi("pets", PETS_SPEC)])
    async with running(schema, pets=url) as bff:
        cookie = await bff.session_for(issuer.token("alice"))
        body = await query_bff(
            bff,
            cookie,
            '{ get_pet(petId: 1) { name } missing: get_pet(petId: 99) { name } ownerAnimals(ownerId: "broken") { __typename } }',
        )
        assert body["data"] == {"get_pet": {"name": "Rex"}, "missing": None, "ownerAnimals": None}
        errors = {tuple(e["path"]): e["extensions"] for e in body["errors"]}
        assert errors[("missing",)]["code"] == "UPSTREAM_ERROR" and errors[("missing",)]["upstream"] == "pets"
        assert errors[("ownerAnimals",)]["code"] == "UPSTREAM_ERROR"
        assert "boom" not in json.dumps(body) and "no such pet" not in json.dumps(body)
        # without a session the upstream is never called (BFF_UPSTREAMS__PETS__ANONYMOUS=deny)
        async with bff.client() as client:
            anonymous = (await client.post("/graphql", json={"query": "{ get_pet(petId: 1) { name } }"})).json()
        assert anonymous["data"] == {"get_pet": None}
        assert anonymous["errors"][0]["extensions"]["code"] == "UNAUTHENTICATED"


async def test_a_fastapi_document_from_its_url(inventory: tuple[str, Calls], issuer: TestIssuer) -> None:
    url, calls = inventory
    # read at start-up, synchronously (here in a thread: the service runs in this event loop)
    schema = await asyncio.to_thread(build_schema, sources=[openapi("inventory", f"{url}/openapi.json", prefix="inv_")])
    sdl = schema.as_str()
    assert "inv_listItems(color: Color, in_stock: Boolean, limit: Int): [Item!]" in sdl
    assert "inv_createItem(input: NewItemInput!): Item" in sdl
    assert "updated: DateTime!" in sdl
    async with running(schema, inventory=url) as bff:
        cookie = await bff.session_for(issuer.token("alice"))
        fields = "sku title color tags dimensions { width height } updated stock"
        body = await query_bff(bff, cookie, f"{{ inv_listItems {{ {fields} }} }}")
        async with httpx.AsyncClient() as direct:
            service = (await direct.get(f"{url}/items")).json()
        assert body == {"data": {"inv_listItems": service}}
        assert service == list(ITEMS.values())
        body = await query_bff(bff, cookie, '{ inv_getItem(sku: "a-1", x_locale: "de") { title } }')
        assert body == {"data": {"inv_getItem": {"title": "Lampe"}}}
        body = await query_bff(bff, cookie, '{ inv_searchItems(q: ["lamp", "desk"]) }')
        assert body == {"data": {"inv_searchItems": ["a-1", "b-2"]}}
        body = await query_bff(
            bff,
            cookie,
            'mutation { inv_createItem(input: {sku: "c-3", title: "Chair", color: green}) { sku color stock } }',
        )
        assert body == {"data": {"inv_createItem": {"sku": "c-3", "color": "green", "stock": 0}}}
        assert calls.count("POST", "/items") == 1


async def test_include_exclude_and_names(pets: tuple[str, Calls]) -> None:
    schema = build_schema(
        sources=[openapi("pets", PETS_SPEC, include=["pets"], exclude=["createPet"], names={"get-pet": "pet"})]
    )
    sdl = schema.as_str()
    assert "listPets(" in sdl and "pet(petId: Int!): Pet" in sdl
    assert "createPet" not in sdl and "deletePet" not in sdl and "ownerAnimals" not in sdl


def test_unsupported_constructs_are_named_one_line_each(caplog: pytest.LogCaptureFixture) -> None:
    source = openapi("pets", PETS_SPEC)
    generated = source.generate()
    assert "source 'pets': POST /v1/upload: a multipart/form-data request body is not supported; skipped" in (
        generated.warnings
    )
    assert all("\n" not in line for line in generated.warnings)


def test_a_field_name_taken_twice_is_a_schema_error() -> None:
    @strawberry.type
    class Query:
        @strawberry.field(name="listPets")
        def list_pets(self) -> int:
            return 1

    with pytest.raises(SchemaError, match=r"listPets.*PREFIX"):
        build_schema(Query, sources=[openapi("pets", PETS_SPEC)])
    schema = build_schema(Query, sources=[openapi("pets", PETS_SPEC, prefix="p_")])
    assert "p_listPets" in schema.as_str()


def test_a_document_that_is_not_openapi_3_is_a_schema_error(tmp_path: Path) -> None:
    swagger = tmp_path / "swagger.json"
    swagger.write_text(json.dumps({"swagger": "2.0", "paths": {}}))
    with pytest.raises(SchemaError, match="not an OpenAPI 3 document"):
        build_schema(sources=[openapi("old", str(swagger))])
    with pytest.raises(SchemaError, match="cannot read"):
        build_schema(sources=[openapi("gone", str(tmp_path / "missing.yaml"))])


def test_the_environment_configures_sources(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("BFF_UPSTREAMS__PETS__URL", "http://127.0.0.1:9")
    monkeypatch.setenv("BFF_UPSTREAMS__PETS__OPENAPI", PETS_SPEC)
    monkeypatch.setenv("BFF_UPSTREAMS__PETS__PREFIX", "pets_")
    monkeypatch.setenv("BFF_UPSTREAMS__PETS__EXCLUDE", "admin, upload")
    from bff.settings import Settings

    sdl = settings_schema(Settings()).as_str()
    assert "pets_listPets" in sdl and "pets_deletePet" not in sdl
    assert "viewer" not in sdl  # BFF_SCHEMA unset: the sources alone
    monkeypatch.setenv("BFF_SCHEMA", "bff.demo.api:schema")
    sdl = settings_schema(Settings()).as_str()
    assert "pets_listPets" in sdl and "viewer" in sdl


def _compiled(bff: Bff, outcome: str) -> float:
    return sum(
        sample.value
        for metric in bff.resources.metrics.graphql_compiled.collect()
        for sample in metric.samples
        if sample.name.endswith("_total") and sample.labels["outcome"] == outcome
    )


async def test_the_compiled_plan_runs_source_fields_without_falling_back(
    pets: tuple[str, Calls], issuer: TestIssuer
) -> None:
    """Plain fields of generated types are attribute reads in the compiled plan; nothing falls
    back to graphql-core's executor (a union, from a ``oneOf``, does: the plan does not compile
    abstract types, whatever their origin)."""
    url, _ = pets
    schema = build_schema(sources=[openapi("pets", PETS_SPEC)])
    async with running(schema, pets=url) as bff:
        cookie = await bff.session_for(issuer.token("alice"))
        query = f"{{ listPets {{ {PET_FIELDS} }} p: get_pet(petId: 1) {{ name photos {{ url }} }} }}"
        first = await query_bff(bff, cookie, query)
        for _ in range(3):
            assert await query_bff(bff, cookie, query) == first
        assert _compiled(bff, "compiled") >= 3
        assert _compiled(bff, "fallback") == 0


async def test_a_connect_failure_retries_a_query_never_a_mutation(issuer: TestIssuer) -> None:
    """Counted at the transport: a GET whose connection was never made is sent once more (the
    upstream client's connect retry), a POST, PUT or DELETE of a source never is."""
    attempts: list[str] = []

    def refuse(request: httpx.Request) -> httpx.Response:
        if request.url.path.startswith("/v1/"):  # not the start-up probe of the base URL
            attempts.append(request.method)
        raise httpx.ConnectError("refused", request=request)

    settings = make_settings(upstreams={"pets": {"url": "http://pets.test"}})
    schema = build_schema(sources=[openapi("pets", PETS_SPEC)])
    app = create_app(settings, schema=schema, transports={"pets": httpx.MockTransport(refuse)})
    async with serve(app) as url:
        bff = Bff(app, url, settings)
        cookie = await bff.session_for(issuer.token("alice"))
        read = await query_bff(bff, cookie, "{ get_pet(petId: 1) { name } }")
        assert read["data"] == {"get_pet": None} and attempts == ["GET", "GET"]
        attempts.clear()
        for mutation in ('createPet(input: {name: "x"}) { id }', "deletePet(petId: 1)"):
            body = await query_bff(bff, cookie, f"mutation {{ {mutation} }}")
            assert body["errors"][0]["extensions"]["upstream"] == "pets"
        assert attempts == ["POST", "DELETE"]


async def test_the_safeguards_apply_to_a_sources_schema(pets: tuple[str, Calls], issuer: TestIssuer) -> None:
    """Production mode (no introspection, no suggestions) and the depth limit hold for fields a
    source mounted, before any upstream call."""
    url, calls = pets
    settings = make_settings(upstreams={"pets": {"url": url}}, env="production", max_depth=1, session_secret="s" * 32)
    app = create_app(settings, schema=build_schema(sources=[openapi("pets", PETS_SPEC)]))
    async with serve(app) as bff_url:
        bff = Bff(app, bff_url, settings)
        cookie = await bff.session_for(issuer.token("alice"))
        introspection = await query_bff(bff, cookie, "{ __schema { types { name } } }")
        assert introspection["errors"][0]["extensions"]["code"] == "GRAPHQL_VALIDATION_FAILED"
        calls.clear()
        deep = await query_bff(
            bff, cookie, "{ listPets { owner { ids } photos { url } } a: get_pet(petId: 1) { photos { url } } }"
        )
        assert deep.get("data") is None
        assert deep["errors"][0]["extensions"]["code"] == "QUERY_TOO_COMPLEX"  # the limits' one code
        suggestion = await query_bff(bff, cookie, "{ listPet { id } }")
        assert "Did you mean" not in str(suggestion)
        assert calls.count() == 0


async def test_authorization_directives_on_source_fields(pets: tuple[str, Calls], issuer: TestIssuer) -> None:
    """``authorize``: a field of a source behind ``@requiresScopes``/``@authenticated``; a denied
    field is FORBIDDEN and never calls the service."""
    from tests.support.sessions import store_session

    url, calls = pets
    rules = {"createPet": [["pets:write"]], "*": "authenticated"}
    schema = build_schema(sources=[openapi("pets", PETS_SPEC, authorize=rules)])
    assert '@requiresScopes(scopes: [["pets:write"]])' in schema.as_str()
    async with running(schema, pets=url) as bff:
        reader = await store_session(bff.resources, issuer.token("bob"), sub="bob", scope="openid pets:read")
        writer = await store_session(bff.resources, issuer.token("ann"), sub="ann", scope="openid pets:write")
        create = 'mutation { createPet(input: {name: "Nemo"}) { name } }'
        calls.clear()
        denied = await query_bff(bff, reader, create)
        assert denied["data"] == {"createPet": None}
        assert denied["errors"][0]["extensions"]["code"] == "FORBIDDEN"
        assert calls.count("POST") == 0
        assert (await query_bff(bff, writer, create)) == {"data": {"createPet": {"name": "Nemo"}}}
        assert (await query_bff(bff, reader, "{ get_pet(petId: 1) { name } }")) == {
            "data": {"get_pet": {"name": "Rex"}}
        }
