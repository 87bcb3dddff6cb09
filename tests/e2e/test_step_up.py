"""Step-up (RFC 9470) against the real oidc-provider (ACR=1: urn:bff:loa:1 for a plain login,
urn:bff:loa:2 when asked for; tokens introspect with the sign-in's acr) and a real upstream that
answers the ``insufficient_user_authentication`` challenge to any token of a weaker sign-in."""

from __future__ import annotations

from typing import Any
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from tests.e2e.conftest import Stack
from tests.support.browser import browser_login, follow, sign_in_at_idp
from tests.support.servers import serve

STRONG = "urn:bff:loa:2"
VIEWER = {"query": "{ viewer { id name email } }"}


@pytest.fixture
def idp_options() -> dict[str, Any]:
    return {"access_ttl": 60, "acr": 1}


def _guarded_accounts(issuer: str) -> Starlette:
    """The accounts upstream's ``GET /me``, for tokens of a urn:bff:loa:2 sign-in only: it introspects
    each token (RFC 7662) and answers a weaker one with the RFC 9470 challenge. ``state.seen``: the
    acr of each token it was shown."""
    seen: list[str | None] = []

    async def me(request: Request) -> Response:
        token = request.headers.get("authorization", "").removeprefix("Bearer ")
        async with httpx.AsyncClient(timeout=5) as http:
            answer = await http.post(
                f"{issuer}/token/introspection", data={"token": token}, auth=("resource-server", "resource-secret")
            )
        claims = answer.json()
        if not claims.get("active"):
            return JSONResponse({"error": "invalid_token"}, status_code=401, headers={"WWW-Authenticate": "Bearer"})
        seen.append(claims.get("acr"))
        if claims.get("acr") != STRONG:
            challenge = (
                'Bearer error="insufficient_user_authentication", '
                f'error_description="A stronger sign-in is required", acr_values="{STRONG}"'
            )
            return JSONResponse({"error": "step up"}, status_code=401, headers={"WWW-Authenticate": challenge})
        sub = claims["sub"]
        return JSONResponse({"id": sub, "name": sub.title(), "email": f"{sub}@example.com"})

    app = Starlette(routes=[Route("/me", me)])
    app.state.seen = seen
    return app


def _session_cookies(client: httpx.AsyncClient) -> list[str]:
    return [cookie.value for cookie in client.cookies.jar if cookie.name == "bff_session"]


async def _stored(bff: Any, cookie: str) -> Any:
    resources = bff.app.state.resources
    session_id = resources.session_credentials(None, {"bff_session": cookie}).session_id
    return await resources.store.get(session_id, touch=False)


async def test_an_upstream_challenge_steps_the_same_session_up(stack: Stack) -> None:
    accounts = _guarded_accounts(stack.idp.issuer)
    async with serve(accounts) as accounts_url:
        upstreams = {"accounts": {"url": accounts_url}, "catalog": {"url": stack.upstreams.catalog_url}}
        async with stack.start_bff(upstreams=upstreams) as bff, bff.client() as browser:
            await browser_login(browser, bff.url, "alice")
            [before] = _session_cookies(browser)
            assert (await _stored(bff, before)).claims["acr"] == "urn:bff:loa:1"
            refreshes = stack.idp.stats()["refreshGrants"]

            page = f"{bff.url}/settings/security?tab=keys"
            body = (await browser.post("/graphql", json=VIEWER, headers={"Referer": page})).json()
            assert body["data"] == {"viewer": None}
            extensions = body["errors"][0]["extensions"]
            assert extensions["code"] == "STEP_UP_REQUIRED"
            assert extensions["acrValues"] == STRONG and extensions["upstream"] == "accounts"
            login = extensions["login"]
            assert login.startswith(f"{bff.url}/auth/login?")
            assert parse_qs(urlsplit(login).query) == {
                "acr_values": [STRONG],
                "return_to": ["/settings/security?tab=keys"],
            }
            # not a refused token: no refresh, no retry, the session goes on
            assert accounts.state.seen == ["urn:bff:loa:1"]
            assert stack.idp.stats()["refreshGrants"] == refreshes
            assert (await browser.get("/auth/session")).json()["authenticated"] is True

            # the front end follows extensions.login with the same cookie jar, through the IdP
            start = await browser.get(login)
            assert start.status_code == 302
            assert parse_qs(urlsplit(start.headers["location"]).query)["acr_values"] == [STRONG]
            final = await sign_in_at_idp(browser, start, "alice")
            assert str(final.url) == page  # back where the request came from (the BFF serves no page there)

            [after] = _session_cookies(browser)  # still one session cookie: the new one replaced the old
            assert after != before
            assert await _stored(bff, before) is None  # the old session ended with it
            stored = await _stored(bff, after)
            assert stored.sub == "alice" and stored.claims["acr"] == STRONG
            assert stored.claims["amr"] == ["pwd", "otp"]
            info = (await browser.get("/auth/session")).json()
            assert info["authenticated"] is True and info["user"]["sub"] == "alice"

            body = (await browser.post("/graphql", json=VIEWER)).json()
            assert body == {"data": {"viewer": {"id": "alice", "name": "Alice", "email": "alice@example.com"}}}
            assert accounts.state.seen[-1] == STRONG


async def test_a_weaker_answer_is_refused_and_the_session_kept(stack: Stack) -> None:
    async with stack.start_bff() as bff, bff.client() as browser:
        await browser_login(browser, bff.url, "alice")
        [before] = _session_cookies(browser)
        # the provider knows no such acr: it signs in again (its policy) and answers urn:bff:loa:1
        start = await browser.get("/auth/login", params={"acr_values": "urn:example:gold", "return_to": "/x"})
        refused = await sign_in_at_idp(browser, start, "alice")
        assert refused.status_code == 400
        assert refused.json()["error"] == "login_failed"
        assert _session_cookies(browser) == [before]
        assert (await _stored(bff, before)).claims["acr"] == "urn:bff:loa:1"
        body = (await browser.post("/graphql", json={"query": "{ viewer { id } }"})).json()
        assert body == {"data": {"viewer": {"id": "alice"}}}


async def test_prompt_login_hint_and_max_age_reach_the_provider(stack: Stack) -> None:
    async with stack.start_bff() as bff, bff.client() as browser:
        await browser_login(browser, bff.url, "alice")
        first = await _stored(bff, _session_cookies(browser)[0])
        params = {"prompt": "login", "login_hint": "alice", "max_age": "0", "return_to": "/again"}
        start = await browser.get("/auth/login", params=params)
        query = parse_qs(urlsplit(start.headers["location"]).query)
        assert query["prompt"] == ["login consent"]
        assert query["login_hint"] == ["alice"] and query["max_age"] == ["0"]
        interaction = await follow(browser, start)
        assert 'name="login"' in interaction.text  # prompt=login: the provider asks again
        final = await sign_in_at_idp(browser, interaction, "alice")
        assert str(final.url) == f"{bff.url}/again"
        [cookie] = _session_cookies(browser)
        again = await _stored(bff, cookie)
        assert again.claims["auth_time"] >= first.claims["auth_time"]
