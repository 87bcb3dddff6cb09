"""Real REST services for the source tests, each recording every request it receives:

- `pets_app`: implements the hand-written OpenAPI 3.1 document ``specs/pets.yaml`` (``allOf``,
  a discriminated ``oneOf``, enums, nullable, arrays of objects, path/query/header parameters, a
  JSON body, a 204, a multipart body that is not supported);
- `inventory_app`: a FastAPI app whose document is FastAPI's own (pydantic models, ``Optional``,
  enums, datetimes, lists, a body, a header), served at ``/openapi.json``."""

from __future__ import annotations

import contextlib
import datetime as dt
import enum
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Annotated, Any

from fastapi import FastAPI, Header, HTTPException, Query
from pydantic import BaseModel
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from bff.app import create_app
from tests.conftest import Bff, make_settings
from tests.support.servers import serve


@dataclass
class Calls:
    """Every request a service received: (method, path with query, the Authorization header, body)."""

    seen: list[tuple[str, str, str | None, Any]] = field(default_factory=list)

    def count(self, method: str | None = None, path: str | None = None) -> int:
        return sum(1 for m, p, _, _ in self.seen if (method is None or m == method) and (path is None or p == path))

    def clear(self) -> None:
        self.seen.clear()


PETS: dict[int, dict[str, Any]] = {
    1: {
        "id": 1,
        "createdAt": "2026-01-02T03:04:05Z",
        "name": "Rex",
        "tag": None,
        "status": "available",
        "owner": {"first-name": "Ann", "ids": [1, 2]},
        "photos": [{"url": "https://img/1", "width": 640}],
    },
    2: {
        "id": 9_000_000_000,
        "createdAt": "2026-02-03T04:05:06.123+02:00",
        "name": "Tom",
        "tag": "cat",
        "status": "sold",
        "owner": None,
        "photos": [],
    },
}
ANIMALS = [
    {"kind": "dog", "name": "Rex", "barks": True},
    {"kind": "cat", "name": "Tom", "lives": 9},
    {"kind": "dog", "name": "Fido", "barks": False},
]


def pets_app(calls: Calls) -> Starlette:
    pets = {k: dict(v) for k, v in PETS.items()}

    async def record(request: Request) -> Any:
        body = None
        raw = await request.body()
        if raw:
            body = await request.json()
        query = f"?{request.url.query}" if request.url.query else ""
        calls.seen.append((request.method, request.url.path + query, request.headers.get("authorization"), body))
        return body

    async def list_pets(request: Request) -> Response:
        await record(request)
        found = list(pets.values())
        if status := request.query_params.get("status"):
            found = [p for p in found if p["status"] == status]
        if tags := request.query_params.getlist("tags"):
            found = [p for p in found if p["tag"] in tags]
        if limit := request.query_params.get("limit"):
            found = found[: int(limit)]
        if tenant := request.headers.get("x-tenant"):
            found = [dict(p, name=f"{p['name']}@{tenant}") for p in found]
        return JSONResponse(found)

    async def batch(request: Request) -> Response:
        await record(request)
        wanted = {int(i) for i in request.query_params.getlist("ids")}
        return JSONResponse([p for p in reversed(pets.values()) if p["id"] in wanted])  # any order, missing left out

    async def create_pet(request: Request) -> Response:
        body = await record(request)
        if not isinstance(body, dict) or not isinstance(body.get("name"), str):
            return JSONResponse({"detail": "name is required"}, status_code=422)
        pet_id = max(pets) + 1
        pets[pet_id] = {"id": pet_id, "createdAt": None, "owner": None, "tag": None, "status": None, **body}
        return JSONResponse(pets[pet_id], status_code=201)

    async def one_pet(request: Request) -> Response:
        await record(request)
        pet_id = int(request.path_params["pet_id"])
        if request.method == "DELETE":
            pets.pop(pet_id, None)
            return Response(status_code=204)
        if pet_id not in pets:
            return JSONResponse({"detail": "no such pet"}, status_code=404)
        return JSONResponse(pets[pet_id])

    async def animals(request: Request) -> Response:
        await record(request)
        if request.path_params["owner"] == "broken":
            return JSONResponse({"detail": "boom"}, status_code=503)
        return JSONResponse(ANIMALS)

    return Starlette(
        routes=[
            Route("/v1/pets", list_pets, methods=["GET"]),
            Route("/v1/pets", create_pet, methods=["POST"]),
            Route("/v1/pets/batch", batch, methods=["GET"]),
            Route("/v1/pets/{pet_id}", one_pet, methods=["GET", "DELETE"]),
            Route("/v1/owners/{owner}/animals", animals, methods=["GET"]),
        ]
    )


