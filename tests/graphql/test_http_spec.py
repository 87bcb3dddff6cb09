"""GraphQL over HTTP: graphql-http's audit suite (pinned) against the server, and our own checks."""

from __future__ import annotations

import asyncio
import json
import subprocess
from pathlib import Path

import httpx

from tests.conftest import Bff
from tests.support.servers import IDP_DIR, require_binary

AUDIT = IDP_DIR / "http-audit.mjs"


async def test_graphql_http_audit_passes_every_must_and_should(bff: Bff) -> None:
    node = require_binary("node", "install Node.js 20+ and run npm ci in tests/e2e/idp")
    assert (Path(IDP_DIR) / "node_modules" / "graphql-http").exists(), "run npm ci in tests/e2e/idp"
    process = await asyncio.create_subprocess_exec(
        node, str(AUDIT), f"{bff.url}/graphql", cwd=IDP_DIR, stdout=subprocess.PIPE, stderr=subprocess.PIPE
    )
    stdout, stderr = await asyncio.wait_for(process.communicate(), 60)
    assert process.returncode == 0, stderr.decode()
    results = json.loads(stdout)
    assert len(results) > 40
    failed = [r for r in results if r["status"] != "ok" and not r["name"].startswith("MAY")]
    assert failed == []
    warned = [r for r in results if r["status"] != "ok"]
    assert warned == [], "every MAY audit passes too"


async def test_error_answers_are_json(bff: Bff) -> None:
    async with bff.client() as client:
        cases = [
            await client.post("/graphql", content=b"{not json", headers={"content-type": "application/json"}),
            await client.post("/graphql", json={}),
            await client.post("/graphql", json=[{"query": "{ __typename }"}]),
            await client.post("/graphql", content=b"query", headers={"content-type": "text/plain"}),
            await client.get("/graphql", params={"query": "mutation { x }"}),
            await client.put("/graphql", json={"query": "{ __typename }"}),
            await client.post("/graphql", json={"query": "{ __typename }"}, headers={"accept": "text/csv"}),
            await client.post(
                "/graphql", content=b" " * (2 * 1024 * 1024), headers={"content-type": "application/json"}
            ),
        ]
    statuses = [r.status_code for r in cases]
    assert statuses == [400, 400, 400, 415, 405, 405, 406, 413]
    for response in cases:
        assert response.headers["content-type"].startswith("application/json")
        assert response.json()["errors"][0]["message"]
        assert response.json()["errors"][0]["extensions"]["code"]
    assert cases[4].headers["allow"] == "POST"


async def test_graphql_response_json_status_codes(bff: Bff) -> None:
    accept = {"accept": "application/graphql-response+json"}
    async with bff.client() as client:
        ok = await client.post("/graphql", json={"query": "{ __typename }"}, headers=accept)
        invalid = await client.post("/graphql", json={"query": "{ nope }"}, headers=accept)
        partial = await client.post("/graphql", json={"query": "{ viewer { id } }"}, headers=accept)
        legacy = await client.post("/graphql", json={"query": "{ nope }"})
    assert (ok.status_code, ok.headers["content-type"]) == (200, "application/graphql-response+json; charset=utf-8")
    assert invalid.status_code == 400
    assert "data" not in invalid.json()
    assert partial.status_code == 200  # executed: data entry present (viewer null, UNAUTHENTICATED)
    assert partial.json()["data"] == {"viewer": None}
    assert legacy.status_code == 200


async def test_limits_refuse_before_any_upstream_call(bff: Bff, upstreams: object, issuer: object) -> None:
    cookie = await bff.session_for(issuer.token("alice"))  # type: ignore[attr-defined]
    deep = "{ viewer " + "{ orders { items { product " * 10 + "{ id }" + " } } }" * 10 + " }"
    aliases = "{ " + " ".join(f"a{i}: viewer {{ id }}" for i in range(1000)) + " }"
    huge_list = "{ viewer { orders(first: 100000) { id items { quantity } } } }"
    costly = "{ viewer { orders(first: 100) { items { product { id name priceCents } } } } } "
    async with bff.client(cookie) as client:
        answers = [await client.post("/graphql", json={"query": q}) for q in (deep, aliases, huge_list)]
        big = await client.post(
            "/graphql",
            content=b'{"query": "' + b"a" * (2 * 1024 * 1024) + b'"}',
            headers={"content-type": "application/json"},
        )
    for answer in answers:
        errors = answer.json()["errors"]
        assert errors[0]["extensions"]["code"] in (
            "GRAPHQL_PARSE_FAILED",
            "GRAPHQL_VALIDATION_FAILED",
            "QUERY_TOO_COMPLEX",
        )
        assert "data" not in answer.json()
    assert answers[2].json()["errors"][0]["extensions"]["code"] == "QUERY_TOO_COMPLEX"
    assert big.status_code == 413
    assert upstreams.accounts.state.stats.calls.total() == 0  # type: ignore[attr-defined]
    assert upstreams.catalog.state.stats.calls.total() == 0  # type: ignore[attr-defined]
    # a reasonable query with a large page is within the default cost
    async with bff.client(cookie) as client:
        cost_body = (await client.post("/graphql", json={"query": costly})).json()
    assert "errors" not in cost_body, cost_body


async def test_httpx_is_not_a_browser(bff: Bff) -> None:
    async with httpx.AsyncClient(base_url=bff.url) as client:
        page = await client.get("/graphql", headers={"accept": "text/html"})
    assert page.status_code == 200
    assert "/_bff/graphiql/graphiql.min.js" in page.text
