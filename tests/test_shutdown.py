"""Graceful shutdown with open streams: on SIGTERM every subscriber reads ``event: complete`` (not a
reset), and the process exits at once, not after uvicorn's graceful timeout. Real `bff serve`, `bff demo`
and plain ``uvicorn --factory bff.app:app_from_env`` processes; the schema below is served with
``--schema tests.test_shutdown:schema`` (``BFF_SCHEMA`` under uvicorn)."""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterator
from html import unescape

import httpx
import pytest
import strawberry
import uvicorn
import websockets

from bff import build_schema, serving
from bff.testing import free_port
from tests.conftest import Bff, Upstreams
from tests.graphql.test_subscriptions_sse import SSE, SUBSCRIBE, Events, subscribe
from tests.graphql.test_subscriptions_ws import PROTOCOL, Socket
from tests.support.servers import RedisServer
from tests.support.tokens import TestIssuer

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TICKS = {"query": "subscription { ticks }"}
#: `bff serve` waits up to 10 s for connections, `bff demo` 5 s: a reset stream would take that long
QUICK = 3.0


@strawberry.type
class Query:
    ok: bool = True


@strawberry.type
class Subscription:
    @strawberry.subscription
    async def ticks(self) -> AsyncIterator[int]:
        n = 0
        while True:
            yield n
            n += 1
            await asyncio.sleep(0.2)


schema = build_schema(query=Query, subscription=Subscription)


@contextlib.contextmanager
def bff_process(command: str, *args: str, **env: str) -> Iterator[tuple[subprocess.Popen[bytes], str]]:
    """``bff <command> --port <free port> <args>``, started, with ``env`` on top of a clean one."""
    with server_process(["bff", command], *args, **env) as running:
        yield running


