"""Step-up (RFC 9470): the challenge an upstream sends, the STEP_UP_REQUIRED field error with a ready
login URL, the stronger sign-in through the dev IdP continuing the same browser session, and a
weaker answer refused at the callback without touching the session the browser has."""

from __future__ import annotations

import json
import re
from collections.abc import AsyncIterator
from html import unescape
from typing import Any
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest
import strawberry
from multidict import CIMultiDict, CIMultiDictProxy
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route
from strawberry.types import Info

from bff import Context, build_schema
from bff.auth.step_up import (
    AUTH_TIME_LEEWAY,
    SignInOptions,
    kept_claims,
    login_url,
    parse_challenges,
    referer_return_to,
    step_up_challenge,
    unmet,
)
from bff.demo.idp import ACR_DEFAULT, ACR_STRONG
from bff.errors import LoginError, StepUpRequired, UpstreamError, UpstreamUnauthorized
from bff.testing import RunningBFF, running_bff
from bff.upstream import GraphQLClient, RestClient
from bff.upstream.base import _header_values
from tests.support.tokens import CountingTokens

CHALLENGE = 'Bearer error="insufficient_user_authentication", error_description="stronger", acr_values="{acr}"'


# -- the challenge ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("header", "expected"),
    [
        (CHALLENGE.format(acr="urn:bff:loa:2"), ("urn:bff:loa:2", None)),
        ("Bearer error=insufficient_user_authentication, max_age=300", (None, 300)),
        ('Bearer error="insufficient_user_authentication", max_age="0", acr_values="a  b a"', ("a b", 0)),
        ('Basic realm="x", Bearer realm="api", error="insufficient_user_authentication",acr_values="c1"', ("c1", None)),
        ('Negotiate abc==, DPoP algs="ES256", error="insufficient_user_authentication"', (None, None)),
        ('bearer ERROR = "insufficient_user_authentication" , ACR_VALUES = "x"', ("x", None)),
    ],
)
def test_a_step_up_challenge_is_read_however_it_is_written(header: str, expected: tuple[Any, Any]) -> None:
    asked = step_up_challenge([header])
    assert asked is not None
    assert (asked.acr_values, asked.max_age) == expected


@pytest.mark.parametrize(
    "header",
    [
        "",
        "Bearer",
        'Bearer error="invalid_token"',
        'Basic error="insufficient_user_authentication"',  # not a bearer challenge
        'error="insufficient_user_authentication"',  # no scheme
        'Bearer error="insufficient_user_authentication',  # unterminated
        'Bearer error="insufficient_user_authentication", error="x"',  # repeated parameter
        'Bearer error="insufficient_user_authentication" acr_values="x"',  # no comma
        'Bearer error="insufficient_user_authentication", max_age=-1',
        'Bearer error="insufficient_user_authentication", max_age=1.5',
        'Bearer error="insufficient_user_authentication", max_age=99999999999',
        'Bearer error="insufficient_user_authentication", acr_values="<script>"',
        'Bearer error="insufficient_user_authentication", acr_values="a\\"b"',
        'Bearer error="insufficient_user_authentication", acr_values="' + " ".join(f"v{n}" for n in range(20)) + '"',
        "\x00\xff,,,===",
        '"' * 100,
    ],
)
def test_garbage_or_another_challenge_is_no_step_up(header: str) -> None:
    assert step_up_challenge([header]) is None


def test_several_header_lines_and_token68() -> None:
    assert [c.scheme for c in parse_challenges("Basic dXNlcg==, Bearer, Foo bar")] == ["basic", "bearer", "foo"]
    asked = step_up_challenge(['Basic realm="a"', "garbage garbage garbage", CHALLENGE.format(acr="gold")])
    assert asked is not None and asked.acr_values == "gold"
    headers = CIMultiDictProxy(CIMultiDict([("WWW-Authenticate", "Basic"), ("www-authenticate", "Bearer x")]))
    assert _header_values(_Answer(headers), "www-authenticate") == ["Basic", "Bearer x"]  # aiohttp's headers
    both = httpx.Headers([("www-authenticate", "Basic"), ("WWW-Authenticate", "Bearer x")])
    assert _header_values(_Answer(both), "www-authenticate") == ["Basic", "Bearer x"]


