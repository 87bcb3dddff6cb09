"""`bff demo`: one process with the dev IdP, demo upstreams and the BFF over real HTTP."""

from __future__ import annotations

import asyncio
import os
import re
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from html import unescape
from typing import Any

import httpx
import pytest

from bff.demo.stack import build_demo_app
from tests.support.servers import free_port, serve

VIEWER = {"query": "{ viewer { id name orders(first: 2) { id totalCents items { product { name } } } } }"}


@pytest.fixture
async def demo() -> AsyncIterator[tuple[Any, str]]:
    port = free_port()
    app = build_demo_app(f"http://127.0.0.1:{port}", access_ttl=6)
    async with serve(app, port) as url:
        yield app, url


async def sign_in(client: httpx.AsyncClient, user: str = "alice") -> httpx.Response:
    start = await client.get("/auth/login", params={"return_to": "/graphql"})
    assert start.status_code == 302
    page = await client.get(start.headers["location"])
    assert "Development identity provider" in page.text
    action = unescape(re.search(r'<form method="post" action="([^"]+)"', page.text).group(1))  # type: ignore[union-attr]
    chosen = await client.post(action, data={"user": user})
    assert chosen.status_code == 302
    done = await client.get(chosen.headers["location"])
    assert done.status_code == 302
    assert done.headers["location"] == "/graphql"
    return done


async def test_demo_login_query_refresh_logout(demo: tuple[Any, str]) -> None:
    app, url = demo
    idp = app.state.dev_idp
    async with httpx.AsyncClient(base_url=url) as browser:
        home = await browser.get("/")
        assert "GraphiQL" in home.text
        await sign_in(browser)
        body = (await browser.post("/graphql", json=VIEWER)).json()
        assert "errors" not in body, body
        assert body["data"]["viewer"]["name"] == "Alice Example"
        assert len(body["data"]["viewer"]["orders"]) == 2

        await asyncio.sleep(3.3)  # past half of the 6 s access token: the next request refreshes
        body = (await browser.post("/graphql", json=VIEWER)).json()
        assert "errors" not in body, body
        assert idp.stats["refresh_grants"] == 1
        # rotation: exactly one live refresh token remains for alice
        live = [t for t in idp.refresh_tokens.values() if not t.revoked and t.user.sub == "alice"]
        assert len(live) == 1

        out = await browser.post("/auth/logout", headers={"X-CSRF": "1"})
        assert out.json()["endSessionUrl"].startswith(f"{url}/idp/logout")
        assert idp.stats["revocations"] == 1
        body = (await browser.post("/graphql", json=VIEWER)).json()
        assert body["errors"][0]["extensions"]["code"] == "UNAUTHENTICATED"


async def test_dev_idp_refuses_bad_requests(demo: tuple[Any, str]) -> None:
    _, url = demo
    async with httpx.AsyncClient(base_url=url) as client:
        no_pkce = await client.get(
            "/idp/authorize",
            params={
                "response_type": "code",
                "client_id": "bff-demo",
                "redirect_uri": f"{url}/auth/callback",
                "scope": "openid",
                "state": "s",
                "nonce": "n",
            },
        )
        foreign = await client.get(
            "/idp/authorize",
            params={
                "response_type": "code",
                "client_id": "bff-demo",
                "redirect_uri": "https://evil.example/cb",
                "scope": "openid",
                "state": "s",
                "nonce": "n",
                "code_challenge": "x" * 43,
                "code_challenge_method": "S256",
            },
        )
        token = await client.post(
            "/idp/token", data={"grant_type": "refresh_token", "refresh_token": "nope"}, auth=("bff-demo", "wrong")
        )
    assert foreign.status_code == 400
    assert token.status_code in (400, 401)
    # no PKCE: the login page may show, but no code is ever issued without a challenge
    assert no_pkce.status_code in (200, 400)


def test_bff_demo_command_as_in_readme() -> None:
    """`bff demo --port P`, exactly as the README starts it, serves the viewer after sign-in."""
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("BFF_")}
    proc = subprocess.Popen(
        [sys.executable, "-m", "bff", "demo", "--port", str(port)],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    try:
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            try:
                if httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                time.sleep(0.1)

        async def run() -> dict[str, Any]:
            async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}") as browser:
                await sign_in(browser, "bob")
                result: dict[str, Any] = (await browser.post("/graphql", json=VIEWER)).json()
                return result

        body = asyncio.run(run())
        assert body["data"]["viewer"]["id"] == "bob"
    finally:
        proc.terminate()
        output = proc.communicate(timeout=10)[0].decode()
    assert f"http://127.0.0.1:{port}/graphql" in output
    assert "DEVELOPMENT identity provider" in output


def test_bff_demo_refuses_production() -> None:
    env = {**os.environ, "BFF_ENV": "production"}
    result = subprocess.run(
        [sys.executable, "-m", "bff", "demo", "--port", str(free_port())],
        env=env,
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert result.returncode != 0
    assert "refuses" in result.stderr