@contextlib.contextmanager
def server_process(module: list[str], *args: str, **env: str) -> Iterator[tuple[subprocess.Popen[bytes], str]]:
    """``python -m <module> --port <free port> <args>``, once its /healthz answers 200."""
    command = " ".join(module)
    port = free_port()
    clean = {k: v for k, v in os.environ.items() if not k.startswith("BFF_")}
    proc = subprocess.Popen(
        [sys.executable, "-m", *module, "--port", str(port), *args],
        cwd=ROOT,
        env={**clean, "BFF_COOKIE_SECURE": "false", "BFF_PUBLIC_URL": f"http://127.0.0.1:{port}", **env},
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while True:
            if proc.poll() is not None:
                raise AssertionError(f"{command} exited: {proc.stdout.read().decode()[-2000:]}")  # type: ignore[union-attr]
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(f"{url}/healthz", timeout=1).status_code == 200:
                    break
            assert time.monotonic() < deadline, f"{command} did not start"
            time.sleep(0.1)
        yield proc, url
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait(10)
        assert proc.stdout is not None
        proc.stdout.close()


async def _exited(proc: subprocess.Popen[bytes], within: float) -> float:
    started = time.monotonic()
    while proc.poll() is None:
        assert time.monotonic() - started < within, "the server did not exit in time"
        await asyncio.sleep(0.05)
    return time.monotonic() - started


async def _ends_with_complete(events: Events) -> None:
    """Reads up to ``complete``, within `QUICK` (ticks keep coming until the stream ends); then the
    connection closes cleanly (no half-read chunk)."""
    until = time.monotonic() + QUICK
    while True:
        name, _data = await events.next(timeout=QUICK)
        if name == "complete":
            break
        assert name == "next"
        assert time.monotonic() < until, "no complete in time"
    with pytest.raises(EOFError):
        await events.next(timeout=QUICK)


async def test_sigterm_completes_an_open_stream_and_exits_at_once() -> None:
    with bff_process("serve", "--schema", "tests.test_shutdown:schema") as (proc, url):
        async with httpx.AsyncClient(base_url=url, timeout=30) as client, subscribe(client, TICKS) as events:
            assert await events.next() == ("next", {"data": {"ticks": 0}})
            started = time.monotonic()
            proc.send_signal(signal.SIGTERM)
            await _ends_with_complete(events)
            assert time.monotonic() - started < QUICK
        await _exited(proc, QUICK)
        assert proc.stdout is not None
        # once: `serving.Server` ends the streams, the lifespan's signal wrapper stays out of it
        assert proc.stdout.read().count(b"ended 1 open stream(s) for shutdown") == 1


async def test_sigterm_completes_the_streams_of_every_worker(redis_server: RedisServer) -> None:
    with bff_process(
        "serve",
        "--workers",
        "2",
        "--schema",
        "tests.test_shutdown:schema",
        BFF_SESSION_STORE=redis_server.url,
        BFF_SESSION_SECRET="shutdown-test-secret",
    ) as (proc, url):
        async with contextlib.AsyncExitStack() as stack:
            streams = []
            for _ in range(6):  # one connection each: the kernel spreads them over both workers
                client = await stack.enter_async_context(httpx.AsyncClient(base_url=url, timeout=30))
                streams.append(await stack.enter_async_context(subscribe(client, TICKS)))
            for events in streams:
                assert (await events.next())[0] == "next"
            proc.send_signal(signal.SIGTERM)
            await asyncio.gather(*(_ends_with_complete(events) for events in streams))
        await _exited(proc, QUICK + 2)  # the supervisor joins its workers
        assert proc.stdout is not None
        # each worker that held streams says so (the kernel may have given all six to one)
        assert proc.stdout.read().count(b"open stream(s) for shutdown") >= 1


@contextlib.contextmanager
def plain_uvicorn() -> Iterator[tuple[subprocess.Popen[bytes], str]]:
    """``uvicorn --factory bff.app:app_from_env``: uvicorn's own server, not `serving.Server`."""
    with server_process(
        ["uvicorn", "--factory", "bff.app:app_from_env"],
        "--host",
        "127.0.0.1",
        BFF_SCHEMA="tests.test_shutdown:schema",
    ) as running:
        yield running


async def test_plain_uvicorn_completes_an_open_stream_on_sigterm() -> None:
    """The lifespan wraps uvicorn's signal handlers: the stream ends with ``complete`` before
    uvicorn waits for connections (which would have waited forever: no graceful timeout is set)."""
    with plain_uvicorn() as (proc, url):
        async with httpx.AsyncClient(base_url=url, timeout=30) as client, subscribe(client, TICKS) as events:
            assert await events.next() == ("next", {"data": {"ticks": 0}})
            started = time.monotonic()
            proc.send_signal(signal.SIGTERM)
            await _ends_with_complete(events)
            assert time.monotonic() - started < QUICK
        await _exited(proc, QUICK)
        assert proc.stdout is not None
        assert b"ended 1 open stream(s) for shutdown" in proc.stdout.read()


async def test_plain_uvicorn_completes_websocket_operations_then_closes_1001_on_sigterm() -> None:
    """Not uvicorn's 1012 without ``complete``: uvicorn hears of the signal once the operations
    have said their last word and the connection has closed itself."""
    with plain_uvicorn() as (proc, url):
        async with websockets.connect(
            url.replace("http://", "ws://") + "/graphql", subprotocols=[websockets.Subprotocol(PROTOCOL)]
        ) as connection:
            ws = Socket(connection)
            await ws.send({"type": "connection_init"})
            assert await ws.next() == {"type": "connection_ack"}
            await ws.subscribe("1", TICKS)
            assert (await ws.next())["type"] == "next"
            proc.send_signal(signal.SIGTERM)
            until = time.monotonic() + QUICK
            while (message := await ws.next(timeout=QUICK))["type"] == "next":
                assert time.monotonic() < until, "no complete in time"
            assert message == {"id": "1", "type": "complete"}
            assert await ws.closed(timeout=QUICK) == (1001, "Server shutting down")
        await _exited(proc, QUICK)


@contextlib.contextmanager
def _uvicorn_handlers(server: uvicorn.Server) -> Iterator[None]:
    """``server``'s SIGINT/SIGTERM handlers installed as uvicorn's ``capture_signals`` does."""
    original = {sig: signal.signal(sig, server.handle_exit) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for sig, handler in original.items():
            signal.signal(sig, handler)


def _deliver(sig: signal.Signals) -> None:
    """Call the installed handler as the interpreter does when ``sig`` arrives."""
    handler = signal.getsignal(sig)
    assert callable(handler)
    handler(sig, None)


async def test_the_signal_wrapper_ends_the_streams_before_uvicorn_hears_and_keeps_ctrl_c_twice() -> None:
    server = uvicorn.Server(uvicorn.Config("bff.app:app_from_env"))
    ended = asyncio.Event()

    class Registry:
        def __len__(self) -> int:
            return 0

        async def shutdown(self, grace: float) -> None:
            assert not server.should_exit  # uvicorn has not started its shutdown yet
            ended.set()

    class Resources:
        streams = Registry()

    with _uvicorn_handlers(server):
        signals = serving.SignalsEndStreams({"resources": Resources()})
        signals.install()
        _deliver(signal.SIGTERM)
        assert not server.should_exit
        await asyncio.wait_for(ended.wait(), 1)
        await asyncio.sleep(0)
        assert server.should_exit and not server.force_exit
        signals.uninstall()
        assert signal.getsignal(signal.SIGTERM) == server.handle_exit

    # Ctrl+C twice before the streams have ended: uvicorn gets both, and the second forces the exit
    impatient = uvicorn.Server(uvicorn.Config("bff.app:app_from_env"))
    with _uvicorn_handlers(impatient):
        signals = serving.SignalsEndStreams({})
        signals.install()
        _deliver(signal.SIGINT)
        assert not impatient.should_exit
        _deliver(signal.SIGINT)
        assert impatient.should_exit and impatient.force_exit
        signals.uninstall()


async def test_the_signal_wrapper_leaves_bff_serve_alone() -> None:
    """`serving.Server` ends the streams itself: its handlers are not wrapped (nothing runs twice)."""
    server = serving.Server(uvicorn.Config("bff.app:app_from_env"))
    with _uvicorn_handlers(server):
        signals = serving.SignalsEndStreams({})
        signals.install()
        assert signal.getsignal(signal.SIGTERM) == server.handle_exit
        signals.uninstall()


async def _demo_sign_in(client: httpx.AsyncClient) -> None:
    start = await client.get("/auth/login", params={"return_to": "/"})
    page = await client.get(start.headers["location"])
    found = re.search(r'<form method="post" action="([^"]+)"', page.text)
    assert found, page.text[:300]
    chosen = await client.post(unescape(found.group(1)), data={"user": "alice"})
    assert (await client.get(chosen.headers["location"])).status_code == 302
    assert client.cookies.get("bff_session")


async def test_the_demo_completes_a_signed_in_subscription_on_sigterm() -> None:
    with bff_process("demo") as (proc, url):
        async with httpx.AsyncClient(base_url=url, timeout=30) as client:
            await _demo_sign_in(client)
            async with subscribe(client) as events:
                _name, data = await events.next()
                assert data["data"]["orderStatusChanged"]["orderId"] == "o-alice-1"
                proc.send_signal(signal.SIGTERM)
                await _ends_with_complete(events)
        await _exited(proc, QUICK)


async def test_once_shutdown_has_started_new_streams_are_refused(
    bff: Bff, upstreams: Upstreams, issuer: TestIssuer
) -> None:
    """What `serving.Server` does first at shutdown, in-process: every stream completes, and a
    stream asked for on a connection that is still open is refused."""
    upstreams.accounts.state.statuses["o-alice-1"] = "PLACED"
    cookie = await bff.session_for(issuer.token())
    async with bff.client(cookie) as client:
        async with subscribe(client) as events:
            assert (await events.next())[0] == "next"
            await serving.end_streams({"resources": bff.resources}, grace=2)
            await _ends_with_complete(events)
        refused = await client.post("/graphql", json=SUBSCRIBE, headers=SSE)
    assert refused.status_code == 503
    assert refused.headers["retry-after"] == "1"
    assert refused.headers["content-type"].startswith("application/json")
    error = refused.json()["errors"][0]
    assert error["extensions"]["code"] == "SHUTTING_DOWN"
    assert "shutting down" in error["message"]
    assert len(bff.resources.streams) == 0
