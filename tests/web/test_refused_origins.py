"""A browser origin refused by the CORS / Origin rule is logged once, with the setting to change."""

from __future__ import annotations

import logging

import httpx
import pytest

from bff.app import create_app
from bff.web.middleware import RefusedOrigins
from tests.conftest import make_settings
from tests.support.servers import serve
from tests.support.sessions import store_session

MOVED = "http://localhost:5174"


def _refusals(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == "bff.origins"]


async def test_a_refused_origin_is_logged_once_with_the_setting(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="bff.origins")
    settings = make_settings(cors_origins=["http://localhost:5173"])
    app = create_app(settings)
    async with serve(app) as url:
        cookie = await store_session(app.state.resources, "token-value-never-logged")
        async with httpx.AsyncClient(base_url=url, cookies={"bff_session": cookie}) as client:
            preflight = {"Origin": MOVED, "Access-Control-Request-Method": "POST"}
            # the SPA's dev server moved to 5174: its fetch's preflight is refused (the browser: "Failed to fetch")
            for _ in range(3):
                refused = await client.options("/graphql", headers=preflight)
                assert refused.status_code == 400
            post = await client.post("/graphql", json={"query": "{ __typename }"}, headers={"Origin": MOVED})
            assert post.status_code == 403
            allowed = await client.options("/graphql", headers={**preflight, "Origin": "http://localhost:5173"})
            assert allowed.status_code == 200
            own = await client.post(
                "/graphql", json={"query": "{ __typename }"}, headers={"Origin": settings.public_origin}
            )
            assert own.status_code == 200
    lines = _refusals(caplog)
    assert lines == [
        f"origin {MOVED} refused: not in BFF_CORS_ORIGINS (nor BFF_PUBLIC_URL's origin http://127.0.0.1:8000); "
        "add it there to allow it"
    ]
    assert all(r.levelno == logging.INFO for r in caplog.records if r.name == "bff.origins")
    assert "token-value-never-logged" not in caplog.text
    assert cookie not in caplog.text


def test_refused_origins_are_remembered_in_bounded_memory(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="bff.origins")
    refused = RefusedOrigins("https://bff.example.com", limit=3)
    for round_ in range(2):
        for port in range(10):
            refused.note(f"http://localhost:{5170 + port}")
    refused.note("http://evil.example\r\nforged: line")
    lines = _refusals(caplog)
    assert len(lines) == 4  # three origins, then one line saying the rest go unlogged
    assert "further refused origins are not logged" in lines[3]
    assert len(refused._seen) == 3
    # an invented header cannot forge a log line
    assert not any("\n" in line or "\r" in line for line in lines)
