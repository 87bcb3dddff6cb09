"""The same login, refresh and logout with client_secret_post instead of client_secret_basic."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from tests.e2e.conftest import Stack
from tests.support.browser import browser_login


@pytest.fixture
def idp_options() -> dict[str, Any]:
    # the IdP only accepts client_secret_post for this client
    return {"access_ttl": 4, "client_auth_method": "client_secret_post"}


async def test_client_secret_post(stack: Stack) -> None:
    async with stack.start_bff(oidc_client_auth_method="client_secret_post") as bff, bff.client() as browser:
        await browser_login(browser, bff.url)
        await asyncio.sleep(2.3)
        body = (await browser.post("/graphql", json={"query": "{ viewer { id } }"})).json()
        assert body == {"data": {"viewer": {"id": "alice"}}}
        assert stack.idp.stats()["refreshGrants"] == 1
        before = stack.idp.stats()["revocations"]
        assert (await browser.post("/auth/logout", headers={"X-CSRF": "1"})).json()["loggedOut"] is True
        assert stack.idp.stats()["revocations"] == before + 1
