"""GET /auth/sessions and POST /auth/sessions/revoke in one process: the demo stack (its dev IdP, the
memory store) over real HTTP; below them the stores' per-subject listing on memory, Redis and a
Redis Cluster, and the client label's parser."""

from __future__ import annotations

import asyncio
import base64
import json
import re
import time
from collections.abc import AsyncIterator
from html import unescape
from typing import Any

import httpx
import pytest

from bff.demo.stack import build_demo_app
from bff.sessions.crypto import SessionCrypto
from bff.sessions.memory import MemorySessionStore
from bff.sessions.models import Session, TokenSet
from bff.sessions.redis import RedisSessionStore
from bff.sessions.store import SessionStore
from bff.web import sessions_api
from bff.web.sessions_api import client_label, open_handle, seal_handle
from tests.support.servers import free_port, serve

FIREFOX_LINUX = "Mozilla/5.0 (X11; Linux x86_64; rv:128.0) Gecko/20100101 Firefox/128.0"
SAFARI_IOS = (
    "Mozilla/5.0 (iPhone; CPU iPhone OS 17_5 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) "
    "Version/17.5 Mobile/15E148 Safari/604.1"
)
CHROME_WINDOWS = (
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/126.0.0.0 Safari/537.36"
)
LIST = "/auth/sessions"
REVOKE = "/auth/sessions/revoke"
COOKIE = "bff_session"


class Demo:
    """The demo app on a real port: its dev IdP signs browsers in; everything it answered is kept."""

    def __init__(self, app: Any, url: str) -> None:
        self.app = app
        self.url = url
        self.answers: list[httpx.Response] = []

    @property
    def idp(self) -> Any:
        return self.app.state.dev_idp

    @property
    def resources(self) -> Any:
        return self.app.state.resources

    def browser(self, user_agent: str = FIREFOX_LINUX) -> httpx.AsyncClient:
        async def keep(response: httpx.Response) -> None:
            if response.url.path.startswith("/auth/sessions"):
                await response.aread()
                self.answers.append(response)

        return httpx.AsyncClient(
            base_url=self.url, headers={"User-Agent": user_agent}, event_hooks={"response": [keep]}, timeout=30
        )

    async def sign_in(self, browser: httpx.AsyncClient, user: str = "alice") -> str:
        """Through /auth/login and the dev IdP; the session cookie's value."""
        start = await browser.get("/auth/login", params={"return_to": "/"})
        page = await browser.get(start.headers["location"])
        action = unescape(re.search(r'<form method="post" action="([^"]+)"', page.text).group(1))  # type: ignore[union-attr]
        chosen = await browser.post(action, data={"user": user})
        done = await browser.get(chosen.headers["location"])
        assert done.status_code == 302, done.text
        cookie = browser.cookies.get(COOKIE)
        assert cookie
        return str(cookie)

    def session_id(self, cookie: str) -> str:
        session_id = self.resources.crypto.unsign(cookie)
        assert session_id
        return str(session_id)

    async def session(self, cookie: str) -> Session | None:
        found: Session | None = await self.resources.store.get(self.session_id(cookie), touch=False)
        return found


@pytest.fixture
async def demo() -> AsyncIterator[Demo]:
    port = free_port()
    app = build_demo_app(f"http://127.0.0.1:{port}")
    async with serve(app, port) as url:
        yield Demo(app, url)


async def _signed_in(client: httpx.AsyncClient) -> bool:
    return bool((await client.get("/auth/session")).json()["authenticated"])


async def _listing(client: httpx.AsyncClient, **kwargs: Any) -> list[dict[str, Any]]:
    answer = await client.get(LIST, **kwargs)
    assert answer.status_code == 200, answer.text
    assert answer.headers["cache-control"] == "no-store"
    sessions: list[dict[str, Any]] = answer.json()["sessions"]
    return sessions


