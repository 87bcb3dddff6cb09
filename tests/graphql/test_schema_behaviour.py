"""Request-level behaviour of the GraphQL layer: GET de-duplication, masking, a user's own schema."""

from __future__ import annotations

import logging

import pytest
import strawberry
from strawberry.types import Info

from bff import build_schema
from bff.app import create_app
from bff.demo.api.types import POLICIES, Query as DemoQuery
from bff.graphql.context import Context
from tests.conftest import Bff, Upstreams, make_settings
from tests.support.servers import serve
from tests.support.tokens import TestIssuer


async def test_identical_gets_in_one_request_are_sent_once(bff: Bff, upstreams: Upstreams, issuer: TestIssuer) -> None:
    cookie = await bff.session_for(issuer.token("alice"))
    async with bff.client(cookie) as client:
        body = (await client.post("/graphql", json={"query": "{ a: viewer { id } b: viewer { name email } }"})).json()
        assert body["data"] == {"a": {"id": "alice"}, "b": {"name": "Alice Example", "email": "alice@example.com"}}
        assert upstreams.accounts.state.stats.calls["GET /me"] == 1
        # and not across requests
        await client.post("/graphql", json={"query": "{ viewer { id } }"})
    assert upstreams.accounts.state.stats.calls["GET /me"] == 2


@strawberry.type
class Query(DemoQuery):
    @strawberry.field
    async def broken(self) -> int:
        raise RuntimeError("secret internal detail: db password hunter2")

    @strawberry.field
    async def my_name(self, info: Info[Context, None]) -> str:
        me = await info.context.rest("accounts").get_json("/me")
        return str(me["name"])


async def test_custom_schema_and_masked_unexpected_errors(
    upstreams: Upstreams, issuer: TestIssuer, caplog: pytest.LogCaptureFixture
) -> None:
    settings = make_settings(upstreams=upstreams.settings())
    app = create_app(settings, schema=build_schema(Query, policies=POLICIES))
    async with serve(app) as url:
        bff = Bff(app, url, settings)
        cookie = await bff.session_for(issuer.token("bob"), sub="bob")
        async with bff.client(cookie) as client:
            response = await client.post("/graphql", json={"query": "{ myName broken }"})
    assert response.status_code == 200
    body = response.json()
    assert body["data"] is None or body["data"].get("myName") in (None, "Bob Example")
    (error,) = body["errors"]
    assert error["message"] == "Internal server error"
    assert error["extensions"]["code"] == "INTERNAL_SERVER_ERROR"
    assert "hunter2" not in response.text
    request_id = error["extensions"]["requestId"]
    assert response.headers["x-request-id"] == request_id
    logged = [r for r in caplog.records if r.levelno >= logging.ERROR and getattr(r, "request_id", None) == request_id]
    assert logged, "the unexpected error is logged with its request id"


@pytest.mark.parametrize(
    "document",
    [
        "{ viewer { id ",
        '{ searchProducts(query: "\\',
        "query {",
        "}",
        "{ nope }",
        "{ searchProducts(query: 1) { id } }",
    ],
)
async def test_bad_documents_get_a_code_not_a_500(bff: Bff, document: str) -> None:
    async with bff.client() as client:
        response = await client.post("/graphql", json={"query": document})
    assert response.status_code < 500
    errors = response.json()["errors"]
    assert all(e["extensions"]["code"] in ("GRAPHQL_PARSE_FAILED", "GRAPHQL_VALIDATION_FAILED") for e in errors)
