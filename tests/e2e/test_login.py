"""Sign-in, session and logout against the real oidc-provider."""

from __future__ import annotations

import httpx
from redis.asyncio import Redis

from bff.web.transactions import MAX_IN_FLIGHT, MAX_TOTAL_BYTES
from tests.e2e.conftest import Stack
from tests.support.browser import browser_login, follow, sign_in_at_idp
from tests.support.servers import RedisServer

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


def _login_cookies(client: httpx.AsyncClient) -> dict[str, str]:
    return {c.name: str(c.value) for c in client.cookies.jar if c.name.startswith("bff_login_")}


async def test_callback_state_must_belong_to_this_browser(stack: Stack) -> None:
    async with stack.start_bff() as bff, bff.client() as victim, bff.client() as attacker:
        # the victim has a sign-in of their own in progress
        mine = await victim.get("/auth/login", params={"return_to": "/mine"})
        my_landing = await sign_in_at_idp_until_callback(victim, mine, "bob")
        in_flight = _login_cookies(victim)
        assert len(in_flight) == 1
        # the attacker signs in at the IdP, then feeds the callback URL to the victim's browser
        start = await attacker.get("/auth/login")
        landing = await sign_in_at_idp_until_callback(attacker, start)
        response = await victim.get(landing)
        assert response.status_code == 400
        assert "not started in this browser" in response.json()["message"]
        assert "set-cookie" not in response.headers  # nothing of the victim's is touched
        assert "bff_session" not in victim.cookies
        assert _login_cookies(victim) == in_flight
        # the victim's own sign-in still completes, as themselves
        done = await victim.get(my_landing)
        assert done.status_code == 302 and done.headers["location"] == "/mine"
        assert (await victim.get("/auth/session")).json()["user"]["sub"] == "bob"
        assert _login_cookies(victim) == {}


async def test_sign_ins_in_several_tabs_complete_in_any_order(stack: Stack) -> None:
    async with stack.start_bff() as bff, bff.client() as browser:
        # three tabs start signing in before any of them reaches the IdP's forms
        starts = [await browser.get("/auth/login", params={"return_to": f"/tab{i}"}) for i in range(3)]
        assert len(_login_cookies(browser)) == 3
        landings = [await sign_in_at_idp_until_callback(browser, start) for start in starts]
        sessions = []
        for i in (1, 2, 0):
            done = await browser.get(landings[i])
            assert done.status_code == 302, done.text
            assert done.headers["location"] == f"/tab{i}"
            sessions.append(browser.cookies["bff_session"])
            assert (await browser.get("/auth/session")).json()["authenticated"] is True
        assert len(set(sessions)) == 3
        assert _login_cookies(browser) == {}


async def test_forged_callbacks_change_nothing_and_browsers_get_a_page(stack: Stack) -> None:
    async with stack.start_bff() as bff, bff.client() as browser:
        start = await browser.get("/auth/login", params={"return_to": "/here"})
        landing = await sign_in_at_idp_until_callback(browser, start)
        real_state = httpx.URL(landing).params["state"]
        in_flight = _login_cookies(browser)
        html_accept = {"Accept": "text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8"}
        forged = (
            {"state": "forged", "code": "x"},
            {"state": real_state + "x", "code": "x"},
            {"state": "", "code": "x"},
            {"state": "nope", "error": "access_denied"},
        )
        for params in forged:
            as_page = await browser.get("/auth/callback", params=params, headers=html_accept)
            assert as_page.status_code == 400, params
            assert as_page.headers["content-type"].startswith("text/html")
            assert "Sign-in failed" in as_page.text and "not started in this browser" in as_page.text
            assert 'href="/auth/login?return_to=%2F"' in as_page.text
            assert "set-cookie" not in as_page.headers
            as_json = await browser.get("/auth/callback", params=params, headers={"Accept": "application/json"})
            assert as_json.status_code == 400
            assert as_json.json()["error"] == "login_failed"
            assert "set-cookie" not in as_json.headers
        assert _login_cookies(browser) == in_flight
        done = await browser.get(landing, headers=html_accept)
        assert done.status_code == 302 and done.headers["location"] == "/here"

        # a sign-in of this browser that the IdP refuses: the page offers to start it again, same return_to
        start = await browser.get("/auth/login", params={"return_to": "/orders?x=1"})
        state = httpx.URL(start.headers["location"]).params["state"]
        page = await browser.get("/auth/callback", params={"state": state, "error": "<script>"}, headers=html_accept)
        assert page.status_code == 400
        assert "refused the sign-in (script)" in page.text and "<script>" not in page.text
        assert 'href="/auth/login?return_to=%2Forders%3Fx%3D1"' in page.text
        assert "Max-Age=0" in page.headers["set-cookie"]  # that transaction is over
        assert _login_cookies(browser) == {}


