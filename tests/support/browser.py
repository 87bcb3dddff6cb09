"""Signing in as a browser would, with plain HTTP: follow redirects, submit the IdP's forms."""

from __future__ import annotations

import html
import os
import re
from typing import Any
from urllib.parse import urljoin

import httpx

_FORM = re.compile(r'<form[^>]*action="([^"]+)"[^>]*>(.*?)</form>', re.S)
_INPUT = re.compile(r"<input([^>]*)>", re.S)
_ATTR = re.compile(r'(\w+)="([^"]*)"')


def _forms(page: str) -> list[tuple[str, dict[str, str]]]:
    forms = []
    for action, body in _FORM.findall(page):
        fields: dict[str, str] = {}
        for raw in _INPUT.findall(body):
            attrs = dict(_ATTR.findall(raw))
            if "name" in attrs:
                fields[attrs["name"]] = html.unescape(attrs.get("value", ""))
        forms.append((html.unescape(action), fields))
    return forms


async def follow(client: httpx.AsyncClient, response: httpx.Response, limit: int = 20) -> httpx.Response:
    for _ in range(limit):
        if response.status_code not in (301, 302, 303, 307, 308):
            return response
        location = urljoin(str(response.url), response.headers["location"])
        if not location.startswith(("http://", "https://")):
            return response  # an app's custom scheme: the operating system would take it from here
        response = await client.get(location)
    raise AssertionError("too many redirects")


async def sign_in_at_idp(client: httpx.AsyncClient, start: httpx.Response, username: str = "alice") -> httpx.Response:
    """From the IdP's first page: log in, consent, and follow back to wherever the IdP sends us."""
    response = await follow(client, start)
    for _ in range(4):
        forms = _forms(response.text) if response.status_code == 200 else []
        if not forms:
            return response
        action, fields = forms[0]
        if "login" in fields or 'name="login"' in response.text:
            fields.update({"login": username, "password": "any-password"})
        if 'name="logout"' in response.text:
            fields["logout"] = "yes"  # the IdP's "sign me out everywhere" button
        response = await client.post(urljoin(str(response.url), action), data=fields)
        response = await follow(client, response)
    return response


async def browser_login(
    client: httpx.AsyncClient, bff_url: str, username: str = "alice", return_to: str = "/"
) -> httpx.Response:
    """GET /auth/login and go through the IdP; returns the BFF's final answer."""
    start = await client.get(f"{bff_url}/auth/login", params={"return_to": return_to})
    assert start.status_code == 302, start.text
    return await sign_in_at_idp(client, start, username)


async def signed_in_cookie(bff: Any, user: str = "alice") -> str:
    """Sign ``user`` in at a running BFF (a `tests.conftest.Bff`); the session cookie's value."""
    async with bff.client() as browser:
        await browser_login(browser, bff.url, user)
        cookie = browser.cookies.get("bff_session")
    assert cookie
    return str(cookie)


#: flags for Debian's chromium in a container: no sandbox, no GPU, nothing reaching the network
CHROMIUM_FLAGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--no-first-run",
    "--disable-quic",
    "--disable-sync",
]


def chromium_path() -> str:
    """Debian's chromium (or ``BFF_TEST_CHROMIUM``) for Playwright's ``executable_path``; missing:
    a failure under CI, else a skip (`tests.support.servers.missing_component`)."""
    from tests.support.servers import require_binary

    return os.environ.get("BFF_TEST_CHROMIUM") or require_binary("chromium", "apt-get install chromium")
