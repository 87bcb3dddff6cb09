"""Sign-in, session and logout against the real oidc-provider."""

from __future__ import annotations

import httpx

from tests.e2e.conftest import Stack
from tests.support.browser import browser_login, follow, sign_in_at_idp

VIEWER = "{ viewer { id name email orders(first: 2) { id totalCents } } }"


async def test_login_session_viewer_logout(stack: Stack) -> None:
    async with stack.start_bff() as bff, bff.client() as browser:
        final = await browser_login(browser, bff.url, "alice", return_to="/after?x=1")
        assert str(final.url).startswith(f"{bff.url}/after?x=1")
        cookie = browser.cookies.get("bff_session")
        assert cookie

        info = (await browser.get("/auth/session")).json()
        assert info["authenticated"] is True
        assert info["user"] == {"sub": "alice", "name": "Alice Example", "email": "alice@example.com"}
        assert info["expiresAt"]

        body = (await browser.post("/graphql", json={"query": VIEWER})).json()
        assert "errors" not in body, body
        assert body["data"]["viewer"]["email"] == "alice@example.com"
        assert len(body["data"]["viewer"]["orders"]) == 2

        # logout needs the CSRF header (or JSON) like /graphql
        refused = await browser.post("/auth/logout")
        assert refused.status_code == 403
        before = stack.idp.stats()["revocations"]
        out = await browser.post("/auth/logout", headers={"X-CSRF": "1"})
        assert out.status_code == 200
        assert out.json()["loggedOut"] is True
        assert out.json()["endSessionUrl"].startswith(f"{stack.idp.issuer}/session/end")
        assert "bff_session=" in out.headers["set-cookie"] and "Max-Age=0" in out.headers["set-cookie"]
        assert stack.idp.stats()["revocations"] == before + 1

        # the old cookie is dead even if a client replays it
        async with bff.client(cookie) as replay:
            body = (await replay.post("/graphql", json={"query": "{ viewer { id } }"})).json()
        assert body["errors"][0]["extensions"]["code"] == "UNAUTHENTICATED"
        assert (await browser.get("/auth/session")).json()["authenticated"] is False


async def test_each_login_gets_a_fresh_session_id(stack: Stack) -> None:
    async with stack.start_bff() as bff, bff.client() as browser:
        await browser_login(browser, bff.url)
        first = browser.cookies.get("bff_session")
        await browser_login(browser, bff.url)
        second = browser.cookies.get("bff_session")
    assert first and second and first != second


async def test_callback_state_must_belong_to_this_browser(stack: Stack) -> None:
    async with stack.start_bff() as bff, bff.client() as victim, bff.client() as attacker:
        start = await attacker.get("/auth/login")
        # the attacker signs in at the IdP, then feeds the callback URL to the victim's browser
        landing = await sign_in_at_idp_until_callback(attacker, start)
        response = await victim.get(landing)
        assert response.status_code == 400
        assert "another browser" in response.json()["message"]
        assert "bff_session" not in victim.cookies
        # and the state is spent: the attacker cannot use it either
        replay = await attacker.get(landing)
        assert replay.status_code == 400
        assert "bff_session" not in attacker.cookies


async def sign_in_at_idp_until_callback(client: httpx.AsyncClient, start: httpx.Response) -> str:
    """Go through the IdP but stop before the BFF's callback; return the callback URL."""
    original = client.get

    captured: list[str] = []

    async def get(url: str, **kwargs: object) -> httpx.Response:
        if "/auth/callback" in str(url):
            captured.append(str(url))
            return httpx.Response(200, request=httpx.Request("GET", str(url)))
        return await original(url, **kwargs)  # type: ignore[arg-type]

    client.get = get  # type: ignore[method-assign]
    try:
        await sign_in_at_idp(client, start)
    finally:
        client.get = original  # type: ignore[method-assign]
    assert captured, "the IdP never redirected to the callback"
    return captured[0]