class _Answer:
    status_code = 401

    def __init__(self, headers: Any) -> None:
        self.headers = headers


@pytest.mark.parametrize("status", [401, 403])
async def test_an_upstream_challenge_is_step_up_required_never_a_refresh(status: int) -> None:
    calls: list[str] = []

    def handler(request: httpx.Request) -> httpx.Response:
        calls.append(request.headers["authorization"])
        challenge = 'Bearer error="insufficient_user_authentication", acr_values="urn:bff:loa:2", max_age=60'
        return httpx.Response(status, headers={"WWW-Authenticate": challenge}, json={"error": "step up"})

    tokens = CountingTokens()
    async with httpx.AsyncClient(transport=httpx.MockTransport(handler), base_url="http://accounts") as http:
        with pytest.raises(StepUpRequired) as raised:
            await RestClient("accounts", http, tokens).get_json("/me")
        with pytest.raises(StepUpRequired):
            await GraphQLClient("catalog", http, tokens, endpoint="http://accounts/graphql").execute("{ a }")
    assert tokens.refreshes == 0
    assert calls == ["Bearer t-1", "Bearer t-1"]  # once each: no retry
    step_up = raised.value
    assert (step_up.acr_values, step_up.max_age, step_up.upstream, step_up.login) == (
        "urn:bff:loa:2",
        60,
        "accounts",
        None,
    )
    assert step_up.extensions() == {
        "code": "STEP_UP_REQUIRED",
        "acrValues": "urn:bff:loa:2",
        "maxAge": 60,
        "upstream": "accounts",
    }


async def test_a_garbled_challenge_is_an_ordinary_401_or_403() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        status = 401 if request.url.path == "/401" else 403
        return httpx.Response(status, headers={"WWW-Authenticate": 'Bearer error="insufficient_user_authentication'})

    tokens = CountingTokens()
    async with httpx.AsyncClient(transport=httpx.MockTransport(handler), base_url="http://accounts") as http:
        client = RestClient("accounts", http, tokens)
        with pytest.raises(UpstreamUnauthorized):
            await client.get_json("/401")
        assert tokens.refreshes == 1  # the usual: one refresh, one retry
        with pytest.raises(UpstreamError) as refused:
            await client.get_json("/403")
    assert refused.value.status == 403 and not isinstance(refused.value, UpstreamUnauthorized)


# -- what a sign-in asks for, and whether it got it -------------------------------------------------


def test_sign_in_options() -> None:
    assert SignInOptions.parse() == SignInOptions()
    assert SignInOptions.parse(prompt="", acr_values=" ", max_age="", login_hint="") == SignInOptions()
    parsed = SignInOptions.parse(prompt="login  consent login", acr_values="b a b", max_age="0", login_hint="al@x")
    assert parsed == SignInOptions(prompt="login consent", acr_values="b a", max_age=0, login_hint="al@x")
    for bad in (
        {"prompt": "bogus"},
        {"prompt": "none login"},
        {"acr_values": "a\tb"},
        {"acr_values": "a" * 257},
        {"max_age": "-1"},
        {"max_age": "١٢"},  # Arabic-Indic digits are digits to str.isdigit
        {"login_hint": "a\nb"},
        {"login_hint": "x" * 257},
    ):
        with pytest.raises(LoginError) as refused:
            SignInOptions.parse(**bad)
        assert next(iter(bad)) in refused.value.message


def test_unmet_checks_acr_and_auth_time_against_the_request() -> None:
    asked_at = 1_000_000.0
    assert unmet({}, acr_values=None, max_age=None, requested_at=asked_at) is None
    assert unmet({"acr": "b"}, acr_values="a b", max_age=None, requested_at=asked_at) is None
    assert unmet({"acr": "c"}, acr_values="a b", max_age=None, requested_at=asked_at) is not None
    assert unmet({}, acr_values="a", max_age=None, requested_at=asked_at) is not None
    # max_age counts up to when the sign-in was asked for, not to the callback (time at the IdP is free)
    assert unmet({"auth_time": asked_at - 100}, acr_values=None, max_age=100, requested_at=asked_at) is None
    late = asked_at - 100 - AUTH_TIME_LEEWAY - 1
    assert unmet({"auth_time": late}, acr_values=None, max_age=100, requested_at=asked_at) is not None
    assert unmet({"auth_time": asked_at + 30}, acr_values=None, max_age=0, requested_at=asked_at) is None
    assert unmet({}, acr_values=None, max_age=0, requested_at=asked_at) is not None
    assert unmet({"auth_time": True}, acr_values=None, max_age=0, requested_at=asked_at) is not None
    assert kept_claims({"acr": "x", "amr": ["pwd", "otp"], "auth_time": 5, "name": "n"}) == {
        "acr": "x",
        "amr": ["pwd", "otp"],
        "auth_time": 5,
    }
    assert kept_claims({"acr": 1, "amr": "pwd", "auth_time": "5"}) == {}


