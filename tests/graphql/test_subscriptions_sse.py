"""GraphQL over SSE on /graphql (graphql-sse, distinct connections) with the memory store."""

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

from bff.app import create_app
from bff.testing import serve
from tests.conftest import Bff, Upstreams, make_settings
from tests.support.tokens import TestIssuer

SUBSCRIBE = {
    "query": "subscription S($id: ID!) { orderStatusChanged(orderId: $id) { orderId status } }",
    "variables": {"id": "o-alice-1"},
}
SSE = {"Accept": "text/event-stream"}
WAIT = 10.0  # generous bound for one event on a loaded 2-core machine


class Events:
    """Reads ``event:``/``data:`` pairs off an open SSE response."""

    def __init__(self, response: httpx.Response) -> None:
        self.response = response
        self.lines = response.aiter_lines()
        self.raw: list[str] = []

    async def next(self, timeout: float = WAIT) -> tuple[str, Any]:
        return await asyncio.wait_for(self._next(), timeout)

    async def _next(self) -> tuple[str, Any]:
        name, data = None, None
        async for line in self.lines:
            self.raw.append(line)
            if line.startswith("event: "):
                name = line.removeprefix("event: ")
            elif line.startswith("data: "):
                text = line.removeprefix("data: ")
                data = json.loads(text) if text else None
            elif line == "" and name is not None:
                return name, data
        raise EOFError("the stream closed")


@contextlib.asynccontextmanager
async def subscribe(
    client: httpx.AsyncClient, body: dict[str, Any] = SUBSCRIBE, **kwargs: Any
) -> AsyncIterator[Events]:
    async with client.stream("POST", "/graphql", json=body, headers={**SSE, **kwargs.pop("headers", {})}) as response:
        assert response.status_code == 200, await response.aread()
        assert response.headers["content-type"].startswith("text/event-stream")
        assert response.headers["cache-control"] == "no-store"
        yield Events(response)


#: every test here runs under plain uvicorn (the response listens for the client going) and under
#: `bff.protocols` as ``bff serve`` runs (the protocol says when the client goes: one task per stream)
SERVERS = {"uvicorn": "auto", "bff-protocols": "bff.protocols:HTTPProtocol"}


@pytest.fixture(params=SERVERS)
def server(request: pytest.FixtureRequest) -> str:
    return SERVERS[request.param]


@pytest.fixture
async def bff(upstreams: Upstreams, server: str) -> AsyncIterator[Bff]:
    settings = make_settings(upstreams=upstreams.settings())
    app = create_app(settings)
    async with serve(app, http=server) as url:
        yield Bff(app, url, settings)


@pytest.fixture
async def limited(upstreams: Upstreams, server: str) -> AsyncIterator[Bff]:
    settings = make_settings(upstreams=upstreams.settings(), streams_per_session=1, stream_heartbeat_seconds=0.2)
    app = create_app(settings)
    async with serve(app, http=server) as url:
        yield Bff(app, url, settings)


async def test_a_stream_delivers_the_status_and_each_change(
    bff: Bff, upstreams: Upstreams, issuer: TestIssuer, server: str
) -> None:
    token = issuer.token()
    cookie = await bff.session_for(token)
    upstreams.accounts.state.statuses["o-alice-1"] = "PLACED"
    async with bff.client(cookie) as client, subscribe(client) as events:
        assert await events.next() == (
            "next",
            {"data": {"orderStatusChanged": {"orderId": "o-alice-1", "status": "PLACED"}}},
        )
        # under bff.protocols the connection's own task writes the results: no writer task beside it
        writers = [task for task in asyncio.all_tasks() if task.get_name() == "bff-stream"]
        assert len(writers) == (0 if server == SERVERS["bff-protocols"] else 1)
        upstreams.accounts.state.statuses["o-alice-1"] = "SHIPPED"
        _name, data = await events.next()
        assert data["data"]["orderStatusChanged"]["status"] == "SHIPPED"
        async with bff.client() as plain:
            metrics = (await plain.get("/metrics")).text
        assert "bff_streams_open 1.0" in metrics
        assert token not in "\n".join(events.raw)
        assert cookie not in "\n".join(events.raw)
    # the client went away: the stream is forgotten
    await asyncio.wait_for(bff.resources.streams._empty.wait(), WAIT)
    assert len(bff.resources.streams) == 0


