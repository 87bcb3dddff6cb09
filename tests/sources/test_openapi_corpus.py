"""OpenAPI sources on a corpus of real-world documents (trimmed copies in ``specs/corpus``: the OpenAPI
Initiative's examples, swagger-petstore, Redocly's museum, train-travel, and subsets of GitHub's,
Discord's, OpenAI's, Spotify's and Twilio's descriptions) plus one document of the constructs they use:
each mounts, its SDL is valid, its operations keep their names, arguments and types, every refusal is
one warning line, and the generated module passes ruff. Three of them answer over real HTTP like the
services they describe (museum, petstore-expanded, and a FastAPI app's own document)."""

from __future__ import annotations

import asyncio
import datetime as dt
import enum
import subprocess
import uuid
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import Annotated, Any, Literal

import graphql
import httpx
import pytest
import strawberry
from fastapi import FastAPI, Header, Query
from pydantic import BaseModel, ConfigDict, Field
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from bff import build_schema
from bff.sources import openapi
from tests.sources.services import Calls, query_bff, running
from tests.support.servers import require_binary, serve
from tests.support.tokens import TestIssuer

CORPUS = Path(__file__).parent / "specs" / "corpus"


@strawberry.type
class Host:
    """A host schema's own Query, for documents that mount no Query field of their own."""

    host: int = 0


@dataclass(frozen=True)
class Case:
    file: str
    #: ``Type.field(arg: T, ...): R``, ``enum E = a | b``, ``union U = A | B`` lines the schema has
    expected: tuple[str, ...]
    #: parts of warning lines the generator must give
    warnings: tuple[str, ...] = ()
    #: the document mounts no Query field: mounted beside a host Query
    hosted: bool = False