@pytest.mark.parametrize(
    ("referer", "expected"),
    [
        (None, "/"),
        ("", "/"),
        ("https://app.example.com/orders/7?tab=pay#top", "/orders/7?tab=pay"),
        ("https://APP.example.com", "/"),
        ("https://evil.example.com/orders", "/"),
        ("http://app.example.com/orders", "/"),  # another origin: another scheme
        ("https://app.example.com//evil.example.com/", "/"),
        ("https://app.example.com/%2F%2Fevil.example.com", "/"),
        ("https://user@app.example.com/x", "/"),
        ("https://app.example.com:99999/x", "/"),
        ("https://spa.example.com:5173/cart", "https://spa.example.com:5173/cart"),
        ("javascript:alert(1)", "/"),
        ("https://app.example.com/" + "a" * 2000, "/"),
    ],
)
def test_return_to_comes_from_a_safe_referer(referer: str | None, expected: str) -> None:
    returned = referer_return_to(
        referer, public_origin="https://app.example.com", return_origins=("https://spa.example.com:5173",)
    )
    assert returned == expected


def test_login_url() -> None:
    url = login_url("https://app.example.com/bff", acr_values="urn:a urn:b", max_age=0, return_to="/x?y=1")
    parts = urlsplit(url)
    assert f"{parts.scheme}://{parts.netloc}{parts.path}" == "https://app.example.com/bff/auth/login"
    assert parse_qs(parts.query) == {"acr_values": ["urn:a urn:b"], "max_age": ["0"], "return_to": ["/x?y=1"]}
    bare = parse_qs(urlsplit(login_url("http://b", acr_values=None, max_age=None, return_to="/")).query)
    assert bare == {"prompt": ["login"], "return_to": ["/"]}  # a fresh sign-in, at least


# -- through the BFF and the dev IdP ----------------------------------------------------------------


def _vault() -> Starlette:
    """An upstream that answers only tokens of a sign-in at urn:bff:loa:2 (the dev IdP's access tokens
    carry the sign-in's acr; ``app.state.idp`` is that IdP); any other valid token gets the RFC 9470
    challenge. ``app.state.calls``: the acr of each call's token."""
    calls: list[str | None] = []

    async def secret(request: Request) -> Response:
        token = request.headers.get("authorization", "").removeprefix("Bearer ")
        claims = request.app.state.idp.verify_access_token(token)
        calls.append(claims.get("acr") if claims else None)
        if claims is None:
            return JSONResponse({"error": "invalid_token"}, status_code=401)
        if claims.get("acr") != ACR_STRONG:
            challenge = CHALLENGE.format(acr=ACR_STRONG)
            return JSONResponse({"error": "step up"}, status_code=401, headers={"WWW-Authenticate": challenge})
        return JSONResponse({"secret": f"for {claims['sub']}"})

    app = Starlette(routes=[Route("/secret", secret)])
    app.state.calls = calls
    return app


@strawberry.type
class Query:
    @strawberry.field
    async def secret(self, info: Info[Context, None]) -> str | None:
        body = await info.context.rest("vault").get_json("/secret")
        return str(body["secret"])

    @strawberry.field
    async def acr(self, info: Info[Context, None]) -> str | None:
        user = await info.context.user()
        return user.acr if user else None

    @strawberry.field
    async def policy(self, info: Info[Context, None]) -> str:
        """A policy of the team's own: it asks for a recent sign-in without knowing the request."""
        raise StepUpRequired(max_age=0)


@strawberry.type
class Mutation:
    @strawberry.mutation
    async def reveal(self, info: Info[Context, None]) -> str | None:
        body = await info.context.rest("vault").get_json("/secret")
        return str(body["secret"])