def _no_secret_in(demo: Demo, secrets: list[str]) -> None:
    """No answer of the sessions routes (bodies, headers) carries any of ``secrets``."""
    assert demo.answers
    for answer in demo.answers:
        text = answer.text + json.dumps(dict(answer.headers))
        for secret in secrets:
            assert secret not in text, (answer.url, secret[:8])


async def test_the_list_shows_each_sign_in_with_its_label_newest_first_and_which_is_current(demo: Demo) -> None:
    async with demo.browser(FIREFOX_LINUX) as firefox, demo.browser(SAFARI_IOS) as safari, demo.browser() as bob:
        first = await demo.sign_in(firefox)
        second = await demo.sign_in(safari)
        bobs = await demo.sign_in(bob, "bob")
        assert (await bob.post("/graphql", json={"query": "{ viewer { id } }"})).status_code == 200
        await asyncio.sleep(1.1)
        # Safari's session is used later than Firefox's: it comes first
        store = demo.resources.store
        used = await store.get(demo.session_id(second), touch=False)
        used.last_seen = store.now()  # as a request past the touch interval would
        await store.replace(used)
        listed = await _listing(firefox)
        from_safari = await _listing(safari)
        bob_listed = await _listing(bob)
        sessions = [await demo.session(c) for c in (first, second, bobs)]
    assert [(s["client"], s["kind"], s["current"]) for s in listed] == [
        ("Safari on iOS", "browser", False),
        ("Firefox on Linux", "browser", True),
    ]
    assert [s["current"] for s in from_safari] == [True, False]
    assert [(s["client"], s["current"]) for s in bob_listed] == [("Firefox on Linux", True)]
    for entry in listed:
        assert set(entry) == {"session", "createdAt", "lastActiveAt", "client", "kind", "current"}
        assert isinstance(entry["createdAt"], int) and isinstance(entry["lastActiveAt"], int)
        assert abs(entry["createdAt"] - time.time()) < 30
        assert entry["lastActiveAt"] >= entry["createdAt"]
    assert listed[0]["lastActiveAt"] > listed[1]["lastActiveAt"]
    # each listing hands out new handles: nothing to correlate, nothing to replay later
    assert {s["session"] for s in listed}.isdisjoint(s["session"] for s in from_safari)
    secrets = [first, second, bobs]
    for session in sessions:
        assert session is not None
        secrets += [session.id, session.tokens.access_token, str(session.tokens.refresh_token)]
    _no_secret_in(demo, secrets)


async def test_revoking_one_by_its_handle_ends_it_and_revokes_its_refresh_token(demo: Demo) -> None:
    async with demo.browser(FIREFOX_LINUX) as firefox, demo.browser(SAFARI_IOS) as safari:
        await demo.sign_in(firefox)
        other = await demo.sign_in(safari)
        refresh = (await demo.session(other)).tokens.refresh_token  # type: ignore[union-attr]
        assert refresh and not demo.idp.refresh_tokens[refresh].revoked
        revocations = demo.idp.stats["revocations"]
        listed = await _listing(firefox)
        target = next(s for s in listed if not s["current"])
        answer = await firefox.post(REVOKE, json={"session": target["session"]})
        assert answer.status_code == 200, answer.text
        assert answer.json() == {"revoked": 1}
        assert answer.headers["cache-control"] == "no-store"
        assert "set-cookie" not in answer.headers  # not this browser's session
        assert not await _signed_in(safari)
        assert (await safari.get(LIST)).status_code == 401
        assert await _signed_in(firefox)
        assert demo.idp.refresh_tokens[refresh].revoked
        assert demo.idp.stats["revocations"] == revocations + 1
        assert [s["client"] for s in await _listing(firefox)] == ["Firefox on Linux"]
        # the same handle again: its session is gone, so it names nothing
        again = await firefox.post(REVOKE, json={"session": target["session"]})
        assert again.status_code == 400
        assert (await demo.session(other)) is None


