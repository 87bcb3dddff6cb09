"""The contract's CSRF and Origin rule on /graphql and /auth/logout."""

from __future__ import annotations

from tests.conftest import Bff
from tests.support.tokens import TestIssuer

QUERY = "{ viewer { id } }"


async def test_cookie_requests_need_json_post_or_csrf_header(bff: Bff, issuer: TestIssuer) -> None:
    cookie = await bff.session_for(issuer.token("alice"))
    async with bff.client(cookie) as client:
        ok_json = await client.post("/graphql", json={"query": QUERY})
        assert ok_json.status_code == 200
        assert ok_json.json()["data"]["viewer"]["id"] == "alice"

        form = await client.post("/graphql", data={"query": QUERY})
        assert form.status_code == 403
        text_plain = await client.post("/graphql", content=QUERY, headers={"content-type": "text/plain"})
        assert text_plain.status_code == 403
        get = await client.get("/graphql", params={"query": QUERY})
        assert get.status_code == 403
        assert get.json()["errors"][0]["extensions"]["code"] == "FORBIDDEN"

        get_with_header = await client.get("/graphql", params={"query": QUERY}, headers={"X-CSRF": "1"})
        assert get_with_header.status_code == 200
        assert get_with_header.json()["data"]["viewer"]["id"] == "alice"
        empty_header = await client.get("/graphql", params={"query": QUERY}, headers={"X-CSRF": ""})
        assert empty_header.status_code == 403


async def test_foreign_origin_is_refused(bff: Bff, issuer: TestIssuer) -> None:
    cookie = await bff.session_for(issuer.token("alice"))
    async with bff.client(cookie) as client:
        for origin in ("https://evil.example", "null", "http://127.0.0.1:9"):
            response = await client.post("/graphql", json={"query": QUERY}, headers={"Origin": origin})
            assert response.status_code == 403, origin
        own = await client.post("/graphql", json={"query": QUERY}, headers={"Origin": bff.settings.public_origin})
        assert own.status_code == 200
        logout = await client.post("/auth/logout", headers={"Origin": "https://evil.example", "X-CSRF": "1"})
        assert logout.status_code == 403
    # still signed in: nothing above ended the session
    async with bff.client(cookie) as client:
        assert (await client.get("/auth/session")).json()["authenticated"] is True


async def test_anonymous_get_query_works_without_header(bff: Bff) -> None:
    async with bff.client() as client:
        response = await client.get("/graphql", params={"query": "{ __typename }"})
    assert response.status_code == 200
    assert response.json() == {"data": {"__typename": "Query"}}


async def test_graphiql_page_loads_with_cookie(bff: Bff, issuer: TestIssuer) -> None:
    cookie = await bff.session_for(issuer.token("alice"))
    async with bff.client(cookie) as client:
        page = await client.get("/graphql", headers={"Accept": "text/html"})
    assert page.status_code == 200
    assert "graphiql" in page.text.lower()


async def test_cors_allows_only_configured_origins(bff: Bff) -> None:
    async with bff.client() as client:
        own = await client.options(
            "/graphql",
            headers={"Origin": bff.settings.public_origin, "Access-Control-Request-Method": "POST"},
        )
        evil = await client.options(
            "/graphql", headers={"Origin": "https://evil.example", "Access-Control-Request-Method": "POST"}
        )
    assert own.headers.get("access-control-allow-origin") == bff.settings.public_origin
    assert own.headers.get("access-control-allow-credentials") == "true"
    assert "access-control-allow-origin" not in evil.headers
