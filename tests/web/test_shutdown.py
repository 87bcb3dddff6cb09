"""Graceful shutdown: a request in flight when the server is told to stop still gets its answer."""

from __future__ import annotations

import asyncio

import httpx
import pytest
import uvicorn

from bff.app import create_app
from tests.conftest import Upstreams, make_settings
from tests.support.servers import free_port
from tests.support.sessions import store_session
from tests.support.tokens import TestIssuer


@pytest.mark.parametrize("upstream_latency", [1.0])
async def test_in_flight_requests_finish_on_shutdown(upstreams: Upstreams, issuer: TestIssuer) -> None:
    app = create_app(make_settings(upstreams=upstreams.settings()))
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, port=port, log_level="warning", timeout_graceful_shutdown=10))
    server.install_signal_handlers = lambda: None  # type: ignore[method-assign]
    serving = asyncio.create_task(server.serve())
    while not server.started:  # noqa: ASYNC110 - uvicorn exposes a flag, not an event
        await asyncio.sleep(0.01)
    cookie = await store_session(app.state.resources, issuer.token("alice"))
    async with httpx.AsyncClient(
        base_url=f"http://127.0.0.1:{port}", headers={"Cookie": f"bff_session={cookie}"}
    ) as client:
        in_flight = asyncio.create_task(client.post("/graphql", json={"query": "{ viewer { id } }"}))
        await asyncio.sleep(0.3)
        server.should_exit = True  # what SIGTERM does
        response = await in_flight
    await asyncio.wait_for(serving, 15)
    assert response.status_code == 200
    assert response.json() == {"data": {"viewer": {"id": "alice"}}}