async def test_others_ends_every_other_session_and_keeps_this_one(demo: Demo) -> None:
    async with (
        demo.browser(FIREFOX_LINUX) as firefox,
        demo.browser(SAFARI_IOS) as safari,
        demo.browser(CHROME_WINDOWS) as chrome,
        demo.browser() as bob,
    ):
        for browser in (firefox, safari, chrome):
            await demo.sign_in(browser)
        await demo.sign_in(bob, "bob")
        answer = await chrome.post(REVOKE, json={"others": True})
        assert answer.json() == {"revoked": 2}
        assert "set-cookie" not in answer.headers
        assert [s["client"] for s in await _listing(chrome)] == ["Chrome on Windows"]
        assert [await _signed_in(b) for b in (firefox, safari, chrome, bob)] == [False, False, True, True]
        assert (await chrome.post(REVOKE, json={"others": True})).json() == {"revoked": 0}


async def test_revoking_the_current_session_by_its_handle_is_a_logout(demo: Demo) -> None:
    async with demo.browser() as browser:
        cookie = await demo.sign_in(browser)
        refresh = (await demo.session(cookie)).tokens.refresh_token  # type: ignore[union-attr]
        (mine,) = await _listing(browser)
        answer = await browser.post(REVOKE, json={"session": mine["session"]})
        assert answer.json() == {"revoked": 1}
        assert answer.headers["set-cookie"].startswith(f"{COOKIE}=;")
        assert "Max-Age=0" in answer.headers["set-cookie"]
        assert demo.idp.refresh_tokens[refresh].revoked
        assert await demo.session(cookie) is None
        assert (await browser.get(LIST)).status_code == 401


async def test_a_handle_works_only_for_the_session_it_was_listed_for(demo: Demo) -> None:
    """Another user's session, and even another session of the same user, get the same 400 as a
    forged handle: a handle neither reveals nor reaches anything outside its listing."""
    async with demo.browser() as alice, demo.browser(SAFARI_IOS) as alice_phone, demo.browser() as bob:
        await demo.sign_in(alice)
        await demo.sign_in(alice_phone)
        await demo.sign_in(bob, "bob")
        alices = await _listing(alice)
        bobs = await _listing(bob)
        refusals = [
            await bob.post(REVOKE, json={"session": alices[0]["session"]}),  # alice's handle, bob's session
            await alice.post(REVOKE, json={"session": bobs[0]["session"]}),  # bob's handle, alice's session
            await alice_phone.post(REVOKE, json={"session": alices[0]["session"]}),  # listed for her laptop
            await alice.post(REVOKE, json={"session": "A" * 75}),
        ]
        for refusal in refusals:
            assert refusal.status_code == 400, refusal.text
            assert refusal.json() == refusals[-1].json()  # one answer for all: nothing to tell them apart
        assert [await _signed_in(b) for b in (alice, alice_phone, bob)] == [True, True, True]

        # a handle of bob's own session, forged for alice's current one: still only bob's list counts
        bob_session = await demo.session(bob.cookies[COOKIE])
        alice_session = await demo.session(alice.cookies[COOKIE])
        assert bob_session is not None and alice_session is not None
        crypto = demo.resources.crypto
        forged = seal_handle(crypto, alice_session.id, bob_session.id, time.time() + 60)
        assert (await alice.post(REVOKE, json={"session": forged})).status_code == 400
        assert await _signed_in(bob)


async def test_a_handle_expires(demo: Demo, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sessions_api, "HANDLE_SECONDS", 1)
    async with demo.browser() as browser, demo.browser(SAFARI_IOS) as phone:
        await demo.sign_in(browser)
        await demo.sign_in(phone)
        handle = next(s["session"] for s in await _listing(browser) if not s["current"])
        await asyncio.sleep(2.1)
        late = await browser.post(REVOKE, json={"session": handle})
        assert late.status_code == 400
        assert "expired" in late.json()["message"]
        assert await _signed_in(phone)


