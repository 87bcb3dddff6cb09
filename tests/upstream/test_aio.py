"""The direct upstream clients (aiohttp's, and our HTTP/1.1 pool `H1Upstream`) against real sockets:
the same error mapping as httpx's path."""

from __future__ import annotations

import asyncio

import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.routing import Route

from bff.errors import UpstreamError, UpstreamTimeout, UpstreamUnauthorized
from bff.upstream import GraphQLClient, RestClient
from bff.upstream.aio import AiohttpUpstream
from bff.upstream.h1 import H1Upstream
from tests.support.servers import free_port, serve
from tests.support.tokens import CountingTokens


async def _echo(request: Request) -> Response:
    body = await request.body()
    return JSONResponse(
        {
            "auth": request.headers.get("authorization"),
            "query": dict(request.query_params),
            "body": body.decode(),
            "type": request.headers.get("content-type"),
        }
    )


async def _slow(request: Request) -> Response:
    await asyncio.sleep(2)
    return JSONResponse({})


async def _unauthorized(request: Request) -> Response:
    return JSONResponse({"error": "invalid_token"}, status_code=401)


async def _html(request: Request) -> Response:
    return PlainTextResponse("<html>gateway</html>", status_code=200)


async def _broken(request: Request) -> Response:
    return PlainTextResponse("oops", status_code=502)


APP = Starlette(
    routes=[
        Route("/echo", _echo, methods=["GET", "POST"]),
        Route("/slow", _slow),
        Route("/401", _unauthorized),
        Route("/html", _html),
        Route("/502", _broken),
    ]
)


CLIENTS = [AiohttpUpstream, H1Upstream]


@pytest.fixture(params=CLIENTS, ids=lambda cls: cls.__name__)
async def upstream(request: pytest.FixtureRequest) -> object:
    async with serve(APP) as url:
        http = request.param(url, timeout=0.5, max_connections=10)
        yield http
        await http.aclose()


async def test_requests_carry_token_params_and_json(upstream: AiohttpUpstream) -> None:
    client = RestClient("accounts", upstream, CountingTokens())
    got = await client.get_json("/echo", {"limit": 3})
    assert got["auth"] == "Bearer t-1"
    assert got["query"] == {"limit": "3"}
    posted = await client.post_json("/echo", {"a": [1, 2]})
    assert posted["body"] == '{"a":[1,2]}'
    assert posted["type"] == "application/json"


async def test_failures_map_like_httpx(upstream: AiohttpUpstream) -> None:
    tokens = CountingTokens()
    client = RestClient("accounts", upstream, tokens)
    with pytest.raises(UpstreamTimeout):
        await client.get_json("/slow")
    with pytest.raises(UpstreamUnauthorized):
        await client.get_json("/401")
    assert tokens.refreshes == 1  # one forced refresh, then the refusal is reported
    with pytest.raises(UpstreamError, match="invalid JSON"):
        await client.get_json("/html")
    with pytest.raises(UpstreamError, match="HTTP 502"):
        await client.get_json("/502")


@pytest.mark.parametrize("cls", CLIENTS, ids=lambda cls: cls.__name__)
async def test_refused_connection_is_unreachable_not_a_timeout(cls: type[AiohttpUpstream]) -> None:
    http = cls(f"http://127.0.0.1:{free_port()}", timeout=2, max_connections=10)
    try:
        client = GraphQLClient("catalog", http, CountingTokens(), endpoint=f"{http.base_url}/graphql")
        with pytest.raises(UpstreamError, match="unreachable") as refused:
            await client.execute("{ x }")
        assert not isinstance(refused.value, UpstreamTimeout)
    finally:
        await http.aclose()
