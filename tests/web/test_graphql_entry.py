"""`GraphQLEntry`, the one-pass ``POST /graphql``: the same answers, headers, log lines and metrics
as the middleware stack it bypasses, and every request it must not take left to that stack."""

from __future__ import annotations

import logging
from typing import Any

import httpx
import pytest

from bff.app import BFFApp, create_app
from bff.web.middleware import GraphQLEntry
from tests.conftest import Upstreams, make_settings
from tests.support.servers import serve
from tests.support.sessions import store_session
from tests.support.tokens import TestIssuer

QUERY = "{ viewer { id name } }"
#: headers that differ between any two answers
VOLATILE = {"date", "x-request-id", "content-length", "server"}


def _shape(response: httpx.Response) -> tuple[int, Any, dict[str, list[str]]]:
    headers: dict[str, list[str]] = {}
    for name, value in response.headers.multi_items():
        if name not in VOLATILE:
            headers.setdefault(name, []).append(value)
    return response.status_code, response.json(), {name: sorted(values) for name, values in sorted(headers.items())}


@pytest.mark.parametrize("production", [False, True], ids=["development", "production"])
async def test_the_entry_answers_exactly_as_the_stack(
    upstreams: Upstreams, issuer: TestIssuer, production: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    settings = make_settings(
        upstreams=upstreams.settings(),
        cors_origins=["http://spa.example:5173"],
        **({"env": "production", "cookie_secure": True} if production else {}),
    )
    app = create_app(settings)
    assert isinstance(app, BFFApp) and app.graphql_entry is not None
    entry = app.graphql_entry
    taken: list[bool] = []
    original = GraphQLEntry.takes

    def counting(self: GraphQLEntry, scope: Any) -> bool:
        taken.append(original(self, scope))
        return taken[-1]

    monkeypatch.setattr(GraphQLEntry, "takes", counting)
    async with serve(app) as url:
        cookie = await store_session(app.state.resources, issuer.token("alice"), sub="alice", ttl=3600)
        cases: list[dict[str, Any]] = [
            {"json": {"query": QUERY}},
            {"json": {"query": QUERY}, "headers": {"Origin": "http://spa.example:5173", "X-Request-ID": "abc-1"}},
            {"json": {"query": QUERY}, "headers": {"Origin": settings.public_origin}},
            {"json": {"query": "{ nope }"}},
            {"json": [{"query": QUERY}, {"query": "{ __typename }"}]},
            {"content": b"{not json", "headers": {"Content-Type": "application/json"}},
            {"json": {"query": QUERY}, "headers": {"Accept": "text/event-stream"}},
        ]
        async with httpx.AsyncClient(base_url=url, cookies={settings.cookie_name: cookie}) as client:
            for case in cases:
                case["headers"] = {"X-Request-ID": "same-id", **case.get("headers", {})}  # in error bodies too
                taken.clear()
                app.graphql_entry = entry
                fast = await client.post("/graphql", **case)
                assert taken == [True], case
                app.graphql_entry = None  # the same request through the whole stack
                slow = await client.post("/graphql", **case)
                if "text/event-stream" in str(case.get("headers")):
                    assert fast.status_code == slow.status_code == 200
                    assert fast.text == slow.text and "event: complete" in fast.text
                    assert fast.headers["cache-control"] == slow.headers["cache-control"] == "no-store"
                    continue
                assert _shape(fast) == _shape(slow), case
                assert fast.headers["x-request-id"] == slow.headers["x-request-id"] == case["headers"]["X-Request-ID"]


async def test_requests_the_entry_leaves_to_the_stack(bff: Any, issuer: TestIssuer) -> None:
    app: BFFApp = bff.app
    entry = app.graphql_entry
    assert entry is not None
    cookie = await bff.session_for(issuer.token("alice"))
    refused: list[httpx.Response] = []
    async with bff.client(cookie) as client:
        # a foreign origin, a form post, a body over the limit, a chunked body, a GET: the stack's
        refused.append(await client.post("/graphql", json={"query": QUERY}, headers={"Origin": "https://evil.example"}))
        refused.append(await client.post("/graphql", data={"query": QUERY}))
        big = b'{"query": "' + b" " * (bff.settings.max_body_bytes + 1) + b'{ __typename }"}'
        refused.append(await client.post("/graphql", content=big, headers={"Content-Type": "application/json"}))

        async def chunks() -> Any:
            yield b'{"query": "{ __typename }"}'

        chunked = await client.post("/graphql", content=chunks(), headers={"Content-Type": "application/json"})
        get = await client.get("/graphql", params={"query": "{ __typename }"}, headers={"X-CSRF": "1"})
    assert [r.status_code for r in refused] == [403, 403, 413]
    assert all(r.headers["cache-control"] == "no-store" and r.headers["x-request-id"] for r in refused)
    assert chunked.json() == {"data": {"__typename": "Query"}}
    assert get.json() == {"data": {"__typename": "Query"}}

    def scope(method: str, headers: list[tuple[bytes, bytes]]) -> dict[str, Any]:
        return {"type": "http", "method": method, "path": "/graphql", "headers": headers}

    json_post = [(b"content-type", b"application/json"), (b"content-length", b"20")]
    assert entry.takes(scope("POST", json_post))
    assert not entry.takes(scope("GET", json_post))
    assert not entry.takes(scope("POST", [(b"content-type", b"application/json")]))  # no length
    assert not entry.takes(scope("POST", [*json_post, (b"transfer-encoding", b"chunked")]))
    assert not entry.takes(scope("POST", [*json_post, (b"origin", b"https://evil.example")]))


async def test_an_unhandled_exception_is_the_same_json_500_and_the_access_line_is_written(
    bff: Any, caplog: pytest.LogCaptureFixture
) -> None:
    app: BFFApp = bff.app
    assert app.graphql_entry is not None

    async def broken(request: Any) -> Any:
        raise RuntimeError("secret detail")

    app.graphql_entry.handler = broken
    caplog.set_level(logging.INFO, logger="bff.access")
    async with bff.client() as client:
        response = await client.post("/graphql", json={"query": QUERY}, headers={"X-Request-ID": "req-500"})
    assert response.status_code == 500
    body = response.json()
    assert body["errors"][0]["extensions"]["code"] == "INTERNAL_SERVER_ERROR"
    assert "secret" not in response.text
    assert response.headers["x-request-id"] == "req-500"
    lines = [record for record in caplog.records if record.name == "bff.access"]
    assert [(r.status, r.route, r.request_id) for r in lines] == [(500, "/graphql", "req-500")]  # type: ignore[attr-defined]
