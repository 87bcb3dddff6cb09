"""``/auth/login``'s ``prompt``, ``acr_values``, ``max_age`` and ``login_hint``: validated, passed on to
the IdP's authorization request, anything else dropped; garbage is a 400 with a clear message, never
a 500. And the demo's scopes: what `bff demo` asks for, what the dev IdP grants each user."""

from __future__ import annotations

import re
from collections.abc import Iterator
from html import unescape
from typing import Any
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

from bff import cli
from bff.auth.oidc import s256_challenge
from bff.demo.stack import build_demo_app
from tests.support.servers import ThreadedApps, free_port


@pytest.fixture(scope="module")
def demo() -> Iterator[tuple[Any, str]]:
    """`bff demo`'s app (the dev IdP at /idp) on a real port, for synchronous callers."""
    port = free_port()
    app = build_demo_app(f"http://127.0.0.1:{port}")
    apps = ThreadedApps(app, ports=[port])
    apps.start()
    try:
        yield app, apps.urls[0]
    finally:
        apps.stop()


def _authorize_query(response: httpx.Response) -> dict[str, list[str]]:
    assert response.status_code == 302, response.text
    return parse_qs(urlsplit(response.headers["location"]).query)


def test_the_options_are_passed_on(demo: tuple[Any, str]) -> None:
    _, url = demo
    with httpx.Client(base_url=url) as client:
        asked = {
            "prompt": "login select_account",
            "acr_values": "urn:bff:loa:2 urn:bff:loa:1",
            "max_age": "300",
            "login_hint": "alice@example.com",
            "return_to": "/orders",
        }
        query = _authorize_query(client.get("/auth/login", params=asked))
        assert query["prompt"] == ["login select_account consent"]  # consent: offline_access is asked for
        assert query["acr_values"] == ["urn:bff:loa:2 urn:bff:loa:1"]
        assert query["max_age"] == ["300"]
        assert query["login_hint"] == ["alice@example.com"]
        assert "return_to" not in query  # ours, not the IdP's

        silent = _authorize_query(client.get("/auth/login", params={"prompt": "none"}))
        assert silent["prompt"] == ["none"]  # none stands alone: no consent added

        plain = _authorize_query(client.get("/auth/login", params={"prompt": "", "acr_values": "", "max_age": ""}))
        assert plain["prompt"] == ["consent"]
        assert not {"acr_values", "max_age", "login_hint"} & set(plain)

        # anything else is dropped, not passed on (claims, request objects, a second redirect_uri...)
        extra = {
            "claims": '{"id_token":{"acr":{"essential":true}}}',
            "request_uri": "https://evil/x",
            "ui_locales": "de",
        }
        forwarded = _authorize_query(client.get("/auth/login", params=extra))
        assert not {"claims", "request_uri", "ui_locales"} & set(forwarded)


@pytest.mark.parametrize(
    ("params", "named"),
    [
        ({"prompt": "bogus"}, "prompt"),
        ({"prompt": "none consent"}, "prompt=none"),
        ({"prompt": "x" * 200}, "prompt"),
        ({"acr_values": "<script>"}, "acr_values"),
        ({"acr_values": " ".join(f"urn:{n}" for n in range(9))}, "acr_values"),
        ({"acr_values": "a" * 600}, "acr_values"),
        ({"acr_values": "a" * 3000}, "acr_values"),
        ({"max_age": "-1"}, "max_age"),
        ({"max_age": "1.5"}, "max_age"),
        ({"max_age": "soon"}, "max_age"),
        ({"max_age": "9" * 12}, "max_age"),
        ({"login_hint": "alice\r\nSet-Cookie: x=y"}, "login_hint"),
        ({"login_hint": "a" * 300}, "login_hint"),
    ],
)
def test_bad_options_are_a_clear_400(demo: tuple[Any, str], params: dict[str, str], named: str) -> None:
    _, url = demo
    with httpx.Client(base_url=url) as client:
        response = client.get("/auth/login", params=params)
    assert response.status_code == 400, response.text
    body = response.json()
    assert body["error"] == "invalid_request" and named in body["message"]
    assert "set-cookie" not in response.headers  # no transaction was started


_TEXT = st.text(st.characters(exclude_categories=("Cs",)), max_size=300)
_LIKELY = st.sampled_from(["none", "login", "none login", "0", "urn:bff:loa:2", "-1", " ", "", "\x00", "%00"])