async def test_a_documents_later_streams_run_on_its_compiled_plan_and_answer_alike(
    bff: Bff, upstreams: Upstreams, issuer: TestIssuer, server: str
) -> None:
    """The first stream of a document caches and validates it (Strawberry's path); the next ones run
    on its compiled plan (`DirectExecution.subscribe`), event for event the same."""
    cookie = await bff.session_for(issuer.token())
    upstreams.accounts.state.statuses["o-alice-1"] = "PLACED"
    compiled = bff.resources.metrics.graphql_compiled.labels("compiled", "")
    # a document no other test sends (the app may be shared): its first stream is this test's
    alias = "laterStreams" if server == "auto" else "laterStreamsAlone"  # the schema's caches are shared
    body = {**SUBSCRIBE, "query": SUBSCRIBE["query"].replace("{ orderStatus", "{ " + alias + ": orderStatus")}
    answers = []
    for _ in range(2):
        before = compiled._value.get()
        async with bff.client(cookie) as client, subscribe(client, body) as events:
            first = await events.next()
            upstreams.accounts.state.statuses["o-alice-1"] = "SHIPPED"
            answers.append([first, await events.next()])
            upstreams.accounts.state.statuses["o-alice-1"] = "PLACED"
        answers[-1].append(compiled._value.get() - before)
    assert answers[0][:2] == answers[1][:2]
    assert answers[0][1] == ("next", {"data": {alias: {"orderId": "o-alice-1", "status": "SHIPPED"}}})
    assert [answer[2] for answer in answers] == [0, 1]