def test_a_handle_hides_its_session_and_opens_only_where_it_was_listed() -> None:
    crypto = SessionCrypto(["secret"])
    current, target = Session.new_id(), Session.new_id()
    handle = seal_handle(crypto, current, target, time.time() + 60)
    raw = base64.urlsafe_b64decode(handle + "=" * (-len(handle) % 4))
    assert target not in handle and target.encode() not in raw and crypto.tag(target).encode() not in raw
    assert bytes.fromhex(crypto.tag(target)) not in raw
    assert open_handle(crypto, current, handle, time.time()) == crypto.tag(target)
    assert open_handle(crypto, target, handle, time.time()) is None  # another session
    assert open_handle(SessionCrypto(["other"]), current, handle, time.time()) is None  # another secret
    assert open_handle(crypto, current, handle, time.time() + 61) is None  # expired
    assert seal_handle(crypto, current, target, time.time() + 60) != handle  # a fresh nonce each time
    # still opened by a replica that has the secret as a previous one (a rotation in progress)
    rotated = SessionCrypto(["next", "secret"])
    assert open_handle(rotated, current, handle, time.time()) == crypto.tag(target)
    flipped = handle[:-2] + ("A" if handle[-2] != "A" else "B") + handle[-1]
    assert open_handle(crypto, current, flipped, time.time()) is None


GARBAGE: list[dict[str, Any]] = [
    {"content": b"not json", "headers": {"content-type": "application/json"}},
    {"content": b"", "headers": {"content-type": "application/json"}},
    {"content": b"[" * 5000 + b"]" * 5000, "headers": {"content-type": "application/json"}},
    {"content": b'{"session": "\xff\xfe"}', "headers": {"content-type": "application/json"}},
    {"json": []},
    {"json": "session"},
    {"content": b"null", "headers": {"content-type": "application/json"}},
    {"json": 1},
    {"json": {}},
    {"json": {"session": None}},
    {"json": {"session": 42}},
    {"json": {"session": ["a"]}},
    {"json": {"session": {"$ne": ""}}},
    {"json": {"session": ""}},
    {"json": {"session": "x" * 600}},
    {"json": {"session": "a.b.c"}},
    {"json": {"session": "A" * 40}},
    {"json": {"session": "../../etc/passwd"}},
    {"json": {"session": "é" * 40}},
    {"json": {"others": False}},
    {"json": {"others": 1}},
    {"json": {"others": "true"}},
    {"json": {"others": None}},
    {"json": {"others": True, "session": "A" * 75}},
    {"json": {"others": True, "extra": 1}},
    {"json": {"Session": "A" * 75}},
]


@pytest.mark.parametrize("request_args", GARBAGE, ids=[str(i) for i in range(len(GARBAGE))])
async def test_garbage_bodies_and_handles_are_400_and_end_nothing(demo: Demo, request_args: dict[str, Any]) -> None:
    async with demo.browser() as browser, demo.browser(SAFARI_IOS) as phone:
        await demo.sign_in(browser)
        await demo.sign_in(phone)
        answer = await browser.post(REVOKE, **request_args)
        assert answer.status_code == 400, answer.text
        assert answer.json()["error"] == "invalid_request"
        assert answer.json()["message"]
        assert answer.headers["cache-control"] == "no-store"
        assert [await _signed_in(b) for b in (browser, phone)] == [True, True]


async def test_without_a_session_it_is_401_and_a_dead_cookie_is_cleared(demo: Demo) -> None:
    async with demo.browser() as anonymous:
        for answer in (
            await anonymous.get(LIST),
            await anonymous.post(REVOKE, json={"others": True}),
            await anonymous.get(LIST, headers={"Authorization": "Session forged"}),
        ):
            assert answer.status_code == 401
            assert answer.json()["error"] == "unauthenticated"
            assert "set-cookie" not in answer.headers
    async with demo.browser() as browser:
        cookie = await demo.sign_in(browser)
        await browser.post("/auth/logout", headers={"X-CSRF": "1"})
    async with demo.browser() as stale:
        stale.cookies.set(COOKIE, cookie)
        answer = await stale.get(LIST)
        assert answer.status_code == 401
        assert answer.headers["set-cookie"].startswith(f"{COOKIE}=;")


