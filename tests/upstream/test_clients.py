"""Upstream clients on failure shapes produced with httpx's MockTransport (the test seam)."""

from __future__ import annotations

import asyncio
import time

import httpx
import pytest

from bff.errors import UpstreamError, UpstreamTimeout, UpstreamUnauthorized
from bff.upstream import GraphQLClient, RejectionCooldown, RestClient
from bff.upstream.base import circuit_breakers


class StaticTokens:
    def __init__(self, token: str = "t-1") -> None:
        self.token = token
        self.refreshes = 0

    async def access_token(self) -> str:
        return self.token

    async def refreshed_access_token(self, rejected: str) -> str:
        self.refreshes += 1
        self.token = f"t-{self.refreshes + 1}"
        return self.token


def _client(handler: object, **options: object) -> RestClient:
    http = httpx.AsyncClient(transport=httpx.MockTransport(handler), base_url="http://accounts", timeout=5)  # type: ignore[arg-type]
    return RestClient("accounts", http, StaticTokens(), **options)  # type: ignore[arg-type]


async def test_read_timeout_maps_to_upstream_timeout() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        raise httpx.ReadTimeout("slow", request=request)

    with pytest.raises(UpstreamTimeout) as exc:
        await _client(handler).get_json("/me")
    assert exc.value.upstream == "accounts"


async def test_connect_errors_are_retried_once_for_gets_only() -> None:
    calls: list[str] = []

    def handler(request: httpx.Request) -> httpx.Response:
        calls.append(request.method)
        if len(calls) == 1:
            raise httpx.ConnectError("refused", request=request)
        return httpx.Response(200, json={"ok": True})

    assert await _client(handler).get_json("/me") == {"ok": True}
    assert calls == ["GET", "GET"]

    calls.clear()
    with pytest.raises(UpstreamError):
        await _client(handler).post_json("/orders", {"x": 1})
    assert calls == ["POST"]


async def test_bearer_token_and_one_refresh_on_401() -> None:
    seen: list[str] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request.headers["authorization"])
        return httpx.Response(401) if len(seen) == 1 else httpx.Response(200, json={"id": "alice"})

    client = _client(handler)
    assert await client.get_json("/me") == {"id": "alice"}
    assert seen == ["Bearer t-1", "Bearer t-2"]

    always = _client(lambda request: httpx.Response(401))
    with pytest.raises(UpstreamUnauthorized) as refused:
        await always.get_json("/me")
    assert refused.value.code == "UPSTREAM_UNAUTHORIZED"


async def test_an_upstream_that_refuses_fresh_tokens_stops_forcing_refreshes() -> None:
    """A misconfigured upstream (401 to every token) costs one forced refresh per session and
    cooldown, not one per request: no refresh storm at the IdP, and the session is kept."""
    calls: list[str] = []

    def handler(request: httpx.Request) -> httpx.Response:
        calls.append(request.headers["authorization"])
        return httpx.Response(401)

    cooldown = RejectionCooldown(30)
    tokens = StaticTokens()
    for _ in range(5):
        client = RestClient(
            "accounts",
            httpx.AsyncClient(transport=httpx.MockTransport(handler), base_url="http://accounts"),
            tokens,
            rejections=cooldown,
            principal="session-a",
        )
        with pytest.raises(UpstreamUnauthorized):
            await client.get_json("/me")
    assert tokens.refreshes == 1
    assert len(calls) == 2 + 4  # the first request: stale + fresh token; the others: one call each
    assert not cooldown.cooling("accounts", "session-b")
    assert not cooldown.cooling("catalog", "session-a")


async def test_circuit_breaker_fails_fast_then_probes() -> None:
    calls = 0
    healthy = False

    def handler(request: httpx.Request) -> httpx.Response:
        nonlocal calls
        calls += 1
        return httpx.Response(200, json={}) if healthy else httpx.Response(503)

    breakers = circuit_breakers(threshold=2, cooldown=0.3)
    for _ in range(2):
        with pytest.raises(UpstreamError):
            await _client(handler, breakers=breakers).get_json("/me")
    assert calls == 2
    with pytest.raises(UpstreamError, match="not calling it"):
        await _client(handler, breakers=breakers).get_json("/me")
    assert calls == 2  # failed fast, the upstream saw nothing
    healthy = True
    await asyncio.sleep(0.35)
    assert await _client(handler, breakers=breakers).get_json("/me") == {}
    assert await _client(handler, breakers=breakers).get_json("/me") == {}
    assert calls == 4


