"""Upstream event streams (`RestClient.events`, `follow`) against the real demo accounts service on
a free port, over both upstream HTTP paths (aiohttp directly, httpx on aiohttp's pool); httpx's
MockTransport only for the answers a real upstream does not give."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncGenerator, AsyncIterator, Callable
from typing import Any

import httpx
import pytest
import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse
from starlette.routing import Route

from bff.demo.upstreams import accounts_app
from bff.errors import Unauthenticated, UpstreamError, UpstreamTimeout, UpstreamUnauthorized
from bff.upstream import Backoff, RestClient, UpstreamEvent, follow
from bff.upstream.aio import AiohttpUpstream
from bff.upstream.base import HTTPClient
from bff.upstream.transport import UpstreamTransport
from tests.support.servers import free_port, serve
from tests.support.tokens import TestIssuer

WAIT = 5.0
FAST = Backoff(initial=0.02, maximum=0.2)


class IssuedTokens:
    """A session's token source: a fresh token of ``ttl`` seconds whenever the current one is
    expired or refused, counting refreshes as the IdP would."""

    def __init__(self, issuer: TestIssuer, ttl: int = 3600) -> None:
        self.issuer = issuer
        self.ttl = ttl
        self.token = issuer.token(ttl=ttl)
        self.expires = int(time.time()) + ttl  # the JWT's exp: whole seconds
        self.refreshes = 0

    async def access_token(self) -> str:
        if time.time() >= self.expires - 0.2:  # refreshed when about to expire, as sessions are
            await self.refreshed_access_token(self.token)
        return self.token

    async def refreshed_access_token(self, rejected: str) -> str:
        if rejected == self.token:
            self.refreshes += 1
            self.token = self.issuer.token(ttl=self.ttl)
            self.expires = int(time.time()) + self.ttl
        return self.token


def _clients(url: str) -> dict[str, Callable[[], HTTPClient]]:
    return {
        "aiohttp": lambda: AiohttpUpstream(url, timeout=2, max_connections=10),
        "httpx": lambda: httpx.AsyncClient(base_url=url, timeout=2, transport=UpstreamTransport()),
    }


@pytest.fixture(params=["aiohttp", "httpx"])
async def accounts(request: pytest.FixtureRequest, issuer: TestIssuer) -> AsyncIterator[tuple[Any, HTTPClient]]:
    app = accounts_app(issuer.validator())
    async with serve(app) as url:
        http = _clients(url)[request.param]()
        try:
            yield app, http
        finally:
            await http.aclose()


async def _next(events: AsyncIterator[UpstreamEvent]) -> UpstreamEvent:
    return await asyncio.wait_for(anext(events), WAIT)


async def test_events_come_as_they_happen_with_ids(accounts: tuple[Any, HTTPClient], issuer: TestIssuer) -> None:
    app, http = accounts
    app.state.statuses["o-alice-1"] = "PLACED"
    client = RestClient("accounts", http, IssuedTokens(issuer))
    async with contextlib.aclosing(client.events("/orders/o-alice-1/events")) as events:
        first = await _next(events)
        assert (first.event, first.data) == ("status", {"orderId": "o-alice-1", "status": "PLACED"})
        assert first.id is not None and first.id.endswith(".1")
        app.state.statuses["o-alice-1"] = "PACKED"
        started = time.monotonic()
        second = await _next(events)
        # streamed, not buffered: the change arrives within a few of the upstream's ticks
        assert time.monotonic() - started < 1.0
        assert (second.data["status"], second.id) == ("PACKED", first.id.replace(".1", ".2"))


async def test_last_event_id_resumes_after_it(accounts: tuple[Any, HTTPClient], issuer: TestIssuer) -> None:
    app, http = accounts
    tokens = IssuedTokens(issuer)
    for status in ("PLACED", "PACKED", "SHIPPED"):
        app.state.statuses["o-alice-1"] = status
        # a look at the order records its status (a new client: identical GETs of one are shared)
        assert (await RestClient("accounts", http, tokens).get_json("/orders/o-alice-1/status"))["status"] == status
    client = RestClient("accounts", http, IssuedTokens(issuer))
    async with contextlib.aclosing(client.events("/orders/o-alice-1/events")) as events:
        current = await _next(events)
    assert current.data["status"] == "SHIPPED"
    assert current.id is not None
    first = current.id.replace(".3", ".1")
    async with contextlib.aclosing(client.events("/orders/o-alice-1/events", last_event_id=first)) as events:
        got = [await _next(events), await _next(events)]
    assert [(e.id, e.data["status"]) for e in got] == [
        (current.id.replace(".3", ".2"), "PACKED"),
        (current.id, "SHIPPED"),
    ]


async def test_the_upstream_ends_the_stream_when_the_token_expires(
    accounts: tuple[Any, HTTPClient], issuer: TestIssuer
) -> None:
    app, http = accounts
    app.state.statuses["o-alice-1"] = "PLACED"
    token = issuer.token(ttl=2)
    expires = int(time.time()) + 2  # the token's exp (whole seconds)
    client = RestClient("accounts", http, _Fixed(token))
    seen = [event async for event in client.events("/orders/o-alice-1/events")]
    assert [e.data["status"] for e in seen] == ["PLACED"]
    assert expires <= time.time() < expires + 1
    assert app.state.stats.calls["closed on expiry /orders/{id}/events"] == 1


class _Fixed:
    def __init__(self, token: str) -> None:
        self.token = token
        self.refreshes = 0

    async def access_token(self) -> str:
        return self.token

    async def refreshed_access_token(self, rejected: str) -> str:
        self.refreshes += 1
        return self.token


async def test_a_refused_token_is_refreshed_once_on_opening(
    accounts: tuple[Any, HTTPClient], issuer: TestIssuer
) -> None:
    app, http = accounts
    app.state.statuses["o-alice-1"] = "PLACED"
    tokens = IssuedTokens(issuer)
    tokens.token = issuer.token(ttl=-10)  # expired, though the source does not know it yet
    client = RestClient("accounts", http, tokens)
    async with contextlib.aclosing(client.events("/orders/o-alice-1/events")) as events:
        assert (await _next(events)).data["status"] == "PLACED"
    assert tokens.refreshes == 1
    assert app.state.stats.unauthorized == 1
    # refused again after the refresh: UPSTREAM_UNAUTHORIZED, no second refresh
    fixed = _Fixed(issuer.token(ttl=-10))
    with pytest.raises(UpstreamUnauthorized):
        await anext(RestClient("accounts", http, fixed).events("/orders/o-alice-1/events"))
    assert fixed.refreshes == 1


async def test_follow_outlives_token_lifetimes_without_duplicates(
    accounts: tuple[Any, HTTPClient], issuer: TestIssuer
) -> None:
    app, http = accounts
    statuses = app.state.statuses
    statuses["o-alice-1"] = "S0"
    tokens = IssuedTokens(issuer, ttl=2)

    def connect(last_event_id: str | None) -> AsyncGenerator[UpstreamEvent, None]:
        # a new client per connection, as a renewed GraphQL context builds
        return RestClient("accounts", http, tokens).events("/orders/o-alice-1/events", last_event_id=last_event_id)

    seen: list[str] = []
    async with contextlib.aclosing(follow(connect, name="accounts", backoff=FAST)) as events:
        seen.append((await _next(events)).data["status"])
        started = time.monotonic()
        n = 0
        while app.state.stats.calls["closed on expiry /orders/{id}/events"] < 2:
            assert time.monotonic() - started < 10, "the upstream never closed the stream twice"
            n += 1
            statuses["o-alice-1"] = f"S{n}"
            seen.append((await _next(events)).data["status"])
            await asyncio.sleep(0.2)
    assert seen == [f"S{i}" for i in range(n + 1)]
    assert tokens.refreshes + 1 == app.state.stats.calls["GET /orders/{id}/events"]  # one token per stream
    assert app.state.stats.unauthorized == 0


@contextlib.asynccontextmanager
async def _restartable(app: Any, port: int) -> AsyncIterator[None]:
    """Like `serve`, but stopping cuts open streams at once, as a restart does (uvicorn otherwise
    waits for them to end)."""
    config = uvicorn.Config(app, host="127.0.0.1", port=port, log_level="critical", timeout_graceful_shutdown=0)
    server = uvicorn.Server(config)
    task = asyncio.create_task(server.serve())
    while not server.started:
        assert not task.done(), "the upstream did not start"
        await asyncio.sleep(0.01)
    try:
        yield
    finally:
        server.should_exit = True
        await asyncio.wait_for(task, WAIT)


async def test_follow_rides_out_an_upstream_restart(issuer: TestIssuer) -> None:
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    http = AiohttpUpstream(url, timeout=1, max_connections=10)
    tokens = IssuedTokens(issuer)

    def connect(last_event_id: str | None) -> AsyncGenerator[UpstreamEvent, None]:
        return RestClient("accounts", http, tokens).events("/orders/o-alice-1/events", last_event_id=last_event_id)

    try:
        first = accounts_app(issuer.validator())
        first.state.statuses["o-alice-1"] = "PLACED"
        events = follow(connect, name="accounts", backoff=FAST)
        async with contextlib.aclosing(events):
            async with _restartable(first, port):
                assert (await _next(events)).data["status"] == "PLACED"
            # down for a while: the subscription waits, retrying
            pending = asyncio.ensure_future(anext(events))
            await asyncio.sleep(0.5)
            assert not pending.done()
            second = accounts_app(issuer.validator())  # a restart: its event ids start over
            second.state.statuses["o-alice-1"] = "SHIPPED"
            async with _restartable(second, port):
                event = await asyncio.wait_for(pending, WAIT)
                assert event.data["status"] == "SHIPPED"  # the previous run's last id was unknown to it
    finally:
        await http.aclose()


async def test_unauthenticated_ends_follow(accounts: tuple[Any, HTTPClient]) -> None:
    _app, http = accounts

    class SignedOut:
        async def access_token(self) -> str:
            raise Unauthenticated()

        async def refreshed_access_token(self, rejected: str) -> str:
            raise Unauthenticated()

    def connect(last_event_id: str | None) -> AsyncGenerator[UpstreamEvent, None]:
        return RestClient("accounts", http, SignedOut()).events("/orders/o-alice-1/events")

    with pytest.raises(Unauthenticated):
        await anext(follow(connect, name="accounts", backoff=FAST))


# -- answers a real upstream does not give ---------------------------------------------------------


def _mock(handler: Callable[[httpx.Request], httpx.Response], **options: Any) -> RestClient:
    http = httpx.AsyncClient(transport=httpx.MockTransport(handler), base_url="http://accounts", timeout=2)
    return RestClient("accounts", http, _Fixed("t"), **options)


def _stream(*parts: bytes, content_type: str = "text/event-stream") -> Callable[[httpx.Request], httpx.Response]:
    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, headers={"content-type": content_type}, stream=_Stream(parts))

    return handler


class _Stream(httpx.AsyncByteStream):
    def __init__(self, parts: tuple[bytes, ...]) -> None:
        self.parts = parts

    async def __aiter__(self) -> AsyncIterator[bytes]:
        for part in self.parts:
            yield part


async def test_parsing_follows_the_event_stream_rules() -> None:
    client = _mock(
        _stream(
            b": hello\n\nretry: 100\n\n",  # a comment, a retry alone: no events
            b"id: 7\nevent: sta",  # split anywhere
            b'tus\ndata: {"a":\r\ndata: 1}\r\n\r\n',  # multi-line data, CRLF
            b'data: "no id of its own"\n\n',  # keeps the last id, default event name
            b"id: 8\n\n",  # an id alone is no event
        )
    )
    got = [event async for event in client.events("/e")]
    assert got == [
        UpstreamEvent("status", {"a": 1}, "7"),
        UpstreamEvent("message", "no id of its own", "7"),
    ]


async def test_an_answer_that_is_no_event_stream_or_not_json_is_an_upstream_error() -> None:
    with pytest.raises(UpstreamError, match="no event stream"):
        await anext(_mock(_stream(b"{}", content_type="application/json")).events("/e"))
    with pytest.raises(UpstreamError, match="not JSON"):
        await anext(_mock(_stream(b"data: <html>\n\n")).events("/e"))
    with pytest.raises(UpstreamError, match="HTTP 503"):
        await anext(_mock(lambda request: httpx.Response(503)).events("/e"))


async def test_the_request_carries_the_stream_headers() -> None:
    sent: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        sent.append(request)
        return _stream(b"data: 1\n\n")(request)

    async with contextlib.aclosing(_mock(handler).events("/e", {"x": 1}, last_event_id="41")) as events:
        assert (await anext(events)).data == 1
    headers = sent[0].headers
    assert (headers["accept"], headers["last-event-id"], headers["authorization"]) == (
        "text/event-stream",
        "41",
        "Bearer t",
    )
    assert sent[0].url.params["x"] == "1"


async def _silent(request: Request) -> Response:
    async def body() -> AsyncIterator[bytes]:
        yield b'data: "first"\n\n'
        await asyncio.sleep(10)

    return StreamingResponse(body(), media_type="text/event-stream")


@pytest.mark.parametrize("implementation", ["aiohttp", "httpx"])
async def test_an_idle_stream_times_out(implementation: str) -> None:
    async with serve(Starlette(routes=[Route("/silent", _silent)])) as url:
        http = _clients(url)[implementation]()
        try:
            client = RestClient("accounts", http, _Fixed("t"))
            async with contextlib.aclosing(client.events("/silent", idle_timeout=0.3)) as events:
                assert (await _next(events)).data == "first"
                with pytest.raises(UpstreamTimeout):
                    await _next(events)
        finally:
            await http.aclose()
