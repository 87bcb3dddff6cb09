"""Issue 12, part 3: a client's mistake is a 4xx (or the spec's status) with a JSON body, never a
500 and never INTERNAL_SERVER_ERROR, and it is logged at info, not error."""

from __future__ import annotations

import logging
from typing import Any

import pytest

from tests.conftest import Bff

GRAPHQL_RESPONSE = {"accept": "application/graphql-response+json"}
TWO = 'query A { __typename } query B { searchProducts(query: "a") { id } }'


def _assert_request_error(response: Any, status: int = 400) -> dict[str, Any]:
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith(("application/json", "application/graphql-response+json"))
    body: dict[str, Any] = response.json()
    assert "data" not in body
    codes = [e["extensions"]["code"] for e in body["errors"]]
    assert "INTERNAL_SERVER_ERROR" not in codes
    return body


@pytest.mark.parametrize(
    ("payload", "words"),
    [
        ({"query": "query A { __typename }", "operationName": "Nope"}, "no operation named 'Nope'"),
        ({"query": "{ __typename }", "operationName": "A"}, "no operation named 'A'"),
        ({"query": "fragment F on Query { __typename }"}, "no operation"),
        ({"query": "fragment F on Query { __typename }", "operationName": "F"}, "no operation named 'F'"),
        ({"query": TWO}, "several operations"),
        ({"query": "query A { __typename }", "operationName": "x" * 30_000}, "no operation named"),
    ],
)
async def test_operation_selection_mistakes_are_400(
    bff: Bff, payload: dict[str, Any], words: str, caplog: pytest.LogCaptureFixture
) -> None:
    async with bff.client() as client:
        post = await client.post("/graphql", json=payload)
        get = await client.get("/graphql", params=payload)
    for response in (post, get):
        body = _assert_request_error(response)
        assert words in body["errors"][0]["message"]
        assert body["errors"][0]["extensions"]["code"] == "BAD_REQUEST"
        assert len(response.text) < 1000  # a huge name is not echoed whole
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]


async def test_a_named_operation_among_several_runs(bff: Bff) -> None:
    async with bff.client() as client:
        response = await client.post("/graphql", json={"query": TWO, "operationName": "A"})
    assert response.status_code == 200
    assert response.json() == {"data": {"__typename": "Query"}}


@pytest.mark.parametrize(
    ("document", "variables"),
    [
        ('query Q($n: Int) { searchProducts(query: "a", first: $n) { id } }', {"n": "ten"}),
        ('query Q($n: Int) { searchProducts(query: "a", first: $n) { id } }', {"n": 1.5}),
        ('query Q($n: Int) { searchProducts(query: "a", first: $n) { id } }', {"n": {"a": 1}}),
        ('query Q($n: Int) { searchProducts(query: "a", first: $n) { id } }', {"n": 10**30}),
        ('query Q($n: Int) { searchProducts(query: "a", first: $n) { id } }', {"n": [[[[1]]]]}),
        ("query Q($q: String!) { searchProducts(query: $q) { id } }", {}),
        ("query Q($q: String!) { searchProducts(query: $q) { id } }", {"q": None}),
        ("query Q($q: String!) { searchProducts(query: $q) { id } }", {"q": ["a"]}),
    ],
)
async def test_bad_variables_are_bad_user_input(
    bff: Bff, document: str, variables: dict[str, Any], caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    payload = {"query": document, "variables": variables}
    async with bff.client() as client:
        legacy = await client.post("/graphql", json=payload)
        spec = await client.post("/graphql", json=payload, headers=GRAPHQL_RESPONSE)
    # the GraphQL-over-HTTP spec: 200 with application/json, 400 with application/graphql-response+json
    for response, status in ((legacy, 200), (spec, 400)):
        body = _assert_request_error(response, status)
        error = body["errors"][0]
        assert error["extensions"]["code"] == "BAD_USER_INPUT"
        assert error["message"].startswith("Variable '$"), error  # graphql-core's own message
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert [r for r in caplog.records if r.name == "bff.graphql" and r.levelno == logging.INFO]


@pytest.mark.parametrize(
    "document",
    ['{ searchProducts(query: "\\u', '{ searchProducts(query: "\\', '{ searchProducts(query: """\\', "query ("],
)
async def test_truncated_documents_are_syntax_errors(bff: Bff, document: str) -> None:
    async with bff.client() as client:
        response = await client.post("/graphql", json={"query": document}, headers=GRAPHQL_RESPONSE)
    body = _assert_request_error(response)
    assert body["errors"][0]["extensions"]["code"] == "GRAPHQL_PARSE_FAILED"


async def test_get_without_operation_is_a_request_error(bff: Bff) -> None:
    async with bff.client() as client:
        response = await client.get("/graphql", params={"query": "fragment F on Query { __typename }"})
    _assert_request_error(response)
