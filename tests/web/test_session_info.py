"""/auth/session for SPAs on another origin: it says why the session cookie cannot arrive."""

from __future__ import annotations

import asyncio

import httpx
import pytest

from bff.app import create_app
from tests.conftest import make_settings
from tests.support.servers import serve
from tests.support.sessions import store_session


async def test_session_info_explains_a_cookie_that_cannot_cross_sites(caplog: pytest.LogCaptureFixture) -> None:
    settings = make_settings(cors_origins=["http://localhost:5173", "http://127.0.0.1:5173"])
    app = create_app(settings)
    async with serve(app) as url, httpx.AsyncClient(base_url=url) as client:
        foreign = (await client.get("/auth/session", headers={"Origin": "http://localhost:5173"})).json()
        same_site = (await client.get("/auth/session", headers={"Origin": "http://127.0.0.1:5173"})).json()
        plain = (await client.get("/auth/session")).json()
    assert foreign["authenticated"] is False
    assert "localhost and 127.0.0.1 are different sites" in foreign["diagnostics"][0]
    assert "diagnostics" not in same_site
    assert "diagnostics" not in plain
    assert "browser origin http://localhost:5173 cannot sign in" in caplog.text
    assert "browser origin http://127.0.0.1:5173 cannot sign in" not in caplog.text


async def test_polling_the_session_does_not_keep_it_alive() -> None:
    """GET /auth/session is a look, not a use: a page polling it does not push the idle timeout."""
    app = create_app(make_settings(session_idle_timeout_seconds=2))
    async with serve(app) as url:
        cookie = await store_session(app.state.resources, "token", sub="alice")
        async with httpx.AsyncClient(base_url=url, cookies={"bff_session": cookie}) as client:
            for _ in range(5):  # polled for 2.5 s, past the 2 s idle timeout
                await asyncio.sleep(0.5)
                last = (await client.get("/auth/session")).json()
        assert last["authenticated"] is False