CASES = [
    Case(
        "constructs.yaml",
        (
            "Query.list_things(kind: Kind, ids: [BigInt!], since: Date, X_Tenant: String): [Thing!]",
            "Query.get_things_by_id(id: String!): Thing",
            "Query.thingShape(id: String!): Shape",
            "Query.thingEither(id: String!): ThingEitherResult",
            "Query.tree: Node",
            "Query.external: JSON",
            "Mutation.createThing(input: ThingInput!): Thing",
            "Mutation.deleteThing(id: String!): Boolean",
            "enum Kind = plain | dark_blue | true_ | null_",
            "union Shape = Circle | Square",
            "union ThingEitherResult = Circle | Square",
            "Thing.id: String!",
            "Thing.created: DateTime",
            "Thing.name: String!",
            "Thing.first_name: String",
            "Thing.size: BigInt",
            "Thing.note: String",
            "Thing.meta: JSON",
            "ThingInput.name: String!",
            "ThingInput.secret: String",
            "Node.children: [Node!]",
            "Circle.radius: Float!",
        ),
        (
            "GET /api/v1/things: header parameter 'Authorization' is set by bff, not an argument",
            "GET /api/v1/things: cookie parameter 'session' is not supported: not an argument",
            "Thing.first-name: not a GraphQL name, served as first_name",
            "HEAD /things: not mounted",
            "POST /api/v1/upload: a multipart/form-data request body is not supported; skipped",
            "GET /api/v1/report: a text/csv answer is not supported; skipped",
            "GET /api/v1/private: needs the cookie parameter 'sid'; skipped",
            "GET /dup: the field name tree is taken; skipped",
            "external $ref 'other.yaml#/Thing' is not supported: served as JSON",
        ),
    ),
    Case(
        "oai-petstore.yaml",
        (
            "Query.listPets(limit: Int): [Pet!]",
            "Query.showPetById(petId: String!): Pet",
            "Mutation.createPets(input: PetInput!): Boolean",
            "Pet.id: BigInt!",
            "Pet.name: String!",
            "Pet.tag: String",
        ),
    ),
    Case(
        "oai-petstore-expanded.yaml",
        (
            "Query.findPets(tags: [String!], limit: Int): [Pet!]",
            "Query.find_pet_by_id(id: BigInt!): Pet",
            "Mutation.addPet(input: NewPetInput!): Pet",
            "Mutation.deletePet(id: BigInt!): Boolean",
            "Pet.id: BigInt!",
            "Pet.name: String!",
            "NewPetInput.name: String!",
            "NewPetInput.tag: String",
        ),
    ),
    Case(
        "oai-uspto.yaml",
        (
            "Query.list_data_sets: DataSetList",
            "Query.list_searchable_fields(dataset: String!, version: String!): String",
            "DataSetList.total: Int",
        ),
        ("POST /{dataset}/{version}/records: a application/x-www-form-urlencoded request body is not supported",),
    ),
    Case(
        "oai-link-example.yaml",
        (
            "Query.getUserByName(username: String!): User",
            "Query.getRepository(username: String!, slug: String!): Repository",
            "Query.getPullRequestsByRepository(username: String!, slug: String!, state: GetPullRequestsByRepositoryState): [Pullrequest!]",
            "Mutation.mergePullRequest(username: String!, slug: String!, pid: String!): Boolean",
            "enum GetPullRequestsByRepositoryState = open | merged | declined",
        ),
    ),
    Case("oai-api-with-examples.yaml", ("Query.listVersionsv2: JSON", "Query.getVersionDetailsv2: JSON")),
    Case(
        "oai-callback-example.yaml",
        ("Mutation.post_streams(callbackUrl: String!): PostStreamsResult",),
        ("callbacks are not supported: not mounted",),
        hosted=True,
    ),
    Case("oai-webhook-example.yaml", (), ("webhooks are not supported: not mounted",), hosted=True),
    Case("oai-non-oauth-scopes.yaml", ("Query.get_users: JSON",)),
    Case(
        "museum.yaml",
        (
            "Query.getMuseumHours(startDate: Date, page: Int, limit: Int): [MuseumDailyHours!]",
            "Query.listSpecialEvents(startDate: Date, endDate: Date, page: Int, limit: Int): [SpecialEvent!]",
            "Query.getSpecialEvent(eventId: String!): SpecialEvent",
            "Mutation.createSpecialEvent(input: SpecialEventInput!): SpecialEvent",
            "Mutation.updateSpecialEvent(eventId: String!, input: SpecialEventFieldsInput!): SpecialEvent",
            "Mutation.deleteSpecialEvent(eventId: String!): Boolean",
            "Mutation.buyMuseumTickets(input: BuyMuseumTicketsInput!): MuseumTicketsConfirmation",
            "SpecialEvent.dates: [Date!]!",
            "SpecialEvent.price: Float!",
            "MuseumTicketsConfirmation.ticketType: TicketType!",
            "MuseumTicketsConfirmation.confirmationCode: String!",
            "BuyMuseumTicketsInput.email: String",
            "BuyMuseumTicketsInput.ticketDate: Date!",
            "enum TicketType = event | general",
        ),
        ("GET /tickets/{ticketId}/qr: a image/png answer is not supported; skipped", "webhooks are not supported"),
    ),
    Case(
        "swagger-petstore3.yaml",
        (
            "Query.findPetsByStatus(status: FindPetsByStatusStatus): [Pet!]",
            "Query.findPetsByTags(tags: [String!]): [Pet!]",
            "Query.getPetById(petId: BigInt!): Pet",
            "Query.getInventory: JSON",
            "Query.loginUser(username: String, password: String): String",
            "Mutation.addPet(input: PetInput!): Pet",
            "Mutation.deletePet(petId: BigInt!, api_key: String): Boolean",
            "Mutation.updatePetWithForm(petId: BigInt!, name: String, status: String): Pet",
            "Mutation.createUsersWithListInput(input: [UserInput!]): User",
            "Pet.photoUrls: [String!]!",
            "Pet.category: Category",
        ),
        ("POST /pet/{petId}/uploadImage: a application/octet-stream request body is not supported",),
    ),
    Case(
        "train-travel.yaml",
        (
            "Query.get_stations: GetStationsResult",
            "Query.get_trips(origin: String!, destination: String!, date: DateTime!, bicycles: Boolean, dogs: Boolean): GetTripsResult",
            "Query.get_booking(bookingId: String!): GetBookingResult",
            "Mutation.create_booking(input: BookingInput!): CreateBookingResult",
            "Mutation.create_booking_payment(bookingId: String!, input: BookingPaymentInput): CreateBookingPaymentResult",
            "Mutation.delete_booking(bookingId: String!): Boolean",
            "union CreateBookingPaymentResultSource = CreateBookingPaymentResultSourceOption1 | CreateBookingPaymentResultSourceOption2",
            "Station.country_code: String!",
        ),
    ),
    Case(
        "github-ghes-subset.yaml",
        (
            "Query.enterprise_admin_list_global_webhooks(per_page: Int, page: Int): [Global_hook!]",
            "Query.enterprise_admin_get_global_webhook(hook_id: Int!): Global_hook",
            "Mutation.enterprise_admin_create_global_webhook(input: EnterpriseAdminCreateGlobalWebhookInput!): Global_hook",
            "Mutation.enterprise_admin_delete_global_webhook(hook_id: Int!): Boolean",
            "enum EnterpriseAdminListPreReceiveHooksDirection = asc | desc",
        ),
    ),
    Case(
        "discord-subset.yaml",
        (
            "Query.get_gateway: GatewayResponse",
            "Query.list_guild_emojis(guild_id: String!): [EmojiResponse!]",
            "Query.get_stage_instance(channel_id: String!): StageInstanceResponse",
            "Mutation.delete_guild_emoji(guild_id: String!, emoji_id: String!): Boolean",
            "GatewayResponse.url: String!",
        ),
        ("StageInstancesPrivacyLevels: a oneOf of non-object schemas is served as JSON",),
    ),
    Case(
        "openai-subset.yaml",
        (
            "Query.listAssistants(limit: Int, order: ListAssistantsOrder, after: String, before: String): ListAssistantsResponse",
            "Query.getAssistant(assistant_id: String!): AssistantObject",
            "Query.listBatches(after: String, limit: Int): ListBatchesResponse",
            "Mutation.deleteAssistant(assistant_id: String!): DeleteAssistantResponse",
            "union AssistantObjectToolsItem = AssistantToolsCode | AssistantToolsFileSearch | AssistantToolsFunction",
            "enum ListAssistantsOrder = asc | desc",
        ),
    ),
    Case(
        "spotify-subset.yaml",
        (
            "Query.get_an_artist(id: String!): ArtistObject",
            "Query.get_an_artists_top_tracks(id: String!, market: String): GetAnArtistsTopTracksResult",
            "Query.get_available_markets: GetAvailableMarketsResult",
            "Mutation.save_audiobooks_user(ids: String!): Boolean",
            "enum SimplifiedAlbumObjectReleaseDatePrecision = year | month | day",
        ),
    ),
    Case(
        "twilio-messaging-subset.yaml",
        (
            "Query.ListAlphaSender(ServiceSid: String!, PageSize: BigInt, Page: Int, PageToken: String): ListAlphaSenderResult",
            "Query.FetchAlphaSender(ServiceSid: String!, Sid: String!): Messaging_v1_service_alpha_sender",
            "Mutation.DeleteAlphaSender(ServiceSid: String!, Sid: String!): Boolean",
        ),
        ("POST /v1/Services/{ServiceSid}/AlphaSenders: a application/x-www-form-urlencoded request body",),
    ),
]