async def test_the_csrf_and_origin_rule_of_logout_applies(demo: Demo) -> None:
    async with demo.browser() as browser, demo.browser(SAFARI_IOS) as phone:
        await demo.sign_in(browser)
        await demo.sign_in(phone)
        handle = next(s["session"] for s in await _listing(browser) if not s["current"])
        body = json.dumps({"session": handle})
        foreign = {"Origin": "https://evil.example"}
        refusals = [
            await browser.get(LIST, headers=foreign),
            await browser.post(REVOKE, json={"others": True}, headers=foreign),
            await browser.post(REVOKE, json={"others": True}, headers={**foreign, "X-CSRF": "1"}),
            # a form or a text/plain body is what another site can send: no X-CSRF, no deal
            await browser.post(REVOKE, content=body, headers={"content-type": "application/x-www-form-urlencoded"}),
            await browser.post(REVOKE, content=body, headers={"content-type": "text/plain"}),
            await browser.post(REVOKE, data={"session": handle}),
            await browser.post(REVOKE, content=body, headers={"content-type": "text/plain", "X-CSRF": ""}),
        ]
        for refusal in refusals:
            assert refusal.status_code == 403, refusal.request.headers
            assert refusal.json()["error"] == "forbidden"
        assert [await _signed_in(b) for b in (browser, phone)] == [True, True]
        # our own origin, and a JSON body or an X-CSRF header, pass
        assert (await browser.get(LIST, headers={"Origin": demo.url})).status_code == 200
        with_header = await browser.post(REVOKE, content=body, headers={"content-type": "text/plain", "X-CSRF": "1"})
        assert with_header.json() == {"revoked": 1}
        assert not await _signed_in(phone)


async def test_a_native_app_lists_and_revokes_with_its_session_handle(demo: Demo) -> None:
    """``Authorization: Session <handle>``: the CSRF half does not apply (no ambient credential), a
    foreign Origin is still refused, and no cookie is ever set or cleared."""
    resources = demo.resources
    now = resources.store.now()
    app_session = Session(
        id=Session.new_id(),
        sub="alice",
        kind="native",
        client=sessions_api.NATIVE_CLIENT,
        tokens=TokenSet(access_token="app-at", refresh_token="app-rt", expires_at=now + 300, issued_at=now),
        created_at=now,
        last_seen=now,
    )
    await resources.store.create(app_session)
    app_auth = {"Authorization": f"Session {resources.crypto.sign(app_session.id, 'native')}"}
    async with demo.browser() as browser, demo.browser(user_agent="ExampleApp/1.0") as app:
        await demo.sign_in(browser)
        listed = await _listing(app, headers=app_auth)
        assert [(s["client"], s["kind"], s["current"]) for s in listed] == [
            ("Firefox on Linux", "browser", False),
            ("native app", "native", True),
        ]
        assert (await app.get(LIST, headers={**app_auth, "Origin": "https://evil.example"})).status_code == 403
        # the cookie of the browser's session is ignored beside the header
        answer = await app.post(
            REVOKE,
            content=json.dumps({"session": listed[0]["session"]}),
            headers={**app_auth, "content-type": "text/plain", "Cookie": f"{COOKIE}={browser.cookies[COOKIE]}"},
        )
        assert answer.json() == {"revoked": 1}
        assert "set-cookie" not in answer.headers
        assert not await _signed_in(browser)
        # and from the browser's side: a new sign-in ends the app's session, which sets no cookie of course
        await demo.sign_in(browser)
        mine = await _listing(browser)
        assert [s["kind"] for s in mine] == ["browser", "native"]
        assert (await browser.post(REVOKE, json={"session": mine[1]["session"]})).json() == {"revoked": 1}
        assert (await app.get(LIST, headers=app_auth)).status_code == 401
    _no_secret_in(demo, [app_session.id, "app-at", "app-rt", app_auth["Authorization"].split()[1]])


