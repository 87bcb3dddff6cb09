"""No token ever reaches the client (bodies, headers), and no token, authorization code or cookie
value reaches the logs, across a whole session: login, queries, refreshes, logout."""

from __future__ import annotations

import asyncio
import io
import logging
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
import structlog

from bff.logs import configure_logging
from tests.e2e.conftest import Stack
from tests.support.browser import browser_login


@pytest.fixture
def idp_options() -> dict[str, Any]:
    return {"access_ttl": 4}


@pytest.fixture
def json_logs() -> Iterator[io.StringIO]:
    """The product's own logging set-up (JSON lines, libraries at their production levels)."""
    root = logging.getLogger()
    saved = (root.handlers[:], root.level)
    configure_logging("debug", json=True)
    buffer = io.StringIO()
    root.handlers[0].stream = buffer  # type: ignore[attr-defined]
    try:
        yield buffer
    finally:
        root.handlers[:], _ = saved[0], root.setLevel(saved[1])
        structlog.reset_defaults()


async def test_secrets_stay_on_the_server(stack: Stack, json_logs: io.StringIO) -> None:
    seen: list[str] = []
    codes: list[str] = []

    async def on_request(request: httpx.Request) -> None:
        if request.url.path == "/auth/callback" and "code" in request.url.params:
            codes.append(request.url.params["code"])

    async def on_response(response: httpx.Response) -> None:
        await response.aread()
        seen.append(str(response.headers))
        seen.append(response.text)

    tokens: set[str] = set()
    hooks = {"request": [on_request], "response": [on_response]}
    async with stack.start_bff() as bff, bff.client(event_hooks=hooks) as browser:
        await browser_login(browser, bff.url)
        cookie = browser.cookies["bff_session"]
        session_id = bff.resources.crypto.unsign(cookie)

        async def collect() -> None:
            session = await bff.resources.store.get(session_id)
            assert session is not None
            tokens.update(
                t for t in (session.tokens.access_token, session.tokens.refresh_token, session.tokens.id_token) if t
            )

        await collect()
        for _ in range(2):
            await browser.post("/graphql", json={"query": "query Viewer { viewer { id name email orders { id } } }"})
            await browser.get("/auth/session")
            await asyncio.sleep(2.3)  # past half-life: the next request refreshes
            await browser.post("/graphql", json={"query": "{ viewer { id } }"})
            await collect()
        await browser.get("/metrics")
        await browser.get("/graphql", params={"query": "{ viewer { id } }"})  # refused: no CSRF header
        await browser.post("/auth/logout", headers={"X-CSRF": "1"})
    assert len(tokens) >= 6  # the login's three, plus the rotated ones
    assert codes
    logs = json_logs.getvalue()
    assert '"logger":"bff.access"' in logs  # the access log ran (orjson: no spaces)
    assert "access token refreshed for alice" in logs
    for token in tokens:
        for text in seen:
            assert token not in text
        assert token not in logs
    for secret in (*codes, cookie, session_id):
        assert secret not in logs
