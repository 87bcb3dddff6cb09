"""Login, refresh and logout with sessions on a local 3-master Redis Cluster."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from tests.e2e.conftest import Stack
from tests.support.browser import browser_login
from tests.support.servers import RedisCluster


@pytest.fixture
def idp_options() -> dict[str, Any]:
    return {"access_ttl": 4}


async def test_login_refresh_logout_on_redis_cluster(stack: Stack, redis_cluster: RedisCluster) -> None:
    shared = {"session_store": redis_cluster.url, "session_secret": "cluster-shared-secret"}
    async with stack.start_bff(0, **shared) as one, stack.start_bff(1, **shared) as two:
        async with one.client() as browser:
            await browser_login(browser, one.url)
            cookie = browser.cookies["bff_session"]
        await asyncio.sleep(2.3)
        before = stack.idp.stats()["refreshGrants"]
        async with one.client(cookie) as a, two.client(cookie) as b:
            answers = await asyncio.gather(
                *((a if i % 2 else b).post("/graphql", json={"query": "{ viewer { id } }"}) for i in range(20))
            )
            for answer in answers:
                assert answer.json() == {"data": {"viewer": {"id": "alice"}}}
            # the token was still valid: the refresh runs beside the requests, in the background, so
            # it may land after their answers (under load it did): wait for it, then for no second one
            for _ in range(100):
                if stack.idp.stats()["refreshGrants"] != before:
                    break
                await asyncio.sleep(0.05)
            await asyncio.sleep(0.3)
            assert stack.idp.stats()["refreshGrants"] - before == 1
            out = await b.post("/auth/logout", headers={"X-CSRF": "1"})
            assert out.json()["loggedOut"] is True
            after = await a.post("/graphql", json={"query": "{ viewer { id } }"})
            assert after.json()["errors"][0]["extensions"]["code"] == "UNAUTHENTICATED"
