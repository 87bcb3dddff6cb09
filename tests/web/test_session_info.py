"""/auth/session for SPAs on another origin: it says why the session cookie cannot arrive."""

from __future__ import annotations

import httpx
import pytest

from bff.app import create_app
from tests.conftest import make_settings
from tests.support.servers import serve


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
