"""What each event of a subscription is: a request of its own (fresh context), and what ends one
for good (an upstream refusing the stream itself); a WebSocket operation cancelled before it ran
leaves nothing registered."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from typing import Any

import strawberry
import websockets
from strawberry.types import Info

from bff import Context, build_schema
from bff.app import create_app
from bff.testing import serve
from tests.conftest import Bff, Upstreams, make_settings
from tests.graphql.test_subscriptions_sse import SUBSCRIBE, subscribe
from tests.support.tokens import TestIssuer


@strawberry.type
class Tick:
    n: int

    @strawberry.field
    async def me(self, info: Info[Context, None]) -> str:
        body = await info.context.rest("accounts").get_json("/me")
        return str(body["name"])


@strawberry.type
class Query:
    hello: str = "hello"


@strawberry.type
class Subscription:
    @strawberry.subscription
    async def ticks(self, info: Info[Context, None]) -> AsyncIterator[Tick]:
        for n in range(4):
            yield Tick(n=n)
            await asyncio.sleep(0.6)


TICKS = build_schema(query=Query, subscription=Subscription)


async def test_each_event_is_a_request_of_its_own(upstreams: Upstreams, issuer: TestIssuer) -> None:
    """No answer cached from an earlier event, and the request deadline starts again per event
    (before, the fourth event's upstream call came after the stream's first deadline)."""
    settings = make_settings(upstreams=upstreams.settings(), request_timeout_seconds=1.0)
    app = create_app(settings, schema=TICKS)
    async with serve(app) as url:
        bff = Bff(app, url, settings)
        cookie = await bff.session_for(issuer.token())
        async with (
            bff.client(cookie) as client,
            subscribe(client, {"query": "subscription { ticks { n me } }"}) as events,
        ):
            received = [await events.next() for _ in range(4)]
    assert [data for _, data in received] == [{"data": {"ticks": {"n": n, "me": "Alice Example"}}} for n in range(4)]
    assert upstreams.accounts.state.stats.calls["GET /me"] == 4


async def test_an_events_deadline_starts_with_the_event_not_with_the_wait_for_it(
    upstreams: Upstreams, issuer: TestIssuer
) -> None:
    """Events further apart than the request timeout: each event's upstream calls get the whole
    timeout (before, the deadline started when the stream began waiting for the event, and an event
    that came later than the timeout failed its upstream calls at once), on the compiled path (the
    second stream of the document) as on Strawberry's."""
    for received in await _ticks_twice(upstreams, issuer, TICKS, 3):
        assert received == [{"data": {"ticks": {"n": n, "me": "Alice Example"}}} for n in range(3)]


async def _ticks_twice(upstreams: Upstreams, issuer: TestIssuer, schema: Any, count: int) -> list[list[Any]]:
    """``count`` events of ``subscription { ticks { n me } }``, twice: Strawberry's path (the first
    stream of the document), then the compiled one; the request timeout is 0.4 s."""
    settings = make_settings(upstreams=upstreams.settings(), request_timeout_seconds=0.4)
    app = create_app(settings, schema=schema)
    rounds = []
    async with serve(app) as url:
        bff = Bff(app, url, settings)
        cookie = await bff.session_for(issuer.token())
        for _ in range(2):
            async with (
                bff.client(cookie) as client,
                subscribe(client, {"query": "subscription { ticks { n me } }"}) as events,
            ):
                rounds.append([(await events.next())[1] for _ in range(count)])
    return rounds


@strawberry.type
class TalkingSource:
    @strawberry.subscription
    async def ticks(self, info: Info[Context, None]) -> AsyncIterator[Tick]:
        # the source calls the upstream itself first (as Context.events opens its stream), then waits
        await info.context.rest("accounts").get_json("/me", {"from": "the source"})  # not the fields' GET
        for n in range(2):
            await asyncio.sleep(0.6)
            yield Tick(n=n)


async def test_the_first_events_deadline_starts_with_it_after_the_source_called_an_upstream(
    upstreams: Upstreams, issuer: TestIssuer
) -> None:
    """The source's own upstream call must not start the deadline of the event it yields later
    (the compiled path: the document's second stream; the first, Strawberry's, is the warm-up)."""
    schema = build_schema(query=Query, subscription=TalkingSource)
    _, compiled = await _ticks_twice(upstreams, issuer, schema, 2)
    assert compiled == [{"data": {"ticks": {"n": n, "me": "Alice Example"}}} for n in range(2)]


async def test_an_upstream_refusing_the_stream_ends_the_subscription(bff: Bff, issuer: TestIssuer) -> None:
    """Someone else's order: the accounts service answers 404, which reconnecting cannot change."""
    cookie = await bff.session_for(issuer.token())
    body = {**SUBSCRIBE, "variables": {"id": "o-bob-1"}}
    async with bff.client(cookie) as client, subscribe(client, body) as events:
        name, data = await events.next()
        assert name == "next"
        assert data["errors"][0]["extensions"]["code"] == "UPSTREAM_ERROR"
        assert (await events.next())[0] == "complete"


async def test_subscribe_and_complete_in_one_read_leave_no_stream(bff: Bff, issuer: TestIssuer) -> None:
    cookie = await bff.session_for(issuer.token())
    headers = {"Origin": bff.settings.public_origin, "Cookie": f"{bff.settings.cookie_name}={cookie}"}
    url = bff.url.replace("http://", "ws://") + "/graphql"
    for _ in range(3):
        async with websockets.connect(
            url, subprotocols=[websockets.Subprotocol("graphql-transport-ws")], additional_headers=headers
        ) as ws:
            await ws.send(json.dumps({"type": "connection_init"}))
            assert json.loads(await ws.recv())["type"] == "connection_ack"
            # both frames in one write: the server reads them before the operation's task ever runs
            ws.protocol.send_text(json.dumps({"id": "1", "type": "subscribe", "payload": SUBSCRIBE}).encode())
            ws.protocol.send_text(json.dumps({"id": "1", "type": "complete"}).encode())
            ws.send_data()
            await asyncio.sleep(0.2)
    await asyncio.wait_for(bff.resources.streams._empty.wait(), 5)
    assert len(bff.resources.streams) == 0