ORDERS_SPEC: dict[str, Any] = {
    "openapi": "3.0.3",
    "info": {"title": "Orders", "version": "1"},
    "paths": {
        "/orders": {
            "get": {
                "operationId": "orders",
                "responses": {
                    "200": {
                        "description": "ok",
                        "content": {
                            "application/json": {
                                "schema": {"type": "array", "items": {"$ref": "#/components/schemas/Order"}}
                            }
                        },
                    }
                },
            }
        }
    },
    "components": {
        "schemas": {
            "Order": {
                "type": "object",
                "required": ["id", "items"],
                "properties": {
                    "id": {"type": "string"},
                    "firstPetId": {"type": "integer", "nullable": True},
                    "items": {"type": "array", "items": {"$ref": "#/components/schemas/OrderItem"}},
                },
            },
            "OrderItem": {
                "type": "object",
                "required": ["petId", "quantity"],
                "properties": {"petId": {"type": "integer", "format": "int64"}, "quantity": {"type": "integer"}},
            },
        }
    },
}
ORDERS = [
    {"id": "o1", "firstPetId": 1, "items": [{"petId": 1, "quantity": 2}, {"petId": 9_000_000_000, "quantity": 1}]},
    {"id": "o2", "firstPetId": None, "items": [{"petId": 9_000_000_000, "quantity": 5}, {"petId": 77, "quantity": 1}]},
]


def orders_app(calls: Calls) -> Starlette:
    async def orders(request: Request) -> Response:
        calls.seen.append((request.method, request.url.path, request.headers.get("authorization"), None))
        return JSONResponse(ORDERS)

    async def document(request: Request) -> Response:
        return JSONResponse(ORDERS_SPEC)

    return Starlette(routes=[Route("/orders", orders), Route("/openapi.json", document)])


class Color(enum.StrEnum):
    red = "red"
    green = "green"


class Dimensions(BaseModel):
    width: float
    height: float


class Item(BaseModel):
    sku: str
    title: str
    color: Color | None = None
    tags: list[str] = []
    dimensions: Dimensions | None = None
    updated: dt.datetime
    stock: int


class NewItem(BaseModel):
    sku: str
    title: str
    color: Color | None = None
    tags: list[str] = []
    dimensions: Dimensions | None = None


ITEMS = {
    "a-1": {
        "sku": "a-1",
        "title": "Lamp",
        "color": "red",
        "tags": ["home"],
        "dimensions": {"width": 1.5, "height": 2.0},
        "updated": "2026-03-04T05:06:07Z",
        "stock": 3,
    },
    "b-2": {
        "sku": "b-2",
        "title": "Desk",
        "color": None,
        "tags": [],
        "dimensions": None,
        "updated": "2026-03-05T00:00:00Z",
        "stock": 0,
    },
}


def inventory_app(calls: Calls) -> FastAPI:
    app = FastAPI(title="Inventory")
    items = {k: dict(v) for k, v in ITEMS.items()}

    @app.middleware("http")
    async def record(request: Request, call_next: Any) -> Response:
        if request.url.path != "/openapi.json":
            query = f"?{request.url.query}" if request.url.query else ""
            calls.seen.append((request.method, request.url.path + query, request.headers.get("authorization"), None))
        response: Response = await call_next(request)
        return response

    @app.get("/items", response_model=list[Item], operation_id="listItems", tags=["items"])
    async def list_items(color: Color | None = None, in_stock: bool = False, limit: int = 10) -> Any:
        found = [i for i in items.values() if color is None or i["color"] == color.value]
        if in_stock:
            found = [i for i in found if i["stock"] > 0]
        return found[:limit]

    @app.get("/items/{sku}", response_model=Item, operation_id="getItem", tags=["items"])
    async def get_item(sku: str, x_locale: Annotated[str | None, Header()] = None) -> Any:
        if sku not in items:
            raise HTTPException(404, "no such item")
        item = dict(items[sku])
        if x_locale == "de" and item["title"] == "Lamp":
            item["title"] = "Lampe"
        return item

    @app.post("/items", response_model=Item, status_code=201, operation_id="createItem", tags=["admin"])
    async def create_item(new: NewItem) -> Any:
        item = {**new.model_dump(mode="json"), "updated": "2026-04-01T00:00:00Z", "stock": 0}
        items[new.sku] = item
        return item

    @app.get("/search", operation_id="searchItems", tags=["items"])
    async def search(q: Annotated[list[str], Query()]) -> list[str]:
        return [i["sku"] for i in items.values() if any(term.lower() in i["title"].lower() for term in q)]

    return app


# -- a BFF serving a schema of sources, and a query to it ------------------------------------------


@contextlib.asynccontextmanager
async def running(schema: Any, **upstreams: str) -> AsyncIterator[Bff]:
    """The BFF serving ``schema`` on a free port, with these upstreams (name=URL)."""
    settings = make_settings(upstreams={name: {"url": url} for name, url in upstreams.items()})
    app = create_app(settings, schema=schema)
    async with serve(app) as url:
        yield Bff(app, url, settings)


async def query_bff(bff: Bff, cookie: str, query: str, variables: dict[str, Any] | None = None) -> dict[str, Any]:
    """The answer (a 200) to ``query`` from the session ``cookie``."""
    async with bff.client(cookie) as client:
        response = await client.post("/graphql", json={"query": query, "variables": variables or {}})
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body