async def test_an_idp_that_fails_at_revocation_keeps_no_session_alive(
    demo: Demo, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls = []

    async def down(url: str, **kwargs: Any) -> Any:
        calls.append(url)
        raise httpx.ConnectError("the IdP's revocation endpoint is down")

    monkeypatch.setattr(demo.resources.oidc._http, "revoke_token", down)
    async with demo.browser() as browser, demo.browser(SAFARI_IOS) as phone:
        await demo.sign_in(browser)
        await demo.sign_in(phone)
        answer = await browser.post(REVOKE, json={"others": True})
        assert answer.json() == {"revoked": 1}
        assert len(calls) == 1  # it was asked, and failed
        assert not await _signed_in(phone)


@pytest.mark.parametrize(
    ("user_agent", "label"),
    [
        (FIREFOX_LINUX, "Firefox on Linux"),
        (SAFARI_IOS, "Safari on iOS"),
        (CHROME_WINDOWS, "Chrome on Windows"),
        (CHROME_WINDOWS + " Edg/126.0.0.0", "Edge on Windows"),
        (
            "Mozilla/5.0 (Linux; Android 14; Pixel 8) AppleWebKit/537.36 (KHTML, like Gecko) "
            "Chrome/126.0.0.0 Mobile Safari/537.36",
            "Chrome on Android",
        ),
        (
            "Mozilla/5.0 (Macintosh; Intel Mac OS X 14_5) AppleWebKit/605.1.15 (KHTML, like Gecko) "
            "Version/17.5 Safari/605.1.15",
            "Safari on macOS",
        ),
        (
            "Mozilla/5.0 (X11; CrOS x86_64 14541.0.0) AppleWebKit/537.36 Chrome/126.0 Safari/537.36",
            "Chrome on ChromeOS",
        ),
        (CHROME_WINDOWS + " OPR/110.0.0.0", "Opera on Windows"),
        ("Mozilla/5.0 (iPhone; CPU iPhone OS 17_5 like Mac OS X) FxiOS/127.0 Mobile/15E148", "Firefox on iOS"),
        ("curl/8.5.0", "Unknown browser"),
        ("", "Unknown browser"),
        (None, "Unknown browser"),
        ("<script>alert(1)</script> (Linux)" + "A" * 5000, "Unknown browser on Linux"),
    ],
)
def test_the_client_label_is_short_and_never_the_raw_user_agent(user_agent: str | None, label: str) -> None:
    assert client_label(user_agent) == label
    assert len(label) <= 64


# the stores ----------------------------------------------------------------------------------------
LIMITS = {"idle_seconds": 3600, "absolute_seconds": 7200}


def _session(sub: str = "alice", client: str | None = "Firefox on Linux") -> Session:
    now = time.time()
    return Session(
        id=Session.new_id(),
        sub=sub,
        sid=f"sid-{sub}",
        client=client,
        tokens=TokenSet(access_token="at", refresh_token="rt", expires_at=now + 60, issued_at=now),
        created_at=now,
        last_seen=now,
    )


@pytest.fixture(params=["memory", "redis", "cluster"])
async def store(request: pytest.FixtureRequest) -> AsyncIterator[SessionStore]:
    crypto = SessionCrypto(["listing-secret"])
    made: SessionStore
    if request.param == "memory":
        made = MemorySessionStore(crypto, **LIMITS)
    else:
        server = request.getfixturevalue("redis_server" if request.param == "redis" else "redis_cluster")
        made = RedisSessionStore(server.url, crypto, **LIMITS)
    yield made
    await made.close()


async def test_a_store_lists_a_subjects_sessions_and_prunes_vanished_ones(store: SessionStore) -> None:
    mine = [_session(client=f"client {i}") for i in range(5)]
    theirs = _session("bob")
    for session in (*mine, theirs):
        await store.create(session)
    listed = await store.sessions_of("alice")
    assert sorted(s.id for s in listed) == sorted(s.id for s in mine)
    assert {s.client for s in listed} == {f"client {i}" for i in range(5)}
    assert all(s.tokens.refresh_token == "rt" for s in listed)
    assert [s.id for s in await store.sessions_of("bob")] == [theirs.id]
    assert await store.sessions_of("nobody") == []

    # one ends properly, one vanishes behind the store's back (an expiry, an eviction)
    await store.delete(mine[0].id, session=mine[0])
    await store._delete(mine[1].id)
    assert sorted(s.id for s in await store.sessions_of("alice")) == sorted(s.id for s in mine[2:])
    if isinstance(store, RedisSessionStore):
        names = store.crypto.index_names("sub", "alice")
        members = await store.redis.smembers(f"bff:ix:{{{names[0]}}}")
        assert {m.decode() for m in members} == {store.crypto.tag(s.id) for s in mine[2:]}  # pruned
    else:
        assert isinstance(store, MemorySessionStore)
        assert store._index["sub:alice"] == {s.id for s in mine[2:]}
    # a listing is a look: nobody's idle timeout moved
    for session in mine[2:]:
        again = await store.get(session.id, touch=False)
        assert again is not None and again.last_seen == pytest.approx(session.last_seen, abs=1)


async def test_a_redis_record_written_by_0_2_is_listed_once_this_release_has_read_it(
    redis_server: Any,
) -> None:
    """0.2 writes records without the sealed id (field ``i``): they cannot be listed by others until
    a request of their own names them, and nothing in the store says whose they are meanwhile."""
    store = RedisSessionStore(redis_server.url, SessionCrypto(["listing-secret"]), **LIMITS)
    try:
        session = _session("carol", client=None)
        await store.create(session)
        key = f"bff:{{{store.crypto.tag(session.id)}}}:s"
        sealed = await store.redis.hget(key, "i")
        assert sealed and session.id.encode() not in sealed
        await store.redis.hdel(key, "i")  # as 0.2 writes it
        assert await store.sessions_of("carol") == []
        assert await store.get(session.id) is not None  # its own request
        assert [s.id for s in await store.sessions_of("carol")] == [session.id]
        # a sealed id copied onto another record names nothing there
        other = _session("carol")
        await store.create(other)
        await store.redis.hset(f"bff:{{{store.crypto.tag(other.id)}}}:s", "i", await store.redis.hget(key, "i"))
        assert [s.id for s in await store.sessions_of("carol")] == [session.id]
        # and nothing is written for a record that is gone (no key without a TTL appears)
        await store._delete(session.id)
        assert await store.get(session.id) is None
        assert not await store.redis.exists(key)
    finally:
        await store.close()


def test_the_client_label_travels_in_the_extras_never_in_the_part_0_2_reads() -> None:
    session = _session(client="Firefox on Linux")
    assert b"Firefox" not in session.to_json()
    assert set(json.loads(session.to_json())) == {
        "id",
        "sub",
        "tokens",
        "created_at",
        "last_seen",
        "claims",
        "sid",
        "kind",
    }
    extras = session.extras_json()
    assert extras is not None and json.loads(extras)["client"] == "Firefox on Linux"
    back = Session.from_json(session.to_json(), 1, extras)
    assert back.client == "Firefox on Linux"
    assert Session.from_json(session.to_json(), 1).client is None  # a record of 0.2
    long = json.dumps({"format": 2, "client": "x" * 500}).encode()
    assert Session.from_json(session.to_json(), 1, long).client == "x" * 64
    assert Session.from_json(session.to_json(), 1, json.dumps({"client": 5}).encode()).client is None
