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
from tests.support.servers import first_answer, free_port, serve

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


async def test_plain_demo_reports_every_part_ok(demo: tuple[Any, str]) -> None:
    """The demo's own upstreams answer at their base URLs: its start-up report has no warning."""
    from bff.resources import check_parts

    app, url = demo
    checks = await check_parts(app.state.resources)
    assert [check.status for check in checks] == ["ok"] * 4, checks
    assert {check.part for check in checks} == {
        "session store",
        "identity provider",
        "upstream accounts",
        "upstream catalog",
    }
    async with httpx.AsyncClient(base_url=url) as client:
        index = await client.get("/demo/accounts")
        me = await client.get("/demo/accounts/me")
    assert index.status_code == 200 and index.json()["service"] == "accounts"
    assert me.status_code == 401  # the index shows no data; the routes still want a token


def _run_demo(*args: str, **settings: str) -> tuple[dict[str, int], str]:
    """`bff demo --port P *args` until it answers; the status of a few paths, and its output. A port
    another test's server took between `free_port` and the demo's bind (its answer is no GraphQL
    JSON: the suite failed once on a plain "Not Found") is given up for another, twice at most."""
    for _ in range(2):
        try:
            return _run_demo_once(*args, **settings)
        except _PortTaken:
            continue
    return _run_demo_once(*args, **settings)


class _PortTaken(Exception):
    pass


def _run_demo_once(*args: str, **settings: str) -> tuple[dict[str, int], str]:
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("BFF_")}
    proc = subprocess.Popen(
        [sys.executable, "-m", "bff", "demo", "--port", str(port), *args],
        env={**env, **settings},
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    base = f"http://127.0.0.1:{port}"
    statuses: dict[str, int] = {}
    try:
        hello = first_answer(proc, lambda: httpx.post(f"{base}/graphql", json={"query": "{ hello }"}, timeout=5))
        if not hello.headers.get("content-type", "").startswith("application/json"):
            raise _PortTaken
        statuses["hello"] = hello.status_code if "errors" not in hello.json() else 0
        statuses["accounts"] = httpx.get(f"{base}/demo/accounts", timeout=5).status_code
        statuses["catalog"] = httpx.post(f"{base}/demo/catalog/graphql", json={}, timeout=5).status_code
        statuses["idp"] = httpx.get(f"{base}/idp/.well-known/openid-configuration", timeout=5).status_code
        time.sleep(0.5)  # the start-up report runs in the background
    finally:
        proc.terminate()
        output = proc.communicate(timeout=15)[0]
    return statuses, output


def test_bff_demo_schema_uses_the_teams_upstreams_not_the_demos() -> None:
    """`bff demo --schema`: the team's schema and upstreams behind the dev IdP; the demo's upstreams
    are neither mounted nor probed unless ``--demo-upstreams`` asks for them or none is configured."""
    billing = f"http://127.0.0.1:{free_port()}/billing"
    schema = "tests.api.user_schema:schema"
    statuses, output = _run_demo("--schema", schema, BFF_UPSTREAMS__BILLING__URL=billing)
    assert statuses == {"hello": 200, "accounts": 404, "catalog": 404, "idp": 200}
    assert f"upstream billing: {billing} unreachable" in output
    assert "upstream accounts" not in output and "upstream catalog" not in output

    statuses, output = _run_demo("--schema", schema, "--demo-upstreams", BFF_UPSTREAMS__BILLING__URL=billing)
    assert statuses == {"hello": 200, "accounts": 200, "catalog": 401, "idp": 200}
    assert "upstream accounts:" in output and "upstream catalog:" in output and "upstream billing:" in output

    # no upstream configured at all: the demo's, as 0.2 did, so a schema tried on its own has some
    statuses, output = _run_demo("--schema", schema)
    assert statuses == {"hello": 200, "accounts": 200, "catalog": 401, "idp": 200}
    assert "upstream accounts:" in output and "upstream catalog:" in output
