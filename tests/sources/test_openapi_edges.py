"""OpenAPI constructs real documents use that a first cut got wrong (a sweep of public documents):
each against a canned service over real HTTP, compared with what the service answered and with what
it was sent."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from bff import build_schema
from bff.app import create_app
from bff.sources import openapi
from tests.conftest import Bff, make_settings
from tests.support.servers import serve
from tests.support.tokens import TestIssuer

OBJ: dict[str, Any] = {"type": "object", "properties": {"x": {"type": "integer"}}}
Seen = list[tuple[str, str, dict[str, str], bytes]]


def _get(op: str, answer: Any, parameters: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    content = {"application/json": {"schema": answer}}
    return {
        "get": {
            "operationId": op,
            "parameters": parameters or [],
            "responses": {"200": {"description": "ok", "content": content}},
        }
    }


def _doc(paths: dict[str, Any], schemas: dict[str, Any] | None = None, version: str = "3.1.0") -> dict[str, Any]:
    return {
        "openapi": version,
        "info": {"title": "t", "version": "1"},
        "paths": paths,
        "components": {"schemas": schemas or {}},
    }


def _service(answers: dict[str, Any], seen: Seen) -> Starlette:
    async def handler(request: Request) -> Response:
        query = f"?{request.url.query}" if request.url.query else ""
        seen.append((request.method, request.url.path + query, dict(request.headers), await request.body()))
        answer = answers.get(request.url.path)
        return Response(status_code=204) if answer is None else JSONResponse(answer)

    return Starlette(routes=[Route("/{p:path}", handler, methods=["GET", "POST", "PUT", "PATCH", "DELETE"])])


@contextlib.asynccontextmanager
async def _mounted(
    doc: dict[str, Any], answers: dict[str, Any], issuer: TestIssuer
) -> AsyncIterator[tuple[Callable[..., Any], Seen]]:
    seen: Seen = []
    schema = build_schema(sources=[openapi("x", doc)])
    async with serve(_service(answers, seen)) as url:
        settings = make_settings(upstreams={"x": {"url": url}})
        app = create_app(settings, schema=schema)
        async with serve(app) as bff_url:
            bff = Bff(app, bff_url, settings)
            cookie = await bff.session_for(issuer.token("alice"))

            async def query(text: str) -> dict[str, Any]:
                async with bff.client(cookie) as client:
                    body: dict[str, Any] = (await client.post("/graphql", json={"query": text})).json()
                return body

            yield query, seen


async def test_values_of_every_shape_come_back_as_the_service_sent_them(issuer: TestIssuer) -> None:
    enum = {"type": "string", "enum": ["a", "b", "true", "_sunder_", "try"]}
    doc = _doc(
        {
            "/enums": _get("enums", {"type": "array", "items": enum}),
            "/nested": _get(
                "nested", {"type": "array", "items": {"type": "array", "items": {"$ref": "#/components/schemas/N"}}}
            ),
            "/react": _get("react", {"$ref": "#/components/schemas/R"}),
            "/opt": _get("opt", {"$ref": "#/components/schemas/Opt"}),
            "/day": _get("day", {"type": "object", "properties": {"d": {"$ref": "#/components/schemas/Day"}}}),
            "/tree": _get("tree", {"$ref": "#/components/schemas/Tree"}),
        },
        {
            "N": OBJ,
            "R": {"type": "object", "properties": {"+1": {"type": "integer"}, "-1": {"type": "integer"}}},
            "Opt": {
                "type": "object",
                "required": ["a", "b"],
                "properties": {
                    "a": {"anyOf": [{"$ref": "#/components/schemas/N"}, {"type": "null"}]},
                    "b": {"type": "array", "items": {"anyOf": [{"type": "integer"}, {"type": "null"}]}},
                },
            },
            "Day": {"type": "string", "format": "date"},
            "Tree": {"oneOf": [{"$ref": "#/components/schemas/Leaf"}, {"$ref": "#/components/schemas/Branch"}]},
            "Leaf": {"type": "object", "required": ["v"], "properties": {"v": {"type": "integer"}}},
            "Branch": {
                "type": "object",
                "required": ["kids"],
                "properties": {"kids": {"type": "array", "items": {"$ref": "#/components/schemas/Tree"}}},
            },
        },
    )
    answers = {
        "/enums": ["a", "true", "_sunder_", "try"],
        "/nested": [[{"x": 1}, {"x": 2}], []],
        "/react": {"+1": 5, "-1": 7},
        "/opt": {"a": None, "b": [1, None, 3]},
        "/day": {"d": "2024-01-02"},
        "/tree": {"kids": [{"v": 1}, {"kids": [{"v": 2}]}]},
    }
    async with _mounted(doc, answers, issuer) as (query, _):
        body = await query(
            "{ enums nested { x } react { _1 _1_2 } opt { a { x } b } day { d } "
            "tree { ... on Branch { kids { ... on Leaf { v } ... on Branch { kids { ... on Leaf { v } } } } } } }"
        )
    assert "errors" not in body, body
    assert body["data"] == {
        "enums": ["a", "true_", "_sunder_", "try"],  # `true` is no GraphQL enum value: `true_`
        "nested": [[{"x": 1}, {"x": 2}], []],
        "react": {"_1": 5, "_1_2": 7},
        "opt": {"a": None, "b": [1, None, 3]},
        "day": {"d": "2024-01-02"},
        "tree": {"kids": [{"v": 1}, {"kids": [{"v": 2}]}]},
    }


async def test_requests_are_built_as_the_document_describes(issuer: TestIssuer) -> None:
    """Path arrays (simple style), deepObject and unexploded query parameters, header arrays, a
    parameter given by ``content``, a server variable's default, and bodies with the document's own
    property names."""
    doc = _doc(
        {
            "/p/{ids}": _get(
                "p",
                {"type": "string"},
                [
                    {
                        "name": "ids",
                        "in": "path",
                        "required": True,
                        "schema": {"type": "array", "items": {"type": "integer"}},
                    },
                    {
                        "name": "f",
                        "in": "query",
                        "style": "deepObject",
                        "schema": {"type": "object", "properties": {"a": {"type": "string"}}},
                    },
                    {
                        "name": "csv",
                        "in": "query",
                        "explode": False,
                        "schema": {"type": "array", "items": {"type": "string"}},
                    },
                    {"name": "X-L", "in": "header", "schema": {"type": "array", "items": {"type": "string"}}},
                    {"name": "q", "in": "query", "content": {"application/json": {"schema": OBJ}}},
                ],
            ),
            "/mk": {
                "post": {
                    "operationId": "mk",
                    "requestBody": {
                        "content": {
                            "application/json": {
                                "schema": {
                                    "type": "object",
                                    "properties": {"first-name": {"type": "string"}, "@type": {"type": "string"}},
                                }
                            }
                        }
                    },
                    "responses": {"204": {"description": "made"}},
                }
            },
        }
    )
    doc["servers"] = [{"url": "/api/{v}", "variables": {"v": {"default": "v2"}}}]
    async with _mounted(doc, {"/api/v2/p/1,2": "ok"}, issuer) as (query, seen):
        body = await query('{ p(ids: [1, 2], f: {a: "x"}, csv: ["p", "q"], X_L: ["h1", "h2"], q: {x: 3}) }')
        assert body == {"data": {"p": "ok"}}
        method, path, headers, _ = next(entry for entry in seen if entry[1].startswith("/api/"))
        assert (method, path) == ("GET", "/api/v2/p/1,2?f%5Ba%5D=x&csv=p,q&q=%7B%22x%22:3%7D")
        assert headers["x-l"] == "h1,h2"
        body = await query('mutation { mk(input: {first_name: "A", type: "t"}) }')
        assert body == {"data": {"mk": True}}
        assert seen[-1][3] == b'{"first-name":"A","@type":"t"}'


@pytest.mark.parametrize(
    "document",
    [
        pytest.param(
            {"/x": {"post": {"operationId": "mk", "responses": {"204": {"description": "ok"}}}}}, id="mutations only"
        ),
        pytest.param({}, id="no operation"),
        pytest.param({"/r/{id}": _get("r", {"type": "string"})}, id="an undeclared path parameter"),
    ],
)
def test_a_document_without_a_query_still_gives_a_schema(document: dict[str, Any]) -> None:
    sdl = build_schema(sources=[openapi("x", _doc(document))]).as_str()
    assert "_sources: Boolean!" in sdl
