"""The authorization directives over the real app and every way a client can send an operation: POST,
GET, persisted documents (APQ), batches, GraphQL over SSE and over WebSocket; users signed in through
the real login of the dev IdP with the scopes it grants them. A denied field is null with its code and
its resolver never runs; a subscription is checked when it starts and at every event."""

from __future__ import annotations

import asyncio
import hashlib
import json
from collections.abc import AsyncIterator
from typing import Any

import pytest
import websockets

from bff.testing import BFFTestClient, RunningBFF, running_bff
from tests.graphql import authz_schema
from tests.graphql.test_subscriptions_sse import SSE, Events

SCHEMA = "tests.graphql.authz_schema:schema"
SCOPES = ("secret:read", "contact:read", "vault", "ticks")
WAIT = 10.0


@pytest.fixture
async def served() -> AsyncIterator[RunningBFF]:
    async with running_bff(SCHEMA, scopes=SCOPES, settings={"batch_max_operations": 4}) as bff:
        yield bff


def codes(body: dict[str, Any]) -> dict[str, str]:
    return {json.dumps(error.get("path")): error["extensions"]["code"] for error in body.get("errors", [])}


async def test_post_get_persisted_and_batched_agree(served: RunningBFF) -> None:
    query = "{ public secret me { name email } }"
    digest = hashlib.sha256(query.encode()).hexdigest()
    apq = {"persistedQuery": {"version": 1, "sha256Hash": digest}}
    async with served.client(user="dora", scopes=[]) as plain, served.client(user="sam", scopes=SCOPES) as scoped:
        for client, expected_secret in ((plain, None), (scoped, "42")):
            authz_schema.calls.clear()
            answers = [
                await client.graphql(query),
                (await client.get("/graphql", params={"query": query}, headers={"X-CSRF": "1"})).json(),
                (await client.post("/graphql", json={"query": query, "extensions": apq})).json(),
                (await client.post("/graphql", json={"extensions": apq})).json(),
                (await client.post("/graphql", json=[{"query": query}, {"query": "{ secret }"}])).json()[0],
            ]
            for body in answers:
                assert body["data"]["public"] == "hello"
                assert body["data"]["secret"] == expected_secret
            if expected_secret is None:
                for body in answers:
                    assert codes(body) == {'["secret"]': "FORBIDDEN", '["me", "email"]': "FORBIDDEN"}
                    assert body["data"]["me"] is None
                assert authz_schema.calls["secret"] == 0 and authz_schema.calls["email"] == 0
            else:
                assert all("errors" not in body for body in answers)
                assert authz_schema.calls["secret"] == 6  # five answers, the batch ran it twice
    async with served.client() as anonymous:
        body = await anonymous.graphql(query)
        assert codes(body) == {'["secret"]': "UNAUTHENTICATED", '["me"]': "UNAUTHENTICATED"}


async def sse(client: BFFTestClient, query: str) -> AsyncIterator[tuple[str, Any]]:
    async with client.stream("POST", "/graphql", json={"query": query}, headers=SSE) as response:
        assert response.status_code == 200
        events = Events(response)
        while True:
            try:
                yield await events.next(WAIT)
            except EOFError:
                return


async def test_a_subscription_is_checked_when_it_starts(served: RunningBFF) -> None:
    async with served.client(user="dora", scopes=[]) as plain:
        authz_schema.calls.clear()
        seen = [event async for event in sse(plain, "subscription { ticks }")]
        assert seen[-1] == ("complete", None)
        assert any(name == "next" and codes(data) == {'["ticks"]': "FORBIDDEN"} for name, data in seen), seen
        assert authz_schema.calls["ticks"] == 0
    async with served.client() as anonymous:
        seen = [event async for event in sse(anonymous, "subscription { ticks }")]
        assert any(name == "next" and "UNAUTHENTICATED" in json.dumps(data) for name, data in seen), seen


async def test_a_scope_lost_at_a_refresh_ends_the_stream(served: RunningBFF) -> None:
    async with served.client(user="sam", scopes=SCOPES) as scoped:
        stream = sse(scoped, "subscription { ticks(every: 0.05) }")
        assert await anext(stream) == ("next", {"data": {"ticks": 0}})
        # what a refresh that grants fewer scopes does to the stored session
        store = served.app.state.resources.store
        sessions = await store.sessions_of("sam")
        assert len(sessions) == 1
        session = sessions[0]
        session.tokens.scope = "openid profile email"
        await store.replace(session)
        rest = [event async for event in stream]
        assert rest[-1] == ("complete", None)
        denied = [data for name, data in rest if name == "next" and "errors" in data]
        assert denied and codes(denied[-1]) == {'["ticks"]': "FORBIDDEN"}


async def test_over_websocket_too(served: RunningBFF) -> None:
    async with served.client(user="dora", scopes=[]) as plain:
        cookie = "; ".join(f"{name}={value}" for name, value in plain.cookies.items())
        async with websockets.connect(
            served.url.replace("http://", "ws://") + "/graphql",
            subprotocols=[websockets.Subprotocol("graphql-transport-ws")],
            origin=websockets.Origin(served.url),
            additional_headers={"Cookie": cookie},
        ) as ws:
            await ws.send(json.dumps({"type": "connection_init"}))
            assert json.loads(await asyncio.wait_for(ws.recv(), WAIT))["type"] == "connection_ack"
            await ws.send(json.dumps({"id": "1", "type": "subscribe", "payload": {"query": "subscription { ticks }"}}))
            messages = []
            while not messages or messages[-1]["type"] not in ("complete", "error"):
                messages.append(json.loads(await asyncio.wait_for(ws.recv(), WAIT)))
            assert "FORBIDDEN" in json.dumps(messages), messages
            await ws.send(json.dumps({"id": "2", "type": "subscribe", "payload": {"query": "{ public secret }"}}))
            answer = json.loads(await asyncio.wait_for(ws.recv(), WAIT))
            assert answer["payload"]["data"] == {"public": "hello", "secret": None}
            assert codes(answer["payload"]) == {'["secret"]': "FORBIDDEN"}
