"""The shared store for several replicas: Redis or Redis Cluster (redis-py's asyncio client).

Key names never hold a credential or a subject: a session's record is ``bff:{<sha256(id)>}:s``
(its scripts touch that one key, so a cluster is fine), one-time values are named by their
SHA-256, and the sid/sub indexes by a keyed hash (`SessionCrypto.index_names`); an index holds
the records' hashed names. So that a user's list of their sessions (`SessionStore.sessions_of`)
can open records it was not given the id of, each record also keeps its id sealed (field ``i``,
AES-GCM under the session secret and bound to the record's name): whoever can open it could open
the record's tokens anyway. Index sets are read per key (a cluster is fine). Changes are
announced on one pub/sub channel, by the same hashed tag, so that replicas waiting for a refresh
wake at once instead of polling. Records written by 0.1 under raw ids are moved on first read.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any, cast

from redis.asyncio import BlockingConnectionPool, Redis, RedisCluster
from redis.asyncio.cluster import ClusterNode
from redis.asyncio.retry import Retry
from redis.backoff import ExponentialBackoff
from redis.exceptions import ConnectionError, RedisClusterException, RedisError, TimeoutError

from bff.errors import StoreUnavailable
from bff.sessions.crypto import DecryptError
from bff.sessions.store import Claim, Record, SessionStore, UnverifiedId

log = logging.getLogger("bff.sessions")

_CHANNEL = "bff:session-changed"

# KEYS[1] session hash; ARGV expected version, new version, blob, ttl ms, claim to end ('' for none),
# extras ('' for none: a format-1 write, which drops any extras, as a session without them has none)
_CAS = """
if redis.call('HGET', KEYS[1], 'v') == ARGV[1] then
  redis.call('HSET', KEYS[1], 'v', ARGV[2], 'd', ARGV[3])
  if ARGV[6] ~= '' then redis.call('HSET', KEYS[1], 'x', ARGV[6]) else redis.call('HDEL', KEYS[1], 'x') end
  redis.call('PEXPIRE', KEYS[1], ARGV[4])
  if ARGV[5] ~= '' and redis.call('HGET', KEYS[1], 'c') == ARGV[5] then
    redis.call('HDEL', KEYS[1], 'c', 'cu')
  end
  return 1
end
return 0
"""

# The refresh claim, judged by the server's clock (TIME), so replicas' clocks do not matter. A claim
# is a lease its live holder renews (_RENEW); a holder id may end in '@<start ms>' (0.3's do).
# 'lapsed': taken from a holder whose lease ran out without a write or release (dead, or frozen).
# KEYS[1] session hash; ARGV version seen, holder, lease ms, takeover after ms, takeover before ms
# (0 0: never take over a live claim)
_CLAIM = """
local v = redis.call('HGET', KEYS[1], 'v')
if (not v) or v ~= ARGV[1] then return 'moved' end
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local holder = redis.call('HGET', KEYS[1], 'c')
local lapsed = false
if holder and holder ~= ARGV[2] then
  if tonumber(redis.call('HGET', KEYS[1], 'cu') or '0') > now then
    local since = tonumber(string.match(holder, '@(%d+)$') or '')
    local after, before = tonumber(ARGV[4]), tonumber(ARGV[5])
    if not (since and before > 0 and now - since > after and now - since < before) then return 'busy' end
  else
    lapsed = true
  end
end
redis.call('HSET', KEYS[1], 'c', ARGV[2], 'cu', now + tonumber(ARGV[3]))
if lapsed then return 'lapsed' end
return 'taken'
"""

# KEYS[1] session hash; ARGV holder. Marks the holder's refresh token as still unused (a peer asked the IdP).
_MARK_UNUSED = """
if redis.call('HGET', KEYS[1], 'c') ~= ARGV[1] then return 0 end
redis.call('HSET', KEYS[1], 'cv', ARGV[1])
return 1
"""

# KEYS[1] session hash; ARGV holder, lease ms. 1 when the claim is still ours (and now extended).
_RENEW = """
if redis.call('HGET', KEYS[1], 'c') ~= ARGV[1] then return 0 end
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
redis.call('HSET', KEYS[1], 'cu', now + tonumber(ARGV[2]))
return 1
"""

# KEYS[1] session hash; ARGV holder
_RELEASE = """
if redis.call('HGET', KEYS[1], 'c') == ARGV[1] then
  redis.call('HDEL', KEYS[1], 'c', 'cu')
