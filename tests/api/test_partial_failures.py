"""A failing upstream nulls only its own fields: partial data, HTTP 200, a code, no stack trace."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from typing import Any

import httpx
import pytest

from bff.app import create_app
from tests.conftest import Bff, Upstreams, make_settings
from tests.support.servers import free_port, serve
from tests.support.tokens import TestIssuer

BOTH = '{ viewer { id name } searchProducts(query: "lamp") { id } }'


async def _run(bff: Bff, issuer: TestIssuer, query: str = BOTH) -> httpx.Response:
    cookie = await bff.session_for(issuer.token("alice"))
    async with bff.client(cookie) as client:
        return await client.post("/graphql", json={"query": query})


def _assert_clean(response: httpx.Response) -> dict[str, Any]:
    assert response.status_code == 200
    assert "Traceback" not in response.text and 'File "' not in response.text
    body: dict[str, Any] = response.json()
    return body


@pytest.fixture
async def bff_with(upstreams: Upstreams) -> AsyncIterator[Callable[..., Any]]:
    """Build a BFF whose accounts upstream goes elsewhere (a dead port, a mock transport...)."""
    import contextlib

    @contextlib.asynccontextmanager
    async def make(accounts: dict[str, Any] | None = None, transports: dict[str, Any] | None = None) -> Any:
        ups = upstreams.settings()
        if accounts:
            ups["accounts"].update(accounts)
        settings = make_settings(upstreams=ups)
        app = create_app(settings, transports=transports)
        async with serve(app) as url:
            yield Bff(app, url, settings)

    yield make


async def test_accounts_down(bff_with: Callable[..., Any], issuer: TestIssuer) -> None:
    async with bff_with({"url": f"http://127.0.0.1:{free_port()}"}) as bff:
        body = _assert_clean(await _run(bff, issuer))
    assert body["data"]["viewer"] is None
    assert len(body["data"]["searchProducts"]) >= 1
    (error,) = body["errors"]
    assert error["extensions"]["code"] == "UPSTREAM_ERROR"
    assert error["extensions"]["upstream"] == "accounts"
    assert error["path"] == ["viewer"]


@pytest.mark.parametrize("upstream_latency", [0.5])
async def test_accounts_timeout(bff_with: Callable[..., Any], issuer: TestIssuer) -> None:
    async with bff_with({"timeout_seconds": 0.2}) as bff:
        body = _assert_clean(await _run(bff, issuer, "{ viewer { id } }"))
    assert body["data"]["viewer"] is None
    assert body["errors"][0]["extensions"] == {
        "code": "UPSTREAM_TIMEOUT",
        "upstream": "accounts",
        "requestId": body["errors"][0]["extensions"]["requestId"],
    }


def _mock(handler: Callable[[httpx.Request], httpx.Response]) -> httpx.MockTransport:
    return httpx.MockTransport(handler)


@pytest.mark.parametrize(
    ("handler", "code"),
    [
        (lambda r: httpx.Response(500, text="boom"), "UPSTREAM_ERROR"),
        (lambda r: httpx.Response(200, text="{not json"), "UPSTREAM_ERROR"),
        (lambda r: httpx.Response(200, json={"unexpected": "shape"}), "UPSTREAM_ERROR"),
        (lambda r: httpx.Response(404, json={}), "UPSTREAM_ERROR"),
    ],
    ids=["500", "invalid-json", "wrong-shape", "404"],
)
async def test_accounts_bad_answers(bff_with: Callable[..., Any], issuer: TestIssuer, handler: Any, code: str) -> None:
    async with bff_with(transports={"accounts": _mock(handler)}) as bff:
        body = _assert_clean(await _run(bff, issuer))
    assert body["data"]["viewer"] is None
    assert len(body["data"]["searchProducts"]) >= 1
    assert body["errors"][0]["extensions"]["code"] == code
    assert body["errors"][0]["extensions"]["upstream"] == "accounts"
    assert "boom" not in response_text(body)


def response_text(body: dict[str, Any]) -> str:
    import json

    return json.dumps(body)


async def test_catalog_graphql_errors(upstreams: Upstreams, issuer: TestIssuer) -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, json={"data": None, "errors": [{"message": "internal db host db-7 down"}]})

    settings = make_settings(upstreams=upstreams.settings())
    app = create_app(settings, transports={"catalog": _mock(handler)})
    async with serve(app) as url:
        bff = Bff(app, url, settings)
        query = "{ viewer { id orders { id items { quantity product { id } } } } }"
        body = _assert_clean(await _run(bff, issuer, query))
    # products are nullable: the orders still resolve, each product null with the catalog's code
    orders = body["data"]["viewer"]["orders"]
    assert orders and all(item["product"] is None for o in orders for item in o["items"])
    assert {e["extensions"]["code"] for e in body["errors"]} == {"UPSTREAM_ERROR"}
    assert {e["extensions"]["upstream"] for e in body["errors"]} == {"catalog"}
    assert "db-7" not in response_text(body)


async def test_upstream_401_twice_is_upstream_unauthorized(upstreams: Upstreams, issuer: TestIssuer) -> None:
    """Without an IdP to refresh against, a refused token cannot be replaced: the upstream's refusal
    is reported as such, and the session (cookie) is kept: it is not a logout."""
    settings = make_settings(upstreams=upstreams.settings())
    app = create_app(settings)
    async with serve(app) as url:
        bff = Bff(app, url, settings)
        cookie = await bff.session_for("not-a-valid-token")
        async with bff.client(cookie) as client:
            response = await client.post("/graphql", json={"query": "{ viewer { id } }"})
            body = _assert_clean(response)
    assert body["data"]["viewer"] is None
    extensions = body["errors"][0]["extensions"]
    assert (extensions["code"], extensions["upstream"]) == ("UPSTREAM_UNAUTHORIZED", "accounts")
    assert "set-cookie" not in response.headers
