"""/auth/session for SPAs on another origin: it says why the session cookie cannot arrive."""

from __future__ import annotations

import asyncio
from datetime import datetime, timedelta

import httpx
import pytest

from bff.app import create_app
from tests.conftest import Upstreams, make_settings
from tests.support.servers import serve
from tests.support.sessions import store_session
from tests.support.tokens import TestIssuer


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


async def test_session_info_gives_the_deadlines_and_only_use_moves_the_idle_one(
    upstreams: Upstreams, issuer: TestIssuer
) -> None:
    """idleExpiresAt and absoluteExpiresAt (ISO-8601 UTC like expiresAt, the earlier of the two):
    polling /auth/session, with or without ``slide=false``, leaves them; a GraphQL request moves
    the idle one (a touch is written at most every idle/10 seconds: 2 s here)."""
    settings = make_settings(
        upstreams=upstreams.settings(), session_idle_timeout_seconds=20, session_absolute_timeout_seconds=3600
    )
    app = create_app(settings)
    async with serve(app) as url:
        cookie = await store_session(app.state.resources, issuer.token("alice"), sub="alice")
        async with httpx.AsyncClient(base_url=url, cookies={"bff_session": cookie}) as client:
            first = (await client.get("/auth/session")).json()
            await asyncio.sleep(2.3)
            polls = [(await client.get("/auth/session", params=p)).json() for p in ({}, {"slide": "false"})]
            assert (await client.get("/auth/session", params={"slide": "maybe"})).status_code == 400
            viewer = (await client.post("/graphql", json={"query": "{ viewer { id } }"})).json()
            assert viewer == {"data": {"viewer": {"id": "alice"}}}
            after = (await client.get("/auth/session")).json()
        async with httpx.AsyncClient(base_url=url) as anonymous:
            nobody = (await anonymous.get("/auth/session")).json()
    assert first["authenticated"] is True
    assert set(first) == {"authenticated", "user", "expiresAt", "idleExpiresAt", "absoluteExpiresAt"}
    created = datetime.fromisoformat(first["absoluteExpiresAt"]) - timedelta(seconds=3600)
    idle = datetime.fromisoformat(first["idleExpiresAt"]) - created
    assert abs(idle - timedelta(seconds=20)) < timedelta(seconds=1)
    assert first["expiresAt"] == first["idleExpiresAt"]  # the earlier of the two
    assert first["expiresAt"].endswith("Z")
    for poll in polls:
        assert poll == first  # a look is not a use
    moved = datetime.fromisoformat(after["idleExpiresAt"]) - datetime.fromisoformat(first["idleExpiresAt"])
    assert timedelta(seconds=2) < moved < timedelta(seconds=10)
    assert after["absoluteExpiresAt"] == first["absoluteExpiresAt"]
    assert after["expiresAt"] == after["idleExpiresAt"]
    assert nobody == {
        "authenticated": False,
        "user": None,
        "expiresAt": None,
        "idleExpiresAt": None,
        "absoluteExpiresAt": None,
    }