async def test_a_completed_state_cannot_be_replayed_even_with_its_cookie(stack: Stack) -> None:
    async with stack.start_bff() as bff, bff.client() as browser:
        start = await browser.get("/auth/login")
        landing = await sign_in_at_idp_until_callback(browser, start)
        kept = _login_cookies(browser)
        assert (await browser.get(landing)).status_code == 302
        async with bff.client() as replay:
            replay.cookies.update(kept)
            again = await replay.get(landing)
        assert again.status_code == 400
        assert "already been completed" in again.json()["message"]
        assert "bff_session" not in replay.cookies


async def test_in_flight_sign_ins_are_capped(stack: Stack) -> None:
    async with stack.start_bff() as bff, bff.client() as browser:
        starts = [await browser.get("/auth/login", params={"return_to": f"/t{i}"}) for i in range(MAX_IN_FLIGHT + 2)]
        cookies = _login_cookies(browser)
        assert len(cookies) == MAX_IN_FLIGHT
        assert sum(len(k) + len(v) + 2 for k, v in cookies.items()) <= MAX_TOTAL_BYTES
        oldest = await browser.get(await sign_in_at_idp_until_callback(browser, starts[0]))
        assert oldest.status_code == 400  # dropped to make room
        newest = await browser.get(await sign_in_at_idp_until_callback(browser, starts[-1]))
        assert newest.status_code == 302 and newest.headers["location"] == f"/t{MAX_IN_FLIGHT + 1}"


async def test_login_floods_store_nothing(stack: Stack, redis_server: RedisServer) -> None:
    url = redis_server.url.rsplit("/", 1)[0] + "/7"  # a database of its own, to count keys
    redis = Redis.from_url(url)
    try:
        await redis.flushdb()
        async with stack.start_bff(session_store=url) as bff, bff.client() as anonymous:
            for _ in range(200):
                response = await anonymous.get("/auth/login", params={"return_to": "/" + "x" * 1000})
                assert response.status_code == 302
                anonymous.cookies.clear()  # a flood keeps nothing
            assert await redis.dbsize() == 0
            # a complete sign-in still works on that store
            await browser_login(anonymous, bff.url)
            assert (await anonymous.get("/auth/session")).json()["authenticated"] is True
    finally:
        await redis.aclose()


async def sign_in_at_idp_until_callback(
    client: httpx.AsyncClient, start: httpx.Response, username: str = "alice"
) -> str:
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
        await sign_in_at_idp(client, start, username)
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


async def test_a_wrong_client_secret_is_a_configuration_error_not_an_outage(stack: Stack) -> None:
    """bff check's parts name the refused credentials; a sign-in ends on a page that says what is wrong
    (400, not a 503 'provider unavailable'), and the log names the settings to fix."""
    from bff.resources import check_parts

    async with stack.start_bff(oidc_client_secret="not-the-secret") as bff:
        checks = {check.part: check for check in await check_parts(bff.resources, verify_client=True)}
        assert checks["identity provider"].ok
        assert not checks["client credentials"].ok
        assert "BFF_OIDC_CLIENT_SECRET" in checks["client credentials"].detail
        async with bff.client() as browser:
            final = await browser_login(browser, bff.url)
        assert final.status_code == 400, final.text
        assert "client credentials" in final.text
        assert "bff_session" not in browser.cookies
    async with stack.start_bff() as good:
        checks = {check.part: check for check in await check_parts(good.resources, verify_client=True)}
        assert checks["client credentials"].ok
