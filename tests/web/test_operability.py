"""Production mode, metrics, readiness, persisted operations, batching, and Redis going away."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import httpx

from bff.app import create_app
from bff.graphql.documents.persisted import sha256
from tests.conftest import Bff, Upstreams, make_settings
from tests.support.servers import RedisServer, serve
from tests.support.tokens import TestIssuer

INTROSPECTION = {"query": "{ __schema { queryType { name } } }"}


async def _bff(upstreams: Upstreams, **overrides: Any) -> Any:
    settings = make_settings(upstreams=upstreams.settings(), **overrides)
    return settings, create_app(settings)


async def test_production_mode(upstreams: Upstreams) -> None:
    _, app = await _bff(upstreams, env="production", cookie_secure=True)
    async with serve(app) as url, httpx.AsyncClient(base_url=url) as client:
        page = await client.get("/graphql", headers={"accept": "text/html"})
        introspection = await client.post("/graphql", json=INTROSPECTION)
        docs = await client.get("/docs")
        suggestion = await client.post("/graphql", json={"query": "{ viewr { id } }"})
    assert "text/html" not in page.headers["content-type"]
    assert introspection.json()["errors"]
    assert "data" not in introspection.json() or introspection.json()["data"] is None
    assert docs.status_code == 404
    assert "Did you mean" not in suggestion.text
    for header, value in {
        "strict-transport-security": "max-age=63072000; includeSubDomains",
        "x-content-type-options": "nosniff",
        "content-security-policy": "frame-ancestors 'none'",
        "referrer-policy": "no-referrer",
    }.items():
        assert page.headers[header] == value


async def test_development_allows_introspection(bff: Bff) -> None:
    async with bff.client() as client:
        body = (await client.post("/graphql", json=INTROSPECTION)).json()
    assert body == {"data": {"__schema": {"queryType": {"name": "Query"}}}}


async def test_metrics_exposition(bff: Bff, issuer: TestIssuer) -> None:
    cookie = await bff.session_for(issuer.token("alice"))
    async with bff.client(cookie) as client:
        await client.post("/graphql", json={"query": "query Me { viewer { id orders { id totalCents } } }"})
        await client.post("/graphql", json={"query": "{ nope }"})
        text = (await client.get("/metrics")).text
    for needle in (
        'bff_token_refresh_total{outcome="success"} 0.0',
        'bff_token_refresh_total{outcome="invalid_grant"} 0.0',
        'bff_upstream_request_duration_seconds_bucket{le="0.005",status="200",upstream="accounts"}',
        'bff_upstream_request_duration_seconds_count{status="200",upstream="catalog"} 1.0',
        'bff_graphql_operations_total{operation="Me",outcome="ok"} 1.0',
        'bff_graphql_operations_total{operation="anonymous",outcome="rejected"} 1.0',
        'bff_http_request_duration_seconds_count{method="POST",route="/graphql",status="200"} 2.0',
        'bff_session_store_duration_seconds_count{op="get"}',
    ):
        assert needle in text, needle


async def test_persisted_queries(bff: Bff) -> None:
    query = "{ __typename }"
    digest = sha256(query)
    apq = {"persistedQuery": {"version": 1, "sha256Hash": digest}}
    async with bff.client() as client:
        unknown = await client.post("/graphql", json={"extensions": apq})
        register = await client.post("/graphql", json={"query": query, "extensions": apq})
        by_hash = await client.get("/graphql", params={"extensions": json.dumps(apq)})
        mismatch = await client.post("/graphql", json={"query": "{ viewer { id } }", "extensions": apq})
    assert unknown.json()["errors"][0]["extensions"]["code"] == "PERSISTED_QUERY_NOT_FOUND"
    assert unknown.json()["errors"][0]["message"] == "PersistedQueryNotFound"
    assert register.json() == {"data": {"__typename": "Query"}}
    assert by_hash.json() == {"data": {"__typename": "Query"}}
    assert mismatch.status_code == 400


async def test_trusted_documents_only(upstreams: Upstreams, tmp_path: Path) -> None:
    listed = "query Typename { __typename }"
    manifest = tmp_path / "persisted-documents.json"
    manifest.write_text(json.dumps({sha256(listed): listed}))
    _, app = await _bff(upstreams, trusted_documents=str(manifest))
    async with serve(app) as url, httpx.AsyncClient(base_url=url) as client:
        by_id = await client.post("/graphql", json={"documentId": f"sha256:{sha256(listed)}"})
        by_apq = await client.post(
            "/graphql", json={"extensions": {"persistedQuery": {"version": 1, "sha256Hash": sha256(listed)}}}
        )
        # graphql-codegen's client preset may send the hash with its "sha256:" prefix in APQ too
        by_prefixed_apq = await client.post(
            "/graphql",
            json={"extensions": {"persistedQuery": {"version": 1, "sha256Hash": f"sha256:{sha256(listed)}"}}},
        )
        same_text = await client.post("/graphql", json={"query": listed})
        other = await client.post("/graphql", json={"query": '{ searchProducts(query: "a") { id } }'})
        apq_register = await client.post(
            "/graphql",
            json={
                "query": "{ viewer { id } }",
                "extensions": {"persistedQuery": {"version": 1, "sha256Hash": sha256("{ viewer { id } }")}},
            },
        )
    for ok in (by_id, by_apq, by_prefixed_apq, same_text):
        assert ok.json() == {"data": {"__typename": "Query"}}
    for refused in (other, apq_register):
        assert refused.status_code == 400
        assert refused.json()["errors"][0]["extensions"]["code"] == "PERSISTED_QUERY_NOT_ALLOWED"
    assert upstreams.catalog.state.stats.calls.total() == 0


async def test_batching_off_by_default_and_shared_session_when_on(upstreams: Upstreams, issuer: TestIssuer) -> None:
    settings, app = await _bff(upstreams, batch_max_operations=5)
    async with serve(app) as url:
        bff = Bff(app, url, settings)
        cookie = await bff.session_for(issuer.token("alice"))
        async with bff.client(cookie) as client:
            batch = await client.post(
                "/graphql", json=[{"query": "{ viewer { id } }"}, {"query": "{ viewer { name } }"}]
            )
            too_many = await client.post("/graphql", json=[{"query": "{ __typename }"}] * 6)
    assert batch.json() == [{"data": {"viewer": {"id": "alice"}}}, {"data": {"viewer": {"name": "Alice Example"}}}]
    assert upstreams.accounts.state.stats.calls["GET /me"] == 1  # one request context: one /me
    assert too_many.status_code == 400


async def test_redis_outage_and_restart(upstreams: Upstreams, issuer: TestIssuer) -> None:
    redis = RedisServer().start()
    try:
        settings, app = await _bff(upstreams, session_store=redis.url)
        async with serve(app) as url:
            bff = Bff(app, url, settings)
            cookie = await bff.session_for(issuer.token("alice"))
            async with bff.client(cookie) as client:
                # this BFF has no IdP: readiness names it, and only it, while the store is up
                unconfigured = "sign-in is not configured: set BFF_OIDC_ISSUER"
                ready = await client.get("/readyz")
                assert ready.status_code == 503
                assert [r[: len(unconfigured)] for r in ready.json()["reasons"]] == [unconfigured]
                redis.stop()
                down = await client.get("/readyz")
                assert down.status_code == 503
                assert any("session store" in r for r in down.json()["reasons"])
                during = await client.post("/graphql", json={"query": "{ viewer { id } }"})
                assert during.status_code == 200
                assert during.json()["errors"][0]["extensions"]["code"] == "SESSION_STORE_UNAVAILABLE"
                assert "set-cookie" not in during.headers  # nothing concluded about the session
                assert (await client.get("/auth/session")).status_code == 503

                redis.start()  # every session is lost
                for _ in range(50):
                    if len((await client.get("/readyz")).json()["reasons"]) == 1:
                        break
                    await asyncio.sleep(0.1)
                assert len((await client.get("/readyz")).json()["reasons"]) == 1
                after = await client.post("/graphql", json={"query": "{ viewer { id } }"})
                assert after.status_code == 200
                assert after.json()["errors"][0]["extensions"]["code"] == "UNAUTHENTICATED"
                assert "bff_session=" in after.headers["set-cookie"]
                assert "Max-Age=0" in after.headers["set-cookie"]
    finally:
        redis.cleanup()
