"""Rolling upgrade: the previous release (0.2, `tests.support.previous`) and this checkout serve one
fleet on one Redis, and nobody is logged out while replicas are replaced one by one.

Everything here is real: oidc-provider with rotating refresh tokens and 8-second access tokens (the
BFF refreshes at half-life, 4 s, so sessions rotate several times per test), redis-server, the demo
upstreams introspecting each access token at the IdP, the old release as ``python -m bff serve``
processes from a git worktree, and this checkout's replicas in-process (`Stack.start_bff`). A record
one version writes that the other misreads shows up as an UNAUTHENTICATED answer, a cleared cookie,
a replayed refresh token (the IdP's ``refreshReuse``) or refreshes beyond one per rotation window.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import math
import re
import signal
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass, field
from http.cookiejar import CookieJar, DefaultCookiePolicy
from typing import Any

import httpx
import pytest
from joserfc.jwk import ECKey

from tests.conftest import Bff
from tests.e2e.conftest import Stack
from tests.support.browser import browser_login
from tests.support.previous import PreviousRelease, PreviousReplica, previous_release
from tests.support.servers import RedisServer, free_port

ACCESS_TTL = 8  # seconds
HALF_LIFE = ACCESS_TTL / 2  # 8 s < 2 x the 300 s buffer: a session is refreshed once its token is 4 s old
SECRET = "rolling-upgrade-shared-secret-0123456789"
COOKIE = "bff_session"  # BFF_COOKIE_SECURE=false on both versions
VIEWER = {"query": "{ viewer { id name } }"}
#: connection-level failures of a replica that is shutting down: a load balancer retries these elsewhere
RETRYABLE = (httpx.ConnectError, httpx.RemoteProtocolError, httpx.ReadError, httpx.WriteError)


@pytest.fixture
def idp_options() -> dict[str, Any]:
    return {"access_ttl": ACCESS_TTL}


@pytest.fixture
def bff_ports() -> list[int]:
    """Two ports for the old replicas, two for the new ones: the IdP registers a redirect URI per port."""
    return [free_port() for _ in range(4)]


@pytest.fixture(scope="session")
def release() -> Iterator[PreviousRelease]:
    with previous_release() as checked_out:
        yield checked_out


@dataclass
class Fleet:
    """Replicas of both versions sharing the IdP, the upstreams, one Redis and one session secret."""

    stack: Stack
    release: PreviousRelease
    shared: dict[str, Any]
    old: list[PreviousReplica] = field(default_factory=list)

    def old_settings(self, port: int) -> dict[str, Any]:
        """What `Stack.start_bff` gives the new replicas, as the old one reads it (``BFF_*``)."""
        return {
            "public_url": f"http://127.0.0.1:{port}",
            "oidc_issuer": self.stack.idp.issuer,
            "oidc_client_id": "bff",
            "oidc_client_secret": "bff-secret",
            "oidc_timeout_seconds": 2,
            "cookie_secure": False,
            "upstreams": self.stack.upstreams.settings(),
            **self.shared,
        }

    async def start_old(self, *indexes: int) -> list[PreviousReplica]:
        """Old replicas on ``bff_ports[index]``, started side by side (each takes a second or two)."""
        replicas = [self.release.replica(self.stack.ports[i], self.old_settings(self.stack.ports[i])) for i in indexes]
        self.old += replicas
        await asyncio.gather(*(asyncio.to_thread(replica.start) for replica in replicas))
        return replicas

    def new(self, index: int) -> AbstractAsyncContextManager[Bff]:
        """A replica of this checkout, in-process, on ``bff_ports[index]``."""
        replica: AbstractAsyncContextManager[Bff] = self.stack.start_bff(index, **self.shared)
        return replica

    def old_errors(self) -> list[str]:
        """Error lines the old replicas logged (an exception reading a record the new one wrote...)."""
        lines = (line for replica in self.old for line in replica.output().splitlines())
        return [line for line in lines if '"level":"error"' in line or '"level":"critical"' in line]


@pytest.fixture
async def fleet(stack: Stack, release: PreviousRelease, redis_server: RedisServer) -> AsyncIterator[Fleet]:
    fleet = Fleet(stack, release, {"session_store": redis_server.url, "session_secret": SECRET})
    try:
        yield fleet
    finally:
        for replica in fleet.old:
            await asyncio.to_thread(replica.stop)
            print(f"--- previous replica {replica.url} ---\n{replica.output()}")  # shown when the test failed
            replica.cleanup()


def http_client() -> httpx.AsyncClient:
    """A client that keeps no cookies: each request names its session itself, so a Set-Cookie from
    one answer can neither help nor hide anything for the next."""
    return httpx.AsyncClient(timeout=10, cookies=CookieJar(DefaultCookiePolicy(allowed_domains=[])))


async def sign_in(url: str, user: str) -> str:
    """Sign ``user`` in at the replica ``url`` through the IdP's pages; the session cookie's value."""
    async with httpx.AsyncClient(timeout=30) as browser:
        try:
            await browser_login(browser, url, user)
        except httpx.TransportError as exc:
            exc.add_note(f"signing {user} in at {url}: {exc.request.method} {exc.request.url}")
            raise
        cookie = browser.cookies.get(COOKIE)
    assert cookie, f"no session cookie from {url}"
    return str(cookie)


def clears_session(response: httpx.Response) -> bool:
    for header in response.headers.get_list("set-cookie"):
        name, _, rest = header.partition("=")
        if name.strip() == COOKIE and (rest.split(";")[0].strip() in ("", '""') or "max-age=0" in header.lower()):
            return True
    return False


@dataclass
class Answer:
    """One HTTP answer to the viewer query, kept for the assertions after the run."""

    url: str
    user: str
    status: int
    body: Any
    cleared: bool
    phase: str = ""

    @property
    def ok(self) -> bool:
        return (
            self.status == 200
            and not self.cleared
            and isinstance(self.body, dict)
            and "errors" not in self.body
            and ((self.body.get("data") or {}).get("viewer") or {}).get("id") == self.user
        )


async def ask(http: httpx.AsyncClient, url: str, cookie: str, user: str) -> Answer:
    try:
        response = await http.post(f"{url}/graphql", json=VIEWER, headers={"cookie": f"{COOKIE}={cookie}"})
    except httpx.TransportError as exc:
        exc.add_note(f"the viewer query for {user} at {url}")  # httpx's message names no URL
        raise
    try:
        body: Any = response.json()
    except json.JSONDecodeError:
        body = response.text
    return Answer(url, user, response.status_code, body, clears_session(response))


async def refreshes(http: httpx.AsyncClient, url: str) -> float:
    """Rotations this replica completed (its ``bff_token_refresh_total{outcome="success"}``; absent
    until the first one)."""
    try:
        text = (await http.get(f"{url}/metrics")).text
    except httpx.TransportError as exc:
        exc.add_note(f"GET {url}/metrics")
        raise
    found = re.search(r'^bff_token_refresh_total\{outcome="success"\} (\S+)$', text, re.M)
    return float(found.group(1)) if found else 0.0


async def rotate(http: httpx.AsyncClient, plan: dict[str, tuple[str, str]], times: int = 2) -> dict[str, float]:
    """Send each replica of ``plan`` (url -> (cookie, user)) only its one session, every 0.25 s,
    until each replica has rotated that session ``times`` itself; every answer must be the viewer."""
    before = {url: await refreshes(http, url) for url in plan}
    deadline = time.monotonic() + (times + 1) * HALF_LIFE + 8  # a rotation per half-life
    while True:
        for url, (cookie, user) in plan.items():
            answer = await ask(http, url, cookie, user)
            assert answer.ok, answer
        done = {url: await refreshes(http, url) - before[url] for url in plan}
        if all(count >= times for count in done.values()):
            return done
        assert time.monotonic() < deadline, f"not {times} rotations on each replica in time: {done}"
        await asyncio.sleep(0.25)


async def test_a_session_moves_between_versions_across_rotations(fleet: Fleet, stack: Stack) -> None:
    """A session signed in on 0.2 is refreshed twice by the new version, then twice by 0.2 again,
    and one signed in on the new version the other way round; the IdP sees each rotation once."""
    (old,) = await fleet.start_old(0)
    async with fleet.new(1) as new, http_client() as http:
        from_old = await sign_in(old.url, "alice")
        from_new = await sign_in(new.url, "bob")
        grants = stack.idp.stats()["refreshGrants"]
        first = await rotate(http, {new.url: (from_old, "alice"), old.url: (from_new, "bob")})
        second = await rotate(http, {old.url: (from_old, "alice"), new.url: (from_new, "bob")})
        await asyncio.sleep(0.3)  # nothing is due for ~4 s: let a just-finished rotation land
        stats = stack.idp.stats()
    assert stats["refreshReuse"] == 0
    assert stats["refreshErrors"] == 0
    # every grant the IdP made is one of the rotations the replicas reported, no hidden one
    assert stats["refreshGrants"] - grants == sum(first.values()) + sum(second.values())
    assert not fleet.old_errors()


@dataclass
class Load:
    """The viewer query for every session, round robin, to whichever replicas are live (a load
    balancer): answers are recorded; connection failures are retried on another live replica."""

    http: httpx.AsyncClient
    sessions: list[tuple[str, str]]  # (cookie, user)
    live: list[str]
    phase: str = ""
    answers: list[Answer] = field(default_factory=list)
    retried: int = 0
    _stop: asyncio.Event = field(default_factory=asyncio.Event)
    _turn: Iterator[int] = field(default_factory=itertools.count)

    async def _send(self, turn: int) -> None:
        cookie, user = self.sessions[turn % len(self.sessions)]
        # shift by one replica per round, so that every session meets every replica
        first = turn + turn // len(self.sessions)
        for attempt in range(8):
            targets = list(self.live)
            url = targets[(first + attempt) % len(targets)]
            phase = self.phase
            try:
                answer = await ask(self.http, url, cookie, user)
            except RETRYABLE:
                self.retried += 1
                await asyncio.sleep(0.05)
                continue
            answer.phase = phase
            self.answers.append(answer)
            return
        raise AssertionError(f"no live replica answered for {user}")

    async def _worker(self) -> None:
        while not self._stop.is_set():
            await self._send(next(self._turn))
            await asyncio.sleep(0.1)

    @contextlib.asynccontextmanager
    async def running(self, workers: int = 3) -> AsyncIterator[Load]:
        tasks = [asyncio.create_task(self._worker()) for _ in range(workers)]
        try:
            yield self
        finally:
            self._stop.set()
            await asyncio.gather(*tasks)


async def test_b_roll_under_load_logs_nobody_out(fleet: Fleet, stack: Stack) -> None:
    """old+old -> old+new -> new+new under steady load: every answer is the viewer, no refresh
    token is replayed, and no session rotates more than once per rotation window."""
    users = ["alice", "bob", "carol", "dave", "erin", "frank"]
    # ~1.6 rotation windows per phase: the roll (~20 s with the stops, starts and sign-ins) ends
    # between two window boundaries, so the bound on refreshes below allows 5 per session
    phase_seconds = 6.5
    old_a, old_b = await fleet.start_old(0, 1)
    stats = stack.idp.stats()
    started = time.monotonic()  # before any token exists: the rotation windows are counted from here
    cookies = await asyncio.gather(*(sign_in((old_a, old_b)[i % 2].url, user) for i, user in enumerate(users)))
    rotated: dict[str, float] = {}
    async with contextlib.AsyncExitStack() as replicas, http_client() as http:
        load = Load(http, list(zip(cookies, users, strict=True)), [old_a.url, old_b.url], phase="old+old")
        async with load.running():
            await asyncio.sleep(phase_seconds)
            for old, index, phase in ((old_a, 2, "old+new"), (old_b, 3, "new+new")):
                rotated[old.url] = await refreshes(http, old.url)
                # SIGTERM while it is still in the balancer (its refused connections are retried); a
                # graceful exit (uvicorn re-raises the SIGTERM it handled: -15), not a kill after 20 s
                assert await asyncio.to_thread(old.stop) in (0, -signal.SIGTERM), old.output()[-2000:]
                load.live.remove(old.url)
                new = await replicas.enter_async_context(fleet.new(index))
                load.live.append(new.url)
                load.phase = phase
                await asyncio.sleep(phase_seconds)
        elapsed = time.monotonic() - started
        await asyncio.sleep(0.5)  # a rotation started by the last requests lands
        for url in load.live:
            rotated[url] = await refreshes(http, url)
    after = stack.idp.stats()

    failed = [answer for answer in load.answers if not answer.ok]
    assert not failed, f"{len(failed)} of {len(load.answers)} answers were not the viewer: {failed[:5]}"
    served = {phase: {a.url for a in load.answers if a.phase == phase} for phase in ("old+old", "old+new", "new+new")}
    assert served["old+old"] == {old_a.url, old_b.url}
    assert len(served["old+new"]) == 2 and old_b.url in served["old+new"]  # both versions answered
    assert old_a.url not in served["new+new"] and old_b.url not in served["new+new"]
    assert after["refreshReuse"] == 0
    assert after["refreshErrors"] == 0
    grants = after["refreshGrants"] - stats["refreshGrants"]
    # A session's k-th rotation needs its (k-1)-th token to be HALF_LIFE old, and its first token
    # was issued after `started`: at most floor(elapsed / HALF_LIFE) rotations per session. The
    # 0.25 s slack covers each replica judging token age by its own estimate of Redis's clock (they
    # differ by milliseconds) and issued_at being taken on receipt of the IdP's answer. A one-off
    # double refresh of the same refresh token is the IdP's refreshReuse above; this bound catches
    # a version that refreshes too often (misreading another version's issued_at/expires_at).
    most = len(users) * math.floor((elapsed + 0.25) / HALF_LIFE)
    assert grants <= most, f"{grants} refreshes in {elapsed:.1f} s for {len(users)} sessions (at most {most})"
    assert grants >= len(users) * 3, f"only {grants} refreshes in {elapsed:.1f} s: the roll did not span rotations"
    # both versions rotated sessions during the roll (the old ones before they were stopped)
    assert rotated[old_a.url] > 0 and rotated[old_b.url] > 0, rotated
    # and the new version rotated them after: which of its two replicas wins a rotation is a race
    # (under the suite's load the one started last lost all of them in one run of four)
    assert sum(rotated[url] for url in load.live) > 0, rotated
    assert not fleet.old_errors()
    print(f"{len(load.answers)} answers, {load.retried} retried, {grants} refreshes (<= {most}) in {elapsed:.1f} s")


async def test_c_logout_on_one_version_ends_the_session_on_the_other(fleet: Fleet, stack: Stack) -> None:
    """A user who signs out on a replica of one version is signed out on the other too (the record
    is gone, and its refresh token revoked), in both directions."""
    (old,) = await fleet.start_old(0)
    async with fleet.new(1) as new, http_client() as http:
        revocations = stack.idp.stats()["revocations"]
        for signed_in_at, logged_out_at, user in ((old.url, new.url, "alice"), (new.url, old.url, "bob")):
            cookie = await sign_in(signed_in_at, user)
            for url in (old.url, new.url):
                answer = await ask(http, url, cookie, user)
                assert answer.ok, answer
            out = await http.post(
                f"{logged_out_at}/auth/logout", headers={"cookie": f"{COOKIE}={cookie}", "X-CSRF": "1"}
            )
            assert out.status_code == 200
            assert out.json()["loggedOut"] is True
            assert clears_session(out)
            for url in (signed_in_at, logged_out_at):
                answer = await ask(http, url, cookie, user)
                assert answer.status == 200
                assert answer.body["data"]["viewer"] is None, answer
                assert answer.body["errors"][0]["extensions"]["code"] == "UNAUTHENTICATED", answer
        # each logout revoked its refresh token at the IdP, whichever version did it
        assert stack.idp.stats()["revocations"] == revocations + 2
    assert not fleet.old_errors()


async def test_d_rotations_by_the_old_version_keep_format_2_extras(fleet: Fleet, stack: Stack) -> None:
    """Format 2 keeps an extras document (per-upstream tokens, the DPoP key) beside the format-1
    JSON; 0.2 never reads it and must leave it in place when it rotates the session, or the new
    version would lose those tokens on the first refresh an old replica does during the roll."""
    from bff.sessions import models

    assert models.RECORD_FORMAT == 2  # this test is about format 2's extras: a new format needs a new test
    (old,) = await fleet.start_old(0)
    async with fleet.new(1) as new, http_client() as http:
        cookie = await sign_in(new.url, "alice")
        store, session_id = new.resources.store, new.resources.crypto.unsign(cookie)
        session = await store.get(session_id)
        now = time.time()
        extra = models.TokenSet(access_token="reports-only-token", expires_at=now + 3600, issued_at=now)
        session.upstream_tokens = {"reports": extra}
        session.dpop_key = dict(ECKey.generate_key("P-256").as_dict(private=True))  # a real one: it may be used
        written = await store.replace(session)
        assert written is not None
        await rotate(http, {old.url: (cookie, "alice")}, times=1)
        kept = await store.get(session_id)
        assert kept.version > written.version  # 0.2 wrote the record
        assert kept.tokens.access_token != written.tokens.access_token  # ...with the rotated tokens
        assert kept.upstream_tokens == {"reports": extra}
        assert kept.dpop_key == session.dpop_key
        answer = await ask(http, new.url, cookie, "alice")
        assert answer.ok, answer
        assert stack.idp.stats()["refreshErrors"] == 0
    assert not fleet.old_errors()