@settings(max_examples=80, deadline=None, suppress_health_check=list(HealthCheck), derandomize=True)
@given(
    params=st.fixed_dictionaries(
        {},
        optional={name: _TEXT | _LIKELY for name in ("prompt", "acr_values", "max_age", "login_hint", "return_to")},
    )
)
def test_garbage_options_are_never_a_500(demo: tuple[Any, str], params: dict[str, str]) -> None:
    with httpx.Client(base_url=demo[1]) as client:
        response = client.get("/auth/login", params=params)
    assert response.status_code in (302, 400), (params, response.status_code, response.text)
    if response.status_code == 302:
        query = parse_qs(urlsplit(response.headers["location"]).query)
        for name in ("acr_values", "max_age", "login_hint"):
            sent = params.get(name, "").strip(" ")
            assert (name in query) == bool(sent), (name, params, query)
    else:
        assert response.json()["error"] == "invalid_request"


# -- the demo's scopes -----------------------------------------------------------------------------


VERIFIER = "a-verifier-of-forty-three-characters-or-more-0123"
CHALLENGE = s256_challenge(VERIFIER)


def _code(client: httpx.Client, url: str, user: str, scope: str) -> str:
    """An authorization code of the dev IdP for ``user``, asked for as the BFF would (with ``scope``)."""
    page = client.get(
        "/idp/authorize",
        params={
            "response_type": "code",
            "client_id": "bff-demo",
            "redirect_uri": f"{url}/auth/callback",
            "scope": scope,
            "state": "s",
            "nonce": "n",
            "code_challenge": CHALLENGE,
            "code_challenge_method": "S256",
            "acr_values": "urn:bff:loa:2",
        },
    )
    action = re.search(r'<form method="post" action="([^"]+)"', page.text)
    assert action is not None, page.text
    answer = client.post(unescape(action.group(1)), data={"user": user})
    return parse_qs(urlsplit(answer.headers["location"]).query)["code"][0]


def test_the_dev_idp_grants_each_user_only_the_api_scopes_it_may_have(demo: tuple[Any, str]) -> None:
    app, url = demo
    idp = app.state.dev_idp
    client_secret = app.state.resources.settings.oidc_client_secret.get_secret_value()
    asked = "openid profile offline_access orders:read orders:write unknown:scope"
    granted = {}
    with httpx.Client(base_url=url) as browser:
        for user in ("alice", "bob", "carol"):
            code = _code(browser, url, user, asked)
            tokens = browser.post(
                "/idp/token",
                data={
                    "grant_type": "authorization_code",
                    "code": code,
                    "redirect_uri": f"{url}/auth/callback",
                    "code_verifier": VERIFIER,
                },
                auth=("bff-demo", client_secret),
            ).json()
            granted[user] = tokens["scope"]
            access = idp.verify_access_token(tokens["access_token"])
            assert access["scope"] == tokens["scope"] and access["acr"] == "urn:bff:loa:2"
    assert granted == {
        "alice": "openid profile offline_access orders:read orders:write",
        "bob": "openid profile offline_access orders:read",
        "carol": "openid profile offline_access",
    }
    discovery = httpx.get(f"{url}/idp/.well-known/openid-configuration").json()
    assert {"orders:read", "orders:write"} <= set(discovery["scopes_supported"])
    assert discovery["acr_values_supported"] == ["urn:bff:loa:1", "urn:bff:loa:2"]


def test_bff_demo_asks_for_the_demo_api_scopes(monkeypatch: pytest.MonkeyPatch) -> None:
    """``bff demo`` (no server started here): its default scopes, ``--scopes``, BFF_OIDC_SCOPES."""
    from bff import serving
    from bff.demo import stack

    asked: list[str] = []

    def build(base_url: str, **options: Any) -> Any:
        asked.append(stack.demo_settings(base_url).oidc_scopes)  # the settings the demo app is built with
        return object()

    monkeypatch.setattr(stack, "build_demo_app", build)
    monkeypatch.setattr(serving, "run", lambda config: True)
    for argv, environment, expected in [
        ([], None, "openid profile email offline_access orders:read orders:write"),
        (["--scopes", "openid  orders:read"], None, "openid orders:read"),
        ([], "openid profile", "openid profile"),
        (["--scopes", "openid email"], "openid profile", "openid email"),
    ]:
        if environment is None:
            monkeypatch.delenv("BFF_OIDC_SCOPES", raising=False)
        else:
            monkeypatch.setenv("BFF_OIDC_SCOPES", environment)
        assert cli.main(["demo", *argv]) == 0
        assert asked[-1] == expected
    monkeypatch.delenv("BFF_OIDC_SCOPES", raising=False)
    assert cli.main(["demo", "--scopes", "profile email"]) == 2  # no openid: no sign-in
    assert len(asked) == 4
