"""A wrong BFF_OIDC_CLIENT_SECRET against the real oidc-provider: a configuration error the browser
sees as a "sign-in failed" page and the operator as one ERROR line naming the settings, never as a
503 outage, and the secret is in no answer and no log line."""

from __future__ import annotations

import logging

import pytest

from tests.e2e.conftest import Stack
from tests.support.browser import browser_login

WRONG = "not-the-secret-3f9a"


async def test_a_refused_client_is_a_sign_in_failed_page_and_an_error_line(
    stack: Stack, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    async with stack.start_bff(oidc_client_secret=WRONG) as bff, bff.client(headers={"Accept": "text/html"}) as browser:
        final = await browser_login(browser, bff.url)
        session = (await browser.get("/auth/session")).json()
    assert str(final.url).startswith(f"{bff.url}/auth/callback")
    assert final.status_code not in (500, 503)
    assert 400 <= final.status_code < 600
    assert final.headers["content-type"].startswith("text/html")
    assert "<h1>Sign-in failed</h1>" in final.text
    assert "refused this server&#x27;s client credentials" in final.text
    assert "provider_unavailable" not in final.text
    assert session["authenticated"] is False
    errors = [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]
    assert any(
        "invalid_client" in line and "BFF_OIDC_CLIENT_ID" in line and "BFF_OIDC_CLIENT_SECRET" in line
        for line in errors
    ), errors
    assert WRONG not in caplog.text and WRONG not in final.text
