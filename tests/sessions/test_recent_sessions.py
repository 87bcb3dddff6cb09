"""A GraphQL request may reuse the session another request of the process read moments ago
(``BFF_SESSION_CACHE_SECONDS``), against a real redis-server and a 3-master cluster: every change
announcement, from this replica or another, forgets the copy at once; a key deleted behind the store's
back is noticed within the window; nothing that decides about tokens or logout reads the copy."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator

import pytest

from bff.sessions.crypto import SessionCrypto
from bff.sessions.models import Session, TokenSet
from bff.sessions.redis import RedisSessionStore

LIMITS = {"idle_seconds": 3600, "absolute_seconds": 7200}


class CountingStore(RedisSessionStore):
    reads = 0

    async def _get(self, session_id: str):  # type: ignore[no-untyped-def]
        self.reads += 1
        return await super()._get(session_id)


@pytest.fixture(params=["redis", "cluster"])
async def replicas(request: pytest.FixtureRequest) -> AsyncIterator[tuple[CountingStore, CountingStore]]:
    server = request.getfixturevalue("redis_server" if request.param == "redis" else "redis_cluster")
    crypto = SessionCrypto(["secret-one"])
    a = CountingStore(server.url, crypto, recent_seconds=5.0, **LIMITS)
    b = CountingStore(server.url, crypto, recent_seconds=5.0, **LIMITS)
    yield a, b
    await a.close()
    await b.close()


def _session() -> Session:
    now = time.time()
    tokens = TokenSet(access_token="at-1", refresh_token="rt-1", expires_at=now + 60, issued_at=now)
    return Session(id=Session.new_id(), sub="alice", tokens=tokens, created_at=now, last_seen=now)


async def _eventually(check: object, seconds: float = 2.0) -> None:
    deadline = time.monotonic() + seconds
    while not check():  # type: ignore[operator]
        assert time.monotonic() < deadline, "not within the delivery time"
        await asyncio.sleep(0.01)


async def test_reads_within_the_window_ask_the_store_once(replicas: tuple[CountingStore, CountingStore]) -> None:
    a, _ = replicas
    session = _session()
    await a.create(session)
    first = await a.get(session.id, recent=True)
    assert first is not None and a.reads == 1
    for _ in range(5):
        assert await a.get(session.id, recent=True) is first
    assert a.reads == 1
    assert await a.get(session.id) is not None and a.reads == 2  # not a request's read: the store


async def test_a_logout_on_another_replica_forgets_the_copy(replicas: tuple[CountingStore, CountingStore]) -> None:
    a, b = replicas
    session = _session()
    await a.create(session)
    assert await b.get(session.id, recent=True) is not None
    await asyncio.sleep(0.2)  # b's subscription is up (it starts with the first remembered read)
    await a.delete(session.id, session=session)
    await _eventually(lambda: not b._recent)
    assert await b.get(session.id, recent=True) is None


async def test_a_refresh_on_another_replica_is_seen_at_once(replicas: tuple[CountingStore, CountingStore]) -> None:
    a, b = replicas
    session = _session()
    await a.create(session)
    assert (await b.get(session.id, recent=True)).tokens.access_token == "at-1"  # type: ignore[union-attr]
    await asyncio.sleep(0.2)
    current = await a.get(session.id)
    assert current is not None
    current.tokens = TokenSet(access_token="at-2", refresh_token="rt-2", expires_at=time.time() + 60, issued_at=0)
    assert await a.replace(current) is not None
    await _eventually(lambda: not b._recent)
    again = await b.get(session.id, recent=True)
    assert again is not None and again.tokens.access_token == "at-2"


async def test_a_key_deleted_behind_the_stores_back_is_noticed_within_the_window(
    replicas: tuple[CountingStore, CountingStore],
) -> None:
    a, _ = replicas
    a.recent_seconds = 0.3
    session = _session()
    await a.create(session)
    assert await a.get(session.id, recent=True) is not None
    await a._delete(session.id)  # no announcement, as a key deleted with redis-cli
    await asyncio.sleep(0.35)
    assert await a.get(session.id, recent=True) is None


async def test_a_read_overtaken_by_an_announcement_is_not_remembered(
    replicas: tuple[CountingStore, CountingStore],
) -> None:
    a, _ = replicas
    session = _session()
    await a.create(session)
    original = a._get

    async def slow(session_id: str):  # type: ignore[no-untyped-def]
        record = await original(session_id)
        await a.publish_change(session_id)  # a logout lands while the read is on its way back
        return record

    a._get = slow  # type: ignore[method-assign]
    assert await a.get(session.id, recent=True) is not None
    assert not a._recent


async def test_zero_seconds_reads_the_store_every_time(redis_server) -> None:  # type: ignore[no-untyped-def]
    store = CountingStore(redis_server.url, SessionCrypto(["k"]), **LIMITS)
    session = _session()
    await store.create(session)
    for _ in range(3):
        assert await store.get(session.id, recent=True) is not None
    assert store.reads == 3
    await store.close()


async def test_expired_copies_are_let_go_not_kept_until_replaced(
    replicas: tuple[CountingStore, CountingStore],
) -> None:
    """A copy past its window is forgotten by the store's one sweep timer, oldest first, so that a
    process does not hold a session per idle reader (an open stream between its events)."""
    a, _ = replicas
    a.recent_seconds = 0.2
    sessions = [_session() for _ in range(3)]
    for session in sessions:
        await a.create(session)
    for session in sessions[:2]:
        assert await a.get(session.id, recent=True) is not None
    await asyncio.sleep(0.1)
    assert await a.get(sessions[2].id, recent=True) is not None
    assert len(a._recent) == 3
    await _eventually(lambda: len(a._recent) == 1, 0.25)  # the first two, at their expiry
    await _eventually(lambda: not a._recent and a._recent_sweep is None, 0.3)  # then the last; no timer left
    assert await a.get(sessions[0].id, recent=True) is not None  # read again: remembered again
    assert len(a._recent) == 1 and a._recent_sweep is not None