def signatures(sdl: str) -> set[str]:
    """Every field of the SDL as ``Type.field(arg: T): R``, every enum and union as one line."""
    schema = graphql.build_schema(sdl)
    assert graphql.validate_schema(schema) == []
    lines: set[str] = set()
    for name, kind in schema.type_map.items():
        if name.startswith("__"):
            continue
        if isinstance(kind, graphql.GraphQLObjectType):
            for field_name, field in kind.fields.items():
                args = ", ".join(f"{a}: {arg.type}" for a, arg in field.args.items())
                lines.add(f"{name}.{field_name}{f'({args})' if args else ''}: {field.type}")
        elif isinstance(kind, graphql.GraphQLInputObjectType):
            lines.update(f"{name}.{f}: {field.type}" for f, field in kind.fields.items())
        elif isinstance(kind, graphql.GraphQLEnumType):
            lines.add(f"enum {name} = {' | '.join(kind.values)}")
        elif isinstance(kind, graphql.GraphQLUnionType):
            lines.add(f"union {name} = {' | '.join(member.name for member in kind.types)}")
    return lines


@pytest.mark.parametrize("case", CASES, ids=lambda case: case.file)
def test_a_real_world_document_mounts_with_its_operations(case: Case) -> None:
    source = openapi("corpus", str(CORPUS / case.file))
    generated = source.generate()
    assert all("\n" not in line and "\r" not in line for line in generated.warnings)
    for part in case.warnings:
        assert any(part in line for line in generated.warnings), (part, generated.warnings)
    compile(generated.code, case.file, "exec")
    schema = build_schema(Host, sources=[source]) if case.hosted else build_schema(sources=[source])
    found = signatures(schema.as_str())
    missing = [line for line in case.expected if line not in found]
    assert not missing, missing


