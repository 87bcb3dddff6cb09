"""A user's own sessions against the real oidc-provider, two BFF replicas sharing a real Redis: two
browsers and a native app signed in, listed from one replica, ended through the other; the ended
session's refresh token is dead at the IdP and its open stream ends."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from redis.asyncio import Redis

from tests.conftest import Bff
from tests.e2e.conftest import Stack
from tests.e2e.test_native import APP_URI, _handoff, _pkce
from tests.graphql.test_subscriptions_sse import subscribe
from tests.support.browser import browser_login
from tests.support.servers import RedisServer

FIREFOX_LINUX = "Mozilla/5.0 (X11; Linux x86_64; rv:128.0) Gecko/20100101 Firefox/128.0"
SAFARI_IOS = (
    "Mozilla/5.0 (iPhone; CPU iPhone OS 17_5 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) "
    "Version/17.5 Mobile/15E148 Safari/604.1"
)
VIEWER = {"query": "{ viewer { id } }"}
COOKIE = "bff_session"


@pytest.fixture
async def shared(redis_server: RedisServer) -> AsyncIterator[dict[str, Any]]:
    url = redis_server.url.rsplit("/", 1)[0] + "/11"
    redis = Redis.from_url(url)
    await redis.flushdb()
    await redis.aclose()
    yield {"session_store": url, "session_secret": "shared-secret-for-replicas", "native_redirect_uris": [APP_URI]}


class Answers:
    """Every answer of the sessions routes, for the check that none carries an id or a token."""

    def __init__(self) -> None:
        self.seen: list[str] = []

    async def keep(self, response: httpx.Response) -> None:
        if response.url.path.startswith("/auth/sessions"):
            await response.aread()
            self.seen.append(response.text + json.dumps(dict(response.headers)))

    def client(self, bff: Bff, user_agent: str = FIREFOX_LINUX, **kwargs: Any) -> httpx.AsyncClient:
        return httpx.AsyncClient(
            base_url=bff.url,
            headers={"User-Agent": user_agent, **kwargs.pop("headers", {})},
            event_hooks={"response": [self.keep]},
            timeout=30,
            **kwargs,
        )


async def _introspect(stack: Stack, token: str) -> bool:
    """Whether the IdP still holds ``token`` active (RFC 7662, as the BFF's own client)."""
    async with httpx.AsyncClient(timeout=10) as http:
        meta = (await http.get(f"{stack.idp.issuer}/.well-known/openid-configuration")).json()
        answer = await http.post(meta["introspection_endpoint"], data={"token": token}, auth=("bff", "bff-secret"))
    assert answer.status_code == 200, answer.text
    return bool(answer.json()["active"])


async def _session(bff: Bff, cookie: str, purpose: str = "cookie") -> Any:
    session = await bff.resources.store.get(bff.resources.crypto.unsign(cookie, purpose), touch=False)
    assert session is not None
    return session


async def _viewer_code(client: httpx.AsyncClient, **kwargs: Any) -> str | None:
    body = (await client.post("/graphql", json=VIEWER, **kwargs)).json()
    return None if "errors" not in body else str(body["errors"][0]["extensions"]["code"])


async def test_list_on_one_replica_revoke_on_the_other(stack: Stack, shared: dict[str, Any]) -> None:
    stack.upstreams.accounts.state.statuses["o-alice-1"] = "PLACED"
    answers = Answers()
    async with (
        stack.start_bff(0, **shared) as one,
        stack.start_bff(1, **shared) as two,
        answers.client(one, FIREFOX_LINUX) as firefox,
        answers.client(one, SAFARI_IOS) as safari,
        answers.client(one, "ExampleApp/2.0 (iPhone)") as app,
    ):
        await browser_login(firefox, one.url)
        await browser_login(safari, two.url)  # signed in on the other replica
        verifier, challenge = _pkce()
        code = await _handoff(one, challenge)
        exchanged = await app.post(f"{two.url}/auth/native/token", json={"code": code, "code_verifier": verifier})
        native = {"Authorization": f"Session {exchanged.json()['session']}"}
        cookies = {"firefox": firefox.cookies[COOKIE], "safari": safari.cookies[COOKIE]}
        sessions = {name: await _session(one, cookie) for name, cookie in cookies.items()}
        sessions["app"] = await _session(one, exchanged.json()["session"], "native")
        secrets = [*cookies.values(), exchanged.json()["session"]]
        for session in sessions.values():
            secrets += [session.id, session.tokens.access_token, session.tokens.refresh_token, session.tokens.id_token]
        assert all(secrets)

        listing = await firefox.get("/auth/sessions")
        assert listing.status_code == 200 and listing.headers["cache-control"] == "no-store"
        listed = listing.json()["sessions"]
        assert sorted((s["client"], s["kind"], s["current"]) for s in listed) == [
            ("Firefox on Linux", "browser", True),
            ("Safari on iOS", "browser", False),
            ("native app", "native", False),
        ]
        last_active = [s["lastActiveAt"] for s in listed]
        assert last_active == sorted(last_active, reverse=True)
        # the app sees the same three, itself current
        from_app = (await app.get(f"{two.url}/auth/sessions", headers=native)).json()["sessions"]
        assert [s["client"] for s in from_app if s["current"]] == ["native app"]
        assert len(from_app) == 3

        safari_refresh = sessions["safari"].tokens.refresh_token
        assert await _introspect(stack, safari_refresh)
        revocations = stack.idp.stats()["revocations"]
        handle = next(s["session"] for s in listed if s["client"] == "Safari on iOS")
        async with one.client(cookies["safari"]) as streaming, subscribe(streaming) as events:
            first = await events.next()
            assert first[0] == "next" and "errors" not in first[1], first
            # listed on replica one, ended through replica two with the same browser's cookie
            ended = await firefox.post(f"{two.url}/auth/sessions/revoke", json={"session": handle})
            assert ended.status_code == 200, ended.text
            assert ended.json() == {"revoked": 1}
            assert "set-cookie" not in ended.headers
            # the stream on replica one ends at once
            _name, data = await events.next(timeout=5)
            assert data["errors"][0]["extensions"]["code"] == "UNAUTHENTICATED", data
            assert (await events.next(timeout=5))[0] == "complete"
        async with one.client(cookies["safari"]) as revoked:
            assert await _viewer_code(revoked) == "UNAUTHENTICATED"
            assert (await revoked.get("/auth/sessions")).status_code == 401
        assert await _viewer_code(safari, headers={"X-CSRF": "1"}) == "UNAUTHENTICATED"
        assert not await _introspect(stack, safari_refresh)
        assert stack.idp.stats()["revocations"] == revocations + 1
        assert await _viewer_code(firefox) is None  # the one that asked is untouched

        # everything but this browser: the app's session ends, its refresh token with it
        app_refresh = sessions["app"].tokens.refresh_token
        assert await _introspect(stack, app_refresh)
        others = await firefox.post(f"{two.url}/auth/sessions/revoke", json={"others": True})
        assert others.json() == {"revoked": 1}
        assert await _viewer_code(app, headers=native) == "UNAUTHENTICATED"
        assert (await app.get("/auth/sessions", headers=native)).status_code == 401
        assert not await _introspect(stack, app_refresh)
        remaining = (await firefox.get("/auth/sessions")).json()["sessions"]
        assert [(s["client"], s["current"]) for s in remaining] == [("Firefox on Linux", True)]
        assert await _viewer_code(firefox) is None
    assert len(answers.seen) == 6
    for seen in answers.seen:
        for secret in secrets:
            assert secret not in seen


async def test_handles_other_users_garbage_and_cross_site_requests_end_nothing(
    stack: Stack, shared: dict[str, Any]
) -> None:
    answers = Answers()
    async with (
        stack.start_bff(0, **shared) as one,
        stack.start_bff(1, **shared) as two,
        answers.client(one, FIREFOX_LINUX) as alice,
        answers.client(two, SAFARI_IOS) as alice_phone,
        answers.client(two, FIREFOX_LINUX) as bob,
    ):
        await browser_login(alice, one.url)
        await browser_login(alice_phone, two.url)
        await browser_login(bob, two.url, "bob")
        alices = (await alice.get("/auth/sessions")).json()["sessions"]
        bobs = (await bob.get("/auth/sessions")).json()["sessions"]
        assert len(alices) == 2 and len(bobs) == 1
        phone_handle = next(s["session"] for s in alices if not s["current"])

        # another user's handle, either way, on either replica: the 400 of a forged one
        refused = [
            await bob.post("/auth/sessions/revoke", json={"session": phone_handle}),
            await bob.post(f"{one.url}/auth/sessions/revoke", json={"session": phone_handle}),
            await alice.post("/auth/sessions/revoke", json={"session": bobs[0]["session"]}),
            # alice's own other session may not use the handle listed for her laptop either
            await alice_phone.post("/auth/sessions/revoke", json={"session": phone_handle}),
        ]
        garbage: list[dict[str, Any]] = [
            {"json": {"session": phone_handle[:-4]}},
            {"json": {"session": phone_handle + "AAAA"}},
            {"json": {"session": phone_handle.swapcase()}},
            {"json": {"session": 7}},
            {"json": {"others": "yes"}},
            {"json": {"session": phone_handle, "others": True}},
            {"json": [phone_handle]},
            {"content": b'{"session": ', "headers": {"content-type": "application/json"}},
            {
                "content": json.dumps({"session": phone_handle}).encode() * 2,
                "headers": {"content-type": "application/json"},
            },
        ]
        for args in garbage:
            refused.append(await alice.post(f"{two.url}/auth/sessions/revoke", **args))
        for answer in refused:
            assert answer.status_code == 400, (answer.request.content, answer.text)
            assert answer.json()["error"] == "invalid_request"
        assert len({a.json()["message"] for a in refused[:4]}) == 1

        # cross-site: a foreign Origin, a form, a text/plain body without X-CSRF
        forbidden = [
            await alice.get("/auth/sessions", headers={"Origin": "https://evil.example"}),
            await alice.post(
                "/auth/sessions/revoke", json={"others": True}, headers={"Origin": "https://evil.example"}
            ),
            await alice.post("/auth/sessions/revoke", data={"others": "true"}),
            await alice.post(
                f"{two.url}/auth/sessions/revoke",
                content=json.dumps({"session": phone_handle}),
                headers={"content-type": "text/plain"},
            ),
        ]
        for answer in forbidden:
            assert answer.status_code == 403, answer.text
        for client in (alice, alice_phone, bob):
            assert await _viewer_code(client) is None
        secrets = [alice.cookies[COOKIE], alice_phone.cookies[COOKIE], bob.cookies[COOKIE]]
        secrets += [(await _session(one, cookie)).id for cookie in secrets]
    for seen in answers.seen:
        for secret in secrets:
            assert secret not in seen