end
return 0
"""

# KEYS[1] the newest IdP answer; ARGV start ms of the answered call, replica. Keeps the newest start.
_ANSWERED = """
local current = redis.call('GET', KEYS[1])
local newest = tonumber(current and string.match(current, '^(%d+)') or '0')
if tonumber(ARGV[1]) > newest then redis.call('SET', KEYS[1], ARGV[1] .. ':' .. ARGV[2], 'PX', 600000) end
return 0
"""
_ANSWERED_KEY = "bff:idp:answered"

# KEYS[1] session hash; ARGV the sealed id. Names a record written without it (by 0.2), if it still exists.
_NAME = """
if redis.call('EXISTS', KEYS[1]) == 1 then redis.call('HSETNX', KEYS[1], 'i', ARGV[1]) end
return 0
"""

#: what a record's hash holds, in the order `_record` takes them
_FIELDS = ["v", "d", "s", "c", "cu", "x"]

_CLOCK_CHECK_SECONDS = 60.0
_SKEW_WARNING_SECONDS = 2.0

# KEYS[1] session hash; ARGV seen, ttl ms. Only touches a record that still exists.
_TOUCH = """
if redis.call('EXISTS', KEYS[1]) == 1 then
  redis.call('HSET', KEYS[1], 's', ARGV[1])
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
end
return 0
"""


def connect(url: str, timeout: float = 1.0) -> Redis | RedisCluster:
    """``redis://`` or ``rediss://`` for one server, ``redis+cluster://h:p,h:p`` for a cluster."""
    if url.startswith("redis+cluster://"):
        hosts = url.removeprefix("redis+cluster://").split("/")[0]
        nodes = []
        for hostport in hosts.split(","):
            host, _, port = hostport.rpartition(":") if ":" in hostport else (hostport, "", "6379")
            nodes.append(ClusterNode(host or "127.0.0.1", int(port or 6379)))
        return RedisCluster(
            startup_nodes=nodes,
            retry=_retry(),
            socket_timeout=timeout,
            socket_connect_timeout=timeout,
            max_connections=_POOL_SIZE,
        )
    # A bounded pool in which a burst waits for a connection: redis-py's default pool raises
    # "Too many connections" past 100 concurrent commands, which would look like an outage.
    # Retries cover pooled connections that went stale (a restarted or failed-over server).
    pool = BlockingConnectionPool.from_url(
        url,
        max_connections=_POOL_SIZE,
        timeout=5,
        retry=_retry(),
        retry_on_error=[ConnectionError, TimeoutError],
        socket_timeout=timeout,
        socket_connect_timeout=timeout,
    )
    return Redis.from_pool(pool)  # the client owns the pool: closing it closes the connections


_POOL_SIZE = 64
#: a 0.1 session id (``secrets.token_urlsafe(32)``): only such a name is looked up as a 0.1 record
_LEGACY_ID = re.compile(r"[A-Za-z0-9_-]{43}")


#: what redis-py raises when Redis cannot be used: `RedisClusterException` (a cluster URL to a
#: server that is not a cluster, no reachable node) is not a `RedisError`
_UNUSABLE = (RedisError, RedisClusterException, OSError)


def unusable(exc: BaseException) -> StoreUnavailable:
    """The one translation of a redis-py failure: a short reason, never a URL or a password."""
    if isinstance(exc, RedisClusterException) and "cluster mode is not enabled" in str(exc).lower():
        return StoreUnavailable(
            "session store is not a Redis Cluster (cluster mode is not enabled on that server): "
            "use redis://host:port/0 for a single server, redis+cluster:// only for a cluster"
        )
    if isinstance(exc, RedisClusterException):
        return StoreUnavailable("session store unreachable: no cluster node answered")
    return StoreUnavailable(f"session store unreachable: {type(exc).__name__}")


