"""Apollo's multipart HTTP subscriptions on /graphql (what Apollo Client's HttpLink speaks): the same
stream loop as SSE and WebSocket, framed as multipart/mixed parts of {"payload": ...}."""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import AsyncIterator
from typing import Any

import httpx

from tests.conftest import Bff, Upstreams
from tests.graphql.test_subscriptions_sse import SUBSCRIBE, WAIT
from tests.support.tokens import TestIssuer

#: the Accept header Apollo Client sends for a subscription
MULTIPART = {"Accept": 'multipart/mixed;boundary="graphql";subscriptionSpec=1.0,application/json'}


class Parts:
    """Reads the JSON parts off an open multipart/mixed answer with boundary "graphql": an opening
    "--graphql", then parts "\\r\\n<headers>\\r\\n\\r\\n<json>\\r\\n--graphql", then "--" closes it."""

    def __init__(self, response: httpx.Response) -> None:
        self.chunks = response.aiter_text()
        self.buffer = ""
        self.opened = False

    async def _more(self) -> None:
        self.buffer += await anext(self.chunks)
        if not self.opened and self.buffer.startswith("--graphql"):
            self.buffer, self.opened = self.buffer.removeprefix("--graphql"), True

    async def next(self, timeout: float = WAIT) -> Any:
        return await asyncio.wait_for(self._next(), timeout)

    async def _next(self) -> Any:
        while True:
            if self.opened and self.buffer.startswith("--"):
                raise EOFError("the closing boundary")
            head, sep, rest = self.buffer.partition("\r\n\r\n")
            if self.opened and sep and "\r\n--graphql" in rest:
                body, _, self.buffer = rest.partition("\r\n--graphql")
                assert "content-type: application/json" in head.lower()
                return json.loads(body)
            await self._more()

    async def closed(self, timeout: float = WAIT) -> bool:
        """Whether the closing boundary comes next (and nothing else)."""
        try:
            await self.next(timeout)
        except EOFError:
            return True
        return False


@contextlib.asynccontextmanager
async def subscribe(client: httpx.AsyncClient, body: dict[str, Any] = SUBSCRIBE) -> AsyncIterator[Parts]:
    async with client.stream("POST", "/graphql", json=body, headers=MULTIPART) as response:
        assert response.status_code == 200, await response.aread()
        assert response.headers["content-type"].startswith("multipart/mixed")
        assert 'boundary="graphql"' in response.headers["content-type"]
        assert response.headers["cache-control"] == "no-store"
        yield Parts(response)


async def _payload(parts: Parts) -> Any:
    """The next part that is not a heartbeat ({})."""
    while True:
        part = await parts.next()
        if part != {}:
            return part


async def test_a_subscription_delivers_the_status_and_each_change(
    bff: Bff, upstreams: Upstreams, issuer: TestIssuer
) -> None:
    cookie = await bff.session_for(issuer.token())
    upstreams.accounts.state.statuses["o-alice-1"] = "PLACED"
    async with bff.client(cookie) as client, subscribe(client) as parts:
        assert await parts.next() == {}  # a heartbeat at once: the subscription is live
        first = await _payload(parts)
        assert first == {"payload": {"data": {"orderStatusChanged": {"orderId": "o-alice-1", "status": "PLACED"}}}}
        upstreams.accounts.state.statuses["o-alice-1"] = "SHIPPED"
        second = await _payload(parts)
        assert second["payload"]["data"]["orderStatusChanged"]["status"] == "SHIPPED"
    await asyncio.wait_for(bff.resources.streams._empty.wait(), WAIT)


async def test_a_query_is_one_payload_then_the_closing_boundary(bff: Bff, issuer: TestIssuer) -> None:
    cookie = await bff.session_for(issuer.token())
    async with bff.client(cookie) as client, subscribe(client, {"query": "{ viewer { id } }"}) as parts:
        assert await _payload(parts) == {"payload": {"data": {"viewer": {"id": "alice"}}}}
        assert await parts.closed()


async def test_logout_ends_it_unauthenticated_within_a_second(
    bff: Bff, upstreams: Upstreams, issuer: TestIssuer
) -> None:
    cookie = await bff.session_for(issuer.token())
    upstreams.accounts.state.statuses["o-alice-1"] = "PLACED"
    async with bff.client(cookie) as client, subscribe(client) as parts:
        await _payload(parts)
        async with bff.client(cookie) as other:
            assert (await other.post("/auth/logout", headers={"X-CSRF": "1"})).status_code < 400
        started = time.monotonic()
        ended = await _payload(parts)
        assert ended["payload"]["errors"][0]["extensions"]["code"] == "UNAUTHENTICATED"
        assert time.monotonic() - started < 1.0
        assert await parts.closed()


async def test_a_refused_document_is_an_errors_payload(bff: Bff) -> None:
    async with bff.client() as client, subscribe(client, {"query": "subscription { nope }"}) as parts:
        refused = await _payload(parts)
        assert refused["payload"]["errors"][0]["extensions"]["code"] == "GRAPHQL_VALIDATION_FAILED"
        assert await parts.closed()


async def test_csrf_rule_applies(bff: Bff, issuer: TestIssuer) -> None:
    cookie = await bff.session_for(issuer.token())
    async with bff.client(cookie) as client:
        form = await client.post(
            "/graphql", content=json.dumps(SUBSCRIBE), headers={**MULTIPART, "Content-Type": "text/plain"}
        )
        assert form.status_code == 403
    assert len(bff.resources.streams) == 0