@strawberry.type
class Subscription:
    @strawberry.subscription
    async def ticks(self, info: Info[Context, None]) -> AsyncIterator[int]:
        yield 1
        raise StepUpRequired(acr_values=ACR_STRONG)


SCHEMA = build_schema(query=Query, mutation=Mutation, subscription=Subscription)


@pytest.fixture
async def running() -> AsyncIterator[tuple[RunningBFF, Starlette]]:
    vault = _vault()
    async with running_bff(SCHEMA, upstreams={"vault": vault}) as bff:
        vault.state.idp = bff.idp
        yield bff, vault


async def _through_idp(client: httpx.AsyncClient, start: httpx.Response, user: str = "alice") -> httpx.Response:
    """From /auth/login's 302: the dev IdP's page, its answer, and the BFF's callback."""
    assert start.status_code == 302, start.text
    page = await client.get(start.headers["location"])
    found = re.search(r'<form method="post" action="([^"]+)"', page.text)
    assert found is not None, page.text
    chosen = await client.post(unescape(found.group(1)), data={"user": user})
    assert chosen.status_code == 302, chosen.text
    return await client.get(chosen.headers["location"])


def _session_cookies(client: httpx.AsyncClient, bff: RunningBFF) -> list[str]:
    return [cookie.value for cookie in client.cookies.jar if cookie.name == bff.settings.cookie_name]


async def _stored(bff: RunningBFF, cookie: str) -> Any:
    resources = bff.app.state.resources
    session_id = resources.session_credentials(None, {bff.settings.cookie_name: cookie}).session_id
    return await resources.store.get(session_id, touch=False) if session_id else None


async def test_step_up_from_an_upstream_challenge_continues_the_same_browser_session(
    running: tuple[RunningBFF, Starlette],
) -> None:
    bff, vault = running
    async with bff.client(user="alice") as browser:
        [before] = _session_cookies(browser, bff)
        assert (await browser.graphql("{ acr }"))["data"] == {"acr": ACR_DEFAULT}
        page = {"Referer": f"{bff.url}/account/security?tab=keys"}
        body = await browser.graphql("{ secret acr }", headers=page)
        [error] = body["errors"]
        assert body["data"] == {"secret": None, "acr": ACR_DEFAULT}  # siblings still resolve
        extensions = error["extensions"]
        assert extensions["code"] == "STEP_UP_REQUIRED" and extensions["upstream"] == "vault"
        assert extensions["acrValues"] == ACR_STRONG
        login = urlsplit(extensions["login"])
        assert f"{login.scheme}://{login.netloc}{login.path}" == f"{bff.url}/auth/login"
        assert parse_qs(login.query) == {"acr_values": [ACR_STRONG], "return_to": ["/account/security?tab=keys"]}
        # the challenge is no refusal of the token: no refresh, no retry, the session goes on
        assert vault.state.calls == [ACR_DEFAULT]
        assert bff.idp.stats["refresh_grants"] == 0
        assert (await browser.session_info())["authenticated"] is True
        assert await _stored(bff, before) is not None

        done = await _through_idp(browser, await browser.get(extensions["login"]))
        assert done.status_code == 302 and done.headers["location"] == "/account/security?tab=keys"
        [after] = _session_cookies(browser, bff)  # one cookie: the new one replaced the old
        assert after != before
        assert await _stored(bff, before) is None  # the old session ended (a new id: no fixation)
        stored = await _stored(bff, after)
        assert stored.sub == "alice" and stored.claims["acr"] == ACR_STRONG
        assert stored.claims["amr"] == ["pwd", "otp"] and stored.claims["auth_time"] > 0
        info = await browser.session_info()
        assert info["authenticated"] is True and info["user"]["sub"] == "alice"
        assert await browser.graphql("{ secret acr }") == {"data": {"secret": "for alice", "acr": ACR_STRONG}}
    # a mutation (graphql-core's executor, not the compiled plan) gets its login URL in the same way;
    # a Referer from another origin comes back to "/"
    async with bff.client(user="bob") as other:
        body = await other.graphql("mutation { reveal }", headers={"Referer": "https://evil.example.com/x"})
        login = urlsplit(body["errors"][0]["extensions"]["login"])
        assert parse_qs(login.query) == {"acr_values": [ACR_STRONG], "return_to": ["/"]}


