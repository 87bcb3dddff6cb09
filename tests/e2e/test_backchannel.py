"""Back-channel logout with the real oidc-provider's logout tokens, two replicas sharing real Redis:
each token acts once; a replay, on any replica, ends nothing."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

import httpx
import pytest
from redis.asyncio import Redis
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from bff.errors import StoreUnavailable
from bff.sessions.models import Session, TokenSet
from tests.conftest import Bff
from tests.e2e.conftest import Stack
from tests.support.browser import browser_login, sign_in_at_idp
from tests.support.servers import RedisServer, free_port, serve


@dataclass
class Recorder:
    """Stands between the IdP and the BFF: keeps each logout token, then delivers it."""

    target: str = ""
    tokens: list[str] = field(default_factory=list)

    def app(self) -> Starlette:
        async def deliver(request: Request) -> Response:
            token = str((await request.form())["logout_token"])
            self.tokens.append(token)
            async with httpx.AsyncClient() as http:
                answer = await http.post(f"{self.target}/auth/backchannel-logout", data={"logout_token": token})
            return Response(answer.content, status_code=answer.status_code)

        return Starlette(routes=[Route("/backchannel", deliver, methods=["POST"])])


@pytest.fixture
def recorder_port() -> int:
    return free_port()


@pytest.fixture
def backchannel_logout_uri(recorder_port: int) -> str:
    return f"http://127.0.0.1:{recorder_port}/backchannel"


@pytest.fixture
async def shared_store(redis_server: RedisServer) -> AsyncIterator[str]:
    url = redis_server.url.rsplit("/", 1)[0] + "/8"
    redis = Redis.from_url(url)
    await redis.flushdb()
    await redis.aclose()
    yield url


async def _session_with_sid(bff: Bff, sid: str) -> str:
    """A live session carrying the IdP session id ``sid``; returns its cookie value."""
    now = time.time()
    session = Session(
        id=Session.new_id(),
        sub="alice",
        sid=sid,
        tokens=TokenSet(access_token="unused", expires_at=now + 3600, issued_at=now),
        created_at=now,
        last_seen=now,
    )
    await bff.resources.store.create(session)
    return str(bff.resources.crypto.sign(session.id))


async def _authenticated(bff: Bff, cookie: str) -> bool:
    async with bff.client(cookie) as client:
        return bool((await client.get("/auth/session")).json()["authenticated"])


async def test_a_logout_token_acts_once_on_every_replica(stack: Stack, shared_store: str, recorder_port: int) -> None:
    shared = {"session_store": shared_store, "session_secret": "shared-secret-for-replicas"}
    recorder = Recorder()
    async with (
        stack.start_bff(0, **shared) as one,
        stack.start_bff(1, **shared) as two,
        serve(recorder.app(), recorder_port),
        one.client() as browser,
    ):
        recorder.target = one.url
        await browser_login(browser, one.url)
        cookie = browser.cookies["bff_session"]
        sid = (await one.resources.store.get(one.resources.crypto.unsign(cookie))).sid
        assert sid
        # the user signs out at the IdP: its real logout token (exp, fresh iat, jti) is accepted
        await sign_in_at_idp(browser, await browser.get(f"{stack.idp.issuer}/session/end"))
        assert stack.idp.stats()["backchannel"] == 1
        assert len(recorder.tokens) == 1
        assert not await _authenticated(two, cookie)

        # later, a session of that IdP session id exists again; the captured token is replayed
        later = await _session_with_sid(two, sid)
        for replica in (one, two):
            async with replica.client() as attacker:
                replay = await attacker.post("/auth/backchannel-logout", data={"logout_token": recorder.tokens[0]})
            assert replay.status_code == 400, replica.url
            assert replay.json() == {"error": "invalid_request", "message": "this logout token was already used"}
        assert await _authenticated(one, later)

        # a new logout at the IdP (a new token) still ends sessions
        await browser_login(browser, two.url)
        again = browser.cookies["bff_session"]
        await sign_in_at_idp(browser, await browser.get(f"{stack.idp.issuer}/session/end"))
        assert stack.idp.stats()["backchannel"] == 2
        assert len(set(recorder.tokens)) == 2
        assert not await _authenticated(one, again)


async def test_a_store_fault_after_ending_sessions_lets_the_idps_retry_end_them(
    stack: Stack, shared_store: str, recorder_port: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The sessions end before the token is recorded as used: a store fault at the record answers 503,
    and the IdP's retry of the same token is accepted (200), not refused as a replay."""
    shared = {"session_store": shared_store, "session_secret": "shared-secret-for-replicas"}
    recorder = Recorder()
    async with (
        stack.start_bff(0, **shared) as one,
        serve(recorder.app(), recorder_port),
        one.client() as browser,
    ):
        recorder.target = one.url
        await browser_login(browser, one.url)
        cookie = browser.cookies["bff_session"]
        store = one.resources.store
        real = store.remember_once

        async def fails_once(*args: object, **kwargs: object) -> bool:
            monkeypatch.setattr(store, "remember_once", real)
            raise StoreUnavailable("the store went away at the record")

        monkeypatch.setattr(store, "remember_once", fails_once)
        await sign_in_at_idp(browser, await browser.get(f"{stack.idp.issuer}/session/end"))
        assert len(recorder.tokens) == 1
        assert not await _authenticated(one, cookie)  # ended although the answer was 503
        async with one.client() as idp_retry:
            retried = await idp_retry.post("/auth/backchannel-logout", data={"logout_token": recorder.tokens[0]})
            assert retried.status_code == 200, retried.text
            replay = await idp_retry.post("/auth/backchannel-logout", data={"logout_token": recorder.tokens[0]})
            assert replay.status_code == 400  # recorded now: a replay ends nothing