async def test_a_client_gone_before_the_answer_starts_leaves_no_stream(
    bff: Bff, issuer: TestIssuer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The client hangs up while the handler prepares the answer (here: reading the document):
    under bff.protocols the connection was lost before the response asked to hear of it."""
    from bff.graphql.transport.request import DocumentSource

    real = DocumentSource.document
    preparing = asyncio.Event()

    async def slow(self: DocumentSource, operation: Any) -> Any:
        preparing.set()
        await asyncio.sleep(0.3)
        return await real(self, operation)

    monkeypatch.setattr(DocumentSource, "document", slow)
    cookie = await bff.session_for(issuer.token())
    host, port = bff.url.removeprefix("http://").split(":")
    _reader, writer = await asyncio.open_connection(host, int(port))
    body = json.dumps(SUBSCRIBE).encode()
    writer.write(
        b"POST /graphql HTTP/1.1\r\nHost: x\r\nAccept: text/event-stream\r\nContent-Type: application/json\r\n"
        + f"Cookie: {bff.settings.cookie_name}={cookie}\r\nContent-Length: {len(body)}\r\n\r\n".encode()
        + body
    )
    await writer.drain()
    await preparing.wait()
    writer.close()
    await asyncio.sleep(0.5)  # the answer has started (and found its client gone)
    await asyncio.wait_for(bff.resources.streams._empty.wait(), WAIT)
    assert len(bff.resources.streams) == 0


async def test_a_query_over_sse_is_one_next_then_complete(bff: Bff, issuer: TestIssuer) -> None:
    cookie = await bff.session_for(issuer.token())
    async with bff.client(cookie) as client, subscribe(client, {"query": "{ viewer { id } }"}) as events:
        assert await events.next() == ("next", {"data": {"viewer": {"id": "alice"}}})
        assert (await events.next())[0] == "complete"


async def test_the_session_handle_works_too(bff: Bff, upstreams: Upstreams, issuer: TestIssuer) -> None:
    cookie = await bff.session_for(issuer.token())
    handle = bff.resources.crypto.sign(bff.resources.crypto.unsign(cookie), "native")
    upstreams.accounts.state.statuses["o-alice-1"] = "PACKED"
    async with bff.client() as client, subscribe(client, headers={"Authorization": f"Session {handle}"}) as events:
        _name, data = await events.next()
        assert data["data"]["orderStatusChanged"]["status"] == "PACKED"


async def test_logout_ends_the_stream_within_a_second(bff: Bff, upstreams: Upstreams, issuer: TestIssuer) -> None:
    cookie = await bff.session_for(issuer.token())
    upstreams.accounts.state.statuses["o-alice-1"] = "PLACED"
    async with bff.client(cookie) as client, subscribe(client) as events:
        await events.next()
        async with bff.client(cookie) as other:
            assert (await other.post("/auth/logout", headers={"X-CSRF": "1"})).status_code < 400
        started = time.monotonic()
        name, data = await events.next()
        assert name == "next"
        assert data["errors"][0]["extensions"]["code"] == "UNAUTHENTICATED"
        assert (await events.next())[0] == "complete"
        assert time.monotonic() - started < 1.0
    async with bff.client() as plain:
        metrics = (await plain.get("/metrics")).text
    assert 'bff_streams_ended_total{reason="session_ended"} 1.0' in metrics


async def test_no_session_is_an_unauthenticated_event(bff: Bff) -> None:
    async with bff.client() as client, subscribe(client) as events:
        _name, data = await events.next()
        assert data["errors"][0]["extensions"]["code"] == "UNAUTHENTICATED"
        assert (await events.next())[0] == "complete"


async def test_streams_per_session_limit_is_a_clear_error(
    limited: Bff, upstreams: Upstreams, issuer: TestIssuer
) -> None:
    cookie = await limited.session_for(issuer.token())
    upstreams.accounts.state.statuses["o-alice-1"] = "PLACED"
    async with limited.client(cookie) as client, subscribe(client) as events:
        await events.next()
        second = await client.post("/graphql", json=SUBSCRIBE, headers=SSE)
        assert second.status_code == 429
        error = second.json()["errors"][0]
        assert error["extensions"]["code"] == "TOO_MANY_STREAMS"
        assert "maximum of 1 open streams" in error["message"]
        # heartbeats are comment lines, between events
        await asyncio.sleep(0.5)
        upstreams.accounts.state.statuses["o-alice-1"] = "SHIPPED"
        await events.next()
        assert events.raw.count(": keep-alive") >= 2, events.raw


async def test_csrf_and_foreign_origin_are_refused(bff: Bff, issuer: TestIssuer) -> None:
    cookie = await bff.session_for(issuer.token())
    async with bff.client(cookie) as client:
        form = await client.post(
            "/graphql",
            content=json.dumps(SUBSCRIBE),
            headers={**SSE, "Content-Type": "text/plain"},
        )
        assert form.status_code == 403
        foreign = await client.post("/graphql", json=SUBSCRIBE, headers={**SSE, "Origin": "https://evil.example"})
        assert foreign.status_code == 403
    assert len(bff.resources.streams) == 0


@pytest.mark.parametrize(
    ("query", "code"),
    [
        ("subscription { orderStatusChanged(orderId: ", "GRAPHQL_PARSE_FAILED"),
        ("{" * 5000 + "}" * 5000, "GRAPHQL_PARSE_FAILED"),
        ("query A { __typename } query B { __typename }", "BAD_REQUEST"),
        ("subscription { nope }", "GRAPHQL_VALIDATION_FAILED"),
    ],
)
async def test_a_refused_document_is_an_error_event_then_complete(
    bff: Bff, query: str, code: str, caplog: pytest.LogCaptureFixture
) -> None:
    """A client's mistake: an error event, and a one-line info log, never an error with a traceback."""
    caplog.set_level(logging.INFO, logger="bff")
    async with bff.client() as client, subscribe(client, {"query": query}) as events:
        name, data = await events.next()
        assert name == "next"
        assert data["errors"][0]["extensions"]["code"] == code, data
        assert (await events.next())[0] == "complete"
    assert len(bff.resources.streams) == 0
    mistakes = [
        r
        for r in caplog.records
        if r.name.startswith("bff")
        and (r.levelno >= logging.WARNING or r.exc_info)
        and r.funcName != "_log_startup_checks"  # the app's own start-up report, which may land meanwhile
    ]
    assert mistakes == [], [r.getMessage() for r in mistakes]