async def test_hostile_callbacks(stack: Stack) -> None:
    async with stack.start_bff() as bff, bff.client() as browser:
        for params in ({}, {"state": "nope", "code": "x"}, {"code": "x"}, {"state": "a" * 600}):
            response = await browser.get("/auth/callback", params=params)
            assert response.status_code == 400, (params, response.text)
            assert "bff_session" not in browser.cookies
        # an IdP error for a real pending login
        start = await browser.get("/auth/login")
        state = httpx.URL(start.headers["location"]).params["state"]
        response = await browser.get("/auth/callback", params={"state": state, "error": "access_denied"})
        assert response.status_code == 400
        assert "access_denied" in response.json()["message"]
        # an authorization response claiming another issuer (RFC 9207 mix-up defence)
        start = await browser.get("/auth/login")
        state = httpx.URL(start.headers["location"]).params["state"]
        response = await browser.get(
            "/auth/callback", params={"state": state, "code": "x", "iss": "https://evil.example"}
        )
        assert response.status_code == 400
        assert "another issuer" in response.json()["message"]
        # a real login whose code is replayed
        start = await browser.get("/auth/login")
        landing = await sign_in_at_idp_until_callback(browser, start)
        first = await browser.get(landing)
        assert first.status_code == 302
        again = await browser.get(landing)
        assert again.status_code == 400


async def test_return_to_is_same_origin_only(stack: Stack) -> None:
    async with stack.start_bff() as bff, bff.client() as browser:
        for evil in (
            "https://evil.example/x",
            "//evil.example",
            "/\\evil.example",
            "/%2F/evil.example",
            "javascript:alert(1)",
            "\\\\evil",
            "/" + "a" * 5000,
        ):
            start = await browser.get("/auth/login", params={"return_to": evil})
            landing = await sign_in_at_idp_until_callback(browser, start)
            done = await browser.get(landing)
            assert done.status_code == 302
            assert done.headers["location"] == "/", evil


async def test_backchannel_logout_from_the_idp(stack: Stack) -> None:
    async with stack.start_bff() as bff, bff.client() as browser:
        await browser_login(browser, bff.url)
        assert (await browser.get("/auth/session")).json()["authenticated"] is True
        # the user signs out at the IdP itself: it confirms, then calls our back-channel endpoint
        page = await browser.get(f"{stack.idp.issuer}/session/end")
        await sign_in_at_idp(browser, page)
        assert stack.idp.stats()["backchannel"] == 1
        assert (await browser.get("/auth/session")).json()["authenticated"] is False


async def test_backchannel_logout_refuses_forged_tokens(stack: Stack) -> None:
    async with stack.start_bff() as bff, bff.client() as browser:
        await browser_login(browser, bff.url)
        import base64
        import json

        def b64(obj: object) -> str:
            return base64.urlsafe_b64encode(json.dumps(obj).encode()).rstrip(b"=").decode()

        unsigned = (
            b64({"alg": "none"})
            + "."
            + b64(
                {
                    "iss": stack.idp.issuer,
                    "sub": "alice",
                    "aud": "bff",
                    "events": {"http://schemas.openid.net/event/backchannel-logout": {}},
                }
            )
            + "."
        )
        for token in (unsigned, "garbage", ""):
            response = await browser.post("/auth/backchannel-logout", data={"logout_token": token})
            assert 400 <= response.status_code < 500
        assert (await browser.get("/auth/session")).json()["authenticated"] is True
        await follow(browser, await browser.get("/auth/session"))


async def test_anonymous_public_data_uses_the_bffs_own_token(stack: Stack) -> None:
    upstreams = stack.upstreams.settings()
    upstreams["catalog"]["anonymous"] = "client_credentials"
    async with stack.start_bff(upstreams=upstreams) as bff, bff.client() as anonymous:
        for _ in range(3):
            body = (
                await anonymous.post("/graphql", json={"query": '{ searchProducts(query: "a", first: 2) { id } }'})
            ).json()
            assert len(body["data"]["searchProducts"]) == 2
        viewer = (await anonymous.post("/graphql", json={"query": "{ viewer { id } }"})).json()
        assert viewer["errors"][0]["extensions"]["code"] == "UNAUTHENTICATED"  # accounts stays user-only
    assert stack.upstreams.catalog.state.stats.calls["POST /graphql"] == 3
    assert stack.upstreams.catalog.state.stats.unauthorized == 0


async def test_bad_parameters_are_400s(stack: Stack) -> None:
    async with stack.start_bff() as bff, bff.client() as client:
        huge = await client.get("/auth/callback", params={"state": "s" * 600, "code": "c"})
        missing = await client.post("/auth/backchannel-logout", data={})
    for response in (huge, missing):
        assert response.status_code == 400
        assert response.json()["error"] == "invalid_request"
