"""Property-based fuzzing with hypothesis-graphql over the exported schema: 2 x 1,000 generated
queries, anonymous and signed in, against the running server and the demo upstreams; then what else
clients control: random operationName values with documents of zero to three operations, and random
variables (wrong types, nulls, huge numbers, nested junk) for declared variables."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from hypothesis import HealthCheck, given, settings, strategies as st
from hypothesis_graphql import queries

from bff.app import create_app
from bff.demo.upstreams import accounts_app, catalog_app
from tests.conftest import make_settings
from tests.support.servers import ThreadedApps
from tests.support.sessions import store_session
from tests.support.tokens import TestIssuer

SCHEMA = (Path(__file__).resolve().parents[2] / "schema" / "schema.graphql").read_text()
EXAMPLES = 600  # per run; derandomized, so CI explores the same 600 each time


@pytest.fixture(scope="module")
def running() -> Iterator[tuple[ThreadedApps, str]]:
    issuer = TestIssuer()
    accounts, catalog = accounts_app(issuer.validator()), catalog_app(issuer.validator())
    apps = ThreadedApps(accounts, catalog)
    apps.start()
    try:
        accounts_url, catalog_url = apps.urls
        bff_settings = make_settings(
            upstreams={"accounts": {"url": accounts_url}, "catalog": {"url": f"{catalog_url}/graphql"}}
        )
        bff = create_app(bff_settings)
        bff_apps = ThreadedApps(bff)
        bff_apps.start()
        try:
            resources = bff.state.resources
            cookie = bff_apps.call(store_session(resources, issuer.token("alice")))
            yield bff_apps, cookie
        finally:
            bff_apps.stop()
    finally:
        apps.stop()


def _check(response: httpx.Response) -> None:
    assert response.status_code < 500, response.text
    body: dict[str, Any] = response.json()
    assert "data" in body or "errors" in body
    for error in body.get("errors", []):
        assert error.get("extensions", {}).get("code"), error
        assert "Traceback" not in error["message"]


@pytest.mark.parametrize("signed_in", [False, True], ids=["anonymous", "signed-in"])
def test_generated_queries_never_fail_the_server(running: tuple[ThreadedApps, str], signed_in: bool) -> None:
    apps, cookie = running
    headers = {"Cookie": f"bff_session={cookie}"} if signed_in else {}
    with httpx.Client(base_url=apps.urls[0], headers=headers, timeout=30) as client:

        @settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=list(HealthCheck), derandomize=True)
        @given(queries(SCHEMA))
        def run(query: str) -> None:
            _check(client.post("/graphql", json={"query": query}))

        run()


# -- what clients control besides the query: operationName, variables, several operations or none ------

JSON_LEAF = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(10**40), max_value=10**40),
    st.floats(allow_nan=False, allow_infinity=False),
    st.text(max_size=20),
)
JUNK = st.recursive(
    JSON_LEAF,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=5), inner, max_size=4),
    max_leaves=12,
)
WITH_VARIABLES = [
    "query Search($q: String!, $n: Int) { searchProducts(query: $q, first: $n) { id name } }",
    "query Orders($n: Int = 5) { viewer { orders(first: $n) { id items { quantity } } } }",
    'query Two($n: Int!, $m: Int) { a: searchProducts(query: "a", first: $n) { id } viewer { orders(first: $m) { id } } }',
]
DECLARED = ["q", "n", "m"]


def _named(query: str, index: int) -> str:
    body = query.strip()
    if body.startswith("query"):
        body = body[len("query") :].lstrip()
        body = body[body.index("{") :] if "{" in body else body
    return f"query Op{index} {body}"


@st.composite
def documents_and_names(draw: st.DrawFn) -> tuple[str, str | None]:
    count = draw(st.integers(min_value=0, max_value=3))
    generated = draw(st.lists(queries(SCHEMA), min_size=count, max_size=count))
    parts = [_named(query, i) for i, query in enumerate(generated)]
    if count == 0 or draw(st.booleans()):
        parts.append("fragment Extra on Query { __typename }")
    names = [f"Op{i}" for i in range(count)]
    operation_name = draw(
        st.one_of(
            st.none(),
            st.sampled_from(names) if names else st.none(),
            st.text(max_size=70),
            st.just("Extra"),
            st.just("N" * 5000),
        )
    )
    return " ".join(parts), operation_name


OUTCOMES: Counter[str] = Counter()


def _check_client_mistake(response: httpx.Response) -> None:
    assert response.status_code < 500, response.text
    assert response.headers["content-type"].startswith("application/json"), response.text
    body: dict[str, Any] = response.json()
    assert "data" in body or "errors" in body
    codes = [error.get("extensions", {}).get("code") for error in body.get("errors", [])]
    assert all(codes), body
    assert "INTERNAL_SERVER_ERROR" not in codes, body
    OUTCOMES[str(response.status_code)] += 1
    OUTCOMES.update(f"code:{code}" for code in set(codes))


def test_random_operation_names_and_operation_counts(running: tuple[ThreadedApps, str]) -> None:
    apps, cookie = running
    with httpx.Client(base_url=apps.urls[0], headers={"Cookie": f"bff_session={cookie}"}, timeout=30) as client:

        @settings(max_examples=EXAMPLES // 2, deadline=None, suppress_health_check=list(HealthCheck), derandomize=True)
        @given(documents_and_names(), st.booleans())
        def run(document_and_name: tuple[str, str | None], use_get: bool) -> None:
            document, name = document_and_name
            payload: dict[str, Any] = {"query": document}
            if name is not None:
                payload["operationName"] = name
            if use_get and len(document) + len(name or "") < 6000:
                _check_client_mistake(client.get("/graphql", params=payload, headers={"x-csrf": "1"}))
            else:
                _check_client_mistake(client.post("/graphql", json=payload))

        run()
    print("operation names and counts:", dict(OUTCOMES))


def test_random_variables(running: tuple[ThreadedApps, str]) -> None:
    apps, cookie = running
    with httpx.Client(base_url=apps.urls[0], headers={"Cookie": f"bff_session={cookie}"}, timeout=30) as client:

        @settings(max_examples=EXAMPLES // 2, deadline=None, suppress_health_check=list(HealthCheck), derandomize=True)
        @given(
            st.sampled_from(WITH_VARIABLES),
            st.dictionaries(st.sampled_from(DECLARED) | st.text(max_size=5), JUNK, max_size=4),
        )
        def run(document: str, variables: dict[str, Any]) -> None:
            _check_client_mistake(client.post("/graphql", json={"query": document, "variables": variables}))

        run()
    print("variables:", dict(OUTCOMES))