def test_the_generated_modules_pass_ruff(tmp_path: Path) -> None:
    for case in CASES:
        generated = openapi("corpus", str(CORPUS / case.file)).generate()
        if generated.query_fields or generated.mutation_fields:
            (tmp_path / f"{case.file.removesuffix('.yaml').replace('-', '_')}.py").write_text(generated.code)
    done = subprocess.run(
        [require_binary("ruff", "pip install ruff"), "check", "--isolated", "--no-cache", "."],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stdout


# -- answers over real HTTP -------------------------------------------------------------------------


async def _recorded(calls: Calls, request: Request) -> Any:
    raw = await request.body()
    body = await request.json() if raw else None
    query = f"?{request.url.query}" if request.url.query else ""
    calls.seen.append((request.method, request.url.path + query, request.headers.get("authorization"), body))
    return body


EVENT_ID = "3be6453c-03eb-4357-ae5a-984a0e574a54"
HOURS = [
    {"date": "2024-12-31", "timeOpen": "09:00", "timeClose": "18:00"},
    {"date": "2025-01-01", "timeOpen": "10:00", "timeClose": "16:00"},
]
EVENT = {
    "eventId": EVENT_ID,
    "name": "Pirate Coding Workshop",
    "location": "Computer Room",
    "eventDescription": "Arr",
    "dates": ["2023-09-05", "2023-09-08"],
    "price": 25.5,
}


def museum_app(calls: Calls) -> Starlette:
    """Redocly's museum API (``museum.yaml``): hours, special events and tickets."""
    events = {EVENT_ID: dict(EVENT)}

    async def hours(request: Request) -> Response:
        await _recorded(calls, request)
        return JSONResponse(HOURS[: int(request.query_params.get("limit", 10))])

    async def list_or_create(request: Request) -> Response:
        body = await _recorded(calls, request)
        if request.method == "GET":
            return JSONResponse(list(events.values()))
        event = {"eventId": str(uuid.uuid5(uuid.NAMESPACE_URL, body["name"])), **body}
        events[event["eventId"]] = event
        return JSONResponse(event, status_code=201)

    async def one(request: Request) -> Response:
        body = await _recorded(calls, request)
        event_id = request.path_params["event_id"]
        if event_id not in events:
            return JSONResponse({"type": "about:blank", "title": "Not found"}, status_code=404)
        if request.method == "DELETE":
            del events[event_id]
            return Response(status_code=204)
        if request.method == "PATCH":
            events[event_id].update(body)
        return JSONResponse(events[event_id])

    async def tickets(request: Request) -> Response:
        body = await _recorded(calls, request)
        ticket = {
            **body,
            "ticketId": "a54a57ca-36f8-421b-a6b4-2e8f26858a4c",
            "message": "ok",
            "confirmationCode": "c-1",
        }
        ticket.pop("email", None)
        return JSONResponse(ticket, status_code=201)

    return Starlette(
        routes=[
            Route("/museum-hours", hours),
            Route("/special-events", list_or_create, methods=["GET", "POST"]),
            Route("/special-events/{event_id}", one, methods=["GET", "PATCH", "DELETE"]),
            Route("/tickets", tickets, methods=["POST"]),
        ]
    )


async def test_the_museum_document_answers_like_the_service(issuer: TestIssuer) -> None:
    calls = Calls()
    schema = build_schema(sources=[openapi("museum", str(CORPUS / "museum.yaml"))])
    async with serve(museum_app(calls)) as url, running(schema, museum=url) as bff, httpx.AsyncClient() as direct:
        token = issuer.token("alice")
        cookie = await bff.session_for(token)
        body = await query_bff(
            bff, cookie, '{ getMuseumHours(startDate: "2024-12-31", limit: 1) { date timeOpen timeClose } }'
        )
        assert body == {"data": {"getMuseumHours": (await direct.get(f"{url}/museum-hours?limit=1")).json()}}
        assert calls.seen[0] == ("GET", "/museum-hours?startDate=2024-12-31&limit=1", f"Bearer {token}", None)

        fields = "eventId name location eventDescription dates price"
        body = await query_bff(bff, cookie, f"{{ listSpecialEvents {{ {fields} }} }}")
        assert body == {"data": {"listSpecialEvents": (await direct.get(f"{url}/special-events")).json()}}
        body = await query_bff(bff, cookie, f'{{ getSpecialEvent(eventId: "{EVENT_ID}") {{ {fields} }} }}')
        assert body == {"data": {"getSpecialEvent": EVENT}}

        calls.clear()
        new = {
            "name": "Night Tour",
            "location": "Hall",
            "eventDescription": "Dark",
            "dates": ["2024-02-03"],
            "price": 3.5,
        }
        body = await query_bff(
            bff,
            cookie,
            f"mutation($e: SpecialEventInput!) {{ createSpecialEvent(input: $e) {{ {fields} }} }}",
            {"e": new},
        )
        created = body["data"]["createSpecialEvent"]
        assert calls.seen[0][:2] == ("POST", "/special-events") and calls.seen[0][3] == new
        assert created == (await direct.get(f"{url}/special-events/{created['eventId']}")).json()

        calls.clear()
        body = await query_bff(
            bff,
            cookie,
            f'mutation {{ updateSpecialEvent(eventId: "{EVENT_ID}", input: {{price: 30}}) {{ price name }} }}',
        )
        assert body == {"data": {"updateSpecialEvent": {"price": 30.0, "name": EVENT["name"]}}}
        assert calls.seen[0][:2] == ("PATCH", f"/special-events/{EVENT_ID}") and calls.seen[0][3] == {"price": 30.0}

        calls.clear()
        body = await query_bff(
            bff,
            cookie,
            f'mutation {{ buyMuseumTickets(input: {{ticketType: event, ticketDate: "2024-05-06", eventId: "{EVENT_ID}", email: "a@b.c"}}) '
            "{ ticketId ticketType ticketDate eventId message confirmationCode } }",
        )
        assert calls.seen[0][3] == {
            "ticketType": "event",
            "ticketDate": "2024-05-06",
            "eventId": EVENT_ID,
            "email": "a@b.c",
        }
        assert body == {
            "data": {
                "buyMuseumTickets": {
                    "ticketId": "a54a57ca-36f8-421b-a6b4-2e8f26858a4c",
                    "ticketType": "event",
                    "ticketDate": "2024-05-06",
                    "eventId": EVENT_ID,
                    "message": "ok",
                    "confirmationCode": "c-1",
                }
            }
        }

        body = await query_bff(bff, cookie, f'mutation {{ deleteSpecialEvent(eventId: "{EVENT_ID}") }}')
        assert body == {"data": {"deleteSpecialEvent": True}}
        body = await query_bff(bff, cookie, f'{{ getSpecialEvent(eventId: "{EVENT_ID}") {{ name }} }}')
        assert body["data"] == {"getSpecialEvent": None}
        assert body["errors"][0]["extensions"]["code"] == "UPSTREAM_ERROR"


STORE: list[dict[str, Any]] = [{"id": 1, "name": "Rex", "tag": "dog"}, {"id": 9_000_000_000, "name": "Tom"}]


def petstore_app(calls: Calls) -> Starlette:
    """The OpenAPI Initiative's petstore-expanded (``allOf`` of ``NewPet`` and an int64 ``id``)."""
    pets: dict[int, dict[str, Any]] = {pet["id"]: dict(pet) for pet in STORE}

    async def find_or_add(request: Request) -> Response:
        body = await _recorded(calls, request)
        if request.method == "POST":
            pet = {"id": max(pets) + 1, **body}
            pets[pet["id"]] = pet
            return JSONResponse(pet)
        tags = request.query_params.getlist("tags")
        found = [p for p in pets.values() if not tags or p.get("tag") in tags]
        return JSONResponse(found[: int(request.query_params.get("limit", 100))])

    async def one(request: Request) -> Response:
        await _recorded(calls, request)
        pet_id = int(request.path_params["pet_id"])
        if request.method == "DELETE":
            pets.pop(pet_id, None)
            return Response(status_code=204)
        return JSONResponse(pets[pet_id]) if pet_id in pets else JSONResponse({"code": 404, "message": "no"}, 404)

    return Starlette(
        routes=[
            Route("/pets", find_or_add, methods=["GET", "POST"]),
            Route("/pets/{pet_id}", one, methods=["GET", "DELETE"]),
        ]
    )


async def test_petstore_expanded_answers_like_the_service(issuer: TestIssuer) -> None:
    calls = Calls()
    schema = build_schema(sources=[openapi("store", str(CORPUS / "oai-petstore-expanded.yaml"))])
    async with serve(petstore_app(calls)) as url, running(schema, store=url) as bff, httpx.AsyncClient() as direct:
        cookie = await bff.session_for(issuer.token("alice"))
        body = await query_bff(bff, cookie, "{ findPets { id name tag } }")
        service = (await direct.get(f"{url}/pets")).json()
        assert body == {"data": {"findPets": [{"tag": None, **pet} for pet in service]}}
        calls.clear()
        body = await query_bff(bff, cookie, '{ findPets(tags: ["dog", "cat"], limit: 5) { id name } }')
        assert body == {"data": {"findPets": [{"id": 1, "name": "Rex"}]}}
        assert calls.seen[0][1] == "/pets?tags=dog&tags=cat&limit=5"
        body = await query_bff(bff, cookie, "{ find_pet_by_id(id: 9000000000) { id name tag } }")
        assert body == {"data": {"find_pet_by_id": {"id": 9_000_000_000, "name": "Tom", "tag": None}}}
        calls.clear()
        body = await query_bff(bff, cookie, 'mutation { addPet(input: {name: "Nemo", tag: "fish"}) { id name tag } }')
        assert body == {"data": {"addPet": {"id": 9_000_000_001, "name": "Nemo", "tag": "fish"}}}
        assert calls.seen[0][3] == {"name": "Nemo", "tag": "fish"}
        body = await query_bff(bff, cookie, "mutation { deletePet(id: 1) }")
        assert body == {"data": {"deletePet": True}}
        assert calls.count("DELETE", "/pets/1") == 1


# -- a FastAPI app's own document: pydantic's discriminated unions, recursion, aliases, formats ----------


class Color(enum.StrEnum):
    red = "red"
    dark_blue = "dark-blue"


class Dog(BaseModel):
    kind: Literal["dog"] = "dog"
    name: str
    barks: bool = True


class Cat(BaseModel):
    kind: Literal["cat"] = "cat"
    name: str
    lives: int = 9


Animal = Annotated[Dog | Cat, Field(discriminator="kind")]


class Node(BaseModel):
    name: str
    children: list[Node] = []


class Money(BaseModel):
    amount: Decimal
    currency: Literal["EUR", "USD"]


class Item(BaseModel):
    model_config = ConfigDict(populate_by_name=True)
    id: uuid.UUID
    big: int = Field(json_schema_extra={"format": "int64"})
    first_name: str = Field(alias="first-name")
    tags: list[str] | None = None
    labels: dict[str, int] = {}
    blob: bytes = b""
    price: Money
    color: Color = Color.red
    created: dt.datetime
    day: dt.date | None = None
    pet: Animal | None = None
    pets: list[Animal] = []


class NewItem(BaseModel):
    title: str
    color: Color = Color.red
    tags: list[str] = []
    camel_case: str = Field("c", alias="camelCase")


ITEM = {
    "id": "5f2c8b1e-1a2b-4c3d-8e9f-001122334455",
    "big": 9_007_199_254_740_000,
    "first-name": "Ann",
    "tags": None,
    "labels": {"a": 1},
    "blob": "aGk=",
    "price": {"amount": "12.50", "currency": "EUR"},
    "color": "dark-blue",
    "created": "2024-01-02T03:04:05Z",
    "day": "2024-01-02",
    "pet": {"kind": "cat", "name": "Tom", "lives": 7},
    "pets": [{"kind": "dog", "name": "Rex", "barks": False}, {"kind": "cat", "name": "Tom", "lives": 3}],
}


def fastapi_app(calls: Calls) -> FastAPI:
    app = FastAPI()

    @app.middleware("http")
    async def record(request: Request, call_next: Any) -> Any:
        raw = await request.body()
        query = f"?{request.url.query}" if request.url.query else ""
        calls.seen.append((request.method, request.url.path + query, request.headers.get("x-trace"), raw.decode()))
        return await call_next(request)

    @app.get("/items/{item_id}", response_model=Item, response_model_by_alias=True)
    def get_item(
        item_id: uuid.UUID,
        colors: Annotated[list[Color] | None, Query()] = None,
        since: dt.date | None = None,
        x_trace: Annotated[str | None, Header()] = None,
    ) -> Any:
        return ITEM

    @app.get("/tree", response_model=Node)
    def tree() -> Any:
        return {"name": "root", "children": [{"name": "a", "children": [{"name": "b", "children": []}]}]}

    @app.get("/animals", response_model=list[Animal])
    def animals() -> Any:
        return ITEM["pets"]

    @app.post("/items", status_code=201)
    def create_item(item: NewItem) -> dict[str, Any]:
        return item.model_dump(by_alias=True, mode="json")

    return app


ITEM_FIELDS = (
    "id big first_name tags labels blob price { amount currency } color created day "
    "pet { __typename ... on Cat { kind name lives } } "
    "pets { __typename ... on Dog { kind name barks } ... on Cat { kind name lives } }"
)


async def test_a_fastapi_document_with_pydantic_constructs(issuer: TestIssuer) -> None:
    calls = Calls()
    async with serve(fastapi_app(calls)) as url:
        schema = await asyncio.to_thread(build_schema, sources=[openapi("fa", f"{url}/openapi.json")])
        found = signatures(schema.as_str())
        for line in (
            "Item.big: BigInt!",
            "Item.first_name: String!",
            "Item.created: DateTime!",
            "Item.labels: JSON",
            "Item.tags: [String!]",
            "enum Color = red | dark_blue",
            "Node.children: [Node!]",
        ):
            assert line in found
        async with running(schema, fa=url) as bff, httpx.AsyncClient(base_url=url) as direct:
            cookie = await bff.session_for(issuer.token("alice"))
            item_id = ITEM["id"]
            calls.clear()
            body = await query_bff(
                bff,
                cookie,
                f'{{ item: get_item_items__item_id__get(item_id: "{item_id}", colors: [red, dark_blue], '
                f'since: "2024-01-01", x_trace: "t-1") {{ {ITEM_FIELDS} }} }}',
            )
            assert calls.seen[0][1:3] == (f"/items/{item_id}?colors=red&colors=dark-blue&since=2024-01-01", "t-1")
            service = (await direct.get(f"/items/{item_id}")).json()
            expected = {
                **{k: v for k, v in service.items() if k != "first-name"},
                "first_name": service["first-name"],
                "color": "dark_blue",
                "pet": {"__typename": "Cat", **service["pet"]},
                "pets": [{"__typename": pet["kind"].title(), **pet} for pet in service["pets"]],
            }
            assert body == {"data": {"item": expected}}

            body = await query_bff(
                bff, cookie, "{ tree_tree_get { name children { name children { name children { name } } } } }"
            )
            assert body == {"data": {"tree_tree_get": (await direct.get("/tree")).json()}}

            body = await query_bff(
                bff,
                cookie,
                "{ animals_animals_get { __typename ... on Dog { name barks } ... on Cat { name lives } } }",
            )
            assert body == {
                "data": {
                    "animals_animals_get": [
                        {"__typename": "Dog", "name": "Rex", "barks": False},
                        {"__typename": "Cat", "name": "Tom", "lives": 3},
                    ]
                }
            }

            calls.clear()
            body = await query_bff(
                bff,
                cookie,
                'mutation { create_item_items_post(input: {title: "Lamp", color: dark_blue, camelCase: "q"}) }',
            )
            assert body == {
                "data": {
                    "create_item_items_post": {"title": "Lamp", "color": "dark-blue", "tags": [], "camelCase": "q"}
                }
            }
            assert calls.count("POST", "/items") == 1