def _bytes(value: Any) -> bytes:
    return value if isinstance(value, bytes) else str(value).encode()


def _retry() -> Retry:
    # One retry: enough for a pooled connection that went stale (a restart, a failover); more would
    # only multiply the stall of a Redis that hangs (paused, partitioned) for requests that wait on it.
    return Retry(ExponentialBackoff(cap=0.5, base=0.05), retries=1)


class RedisSessionStore(SessionStore):
    shared = True

    def __init__(self, url: str, *args: Any, timeout: float = 1.0, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.redis = connect(url, timeout)
        self._cas = self.redis.register_script(_CAS)
        self._claim_script = self.redis.register_script(_CLAIM)
        self._release_script = self.redis.register_script(_RELEASE)
        self._renew_script = self.redis.register_script(_RENEW)
        self._answered_script = self.redis.register_script(_ANSWERED)
        self._mark_unused_script = self.redis.register_script(_MARK_UNUSED)
        self._touch_script = self.redis.register_script(_TOUCH)
        self._name_script = self.redis.register_script(_NAME)
        self._listener: asyncio.Task[None] | None = None
        #: Redis's clock minus ours; decisions about expiry use Redis's clock (`now`)
        self.clock_offset = 0.0
        self._clock_checked = 0.0

    def now(self) -> float:
        return time.time() + self.clock_offset

    async def sync_clock(self) -> float:
        """Measure this replica's clock against Redis ``TIME``; warn when they differ by more than
        a couple of seconds (expiry decisions use Redis's clock either way)."""
        started = time.time()
        async with self._errors():
            seconds, micros = await self.redis.time()
        ended = time.time()
        self.clock_offset = seconds + micros / 1e6 - (started + ended) / 2
        self._clock_checked = time.monotonic()
        if abs(self.clock_offset) > _SKEW_WARNING_SECONDS:
            log.warning(
                "this replica's clock differs from the session store's by %.1f s; token expiry is judged "
                "by the store's clock, but check NTP on this host",
                self.clock_offset,
            )
        return self.clock_offset

    async def check_configuration(self) -> list[str]:
        """Warnings about Redis settings that can lose sessions (eviction, no persistence)."""
        warnings: list[str] = []
        try:
            policy = (await self.redis.config_get("maxmemory-policy")).get("maxmemory-policy")
            aof = (await self.redis.config_get("appendonly")).get("appendonly")
            save = (await self.redis.config_get("save")).get("save")
        except (*_UNUSABLE, AttributeError):
            return warnings  # CONFIG is often disabled on managed Redis: nothing to conclude
        if isinstance(policy, str) and policy != "noeviction":
            warnings.append(
                f"Redis maxmemory-policy is {policy!r}: it can evict session keys (every session has a TTL), "
                "logging users out under memory pressure; use 'noeviction' for the session store"
            )
        if aof == "no" and not save:
            warnings.append(
                "Redis has no persistence (appendonly no, no RDB snapshots): a restart loses every session "
                "while its refresh token stays live at the identity provider; set appendonly yes"
            )
        for warning in warnings:
            log.warning(warning)
        return warnings

    def _key(self, session_id: str) -> str:
        return f"bff:{{{self.crypto.tag(session_id)}}}:s"

    async def _migrate_legacy(self, session_id: str) -> bool:
        """0.1 named records by the raw session id: move one to its hashed name (first read only)."""
        legacy = f"bff:{{{session_id}}}:s"
        fields: dict[Any, Any] = await self.redis.hgetall(legacy)
        if not fields:
            return False
        ttl = await self.redis.pttl(legacy)
        async with self.redis.pipeline(transaction=False) as pipe:
            pipe.hset(self._key(session_id), mapping=fields)
            pipe.pexpire(self._key(session_id), max(1, int(ttl)))
            await pipe.execute()
        await self.redis.delete(legacy)
        return True

    @contextlib.asynccontextmanager
    async def _errors(self) -> AsyncIterator[None]:
        try:
            yield
        except _UNUSABLE as exc:
            raise unusable(exc) from exc

    async def _get(self, session_id: str) -> Record | None:
        if time.monotonic() - self._clock_checked > _CLOCK_CHECK_SECONDS:
            self._clock_checked = time.monotonic()
            with contextlib.suppress(StoreUnavailable):
                await self.sync_clock()
        key = self._key(session_id)
        async with self._errors():
            fields = [*_FIELDS, "i"]
            *values, named = await self.redis.hmget(key, fields)
            # 0.1's raw-id records move only for an id whose MAC verified: an unverified one could name
            # another session's hashed key as a "legacy" one and have it moved away (ended)
            verified = not isinstance(session_id, UnverifiedId)
            if (
                values[0] is None
                and verified
                and _LEGACY_ID.fullmatch(session_id)
                and await self._migrate_legacy(session_id)
            ):
                *values, named = await self.redis.hmget(key, fields)
            if values[0] is not None and named is None and verified:
                # written by 0.2 (or 0.1): from now on it can be listed among its user's sessions
                await self._name_script(keys=[key], args=[self._sealed_id(session_id)])
        return self._record(values)

    def _record(self, values: list[Any]) -> Record | None:
        """A record from its hash fields (`_FIELDS`), or None when it does not exist."""
        version, blob, seen, claim, until, extras = values
        if version is None or blob is None:
            return None
        live = claim is not None and float(until or 0) / 1000 > self.now()
        return Record(
            int(version),
            _bytes(blob),
            float(seen or 0),
            (claim.decode() if isinstance(claim, bytes) else str(claim)) if live else None,
            extras=_bytes(extras) if extras else None,
        )

    def _sealed_id(self, session_id: str) -> bytes:
        return self.crypto.encrypt(session_id.encode(), _id_associated(self.crypto.tag(session_id)))

    def _unsealed_id(self, tag: str, sealed: Any) -> str | None:
        """The id sealed in record ``tag``, if it opens and names that record; else None."""
        try:
            session_id = self.crypto.decrypt(_bytes(sealed), _id_associated(tag)).decode()
        except (DecryptError, UnicodeDecodeError):
            return None
        return session_id if self.crypto.tag(session_id) == tag else None

    async def _sessions_of(self, sub: str) -> list[tuple[str, Record]]:
        indexes = self._indexes(None, sub)
        async with self._errors():
            tags: dict[str, None] = {}
            for index in indexes:  # one key each: read one by one, so a cluster's slots do not matter
                for raw in await self.redis.smembers(index):
                    tags[raw.decode() if isinstance(raw, bytes) else str(raw)] = None
            if not tags:
                return []
            async with self.redis.pipeline(transaction=False) as pipe:
                for tag in tags:
                    pipe.hmget(f"bff:{{{tag}}}:s", [*_FIELDS, "i"])
                rows = await pipe.execute()
            found: list[tuple[str, Record]] = []
            gone: list[str] = []
            for tag, (*values, sealed) in zip(tags, rows, strict=True):
                record = self._record(values)
                if record is None:
                    gone.append(tag)
                    continue
                session_id = self._unsealed_id(tag, sealed) if sealed else None
                if session_id is not None:
                    found.append((session_id, record))
            if gone:
                # looked at again first: a sign-in's record and index entry are written side by side,
                # on two nodes of a cluster, so an entry can briefly come before its record
                async with self.redis.pipeline(transaction=False) as pipe:
                    for tag in gone:
                        pipe.exists(f"bff:{{{tag}}}:s")
                    still = await pipe.execute()
                gone = [tag for tag, exists in zip(gone, still, strict=True) if not exists]
            for index in indexes if gone else ():
                await self.redis.srem(index, *gone)
        return found

    async def _create(
        self, session_id: str, blob: bytes, extras: bytes | None, now: float, ttl: float, sid: str | None, sub: str
    ) -> None:
        key = self._key(session_id)
        async with self._errors(), self.redis.pipeline(transaction=False) as pipe:
            pipe.hset(key, mapping={"v": 1, "d": blob, "s": now, "i": self._sealed_id(session_id)})
            if extras is not None:
                pipe.hset(key, "x", extras)
            pipe.pexpire(key, int(ttl * 1000))
            for index in self._indexes(sid, sub, current_only=True):
                pipe.sadd(index, self.crypto.tag(session_id))
                pipe.expire(index, self.absolute_seconds)
            await pipe.execute()

    def _indexes(self, sid: str | None, sub: str | None, *, current_only: bool = False) -> list[str]:
        names = []
        for kind, value in (("sid", sid), ("sub", sub)):
            if value:
                hashed = self.crypto.index_names(kind, value)
                names += [f"bff:ix:{{{name}}}" for name in (hashed[:1] if current_only else hashed)]
        return names

    async def _unindex(self, session_id: str, sid: str | None, sub: str) -> None:
        async with self._errors():
            for index in self._indexes(sid, sub):
                await self.redis.srem(index, self.crypto.tag(session_id))

    async def _compare_and_set(
        self,
        session_id: str,
        expected: int,
        new: int,
        blob: bytes,
        extras: bytes | None,
        ttl: float,
        end_claim: str | None,
    ) -> bool:
        async with self._errors():
            result = await self._cas(
                keys=[self._key(session_id)],
                args=[expected, new, blob, int(ttl * 1000), end_claim or "", extras or b""],
            )
        return bool(result)

    async def _claim(
        self, session_id: str, version: int, holder: str, seconds: float, takeover: tuple[float, float] | None
    ) -> Claim:
        after, before = takeover or (0.0, 0.0)
        args: list[str | int] = [version, holder, int(seconds * 1000), int(after * 1000), int(before * 1000)]
        async with self._errors():
            result = await self._claim_script(keys=[self._key(session_id)], args=args)
        return Claim(result.decode() if isinstance(result, bytes) else str(result))

    async def _mark_unused(self, session_id: str, holder: str) -> bool:
        async with self._errors():
            return bool(await self._mark_unused_script(keys=[self._key(session_id)], args=[holder]))

    async def _unused_said(self, session_id: str, holder: str) -> bool:
        async with self._errors():
            said = await self.redis.hget(self._key(session_id), "cv")
        return said is not None and _bytes(said).decode() == holder

    async def _renew(self, session_id: str, holder: str, seconds: float) -> bool:
        async with self._errors():
            result = await self._renew_script(keys=[self._key(session_id)], args=[holder, int(seconds * 1000)])
        return bool(result)

    async def _release(self, session_id: str, holder: str) -> None:
        async with self._errors():
            await self._release_script(keys=[self._key(session_id)], args=[holder])

    async def _touch(self, session_id: str, seen: float, ttl: float) -> None:
        async with self._errors():
            await self._touch_script(keys=[self._key(session_id)], args=[seen, int(ttl * 1000)])

    async def _delete(self, session_id: str) -> None:
        async with self._errors():
            await self.redis.delete(self._key(session_id))

    async def delete_where(self, *, sid: str | None = None, sub: str | None = None) -> int:
        indexes = self._indexes(sid, None if sid else sub)
        ended = 0
        async with self._errors():
            for index in indexes:
                for raw in await self.redis.smembers(index):
                    tag = raw.decode() if isinstance(raw, bytes) else str(raw)
                    ended += int(await self.redis.delete(f"bff:{{{tag}}}:s"))
                    await self._publish_tag(tag)
                await self.redis.delete(index)
            # 0.1's indexes held raw ids under raw names
            legacy = f"bff:sid:{{{sid}}}" if sid else f"bff:sub:{{{sub}}}"
            for raw in await self.redis.smembers(legacy):
                session_id = raw.decode() if isinstance(raw, bytes) else str(raw)
                ended += int(await self.redis.delete(self._key(session_id), f"bff:{{{session_id}}}:s") > 0)
                await self.publish_change(session_id)
            await self.redis.delete(legacy)
        return ended

    async def _put_once(self, name: str, blob: bytes, ttl: float) -> None:
        async with self._errors():
            await self.redis.set(f"bff:once:{{{self.crypto.tag(name)}}}", blob, px=int(ttl * 1000))

    async def _take_once(self, name: str) -> bytes | None:
        async with self._errors():
            blob = await self.redis.getdel(f"bff:once:{{{self.crypto.tag(name)}}}")
        if blob is None:
            return None
        return blob if isinstance(blob, bytes) else str(blob).encode()

    async def _remember_once(self, name: str, ttl: float) -> bool:
        digest = self.crypto.tag(name)
        async with self._errors():
            return bool(await self.redis.set(f"bff:seen:{{{digest}}}", 1, nx=True, px=max(1, int(ttl * 1000))))

    async def _seen_once(self, name: str) -> bool:
        async with self._errors():
            return bool(await self.redis.exists(f"bff:seen:{{{self.crypto.tag(name)}}}"))

    # coordination ------------------------------------------------------------------------------
    async def publish_change(self, session_id: str) -> None:
        await self._publish_tag(self.crypto.tag(session_id))

    async def _publish_tag(self, tag: str) -> None:
        self._notify(tag)
        with contextlib.suppress(*_UNUSABLE):
            await self.redis.publish(_CHANNEL, tag)

    def _listen_for_changes(self) -> None:
        self._ensure_listener()

    def _ensure_listener(self) -> None:
        if self._listener is None or self._listener.done():
            self._listener = asyncio.create_task(self._listen(), name="bff-session-changes")

    async def _listen(self) -> None:
        """Wake local waiters on changes published by any replica; reconnects after failures."""
        while True:
            try:
                pubsub = self.redis.pubsub()
                try:
                    await pubsub.subscribe(_CHANNEL)
                    while True:
                        message = await pubsub.get_message(ignore_subscribe_messages=True, timeout=1.0)
                        if message and message.get("type") == "message":
                            data = message["data"]
                            self._notify(data.decode() if isinstance(data, bytes) else str(data))
                finally:
                    with contextlib.suppress(*_UNUSABLE):
                        # redis-py's stubs type aclose() on some releases and not on others: a cast, not an
                        # ignore, so mypy passes on every redis the project admits (issue 22)
                        close = cast("Callable[[], Awaitable[None]]", pubsub.aclose)
                        await asyncio.wait_for(close(), 1.0)
            except asyncio.CancelledError:
                raise
            except _UNUSABLE:
                await asyncio.sleep(0.5)

    async def note_idp_answer(self, replica: str, started: float) -> None:
        async with self._errors():
            await self._answered_script(keys=[_ANSWERED_KEY], args=[int(started * 1000), replica])

    async def idp_answered_since(self, started: float, replica: str) -> bool:
        async with self._errors():
            value = await self.redis.get(_ANSWERED_KEY)
        if value is None:
            return False
        at, _, who = _bytes(value).decode().partition(":")
        return who != replica and at.isdigit() and int(at) / 1000 > started

    async def ping(self) -> None:
        try:
            await self.redis.ping()
        except _UNUSABLE as exc:
            raise unusable(exc) from exc
        await self.sync_clock()

    async def close(self) -> None:
        if self._listener is not None:
            self._listener.cancel()
            # bounded: a listener cancelled while its subscription was being made can wait for
            # ever in redis-py's pubsub close (seen in tests/sessions/test_recent_sessions.py)
            await asyncio.wait({self._listener}, timeout=2.0)
        with contextlib.suppress(*_UNUSABLE):
            await self.redis.aclose()


def _id_associated(tag: str) -> bytes:
    """A sealed id is bound to its record's name, and told apart from every other sealed value."""
    return f"bff session id\x00{tag}".encode()
