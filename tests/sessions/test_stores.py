"""The session stores against their real backends: memory, redis-server and a 3-master cluster."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator

import pytest

from bff.errors import StoreUnavailable
from bff.sessions.crypto import SessionCrypto
from bff.sessions.memory import MemorySessionStore
from bff.sessions.models import Session, TokenSet
from bff.sessions.redis import RedisSessionStore
from bff.sessions.store import Claim, SessionStore, UnverifiedId
from tests.support.servers import RedisServer

LIMITS = {"idle_seconds": 3600, "absolute_seconds": 7200}


def _store(kind: str, request: pytest.FixtureRequest, crypto: SessionCrypto, **limits: int) -> SessionStore:
    merged = {**LIMITS, **limits}
    if kind == "memory":
        return MemorySessionStore(crypto, **merged)
    server = request.getfixturevalue("redis_server" if kind == "redis" else "redis_cluster")
    return RedisSessionStore(server.url, crypto, **merged)


@pytest.fixture(params=["memory", "redis", "cluster"])
def kind(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
async def store(kind: str, request: pytest.FixtureRequest) -> AsyncIterator[SessionStore]:
    s = _store(kind, request, SessionCrypto(["secret-one"]))
    yield s
    await s.close()


def _session(sub: str = "alice", sid: str | None = "idp-sid-1") -> Session:
    now = time.time()
    return Session(
        id=Session.new_id(),
        sub=sub,
        sid=sid,
        tokens=TokenSet(access_token="at-1", refresh_token="rt-1", expires_at=now + 60, issued_at=now),
        created_at=now,
        last_seen=now,
        claims={"name": "Alice"},
    )


async def test_round_trip_and_compare_and_set(store: SessionStore) -> None:
    session = _session()
    await store.create(session)
    loaded = await store.get(session.id)
    assert loaded is not None
    assert (loaded.sub, loaded.tokens.access_token, loaded.version) == ("alice", "at-1", 1)

    loaded.tokens.access_token = "at-2"
    stored = await store.replace(loaded)
    assert stored is not None
    assert stored.version == 2
    stale = await store.get(session.id)
    assert stale is not None
    stale.version = 1  # a writer that read before the rotation
    stale.tokens.access_token = "at-stale"
    assert await store.replace(stale) is None
    final = await store.get(session.id)
    assert final is not None
    assert (final.tokens.access_token, final.version) == ("at-2", 2)


async def test_delete_and_backchannel_indexes(store: SessionStore) -> None:
    a, b, c = _session(sid="s1"), _session(sid="s1"), _session(sub="bob", sid="s2")
    for s in (a, b, c):
        await store.create(s)
    assert await store.delete_where(sid="s1") == 2
    assert await store.get(a.id) is None
    assert await store.get(b.id) is None
    assert await store.get(c.id) is not None
    assert await store.delete_where(sub="bob") == 1
    assert await store.get(c.id) is None


async def test_one_time_values_are_single_use(store: SessionStore) -> None:
    await store.put_once("login", "state-1", {"verifier": "v"}, ttl=60)
    results = await asyncio.gather(*(store.take_once("login", "state-1") for _ in range(5)))
    assert [r for r in results if r is not None] == [{"verifier": "v"}]
    assert await store.take_once("login", "unknown") is None


async def test_ttl_expiry(kind: str, request: pytest.FixtureRequest) -> None:
    store = _store(kind, request, SessionCrypto(["k"]), idle_seconds=1)
    try:
        session = _session()
        await store.create(session)
        await store.put_once("login", "s", {"x": 1}, ttl=0.5)
        await asyncio.sleep(1.3)
        assert await store.get(session.id) is None
        assert await store.take_once("login", "s") is None
    finally:
        await store.close()


async def test_secret_rotation_keeps_sessions(kind: str, request: pytest.FixtureRequest) -> None:
    old = _store(kind, request, SessionCrypto(["old-secret"]))
    rotated = _store(kind, request, SessionCrypto(["new-secret", "old-secret"]))
    stranger = _store(kind, request, SessionCrypto(["other-secret"]))
    if kind == "memory":  # one process: the same backing cache
        rotated._cache = stranger._cache = old._cache  # type: ignore[attr-defined]
    try:
        session = _session()
        await old.create(session)
        loaded = await rotated.get(session.id)
        assert loaded is not None
        assert loaded.sub == "alice"
        # a key this reader does not know (yet): a rotation in progress, not tampering; nothing ends
        with pytest.raises(StoreUnavailable):
            await stranger.get(session.id)
        # rewritten under the new key, the old-key-only reader cannot open it, and says so
        assert await rotated.replace(loaded) is not None
        with pytest.raises(StoreUnavailable):
            await old.get(session.id)
        assert await rotated.get(session.id) is not None
    finally:
        for s in (old, rotated, stranger):
            await s.close()


@pytest.mark.parametrize("kind", ["memory", "redis", "cluster"])
async def test_refresh_claim_is_exclusive_versioned_and_ends_with_the_write(
    kind: str, request: pytest.FixtureRequest
) -> None:
    crypto = SessionCrypto(["k"])
    one = _store(kind, request, crypto)
    two = one if kind == "memory" else _store(kind, request, crypto)
    try:
        session = _session()
        await one.create(session)
        loaded = await one.get(session.id)
        assert loaded is not None
        assert await two.claim_refresh(session.id, loaded.version + 1, "b:1", 30) is Claim.MOVED
        assert await one.claim_refresh(session.id, loaded.version, "a:1", 30) is Claim.TAKEN
        assert await two.claim_refresh(session.id, loaded.version, "b:1", 30) is Claim.BUSY
        seen = await two.get(session.id)
        assert seen is not None
        assert seen.refresh_claim == "a:1"
        # a write by someone else keeps the claim; the holder's own write ends it
        assert await two.replace(seen) is not None
        again = await one.get(session.id)
        assert again is not None
        assert again.refresh_claim == "a:1"
        assert await one.replace(again, end_claim="a:1") is not None
        after = await two.get(session.id)
        assert after is not None
        assert after.refresh_claim is None
        assert await two.claim_refresh(session.id, after.version, "b:2", 30) is Claim.TAKEN
        await two.release_refresh(session.id, "b:2")
        assert await one.claim_refresh(session.id, after.version, "a:2", 0.3) is Claim.TAKEN
        await asyncio.sleep(0.5)  # an expired claim (its holder died or froze) frees itself, said as such
        assert await two.claim_refresh(session.id, after.version, "b:3", 30) is Claim.LAPSED
        assert await one.claim_refresh("no-such-session", 1, "a:3", 30) is Claim.MOVED
    finally:
        await one.close()
        if two is not one:
            await two.close()


@pytest.mark.parametrize("kind", ["redis", "cluster"])
async def test_the_claim_survives_the_loss_of_other_keys_and_changes_wake_replicas(
    kind: str, request: pytest.FixtureRequest
) -> None:
    crypto = SessionCrypto(["k"])
    one, two = _store(kind, request, crypto), _store(kind, request, crypto)
    try:
        session = _session()
        await one.create(session)
        assert await one.claim_refresh(session.id, 1, "a:1", 30) is Claim.TAKEN
        redis = one.redis  # type: ignore[attr-defined]
        for key in await _all_keys(redis):
            if b"lock" in key or b"once" in key:
                await redis.delete(key)  # what an eviction or a failover could lose
        assert await two.claim_refresh(session.id, 1, "b:1", 30) is Claim.BUSY

        waiter = asyncio.create_task(two.wait_for_change(session.id, 5))
        await asyncio.sleep(0.3)  # let the subscriber connect
        started = time.monotonic()
        loaded = await one.get(session.id)
        assert loaded is not None
        await one.replace(loaded, end_claim="a:1")
        await waiter
        assert time.monotonic() - started < 1.0
    finally:
        await one.close()
        await two.close()


async def _all_keys(redis: object) -> list[bytes]:
    keys = await redis.keys("*")  # type: ignore[attr-defined]
    return [k for part in keys.values() for k in part] if isinstance(keys, dict) else list(keys)


async def test_the_store_clock_is_redis_time(redis_server: RedisServer) -> None:
    store = RedisSessionStore(redis_server.url, SessionCrypto(["k"]), **LIMITS)
    try:
        offset = await store.sync_clock()
        assert abs(offset) < 1.0  # same host
        assert abs(store.now() - time.time()) < 1.0
    finally:
        await store.close()


async def test_redis_restart_loses_sessions_without_errors(redis_server: RedisServer) -> None:
    store = RedisSessionStore(redis_server.url, SessionCrypto(["k"]), **LIMITS)
    try:
        session = _session()
        await store.create(session)
        redis_server.restart()
        await asyncio.sleep(0.2)
        assert await store.get(session.id) is None
    finally:
        await store.close()


async def test_bursts_wait_for_a_pooled_connection(redis_server: RedisServer) -> None:
    """More concurrent commands than pooled connections: they queue, none fails."""
    store = RedisSessionStore(redis_server.url, SessionCrypto(["k"]), **LIMITS)
    try:
        session = _session()
        await store.create(session)
        results = await asyncio.gather(*(store.get(session.id) for _ in range(500)))
        assert all(r is not None and r.sub == "alice" for r in results)
    finally:
        await store.close()


async def test_a_skewed_replica_decides_with_the_stores_clock(
    redis_server: RedisServer, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """A replica whose clock runs 60 s ahead measures the offset against Redis TIME, warns, and
    judges expiry with Redis's clock, so it does not refresh everybody's tokens early."""
    import bff.sessions.redis as redis_module

    real = time.time
    monkeypatch.setattr(redis_module.time, "time", lambda: real() + 60)
    store = RedisSessionStore(redis_server.url, SessionCrypto(["k"]), **LIMITS)
    try:
        offset = await store.sync_clock()
        assert -61 < offset < -59
        assert abs(store.now() - real()) < 1.0
        assert "clock differs from the session store's" in caplog.text
    finally:
        monkeypatch.undo()
        await store.close()


async def test_startup_warns_about_redis_settings_that_lose_sessions() -> None:
    server = RedisServer()
    server.args += ["--maxmemory-policy", "allkeys-lru"]
    server.start()
    try:
        store = RedisSessionStore(server.url, SessionCrypto(["k"]), **LIMITS)
        warnings = await store.check_configuration()
        await store.close()
    finally:
        server.cleanup()
    assert any("maxmemory-policy is 'allkeys-lru'" in w for w in warnings)
    assert any("no persistence" in w for w in warnings)
    persistent = RedisServer(persistent=True)
    persistent.start()
    try:
        store = RedisSessionStore(persistent.url, SessionCrypto(["k"]), **LIMITS)
        assert await store.check_configuration() == []
        await store.close()
    finally:
        persistent.cleanup()


async def test_redis_holds_no_usable_identifier(redis_server: RedisServer) -> None:
    """Key names, index members and pub/sub messages: no session id, handoff code, sid or subject."""
    store = RedisSessionStore(redis_server.url, SessionCrypto(["k"]), **LIMITS)
    redis = store.redis
    pubsub = redis.pubsub()
    await pubsub.subscribe("bff:session-changed")
    try:
        session = _session(sub="alice-subject", sid="idp-session-42")
        await store.create(session)
        await store.put_once("handoff", "one-time-code-xyz", {"a": 1}, 30)
        await store.remember_once("logout-jti", "jti-123", 30)
        loaded = await store.get(session.id)
        assert loaded is not None
        await store.replace(loaded)
        secrets_ = (session.id, "one-time-code-xyz", "alice-subject", "idp-session-42", "jti-123")
        seen = [k.decode() for k in await redis.keys("*")]
        for index in [k for k in seen if k.startswith("bff:ix:")]:
            seen += [m.decode() for m in await redis.smembers(index)]
        for _ in range(5):
            message = await pubsub.get_message(ignore_subscribe_messages=True, timeout=0.2)
            if message:
                seen.append(message["data"].decode())
        assert len(seen) >= 5
        assert not [s for s in seen for secret in secrets_ if secret in s]
        # logout takes the session out of its indexes
        await store.delete(session.id, session=loaded)
        names = store.crypto.index_names("sid", "idp-session-42") + store.crypto.index_names("sub", "alice-subject")
        for name in names:
            assert not await redis.exists(f"bff:ix:{{{name}}}")
    finally:
        await pubsub.aclose()
        await store.close()


async def test_records_of_0_1_are_moved_to_hashed_names(redis_server: RedisServer) -> None:
    crypto = SessionCrypto(["k"])
    store = RedisSessionStore(redis_server.url, crypto, **LIMITS)
    try:
        session = _session(sid="legacy-sid")
        blob = crypto.encrypt(session.to_json(), session.id.encode())
        await store.redis.hset(f"bff:{{{session.id}}}:s", mapping={"v": 3, "d": blob, "s": time.time()})
        await store.redis.expire(f"bff:{{{session.id}}}:s", 100)
        await store.redis.sadd("bff:sid:{legacy-sid}", session.id)
        loaded = await store.get(session.id)
        assert loaded is not None
        assert (loaded.sub, loaded.version) == ("alice", 3)
        assert not await store.redis.exists(f"bff:{{{session.id}}}:s")
        assert await store.delete_where(sid="legacy-sid") == 1
        assert await store.get(session.id) is None
    finally:
        await store.close()


async def test_a_paused_redis_is_reported_fast_and_recovers(redis_server: RedisServer) -> None:
    """A Redis that hangs (SIGSTOP, a partition) costs a request about two command timeouts
    (one retry), not the 15 s of three 5-second attempts; nothing is concluded about the session."""
    import signal

    server = RedisServer().start()
    store = RedisSessionStore(server.url, SessionCrypto(["k"]), timeout=0.5, **LIMITS)
    try:
        session = _session()
        await store.create(session)
        assert server.proc is not None
        server.proc.send_signal(signal.SIGSTOP)
        started = time.monotonic()
        with pytest.raises(StoreUnavailable):
            await store.get(session.id)
        assert time.monotonic() - started < 2.5
        server.proc.send_signal(signal.SIGCONT)
        assert await store.get(session.id) is not None
    finally:
        if server.proc is not None:
            server.proc.send_signal(signal.SIGCONT)
        await store.close()
        server.cleanup()


async def test_a_write_without_use_does_not_extend_the_idle_timeout(kind: str, request: pytest.FixtureRequest) -> None:
    """A token refresh writes the record; it is not activity, so an idle session still ends on time
    (an open stream with BFF_STREAM_KEEPS_SESSION_ALIVE=false refreshes, and must not keep it alive)."""
    store = _store(kind, request, SessionCrypto(["k"]), idle_seconds=2)
    try:
        session = _session()
        await store.create(session)
        await asyncio.sleep(1.2)
        loaded = await store.get(session.id, touch=False)
        assert loaded is not None
        loaded.tokens = TokenSet(access_token="at-2", refresh_token="rt-2", expires_at=time.time() + 60, issued_at=1)
        assert await store.replace(loaded) is not None
        await asyncio.sleep(1.2)  # 2.4 s after the last use, 1.2 s after the write
        assert await store.get(session.id, touch=False) is None
    finally:
        await store.close()


async def test_an_unverified_id_never_moves_or_ends_another_record(redis_server: RedisServer) -> None:
    """A cookie under an unknown key id reaches the store as an `UnverifiedId`: it must not act on
    anything, in particular not move (end) a record by naming its store tag as a "0.1 id"."""
    crypto = SessionCrypto(["k"])
    store = RedisSessionStore(redis_server.url, crypto, **LIMITS)
    try:
        victim = _session()
        await store.create(victim)
        tag = crypto.tag(victim.id)
        assert await store.get(UnverifiedId(tag)) is None
        assert await store.get(UnverifiedId(victim.id)) is None
        assert await store.get(victim.id) is not None
        assert await store.redis.exists(f"bff:{{{tag}}}:s")
    finally:
        await store.close()
