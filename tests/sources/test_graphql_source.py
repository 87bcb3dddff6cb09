"""Remote GraphQL sources against a real GraphQL service over HTTP (`remote_service`): the BFF's
answers equal the service's own for the same operation, the root fields of one operation go as ONE
upstream query with the session's token, errors come back at their paths, and the generated module
passes ruff and mypy --strict."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import re
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path as FilePath
from types import SimpleNamespace
from typing import Any

import httpx
import pytest
import strawberry
from graphql import GraphQLError
from graphql.pyutils import Path

from bff import build_schema
from bff.app import create_app, settings_schema
from bff.errors import UpstreamError
from bff.graphql.schema import SchemaError
from bff.sources.delegate import Remote
from bff.sources.graphql import GraphQLSource, graphql
from tests.conftest import Bff, make_settings
from tests.sources.remote_service import ODD_SDL, SCHEMA, ZOO_SDL, Recorder, odd_app, remote_app
from tests.support.servers import require_binary, serve
from tests.support.tokens import TestIssuer
from tests.support.typecheck import mypy_cache_dir

ROOT = FilePath(__file__).resolve().parents[2]

SHOP = """
query Shop(
  $id: ID!, $filter: ProductFilter, $text: String!, $stars: Int, $first: Int = 2, $all: Boolean = false, $cat: Category
) {
  first: product(id: $id) {
    ...Card
    reviews(minStars: $stars) { stars body author { name } }
  }
  second: product(id: "3") { name tags @include(if: $all) related { name homepage } }
  cheap: products(filter: $filter, first: $first) { id price category homepage }
  music: products(filter: {category: $cat, maxPrice: 50}) { name }
  search(text: $text) {
    __typename
    ... on Product { name }
    ... on Review { stars }
    ... on User { name email }
  }
  node(id: "r1-1") { id __typename ... on Review { stars } ...Card }
  viewer { name }
}

