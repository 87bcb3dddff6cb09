"""Stream limits: a stream's maximum lifetime ends it with ``complete``; the per-process limit is a
clear 429 JSON error (the per-session one: test_subscriptions_sse)."""

from __future__ import annotations

import contextlib
import time
from collections.abc import AsyncIterator
from typing import Any

import pytest

from bff.app import create_app
from bff.testing import serve
from tests.conftest import Bff, Upstreams, make_settings
from tests.graphql.test_subscriptions_sse import SSE, SUBSCRIBE, subscribe
from tests.support.tokens import TestIssuer


@contextlib.asynccontextmanager
async def _bff(upstreams: Upstreams, **settings: Any) -> AsyncIterator[Bff]:
    values = make_settings(upstreams=upstreams.settings(), **settings)
    app = create_app(values)
    async with serve(app) as url:
        yield Bff(app, url, values)


@pytest.fixture
async def short(upstreams: Upstreams) -> AsyncIterator[Bff]:
    async with _bff(upstreams, stream_max_seconds=1.0, stream_heartbeat_seconds=0.2) as bff:
        yield bff


@pytest.fixture
async def two_per_process(upstreams: Upstreams) -> AsyncIterator[Bff]:
    async with _bff(upstreams, streams_per_process=2) as bff:
        yield bff


async def test_the_maximum_lifetime_ends_a_stream_with_complete(
    short: Bff, upstreams: Upstreams, issuer: TestIssuer
) -> None:
    upstreams.accounts.state.statuses["o-alice-1"] = "PLACED"
    cookie = await short.session_for(issuer.token())
    async with short.client(cookie) as client:
        started = time.monotonic()
        async with subscribe(client) as events:
            assert (await events.next())[0] == "next"
            assert await events.next() == ("complete", None)
            elapsed = time.monotonic() - started
        async with short.client() as plain:
            metrics = (await plain.get("/metrics")).text
    assert 0.9 <= elapsed < 2.0
    assert 'bff_streams_ended_total{reason="max_duration"} 1.0' in metrics
    assert len(short.resources.streams) == 0


async def test_the_per_process_limit_is_a_clear_429(
    two_per_process: Bff, upstreams: Upstreams, issuer: TestIssuer
) -> None:
    """Two sessions hold the process's two streams: a third session's stream is refused."""
    upstreams.accounts.state.statuses["o-alice-1"] = "PLACED"
    one, two, three = [await two_per_process.session_for(issuer.token()) for _ in range(3)]
    async with (
        two_per_process.client(one) as a,
        two_per_process.client(two) as b,
        two_per_process.client(three) as c,
        subscribe(a) as first,
        subscribe(b) as second,
    ):
        await first.next()
        await second.next()
        refused = await c.post("/graphql", json=SUBSCRIBE, headers=SSE)
        assert refused.status_code == 429
        assert refused.headers["content-type"].startswith("application/json")
        error = refused.json()["errors"][0]
        assert error["extensions"]["code"] == "TOO_MANY_STREAMS"
        assert "maximum of 2 open streams" in error["message"]
        async with two_per_process.client() as plain:
            metrics = (await plain.get("/metrics")).text
        assert 'bff_streams_refused_total{limit="per_process"} 1.0' in metrics


@pytest.mark.parametrize("transport", ["websocket", "sse"])
async def test_without_the_servers_write_deadline_a_stalled_client_still_frees_its_slots(transport: str) -> None:
    """Under a server that lacks `bff.protocols` (plain uvicorn, as `bff.testing.serve` runs it), a
    client that reads nothing still loses its streams once a write has stalled for twice
    BFF_WRITE_TIMEOUT_SECONDS: its slots are free for others (issue 24)."""
    import asyncio
    import json

    from tests.support.hostile_schema import schema
    from tests.support.rawclients import RawWebSocket, subscribe

    values = make_settings(write_timeout_seconds=1.0)
    app = create_app(values, schema=schema)
    async with serve(app) as url:
        registry = app.state.resources.streams
        port = int(url.rsplit(":", 1)[1])
        if transport == "websocket":
            client = await asyncio.to_thread(RawWebSocket.connect, port, receive_buffer=4096)
            client.send_text(json.dumps({"type": "connection_init"}))
            for i in range(8):
                client.send_text(subscribe(f"f{i}", "subscription { forever }"))
                client.send_text(subscribe(f"q{i}", "{ blob(size: 2000000) }"))
            sock = client.sock
        else:
            import socket

            body = b'{"query": "subscription { flood(size: 200000, interval: 0.001) }"}'
            sock = socket.socket()
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
            sock.setblocking(False)
            await asyncio.get_running_loop().sock_connect(sock, ("127.0.0.1", port))
            head = (
                f"POST /graphql HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nContent-Type: application/json\r\n"
                f"Accept: text/event-stream\r\nContent-Length: {len(body)}\r\n\r\n"
            )
            await asyncio.get_running_loop().sock_sendall(sock, head.encode() + body)
        try:
            deadline = time.monotonic() + 5
            while len(registry) == 0 and time.monotonic() < deadline:  # noqa: ASYNC110 (polling another party's state)
                await asyncio.sleep(0.05)
            assert len(registry) > 0
            started = time.monotonic()
            while len(registry) > 0 and time.monotonic() - started < 15:  # noqa: ASYNC110
                await asyncio.sleep(0.1)
            assert len(registry) == 0, f"{len(registry)} streams still held"
            assert time.monotonic() - started < 10
        finally:
            sock.close()