async def test_client_errors_do_not_open_the_breaker() -> None:
    breakers = circuit_breakers(threshold=1, cooldown=30)
    for _ in range(3):
        with pytest.raises(UpstreamError) as exc:
            await _client(lambda request: httpx.Response(404), breakers=breakers).get_json("/x")
        assert exc.value.status == 404


async def test_request_deadline_bounds_the_call() -> None:
    async def slow(request: httpx.Request) -> httpx.Response:
        await asyncio.sleep(float(request.extensions["timeout"]["read"]) + 0.5)
        return httpx.Response(200, json={})

    def never(request: httpx.Request) -> httpx.Response:
        raise AssertionError("called after the deadline")

    with pytest.raises(UpstreamTimeout):
        await _client(never, deadline=time.monotonic() - 1).get_json("/me")
    client = _client(slow, deadline=time.monotonic() + 0.2)
    bound = client._timeout()
    assert bound is not None and 0 < bound <= 0.2


async def test_graphql_errors_and_shapes() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        body = request.read()
        if b"boom" in body:
            return httpx.Response(200, json={"errors": [{"message": "secret db name"}], "data": None})
        if b"list" in body:
            return httpx.Response(200, json=[1, 2])
        return httpx.Response(200, json={"data": {"ok": 1}})

    http = httpx.AsyncClient(transport=httpx.MockTransport(handler))
    client = GraphQLClient("catalog", http, StaticTokens(), endpoint="http://catalog/graphql")
    assert await client.execute("{ ok }") == {"ok": 1}
    with pytest.raises(UpstreamError) as exc:
        await client.execute("{ boom }")
    assert "secret" not in str(exc.value)
    with pytest.raises(UpstreamError):
        await client.execute("{ list }")


async def test_identical_gets_of_a_request_are_sent_once_and_survive_a_cancelled_sender() -> None:
    calls: list[str] = []
    release = asyncio.Event()

    async def handler(request: httpx.Request) -> httpx.Response:
        calls.append(str(request.url.path))
        await release.wait()
        if request.url.path == "/broken":
            return httpx.Response(502)
        return httpx.Response(200, json={"n": len(calls)})

    client = _client(handler)
    # two identical GETs at once: one call, one answer for both
    first = asyncio.ensure_future(client.get_json("/me"))
    second = asyncio.ensure_future(client.get_json("/me"))
    await asyncio.sleep(0.05)
    release.set()
    assert await first == await second == {"n": 1}
    assert await client.get_json("/me") == {"n": 1}  # later in the same request: the same answer
    assert calls == ["/me"]

    # the caller that sends it is cancelled: a caller still waiting sends it itself
    release.clear()
    sender = asyncio.ensure_future(client.get_json("/orders"))
    waiter = asyncio.ensure_future(client.get_json("/orders"))
    await asyncio.sleep(0.05)
    sender.cancel()
    await asyncio.sleep(0.05)
    release.set()
    assert await waiter == {"n": 3}
    assert sender.cancelled()
    assert calls == ["/me", "/orders", "/orders"]

    # a waiter cancelled: the sender and the others are untouched
    release.clear()
    sender = asyncio.ensure_future(client.get_json("/items"))
    gone = asyncio.ensure_future(client.get_json("/items"))
    stays = asyncio.ensure_future(client.get_json("/items"))
    await asyncio.sleep(0.05)
    gone.cancel()
    release.set()
    assert await sender == await stays == {"n": 4}
    assert gone.cancelled()

    # a failure is shared as well, and sent once
    failing = [asyncio.ensure_future(client.get_json("/broken")) for _ in range(3)]
    outcomes = await asyncio.gather(*failing, return_exceptions=True)
    assert all(isinstance(outcome, UpstreamError) and outcome.status == 502 for outcome in outcomes)
    assert calls.count("/broken") == 1
