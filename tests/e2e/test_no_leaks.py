"""No token ever reaches the client (bodies, headers) or the logs, across a whole session."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import httpx
import pytest

from tests.e2e.conftest import Stack
from tests.support.browser import browser_login


@pytest.fixture
def idp_options() -> dict[str, Any]:
    return {"access_ttl": 4}


async def test_tokens_stay_on_the_server(stack: Stack, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    seen: list[str] = []

    async def record(response: httpx.Response) -> None:
        await response.aread()
        seen.append(str(response.headers))
        seen.append(response.text)

    tokens: set[str] = set()
    async with stack.start_bff() as bff, bff.client(event_hooks={"response": [record]}) as browser:
        await browser_login(browser, bff.url)
        session_id = bff.resources.crypto.unsign(browser.cookies["bff_session"])

        async def collect() -> None:
            session = await bff.resources.store.get(session_id)
            assert session is not None
            tokens.update(
                t for t in (session.tokens.access_token, session.tokens.refresh_token, session.tokens.id_token) if t
            )

        await collect()
        for _ in range(2):
            await browser.post("/graphql", json={"query": "{ viewer { id name email orders { id } } }"})
            await browser.get("/auth/session")
            await asyncio.sleep(2.3)  # past half-life: the next request refreshes
            await browser.post("/graphql", json={"query": "{ viewer { id } }"})
            await collect()
        await browser.get("/metrics")
        await browser.get("/graphql", params={"query": "{ viewer { id } }"})  # refused: no CSRF header
        await browser.post("/auth/logout", headers={"X-CSRF": "1"})
    assert len(tokens) >= 6  # the login's three, plus the rotated ones
    logs = "\n".join(f"{r.getMessage()} {r.__dict__}" for r in caplog.records)
    for token in tokens:
        for text in seen:
            assert token not in text
        assert token not in logs