async def test_a_policy_step_up_gets_its_login_url_too(running: tuple[RunningBFF, Starlette]) -> None:
    bff, _ = running
    async with bff.client(user="alice") as browser:
        body = await browser.graphql("{ policy }", headers={"Referer": f"{bff.url}/pay"})
    extensions = body["errors"][0]["extensions"]
    assert extensions["code"] == "STEP_UP_REQUIRED" and extensions["maxAge"] == 0
    assert parse_qs(urlsplit(extensions["login"]).query) == {"max_age": ["0"], "return_to": ["/pay"]}


async def test_a_weaker_sign_in_is_refused_and_the_session_kept(running: tuple[RunningBFF, Starlette]) -> None:
    bff, _ = running
    async with bff.client(user="alice") as browser:
        [before] = _session_cookies(browser, bff)
        # the dev IdP supports no such acr: it answers its default, which was not asked for
        start = await browser.get("/auth/login", params={"acr_values": "urn:example:gold", "return_to": "/x"})
        refused = await _through_idp(browser, start)
        assert refused.status_code == 400
        assert refused.json()["error"] == "login_failed"
        assert "stronger sign-in" in refused.json()["message"]
        assert _session_cookies(browser, bff) == [before]
        stored = await _stored(bff, before)
        assert stored is not None and stored.claims["acr"] == ACR_DEFAULT
        assert (await browser.session_info())["authenticated"] is True
        # a browser is shown a page whose "Sign in again" tries the same step-up again
        start = await browser.get("/auth/login", params={"acr_values": "urn:example:gold"})
        page = await _through_idp_html(browser, start)
        assert page.status_code == 400 and "acr_values=urn%3Aexample%3Agold" in page.text


async def _through_idp_html(client: httpx.AsyncClient, start: httpx.Response) -> httpx.Response:
    page = await client.get(start.headers["location"])
    found = re.search(r'<form method="post" action="([^"]+)"', page.text)
    assert found is not None
    chosen = await client.post(unescape(found.group(1)), data={"user": "alice"})
    return await client.get(chosen.headers["location"], headers={"Accept": "text/html"})


async def test_another_subject_gets_a_fresh_session_and_the_first_is_left_alone(
    running: tuple[RunningBFF, Starlette],
) -> None:
    bff, _ = running
    async with bff.client(user="alice") as browser:
        [alice] = _session_cookies(browser, bff)
        await bff.sign_in(browser, "bob")
        [bob] = _session_cookies(browser, bff)
        assert bob != alice
        assert (await _stored(bff, alice)).sub == "alice"  # as before: it expires on its own
        assert (await browser.session_info())["user"]["sub"] == "bob"


async def test_max_age_is_forwarded_and_a_fresh_sign_in_meets_it(running: tuple[RunningBFF, Starlette]) -> None:
    bff, _ = running
    async with bff.client(user="alice") as browser:
        start = await browser.get("/auth/login", params={"max_age": "0", "prompt": "login", "login_hint": "alice"})
        query = parse_qs(urlsplit(start.headers["location"]).query)
        assert query["max_age"] == ["0"] and query["login_hint"] == ["alice"]
        assert query["prompt"] == ["login consent"]  # consent stays for offline_access
        done = await _through_idp(browser, start)
        assert done.status_code == 302, done.text
        assert len(_session_cookies(browser, bff)) == 1


async def test_a_stream_ended_by_a_step_up_carries_the_login_url(running: tuple[RunningBFF, Starlette]) -> None:
    bff, _ = running
    async with bff.client(user="alice") as browser:
        answer = await browser.post(
            "/graphql",
            json={"query": "subscription { ticks }"},
            headers={"Accept": "text/event-stream", "Referer": f"{bff.url}/live"},
        )
    events = [json.loads(line[len("data: ") :]) for line in answer.text.splitlines() if line.startswith("data: {")]
    assert events[0] == {"data": {"ticks": 1}}
    extensions = events[1]["errors"][0]["extensions"]
    assert extensions["code"] == "STEP_UP_REQUIRED"
    assert parse_qs(urlsplit(extensions["login"]).query) == {"acr_values": [ACR_STRONG], "return_to": ["/live"]}
