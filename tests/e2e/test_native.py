"""A simulated native app: system-browser login at the real IdP, handoff, session handle."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import secrets
from typing import Any
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest

from tests.conftest import Bff
from tests.e2e.conftest import Stack
from tests.e2e.test_login import sign_in_at_idp_until_callback
from tests.support.browser import sign_in_at_idp

APP_URI = "com.example.app:/oauth/cb"


@pytest.fixture
def idp_options() -> dict[str, Any]:
    return {"access_ttl": 4}


def _pkce() -> tuple[str, str]:
    verifier = secrets.token_urlsafe(48)
    challenge = base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest()).rstrip(b"=").decode()
    return verifier, challenge


async def _handoff(bff: Bff, challenge: str, app_state: str = "app-state-1") -> str:
    """The system browser part: returns the handoff code the app receives on its URI."""
    async with httpx.AsyncClient(base_url=bff.url) as system_browser:
        start = await system_browser.get(
            "/auth/login",
            params={
                "client": "native",
                "redirect_uri": APP_URI,
                "code_challenge": challenge,
                "code_challenge_method": "S256",
                "state": app_state,
            },
        )
        assert start.status_code == 302, start.text
        final = await sign_in_at_idp(system_browser, start)
        assert final.status_code == 302
        location = final.headers["location"]
        assert location.startswith(APP_URI + "?")
        assert "bff_session" not in system_browser.cookies  # no browser session for a native login
    query = parse_qs(urlsplit(location).query)
    assert query["state"] == [app_state]
    return query["code"][0]


async def test_native_login_query_refresh_logout(stack: Stack) -> None:
    async with stack.start_bff(native_redirect_uris=[APP_URI]) as bff, httpx.AsyncClient(base_url=bff.url) as app:
        verifier, challenge = _pkce()
        code = await _handoff(bff, challenge)
        exchanged = await app.post("/auth/native/token", json={"code": code, "code_verifier": verifier})
        assert exchanged.status_code == 200
        body = exchanged.json()
        assert set(body) == {"session", "expiresAt"}
        handle = body["session"]
        headers = {"Authorization": f"Session {handle}"}

        viewer = (await app.post("/graphql", json={"query": "{ viewer { id name } }"}, headers=headers)).json()
        assert viewer == {"data": {"viewer": {"id": "alice", "name": "Alice Example"}}}
        # the CSRF rule does not apply to header-authenticated requests; cookies are ignored
        get = await app.get(
            "/graphql",
            params={"query": "{ viewer { id } }"},
            headers={**headers, "Cookie": "bff_session=forged.cookie"},
        )
        assert get.json() == {"data": {"viewer": {"id": "alice"}}}

        await asyncio.sleep(2.3)  # past half-life: the next request refreshes server-side
        before = stack.idp.stats()["refreshGrants"]
        again = (await app.post("/graphql", json={"query": "{ viewer { id } }"}, headers=headers)).json()
        assert again == {"data": {"viewer": {"id": "alice"}}}
        assert stack.idp.stats()["refreshGrants"] == before + 1
        assert (await app.get("/auth/session", headers=headers)).json()["authenticated"] is True

        revocations = stack.idp.stats()["revocations"]
        out = await app.post("/auth/logout", headers=headers)
        assert out.status_code == 200
        assert out.json()["loggedOut"] is True
        assert "set-cookie" not in out.headers
        assert stack.idp.stats()["revocations"] == revocations + 1
        after = (await app.post("/graphql", json={"query": "{ viewer { id } }"}, headers=headers)).json()
        assert after["errors"][0]["extensions"]["code"] == "UNAUTHENTICATED"


async def test_native_hostile_inputs(stack: Stack) -> None:
    overrides = {"native_redirect_uris": [APP_URI], "native_handoff_seconds": 1}
    async with stack.start_bff(**overrides) as bff, httpx.AsyncClient(base_url=bff.url) as app:
        verifier, challenge = _pkce()
        # unlisted or sloppy redirect URIs, bad challenges
        for params in (
            {"redirect_uri": "com.evil.app:/cb", "code_challenge": challenge},
            {"redirect_uri": APP_URI + "/extra", "code_challenge": challenge},
            {"redirect_uri": APP_URI, "code_challenge": "short"},
            {"redirect_uri": APP_URI, "code_challenge": challenge, "code_challenge_method": "plain"},
            {"redirect_uri": APP_URI},
        ):
            response = await app.get("/auth/login", params={"client": "native", **params})
            assert response.status_code == 400, params

        # wrong verifier: refused, and the code is spent
        code = await _handoff(bff, challenge)
        wrong = await app.post("/auth/native/token", json={"code": code, "code_verifier": _pkce()[0]})
        assert wrong.status_code == 400
        replay = await app.post("/auth/native/token", json={"code": code, "code_verifier": verifier})
        assert replay.status_code == 400

        # replayed code
        code = await _handoff(bff, challenge)
        assert (await app.post("/auth/native/token", json={"code": code, "code_verifier": verifier})).status_code == 200
        assert (await app.post("/auth/native/token", json={"code": code, "code_verifier": verifier})).status_code == 400

        # expired code
        code = await _handoff(bff, challenge)
        await asyncio.sleep(1.3)
        assert (await app.post("/auth/native/token", json={"code": code, "code_verifier": verifier})).status_code == 400

        # malformed bodies
        for body in (
            {"content": b"not json", "headers": {"content-type": "application/json"}},
            {"json": []},
            {"json": {"code": 1}},
            {"data": {}},
        ):
            assert (await app.post("/auth/native/token", **body)).status_code == 400

        # forged handles are no session
        for handle in ("forged", "a.b", "x" * 4000):
            body = (
                await app.post(
                    "/graphql", json={"query": "{ viewer { id } }"}, headers={"Authorization": f"Session {handle}"}
                )
            ).json()
            assert body["errors"][0]["extensions"]["code"] == "UNAUTHENTICATED"


async def test_native_sign_ins_in_flight_together_and_a_refused_one(stack: Stack) -> None:
    """Two app sign-ins started in one system browser complete in reverse order; a refused one tells
    the user to go back to the app (there is no app challenge to start again with)."""
    async with stack.start_bff(native_redirect_uris=[APP_URI]) as bff, httpx.AsyncClient(base_url=bff.url) as browser:
        pairs = [_pkce(), _pkce()]
        starts = []
        for i, (_, challenge) in enumerate(pairs):
            params = {"client": "native", "redirect_uri": APP_URI, "code_challenge": challenge, "state": f"app-{i}"}
            starts.append(await browser.get("/auth/login", params=params))
        assert len([c for c in browser.cookies.jar if c.name.startswith("bff_login_")]) == 2
        landings = [await sign_in_at_idp_until_callback(browser, start) for start in starts]
        for i in (1, 0):
            done = await browser.get(landings[i])
            assert done.status_code == 302 and done.headers["location"].startswith(APP_URI + "?")
            query = parse_qs(urlsplit(done.headers["location"]).query)
            assert query["state"] == [f"app-{i}"]
            verifier = pairs[i][0]
            exchanged = await browser.post(
                "/auth/native/token", json={"code": query["code"][0], "code_verifier": verifier}
            )
            assert exchanged.status_code == 200
        assert "bff_session" not in browser.cookies
        assert not [c for c in browser.cookies.jar if c.name.startswith("bff_login_")]

        _, challenge = _pkce()
        start = await browser.get(
            "/auth/login", params={"client": "native", "redirect_uri": APP_URI, "code_challenge": challenge}
        )
        state = httpx.URL(start.headers["location"]).params["state"]
        page = await browser.get(
            "/auth/callback", params={"state": state, "error": "access_denied"}, headers={"Accept": "text/html"}
        )
        assert page.status_code == 400 and page.headers["content-type"].startswith("text/html")
        assert "access_denied" in page.text and "Go back to the app" in page.text
        assert "/auth/login" not in page.text
