"""GraphQL over WebSocket on /graphql (graphql-transport-ws) with the memory store and a real server."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
import uvicorn
import websockets
from websockets.asyncio.client import ClientConnection
from websockets.exceptions import ConnectionClosed, InvalidStatus

from bff.app import create_app
from bff.serving import Server
from bff.testing import free_port, serve
from tests.conftest import Bff, Upstreams, make_settings
from tests.support.tokens import TestIssuer

PROTOCOL = "graphql-transport-ws"
ORIGIN = "http://127.0.0.1:8000"  # the public origin of make_settings
SUBSCRIBE = {
    "query": "subscription S($id: ID!) { orderStatusChanged(orderId: $id) { orderId status } }",
    "variables": {"id": "o-alice-1"},
}
WAIT = 10.0  # generous bound for one message on a loaded 2-core machine


class Socket:
    """A graphql-transport-ws client: answers server pings, keeps what it skipped."""

    def __init__(self, ws: ClientConnection) -> None:
        self.ws = ws
        self.pings = 0
        self.raw: list[str] = []

    async def send(self, message: dict[str, Any] | str) -> None:
        await self.ws.send(message if isinstance(message, str) else json.dumps(message))

    async def next(self, timeout: float = WAIT) -> dict[str, Any]:
        """The next message other than a server ping (which is answered)."""
        while True:
            text = await asyncio.wait_for(self.ws.recv(), timeout)
            assert isinstance(text, str)
            self.raw.append(text)
            message: dict[str, Any] = json.loads(text)
            if message["type"] == "ping":
                self.pings += 1
                # best effort: the server may already have closed (its later messages are still
                # queued here to be read, the pong cannot go out any more)
                with contextlib.suppress(ConnectionClosed):
                    await self.send({"type": "pong"})
                continue
            return message

    async def subscribe(self, op_id: str = "1", payload: dict[str, Any] = SUBSCRIBE) -> None:
        await self.send({"id": op_id, "type": "subscribe", "payload": payload})

    async def closed(self, timeout: float = WAIT) -> tuple[int | None, str | None]:
        """Wait for the server to close; its close code and reason (messages before it are dropped)."""
        with contextlib.suppress(ConnectionClosed):
            while True:
                await asyncio.wait_for(self.ws.recv(), timeout)
        await asyncio.wait_for(self.ws.wait_closed(), timeout)
        close = self.ws.protocol.close_rcvd
        return (close.code, close.reason) if close else (None, None)


@contextlib.asynccontextmanager
async def connect(
    bff: Bff,
    *,
    cookie: str | None = None,
    origin: str | None = ORIGIN,
    headers: dict[str, str] | None = None,
    init: dict[str, Any] | bool | None = True,
    subprotocols: list[str] | None = None,
) -> AsyncIterator[Socket]:
    """An open connection to ``bff``; ``init`` (True, or a connection_init payload) acknowledged."""
    extra = dict(headers or {})
    if cookie:
        extra["Cookie"] = f"{bff.settings.cookie_name}={cookie}"
    async with websockets.connect(
        bff.url.replace("http://", "ws://") + "/graphql",
        subprotocols=[websockets.Subprotocol(p) for p in subprotocols or [PROTOCOL]],
        origin=websockets.Origin(origin) if origin else None,
        additional_headers=extra,
        open_timeout=WAIT,
    ) as ws:
        socket = Socket(ws)
        if init is not False:
            payload = None if init is True else init
            await socket.send({"type": "connection_init", **({"payload": payload} if payload else {})})
            assert await socket.next() == {"type": "connection_ack"}
        yield socket


async def metrics(bff: Bff) -> str:
    async with bff.client() as client:
        return (await client.get("/metrics")).text


async def refused(bff: Bff, **kwargs: Any) -> InvalidStatus:
    with pytest.raises(InvalidStatus) as exc:
        async with connect(bff, init=False, **kwargs):
            pass
    return exc.value


@pytest.fixture
async def limited(upstreams: Upstreams) -> AsyncIterator[Bff]:
    settings = make_settings(
        upstreams=upstreams.settings(),
        streams_per_session=1,
        stream_heartbeat_seconds=0.2,
        stream_max_seconds=3,
        max_depth=3,
    )
    app = create_app(settings)
    async with serve(app) as url:
        yield Bff(app, url, settings)


# the protocol ----------------------------------------------------------------------------------
async def test_a_subscription_delivers_the_status_and_each_change(
    bff: Bff, upstreams: Upstreams, issuer: TestIssuer
) -> None:
    token = issuer.token()
    cookie = await bff.session_for(token)
    upstreams.accounts.state.statuses["o-alice-1"] = "PLACED"
    async with connect(bff, cookie=cookie) as ws:
        assert ws.ws.subprotocol == PROTOCOL
        await ws.subscribe()
        assert await ws.next() == {
            "id": "1",
            "type": "next",
            "payload": {"data": {"orderStatusChanged": {"orderId": "o-alice-1", "status": "PLACED"}}},
        }
        upstreams.accounts.state.statuses["o-alice-1"] = "SHIPPED"
        message = await ws.next()
        assert message["payload"]["data"]["orderStatusChanged"]["status"] == "SHIPPED"
        assert "bff_streams_open 1.0" in await metrics(bff)
        # the client completes it: no complete back, the stream is forgotten
        await ws.send({"id": "1", "type": "complete"})
        await asyncio.wait_for(bff.resources.streams._empty.wait(), WAIT)
        # and the id may be used again
        await ws.subscribe("1", {"query": "{ viewer { id } }"})
        assert await ws.next() == {"id": "1", "type": "next", "payload": {"data": {"viewer": {"id": "alice"}}}}
        assert await ws.next() == {"id": "1", "type": "complete"}
        assert token not in "".join(ws.raw) and cookie not in "".join(ws.raw)
    text = await metrics(bff)
    assert 'bff_streams_ended_total{reason="client_closed"} 1.0' in text
    assert 'bff_streams_ended_total{reason="complete"} 1.0' in text


async def test_queries_and_mutations_run_over_subscribe_anonymous_too(bff: Bff) -> None:
    async with connect(bff, origin=None) as ws:
        await ws.subscribe("q", {"query": "{ viewer { id } }"})
        message = await ws.next()
        assert message["type"] == "next"
        assert message["payload"]["data"] == {"viewer": None}
        assert message["payload"]["errors"][0]["extensions"]["code"] == "UNAUTHENTICATED"
        assert await ws.next() == {"id": "q", "type": "complete"}
        # anonymous, so the connection stays open
        await ws.send({"type": "ping"})
        assert await ws.next() == {"type": "pong"}


async def test_ping_pong_and_server_pings(limited: Bff) -> None:
    async with connect(limited) as ws:
        await ws.send({"type": "ping", "payload": {"at": 1}})
        assert await ws.next() == {"type": "pong"}
        await ws.send({"type": "pong"})  # an unsolicited pong is fine
        await asyncio.sleep(0.5)
        await ws.send({"type": "ping"})
        assert await ws.next() == {"type": "pong"}
        assert ws.pings >= 1  # the heartbeat: a server ping every stream_heartbeat_seconds (0.2)


@pytest.mark.parametrize(
    ("message", "code"),
    [
        ("not json", 4400),
        ('["a list"]', 4400),
        ('{"type": "unknown"}', 4400),
        ('{"type": "subscribe", "id": "1"}', 4400),
        ('{"type": "subscribe", "id": 7, "payload": {"query": "{ __typename }"}}', 4400),
        ('{"type": "connection_init"}', 4429),
        (b"\x00binary", 4400),
    ],
)
async def test_malformed_messages_close_with_4400(bff: Bff, message: str | bytes, code: int) -> None:
    async with connect(bff) as ws:
        await ws.ws.send(message)
        assert (await ws.closed())[0] == code


async def test_subscribe_before_ack_is_4401_and_a_silent_client_4408(bff: Bff, monkeypatch: pytest.MonkeyPatch) -> None:
    async with connect(bff, init=False) as ws:
        await ws.subscribe()
        assert await ws.closed() == (4401, "Unauthorized")
    monkeypatch.setattr("bff.graphql.transport.websocket.CONNECTION_INIT_SECONDS", 0.2)
    async with connect(bff, init=False) as ws:
        assert await ws.closed() == (4408, "Connection initialisation timeout")


async def test_a_duplicate_id_closes_with_4409(bff: Bff, upstreams: Upstreams, issuer: TestIssuer) -> None:
    cookie = await bff.session_for(issuer.token())
    upstreams.accounts.state.statuses["o-alice-1"] = "PLACED"
    async with connect(bff, cookie=cookie) as ws:
        await ws.subscribe("dup")
        assert (await ws.next())["type"] == "next"
        await ws.subscribe("dup")
        assert await ws.closed() == (4409, "Subscriber for dup already exists")
    await asyncio.wait_for(bff.resources.streams._empty.wait(), WAIT)


async def test_another_subprotocol_is_4406(bff: Bff) -> None:
    async with connect(bff, init=False, subprotocols=["graphql-ws"]) as ws:
        assert (await ws.closed())[0] == 4406


# documents -------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("payload", "code"),
    [
        ({"query": "subscription { orderStatusChanged(orderId: "}, "GRAPHQL_PARSE_FAILED"),
        ({"query": "{ nope }"}, "GRAPHQL_VALIDATION_FAILED"),
        ({"query": "{" * 5000 + "}" * 5000}, "GRAPHQL_PARSE_FAILED"),
        ({"query": "{ viewer { " + "orders { items { product { id } } } " * 1 + "} }" + " " * 10}, "ok"),
        ({"query": "query A { __typename } query B { __typename }"}, "BAD_REQUEST"),
        ({"query": 42}, "BAD_REQUEST"),
        ({}, "BAD_REQUEST"),
        ({"extensions": {"persistedQuery": {"version": 1, "sha256Hash": "0" * 64}}}, "PERSISTED_QUERY_NOT_FOUND"),
    ],
)
async def test_hostile_or_wrong_documents_are_error_messages(bff: Bff, payload: dict[str, Any], code: str) -> None:
    async with connect(bff) as ws:
        await ws.subscribe("h", payload)
        message = await ws.next()
        if code == "ok":
            assert message["type"] == "next"
            assert await ws.next() == {"id": "h", "type": "complete"}
        else:
            assert message["type"] == "error", message
            assert message["id"] == "h"
            errors = message["payload"]
            assert isinstance(errors, list) and errors
            for error in errors:
                assert error["extensions"]["code"] != "INTERNAL_SERVER_ERROR"
                assert "Traceback" not in error["message"]
            if code is not None:
                assert errors[0]["extensions"]["code"] == code, errors
        # the connection is still fine
        await ws.send({"type": "ping"})
        assert await ws.next() == {"type": "pong"}
    assert len(bff.resources.streams) == 0


async def test_deep_nesting_is_refused_by_the_document_gate(limited: Bff) -> None:
    async with connect(limited) as ws:
        await ws.subscribe("d", {"query": "{ viewer { orders { items { product { id } } } } }"})
        message = await ws.next()
        assert message["type"] == "error", message
        assert message["payload"][0]["extensions"]["code"] == "QUERY_TOO_COMPLEX"
        assert "depth" in message["payload"][0]["message"]


# authentication and the Origin rule ------------------------------------------------------------
async def test_the_session_handle_in_a_header_or_in_connection_init(
    bff: Bff, upstreams: Upstreams, issuer: TestIssuer
) -> None:
    cookie = await bff.session_for(issuer.token())
    handle = bff.resources.crypto.sign(bff.resources.crypto.unsign(cookie), "native")
    query = {"query": "{ viewer { id } }"}
    async with connect(bff, origin=None, headers={"Authorization": f"Session {handle}"}) as ws:
        await ws.subscribe("a", query)
        assert (await ws.next())["payload"] == {"data": {"viewer": {"id": "alice"}}}
    async with connect(bff, origin=None, init={"authorization": f"Session {handle}"}) as ws:
        await ws.subscribe("a", query)
        assert (await ws.next())["payload"] == {"data": {"viewer": {"id": "alice"}}}
    # a handle that names nothing: anonymous, as over HTTP
    async with connect(bff, origin=None, init={"authorization": "Session forged"}) as ws:
        await ws.subscribe("a", query)
        assert (await ws.next())["payload"]["errors"][0]["extensions"]["code"] == "UNAUTHENTICATED"
    async with connect(bff, init=False) as ws:
        await ws.send({"type": "connection_init", "payload": {"authorization": 42}})
        assert (await ws.closed())[0] == 4400


async def test_foreign_origin_and_cookie_without_origin_are_refused_before_the_upgrade(
    bff: Bff, issuer: TestIssuer, caplog: pytest.LogCaptureFixture
) -> None:
    server_log = logging.getLogger("uvicorn.error")  # uvicorn's loggers do not propagate to the root
    server_log.addHandler(caplog.handler)
    cookie = await bff.session_for(issuer.token())
    foreign = await refused(bff, cookie=cookie, origin="https://evil.example")
    assert foreign.response.status_code == 403
    assert (await refused(bff, origin="https://evil.example")).response.status_code == 403
    assert (await refused(bff, cookie=cookie, origin=None)).response.status_code == 403
    # the handle is no ambient credential: no Origin needed, but a foreign one is still refused
    handle = bff.resources.crypto.sign(bff.resources.crypto.unsign(cookie), "native")
    session = {"Authorization": f"Session {handle}"}
    async with connect(bff, cookie=cookie, origin=None, headers=session):
        pass
    assert (await refused(bff, origin="https://evil.example", headers=session)).response.status_code == 403
    assert len(bff.resources.streams) == 0
    # a refusal is no server error: nothing at ERROR (uvicorn logs one for a denial response body)
    server_log.removeHandler(caplog.handler)
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR], caplog.records


async def test_a_cookie_naming_no_session_is_cleared_and_the_connection_anonymous(bff: Bff) -> None:
    url = bff.url.replace("http://", "ws://") + "/graphql"
    async with websockets.connect(
        url,
        subprotocols=[websockets.Subprotocol(PROTOCOL)],
        origin=websockets.Origin(ORIGIN),
        additional_headers={"Cookie": f"{bff.settings.cookie_name}=garbage"},
    ) as raw:
        assert raw.response is not None
        set_cookie = raw.response.headers.get("set-cookie", "")
        assert set_cookie.startswith(f"{bff.settings.cookie_name}=;") and "Max-Age=0" in set_cookie
        ws = Socket(raw)
        await ws.send({"type": "connection_init"})
        assert await ws.next() == {"type": "connection_ack"}
        await ws.subscribe("a", {"query": "{ viewer { id } }"})
        assert (await ws.next())["payload"]["errors"][0]["extensions"]["code"] == "UNAUTHENTICATED"


# the session's life ----------------------------------------------------------------------------
async def test_logout_ends_every_subscription_within_a_second_and_closes_4401(
    bff: Bff, upstreams: Upstreams, issuer: TestIssuer
) -> None:
    cookie = await bff.session_for(issuer.token())
    upstreams.accounts.state.statuses["o-alice-1"] = "PLACED"
    async with connect(bff, cookie=cookie) as ws:
        await ws.subscribe("1")
        await ws.subscribe("2")
        assert {(await ws.next())["id"], (await ws.next())["id"]} == {"1", "2"}
        async with bff.client(cookie) as other:
            assert (await other.post("/auth/logout", headers={"X-CSRF": "1"})).status_code < 400
        started = time.monotonic()
        seen: dict[str, list[dict[str, Any]]] = {"1": [], "2": []}
        for _ in range(4):
            message = await ws.next()
            seen[message["id"]].append(message)
        for messages in seen.values():
            assert messages[0]["type"] == "next"
            assert messages[0]["payload"]["errors"][0]["extensions"]["code"] == "UNAUTHENTICATED"
            assert messages[1]["type"] == "complete"
        assert time.monotonic() - started < 1.0
        assert await ws.closed() == (4401, "Unauthorized")
    assert 'bff_streams_ended_total{reason="session_ended"} 2.0' in await metrics(bff)


async def test_limits_max_duration_and_shutdown(limited: Bff, upstreams: Upstreams, issuer: TestIssuer) -> None:
    cookie = await limited.session_for(issuer.token())
    upstreams.accounts.state.statuses["o-alice-1"] = "PLACED"
    async with connect(limited, cookie=cookie) as ws:
        await ws.subscribe("1")
        assert (await ws.next())["type"] == "next"
        await ws.subscribe("2")
        error = await ws.next()
        assert error["id"] == "2" and error["type"] == "error"
        assert error["payload"][0]["extensions"]["code"] == "TOO_MANY_STREAMS"
        assert "maximum of 1 open streams" in error["payload"][0]["message"]
        # the connection is kept; stream_max_seconds (3) ends the first with complete
        assert await ws.next(timeout=WAIT) == {"id": "1", "type": "complete"}
        await ws.subscribe("3")
        assert (await ws.next())["type"] == "next"
        async with connect(limited) as idle:
            # shutdown: complete for every subscription, then 1001 for every connection
            await limited.resources.streams.shutdown()
            assert await ws.next() == {"id": "3", "type": "complete"}
            assert await ws.closed() == (1001, "Server shutting down")
            assert await idle.closed() == (1001, "Server shutting down")
    text = await metrics(limited)
    assert 'bff_streams_ended_total{reason="max_duration"} 1.0' in text
    assert 'bff_streams_ended_total{reason="shutdown"} 1.0' in text
    assert 'bff_streams_refused_total{limit="per_session"} 1.0' in text


async def test_a_subscribe_once_shutdown_has_begun_is_an_error_with_shutting_down(
    bff: Bff, upstreams: Upstreams, issuer: TestIssuer
) -> None:
    """Between the start of shutdown and the connection's 1001, a new operation is refused with
    ``SHUTTING_DOWN`` (not ``TOO_MANY_STREAMS``: no limit was reached)."""
    cookie = await bff.session_for(issuer.token())
    upstreams.accounts.state.statuses["o-alice-1"] = "PLACED"
    registry = bff.resources.streams
    async with connect(bff, cookie=cookie) as ws:
        registry.closing = True  # what `StreamRegistry.shutdown` does first, before it drains connections
        await ws.subscribe("1")
        error = await ws.next()
        assert error["id"] == "1" and error["type"] == "error", error
        assert error["payload"][0]["extensions"]["code"] == "SHUTTING_DOWN"
        await registry.shutdown()
        assert await ws.closed() == (1001, "Server shutting down")


async def test_server_shutdown_completes_subscriptions_then_closes_1001(
    upstreams: Upstreams, issuer: TestIssuer
) -> None:
    """`bff.serving.Server` (what `bff serve` runs): at shutdown every operation gets ``complete`` and
    every connection 1001, before uvicorn would close what is left with 1012, and the process stops at once."""
    settings = make_settings(upstreams=upstreams.settings())
    app = create_app(settings)
    port = free_port()
    server = Server(uvicorn.Config(app, port=port, log_level="warning", timeout_graceful_shutdown=10))
    server.install_signal_handlers = lambda: None  # type: ignore[method-assign]
    serving = asyncio.create_task(server.serve())
    while not server.started:  # noqa: ASYNC110 - uvicorn exposes a flag, not an event
        await asyncio.sleep(0.01)
    bff = Bff(app, f"http://127.0.0.1:{port}", settings)
    upstreams.accounts.state.statuses["o-alice-1"] = "PLACED"
    cookie = await bff.session_for(issuer.token())
    async with connect(bff, cookie=cookie) as ws, connect(bff) as idle:
        await ws.subscribe("1")
        assert (await ws.next())["type"] == "next"
        started = time.monotonic()
        server.should_exit = True  # what SIGTERM does
        assert await ws.next() == {"id": "1", "type": "complete"}
        assert await ws.closed() == (1001, "Server shutting down")
        assert await idle.closed() == (1001, "Server shutting down")
    await asyncio.wait_for(serving, WAIT)
    assert time.monotonic() - started < 3.0


async def test_http_still_refuses_what_it_refused(bff: Bff, issuer: TestIssuer) -> None:
    """The WebSocket route does not change the HTTP one (CSRF rule, a GET upgrade without WebSocket)."""
    cookie = await bff.session_for(issuer.token())
    async with httpx.AsyncClient(base_url=bff.url, cookies={bff.settings.cookie_name: cookie}) as client:
        form = await client.post("/graphql", content="{}", headers={"Content-Type": "text/plain"})
        assert form.status_code == 403
        assert (await client.get("/graphql", params={"query": "{ viewer { id } }"})).status_code == 403