fragment Card on Item {
  id
  name
  ... on Product { price category }
}
"""
SHOP_VARIABLES = {"id": "1", "filter": {"category": "BOOK", "maxPrice": 20}, "text": "e", "stars": 4, "cat": "MUSIC"}


@pytest.fixture
async def remote() -> AsyncIterator[tuple[str, Recorder]]:
    recorder = Recorder()
    async with serve(remote_app(recorder)) as url:
        yield f"{url}/graphql", recorder


@contextlib.asynccontextmanager
async def running(url: str, recorder: Recorder, *sources: Any, **upstream: Any) -> AsyncIterator[Bff]:
    """The BFF over the service at ``url``, its schema built from ``sources`` (in a thread: building
    it introspects the service, which runs in this event loop); the introspection is not counted."""
    schema = await asyncio.to_thread(lambda: build_schema(sources=list(sources or [graphql("remote", endpoint=url)])))
    recorder.clear()
    name = sources[0].name if sources else "remote"
    settings = make_settings(upstreams={name: {"url": url, **upstream}})
    app = create_app(settings, schema=schema)
    async with serve(app) as bff_url:
        yield Bff(app, bff_url, settings)


async def direct(url: str, query: str, variables: dict[str, Any] | None = None, token: str | None = None) -> Any:
    headers = {"authorization": f"Bearer {token}"} if token else {}
    async with httpx.AsyncClient(timeout=10) as client:
        response = await client.post(url, json={"query": query, "variables": variables or {}}, headers=headers)
    return response.json()


async def ask(bff: Bff, cookie: str, query: str, variables: dict[str, Any] | None = None) -> Any:
    async with bff.client(cookie) as client:
        response = await client.post("/graphql", json={"query": query, "variables": variables or {}})
    assert response.status_code == 200, response.text
    return response.json()


def located(errors: list[dict[str, Any]]) -> list[tuple[str, list[Any]]]:
    return sorted((error["message"], error["path"]) for error in errors)


async def test_an_operation_answers_as_the_service_does_in_one_upstream_call(
    remote: tuple[str, Recorder], issuer: TestIssuer
) -> None:
    url, recorder = remote
    token = issuer.token("alice")
    expected = await direct(url, SHOP, SHOP_VARIABLES, token)
    assert "errors" not in expected
    assert expected["data"]["search"] and expected["data"]["viewer"] == {"name": "alice"}
    recorder.clear()
    async with running(url, recorder) as bff:
        body = await ask(bff, await bff.session_for(token), SHOP, SHOP_VARIABLES)
    assert body == {"data": expected["data"]}
    # seven root fields (aliases, fragments on an interface, inline fragments on a union, variables):
    # one upstream query, with the session's token
    (seen,) = recorder.seen
    assert seen.authorization == f"Bearer {token}"
    assert [line.split("(")[0].split(" {")[0] for line in seen.query.splitlines() if re.match(r"f\d+: ", line)] == [
        "f0: product",
        "f1: product",
        "f2: products",
        "f3: products",
        "f4: search",
        "f5: node",
        "f6: viewer",
    ]
    assert "fragment Card on Item" in seen.query
    # the variables used, through their input types (defaults applied: the service's own)
    assert seen.variables == {
        **SHOP_VARIABLES,
        "filter": {"category": "BOOK", "maxPrice": 20, "tags": None},
        "first": 2,
        "all": False,
    }
    assert "$first: Int = 2" in seen.query


async def test_the_same_document_again_is_one_call_again_and_operations_stay_apart(
    remote: tuple[str, Recorder], issuer: TestIssuer
) -> None:
    url, recorder = remote
    query = 'query One($id: ID!) { a: product(id: $id) { name } b: product(id: "2") { name } }'
    async with running(url, recorder) as bff:
        cookie = await bff.session_for(issuer.token("alice"))
        first = await ask(bff, cookie, query, {"id": "1"})
        second = await ask(bff, cookie, query, {"id": "3"})
    assert first["data"] == {"a": {"name": "Dune"}, "b": {"name": "Kind of Blue"}}
    assert second["data"] == {"a": {"name": "Tetris"}, "b": {"name": "Kind of Blue"}}
    assert recorder.count == 2
    assert [seen.variables for seen in recorder.seen] == [{"id": "1"}, {"id": "3"}]


async def test_errors_come_back_at_their_paths(remote: tuple[str, Recorder], issuer: TestIssuer) -> None:
    url, recorder = remote
    query = """{
      p: product(id: "1") { name broken related { name brokenRequired } }
      failing
      ok: product(id: "2") { name }
    }"""
    expected = await direct(url, query)
    recorder.clear()
    async with running(url, recorder) as bff:
        body = await ask(bff, await bff.session_for(issuer.token("alice")), query)
    assert body["data"] == expected["data"]
    assert body["data"]["p"]["related"][0] is None  # nulled up to the nullable item, as the service did
    assert located(body["errors"]) == located(expected["errors"])
    assert located(body["errors"]) == [
        ("broken field of product 1", ["p", "broken"]),
        ("product 2 cannot say", ["p", "related", 0, "brokenRequired"]),
        ("the service is out of failing", ["failing"]),
    ]
    for error in body["errors"]:
        assert error["extensions"]["code"] == "UPSTREAM_ERROR"
        assert error["extensions"]["upstream"] == "remote"
        assert "Traceback" not in str(error) and "Bearer" not in str(error)
    assert recorder.count == 1


@strawberry.type
class TeamQuery:
    @strawberry.field
    def hello(self) -> str:
        return "world"


async def test_an_unreachable_service_fails_only_its_own_fields(issuer: TestIssuer) -> None:
    async with serve(remote_app(Recorder())) as base:
        url = f"{base}/graphql"
        schema = await asyncio.to_thread(lambda: build_schema(TeamQuery, sources=[graphql("remote", endpoint=url)]))
    # the service is gone now
    settings = make_settings(upstreams={"remote": {"url": url}})
    app = create_app(settings, schema=schema)
    async with serve(app) as bff_url:
        bff = Bff(app, bff_url, settings)
        body = await ask(
            bff,
            await bff.session_for(issuer.token("alice")),
            '{ hello a: product(id: "1") { name } b: viewer { name } }',
        )
    assert body["data"] == {"hello": "world", "a": None, "b": None}
    assert located(body["errors"]) == [
        ("Upstream 'remote' is unreachable", ["a"]),
        ("Upstream 'remote' is unreachable", ["b"]),
    ]
    assert {error["extensions"]["code"] for error in body["errors"]} == {"UPSTREAM_ERROR"}


async def test_mutations_are_one_call_each_in_order(remote: tuple[str, Recorder], issuer: TestIssuer) -> None:
    url, recorder = remote
    query = """mutation Review($input: ReviewInput!) {
      addReview(input: $input) { id stars body }
      nope: addReview(input: {productId: "9", stars: 1}) { id }
    }"""
    variables = {"input": {"productId": "2", "stars": 5, "body": "Cool"}}
    expected = await direct(url, query, variables)
    recorder.clear()
    async with running(url, recorder) as bff:
        body = await ask(bff, await bff.session_for(issuer.token("alice")), query, variables)
    assert body["data"] == expected["data"] == {"addReview": {"id": "r2-new", "stars": 5, "body": "Cool"}, "nope": None}
    assert located(body["errors"]) == located(expected["errors"]) == [("no product 9", ["nope"])]
    assert [seen.query.split("{")[1].split("(")[0].strip() for seen in recorder.seen] == [
        "f0: addReview",
        "f0: addReview",
    ]
    assert recorder.seen[0].variables == variables
    assert recorder.seen[0].query.startswith("mutation($input: ReviewInput!)")


async def test_a_prefix_and_the_sdl_from_a_file(
    remote: tuple[str, Recorder], issuer: TestIssuer, tmp_path: FilePath
) -> None:
    url, recorder = remote
    sdl = tmp_path / "remote.graphql"
    sdl.write_text(SCHEMA.as_str())
    source = graphql("remote", str(sdl), prefix="shop_")
    build_schema(sources=[source])
    assert recorder.count == 0  # no introspection: the schema comes from the file
    query = '{ shop_product(id: "1") { id name price } shop_products(first: 1) { name } }'
    async with running(url, recorder, source) as bff:
        body = await ask(bff, await bff.session_for(issuer.token("alice")), query)
    assert body == {
        "data": {
            "shop_product": {"id": "1", "name": "Dune", "price": {"amount": 1250, "currency": "EUR"}},
            "shop_products": [{"name": "Dune"}],
        }
    }
    (seen,) = recorder.seen
    assert 'f0: product(id: "1")' in seen.query and "f1: products(first: 1)" in seen.query


async def test_sdl_text_and_introspection_give_the_same_schema(remote: tuple[str, Recorder]) -> None:
    url, recorder = remote
    text = GraphQLSource("remote", SCHEMA.as_str())
    introspected = GraphQLSource("remote", "introspect", endpoint=url)
    from_text, from_service = text.generate(), await asyncio.to_thread(introspected.generate)
    assert from_text.query_fields == from_service.query_fields
    assert from_text.query_fields == ["product", "products", "search", "node", "viewer", "failing"]
    assert from_text.mutation_fields == from_service.mutation_fields == ["addReview"]
    printed = build_schema(sources=[text]).as_str()
    assert printed == build_schema(sources=[introspected]).as_str()
    assert recorder.count == 1  # introspected once
    assert "union SearchResult = Product | Review | User" in printed
    assert "interface Item implements Node" in printed
    assert 'scalar Url @specifiedBy(url: "https://url.spec.whatwg.org/")' in printed


async def test_the_environment_mounts_an_introspected_service(
    remote: tuple[str, Recorder], issuer: TestIssuer, monkeypatch: pytest.MonkeyPatch
) -> None:
    url, recorder = remote
    monkeypatch.setenv("BFF_UPSTREAMS__REMOTE__URL", url)
    monkeypatch.setenv("BFF_UPSTREAMS__REMOTE__GRAPHQL", "introspect")
    settings = make_settings()
    assert settings.upstreams["remote"].graphql == "introspect"
    schema = await asyncio.to_thread(settings_schema, settings)
    recorder.clear()
    app = create_app(settings, schema=schema)
    async with serve(app) as bff_url:
        bff = Bff(app, bff_url, settings)
        body = await ask(bff, await bff.session_for(issuer.token("carol")), "{ viewer { name } }")
    assert body == {"data": {"viewer": {"name": "carol"}}}
    assert recorder.count == 1


async def test_unsupported_constructs_are_named_one_line_each(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, "bff.sources")
    schema = build_schema(sources=[GraphQLSource("remote", SCHEMA.as_str())])
    lines = [r.getMessage() for r in caplog.records if r.name == "bff.sources"]
    assert lines == [
        "source 'remote': subscriptions are not mounted (reviewed)",
        "source 'remote': the directive @shout is not mounted: an operation using it is refused",
        "source 'remote': Query.products(order:): its default is not written here; the argument may be left out"
        " and the service applies it",
    ]
    assert "Subscription" not in schema.as_str()
    result = await schema.execute('{ product(id: "1") { name @shout } }')
    assert result.errors and "shout" in result.errors[0].message


def test_a_name_taken_in_the_schema_is_renamed_and_forwarded_as_the_service_names_it() -> None:
    generated = GraphQLSource("remote", SCHEMA.as_str()).generate(["Product", "Money"])
    assert "Product_2" in generated.types and "Money_2" in generated.types
    assert "source 'remote': type Product is named Product_2 here (the name is taken)" in generated.warnings
    assert 'renamed={"Money_2": "Money", "Product_2": "Product"}' in generated.code.replace("\n", "").replace(
        "    ", ""
    ).replace(",}", "}")


def test_a_service_that_cannot_be_introspected_is_a_one_line_error() -> None:
    unreachable = graphql("remote", endpoint="http://127.0.0.1:9/graphql")
    # nothing listens there: a refused connection is tried again for the source's timeout (a service
    # starting beside the BFF may not listen yet), 10 s by default, then it is the same error
    unreachable.timeout = 1.0
    with pytest.raises(SchemaError) as raised:
        build_schema(sources=[unreachable])
    message = str(raised.value)
    assert message.startswith("source 'remote': introspection of http://127.0.0.1:9/graphql failed")
    assert "\n" not in message
    with pytest.raises(SchemaError, match="nothing to introspect"):
        build_schema(sources=[graphql("remote")])
    with pytest.raises(SchemaError, match="the SDL does not parse"):
        build_schema(sources=[graphql("remote", "type Query {")])


def test_the_generated_module_passes_ruff_and_mypy_strict(tmp_path: FilePath) -> None:
    code = GraphQLSource("remote", SCHEMA.as_str()).generate(["Product"]).code
    module = tmp_path / "remote_source.py"
    module.write_text(code)
    ruff = subprocess.run(
        [
            require_binary("ruff", "pip install ruff"),
            "check",
            "--no-cache",
            "--config",
            str(ROOT / "pyproject.toml"),
            str(module),
        ],
        capture_output=True,
        text=True,
        cwd=tmp_path,
    )
    assert ruff.returncode == 0, ruff.stdout + ruff.stderr
    mypy = subprocess.run(
        [
            sys.executable,
            "-m",
            "mypy",
            "--strict",
            "--config-file",
            str(ROOT / "pyproject.toml"),
            "--follow-imports=silent",
            "--cache-dir",
            str(mypy_cache_dir("generated-module")),  # kept between runs: only what changed is checked again
            str(module),
        ],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        env={**os.environ, "MYPYPATH": str(ROOT)},
    )
    assert mypy.returncode == 0, mypy.stdout + mypy.stderr


ODD = """
query Odd($k: Kind, $s: Self) {
  t: thing(k: $k, s: $s) {
    __typename id from class(self: 1, value: 3, cls: 2) is_type_of isTypeOf kind json when list any
  }
  other: thing { kind }
  node(id: "7") { __typename id ... on Other { other } }
  one { __typename ... on Other { other } }
  strawberry
  enum
}
"""


async def test_a_graphql_core_service_with_names_python_cannot_write(issuer: TestIssuer) -> None:
    recorder = Recorder()
    async with serve(odd_app(recorder)) as base:
        url = f"{base}/graphql"
        variables = {"k": "_private", "s": {"next": {"k": "True"}, "n": 5}}
        expected = await direct(url, ODD, variables)
        assert "errors" not in expected and expected["data"]["t"]["kind"] == "_private"
        mutation = 'mutation { yes: do(in: {a: 1}) no: do(in: {b: "x"}) }'
        expected_change = await direct(url, mutation)
        async with running(url, recorder, graphql("odd", ODD_SDL)) as bff:
            cookie = await bff.session_for(issuer.token("alice"))
            body = await ask(bff, cookie, ODD, variables)
            changed = await ask(bff, cookie, mutation)
    assert body == {"data": expected["data"]}
    assert changed == expected_change == {"data": {"yes": True, "no": False}}
    assert recorder.count == 3  # the query in one call, each mutation field in one


def test_a_type_reached_only_through_an_interface_is_in_the_schema() -> None:
    generated = GraphQLSource("zoo", ZOO_SDL).generate()
    assert "TYPES = (Cat, Dog)" in generated.code  # sorted by name, whatever the SDL's order
    printed = build_schema(sources=[GraphQLSource("zoo", ZOO_SDL)]).as_str()
    assert "type Dog implements Animal" in printed


def test_errors_without_a_usable_path_go_on_the_root_fields_that_came_back_null() -> None:
    remote = Remote("remote")
    entries: list[tuple[Any, Any]] = [(None, SimpleNamespace(path=Path(None, key, "Query"))) for key in ("a", "b", "c")]
    body = {
        "data": {"f0": {"x": [1, None]}, "f1": None, "f2": {"y": None}},
        "errors": [
            {"message": "no path"},
            {"message": "item", "path": ["f0", "x", 1]},
            {"message": "beside a value", "path": ["f2", "y", "z"]},
            {"message": "unknown root", "path": ["f7"]},
        ],
    }
    a, b, c = remote._results(body, entries)
    assert a["x"][0] == 1
    item = a["x"][1]
    assert isinstance(item, GraphQLError) and item.path == ["a", "x", 1] and item.message == "item"
    assert isinstance(item.original_error, UpstreamError) and item.original_error.upstream == "remote"
    assert isinstance(b, UpstreamError) and b.message == "no path"  # null, so the first loose error is its
    assert isinstance(c["y"], GraphQLError) and c["y"].path == ["c", "y", "z"]
    # a transport-level answer that is not a GraphQL response fails every root field
    assert all(isinstance(v, UpstreamError) for v in remote._results(["not", "an", "object"], entries))


def test_the_public_constructor_survives_its_own_first_call() -> None:
    from bff import sources

    sources.graphql("remote", SCHEMA.as_str())
    assert callable(sources.graphql)


async def test_a_service_that_wants_a_token_is_introspected_with_the_bffs_own() -> None:
    """401 without a token: the introspection is sent again with the BFF's own token (client
    credentials, `bff.sources.client_credentials`); with no way to get one, one line says what to do."""
    import json as jsonlib

    from graphql import build_schema as sdl_schema, graphql_sync
    from starlette.applications import Starlette
    from starlette.requests import Request
    from starlette.responses import JSONResponse, Response
    from starlette.routing import Route

    from bff.sources import SourceError
    from bff.sources.graphql import GraphQLSource

    service_schema = sdl_schema("type Query { hello: String }")
    seen: list[str | None] = []

    async def endpoint(request: Request) -> Response:
        seen.append(request.headers.get("authorization"))
        if request.headers.get("authorization") != "Bearer own-token":
            return JSONResponse({"error": "invalid_token"}, status_code=401)
        body = jsonlib.loads(await request.body())
        result = graphql_sync(service_schema, body["query"])
        return JSONResponse({"data": result.data})

    async with serve(Starlette(routes=[Route("/graphql", endpoint, methods=["POST"])])) as url:
        source = GraphQLSource("svc", endpoint=f"{url}/graphql", token=lambda: "own-token")
        schema = await asyncio.to_thread(build_schema, sources=[source])
        assert "hello: String" in schema.as_str()
        assert seen[:2] == [None, "Bearer own-token"]
        with pytest.raises(SourceError, match="wants a token"):
            await asyncio.to_thread(GraphQLSource("svc", endpoint=f"{url}/graphql").schema)
