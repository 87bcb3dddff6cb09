"""The session store: one abstract base that encrypts, and byte-level backends (memory, Redis).

Records are encrypted as a whole (claims and token set) and bound to their id; the version number
stays in clear beside them so that writes can be compare-and-set. Idle timeout is the record's TTL,
pushed forward on use; the absolute lifetime caps that TTL.

The refresh claim lives inside the record too (in clear: who, and until when by the store's clock):
it is taken by an atomic check of the record's version, and nothing but the end of the session can
free it early, so losing some other key (an eviction, a failover) never lets two replicas send the
same refresh token. A claim ends when its holder commits or releases it, or when it expires.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import json
import time
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from enum import Enum
from typing import Any

from bff.errors import StoreUnavailable
from bff.metrics import Metrics
from bff.sessions.crypto import DecryptError, SessionCrypto, UnknownKeyError
from bff.sessions.models import Session
from bff.timers import Timer, Timers


@dataclass(frozen=True, slots=True)
class Record:
    version: int
    blob: bytes
    seen: float
    #: the refresh claim's holder, while its claim is live (expired claims read as None)
    claim: str | None = None
    claim_until: float = 0.0
    expires_at: float = 0.0  # the memory store's own TTL bookkeeping
    #: the format-2 extras (`Session.extras_json`), sealed on their own; None for a format-1 record
    extras: bytes | None = None
    #: the claim holder a peer found had sent a still-unused refresh token (`mark_unused`)
    unused: str | None = None


class UnverifiedId(str):
    """A session id from a cookie signed under a key id this replica does not know yet: it may only
    be used to tell "a rotation in progress" (the record is under an unknown key too) from a forgery."""


class Claim(Enum):
    TAKEN = "taken"  # ours until we commit, release, or its lease runs out
    LAPSED = "lapsed"  # ours, taken from a holder whose lease ran out unfinished (dead or frozen)
    BUSY = "busy"  # someone else's live claim
    MOVED = "moved"  # the record changed (or is gone) since the version we saw: read it again


def claim_holder(replica: str, attempt: int, started: float) -> str:
    """A claim's holder id: who, and since when (store clock, ms) the claim's refresh started; peers
    read the start from it (`claim_started`) to tell an overdue refresh from a fresh one. 0.2's
    holders (``replica:n``) carry no start."""
    return f"{replica}:{attempt}@{int(started * 1000)}"


def claim_started(holder: str | None) -> float | None:
    """When the claim named ``holder`` started (store clock, s), if its holder id says."""
    if not holder or "@" not in holder:
        return None
    try:
        return int(holder.rsplit("@", 1)[1]) / 1000
    except ValueError:
        return None


class SessionStore(ABC):
    """Where sessions, pending logins and one-time codes live. Subclasses move bytes only.

    Backends raise `StoreUnavailable` when they cannot be reached.
    """

    #: whether locks and notifications reach other processes (False for the memory store)
    shared: bool = False

    def __init__(
        self,
        crypto: SessionCrypto,
        *,
        idle_seconds: int,
        absolute_seconds: int,
        metrics: Metrics | None = None,
        recent_seconds: float = 0.0,
    ) -> None:
        self.crypto = crypto
        self.metrics = metrics
        self.idle_seconds = idle_seconds
        self.absolute_seconds = absolute_seconds
        #: by session tag, what waits for a change of it (`ChangeWatch`es): a list, as a
        #: session has one or a few (an empty set is ~200 B, per watched session)
        self._waiters: dict[str, list[ChangeWatch]] = {}
        #: how long a GraphQL request may reuse a session another request of this process read
        #: (``BFF_SESSION_CACHE_SECONDS``; 0: off): by tag, (until, session id, session)
        self.recent_seconds = recent_seconds
        self._recent: dict[str, tuple[float, str, Session]] = {}
        self._recent_sweep: asyncio.TimerHandle | None = None
        #: the deadlines of `on_change` (a session watcher's is always pending): a heap entry each
        self._timers = Timers()
        #: moves on every change announcement: a read that began before one is not remembered
        self._changes = 0

    # sessions ----------------------------------------------------------------------------------
    @contextlib.contextmanager
    def _timed(self, op: str) -> Iterator[None]:
        started = time.perf_counter()
        try:
            yield
        finally:
            if self.metrics is not None:
                self.metrics.child(self.metrics.session_store_duration, op).observe(time.perf_counter() - started)

    def now(self) -> float:
        """The store's clock (seconds since the epoch): every replica of a shared store decides with
        the same clock, whatever its own says (see `RedisSessionStore.clock_offset`)."""
        return time.time()

    def expires_at(self, session: Session) -> tuple[float, float]:
        """(idle, absolute): when ``session`` ends without further use, and when it ends whatever,
        on the store's clock. The one place a session's expiry is computed: the record's TTL,
        ``GET /auth/session``, the native handoff's answer."""
        return session.last_seen + self.idle_seconds, session.created_at + self.absolute_seconds

    async def get(self, session_id: str, *, touch: bool = True, recent: bool = False) -> Session | None:
        """The live session, or None (absent, expired, tampered, or written under a retired key).
        ``touch=False``: a look that does not count as activity (the idle timeout is not pushed).

        ``recent=True`` (a GraphQL request's read, nothing that decides about tokens or logout):
        a session this process read less than ``recent_seconds`` ago may be returned without asking
        the store. Every change announcement of the session (a refresh, a logout, a back-channel
        logout, on any replica: the announcements that end streams) forgets it at once, so a
        reused copy is never older than the announcement's delivery; a key deleted behind the
        store's back is noticed within ``recent_seconds``. Bounded: 4,096 sessions at most.

        Raises `StoreUnavailable` when the record is encrypted under a key this replica does not
        know yet (a rolling secret rotation): the session is kept, nothing is concluded."""
        if recent and self.recent_seconds > 0:
            cached = self.recent(session_id, touch=touch)
            if cached is not None:
                return cached
            tag = self.crypto.tag(session_id)
            changes = self._changes
            session = await self._read(session_id, touch)
            if session is not None and changes == self._changes and not isinstance(session_id, UnverifiedId):
                self._listen_for_changes()
                if len(self._recent) >= 4096:
                    self._recent.clear()
                self._recent.pop(tag, None)  # (re)inserted last: the copies stay in expiry order
                self._recent[tag] = (time.monotonic() + self.recent_seconds, session_id, session)
                if self._recent_sweep is None:
                    self._recent_sweep = asyncio.get_running_loop().call_later(self.recent_seconds, self._sweep)
            return session
        return await self._read(session_id, touch)

    def _sweep(self) -> None:
        """Forget the recent copies that have expired, oldest first, and come back while any is
        left: an expired copy is never used, and keeping it until another read replaces it held a
        session per open stream between its events (issue 26, part 4). One timer per store."""
        self._recent_sweep = None
        now = time.monotonic()
        expired = []
        for tag, (until, _, _) in self._recent.items():
            if until > now:
                break
            expired.append(tag)
        for tag in expired:
            del self._recent[tag]
        if self._recent:
            until = next(iter(self._recent.values()))[0]
            self._recent_sweep = asyncio.get_running_loop().call_later(max(until - now, 0.01), self._sweep)

    def recent(self, session_id: str, *, touch: bool = True) -> Session | None:
        """`get`'s answer with ``recent=True`` when it can be given without asking the store (this
        process read the session less than ``recent_seconds`` ago, and no touch is due), else None:
        the same answer without a coroutine, for a caller that would otherwise start a task for it."""
        if self.recent_seconds <= 0:
            return None
        hit = self._recent.get(self.crypto.tag(session_id))
        if hit is None or hit[0] <= time.monotonic() or hit[1] != session_id:
            return None
        cached = hit[2]
        now = self.now()
        if touch and now - cached.last_seen > min(60.0, self.idle_seconds / 10):
            return None
        return cached if now < self.expires_at(cached)[1] else None

    async def _read(self, session_id: str, touch: bool) -> Session | None:
        with self._timed("get"):
            record = await self._get(session_id)
        if record is None:
            return None
        return await self._open(session_id, record, touch)

    async def _open(self, session_id: str, record: Record, touch: bool) -> Session | None:
        """The session ``record`` holds, or None (tampered, past its absolute lifetime: then ended)."""
        try:
            extras = None
            if record.extras:
                extras = self.crypto.decrypt(record.extras, _extras_associated(session_id))
            session = Session.from_json(self.crypto.decrypt(record.blob, session_id.encode()), record.version, extras)
        except UnknownKeyError:
            raise StoreUnavailable("the session is encrypted under a key this replica does not know yet") from None
        except (DecryptError, ValueError, TypeError, KeyError):
            return None
        if isinstance(session_id, UnverifiedId):
            return None  # its cookie named a key we do not have, but the record is under one we do: forged
        session.refresh_claim = record.claim
        now = self.now()
        if now >= self.expires_at(session)[1]:
            await self.delete(session_id)
            return None
        session.last_seen = max(session.last_seen, record.seen)
        # Push the idle TTL forward, but not on every request: a write per minute is plenty.
        if touch and now - session.last_seen > min(60.0, self.idle_seconds / 10):
            session.last_seen = now
            await self._touch(session_id, now, self._ttl(session, now))
        return session

    async def create(self, session: Session) -> None:
        now = self.now()
        blob, extras = self._seal(session)
        with self._timed("create"):
            await self._create(session.id, blob, extras, now, self._ttl(session, now), session.sid, session.sub)

    async def replace(self, session: Session, *, end_claim: str | None = None) -> Session | None:
        """Compare-and-set on ``session.version``; returns the stored copy (version + 1) or None
        when someone else wrote first. ``end_claim``: the writer's refresh claim, cleared with the
        write (any live claim of another holder is kept). A write is not activity: the idle timeout
        still counts from the session's last use (a refresh must not keep an idle session alive)."""
        now = self.now()
        new_version = session.version + 1
        blob, extras = self._seal(session)
        with self._timed("replace"):
            ok = await self._compare_and_set(
                session.id, session.version, new_version, blob, extras, self._ttl(session, now), end_claim
            )
        if not ok:
            return None
        session.version = new_version
        if end_claim is not None and session.refresh_claim == end_claim:
            session.refresh_claim = None
        await self.publish_change(session.id)
        return session

    async def claim_refresh(
        self, session_id: str, version: int, holder: str, seconds: float, *, takeover: tuple[float, float] | None = None
    ) -> Claim:
        """Take the session's refresh claim for a lease of ``seconds`` (store clock) if the record is
        still at ``version`` and no other live claim exists. Atomic across replicas.

        ``takeover=(after, before)``: another holder's live claim that started more than ``after``
        and less than ``before`` seconds ago is taken over (the IdP's refresh-token reuse interval:
        replaying the refresh token inside it is accepted, so an overdue refresh need not be waited out)."""
        with self._timed("claim"):
            return await self._claim(session_id, version, holder, seconds, takeover)

    async def renew_refresh(self, session_id: str, holder: str, seconds: float) -> bool:
        """Extend our live claim's lease to ``seconds`` from now; False when it is not ours anymore.
        Only a live holder renews, so a dead one's claim lapses within one lease."""
        with self._timed("claim"):
            return await self._renew(session_id, holder, seconds)

    async def mark_unused(self, session_id: str, holder: str) -> bool:
        """Say, on ``holder``'s live claim, that the refresh token it sent is still unused at the IdP
        (a peer introspected it): the holder's call never arrived, so the holder may give the claim up
        safely. False when ``holder`` no longer holds the claim."""
        with self._timed("claim"):
            return await self._mark_unused(session_id, holder)

    async def unused_said(self, session_id: str, holder: str) -> bool:
        """Whether a peer said so (`mark_unused`) on our claim."""
        with self._timed("claim"):
            return await self._unused_said(session_id, holder)

    async def release_refresh(self, session_id: str, holder: str) -> None:
        """Give the claim back without writing (the refresh failed and nothing was rotated)."""
        with self._timed("claim"):
            await self._release(session_id, holder)
        await self.publish_change(session_id)

    async def delete(self, session_id: str, *, session: Session | None = None) -> None:
        """End a session; with ``session`` (its sid and sub known) its index entries go too."""
        await self._delete(session_id)
        if session is not None:
            await self._unindex(session_id, session.sid, session.sub)
        await self.publish_change(session_id)

    async def _unindex(self, session_id: str, sid: str | None, sub: str) -> None:
        """Drop the session from the sid/sub indexes (they also expire on their own)."""

    async def sessions_of(self, sub: str) -> list[Session]:
        """Every live session of the subject ``sub``, from its index (the one back-channel logout
        ends by `delete_where`), in no particular order. A look, not a use: no session's idle
        timeout is pushed. Index entries whose session vanished (expired, or deleted behind the
        store's back) are pruned on the way. A record this replica cannot read (a key it does not
        know yet, or, in Redis, one written by 0.2 and not read by this release since) is left out."""
        with self._timed("list"):
            found = await self._sessions_of(sub)
        sessions = []
        for session_id, record in found:
            try:
                session = await self._open(session_id, record, touch=False)
            except StoreUnavailable:
                continue  # under a key this replica does not know yet: not listed, nothing concluded
            if session is not None and session.sub == sub:
                sessions.append(session)
        return sessions

    @abstractmethod
    async def _sessions_of(self, sub: str) -> list[tuple[str, Record]]:
        """The backend's part of `sessions_of`: (id, record) of each indexed session it can name;
        prunes the index entries of sessions that are gone."""

    @abstractmethod
    async def delete_where(self, *, sid: str | None = None, sub: str | None = None) -> int:
        """End every session of an IdP session id or of a subject (back-channel logout)."""

    # one-time values (pending logins, native handoff codes) ------------------------------------
    async def put_once(self, kind: str, key: str, data: dict[str, Any], ttl: float) -> None:
        name = f"{kind}:{key}"
        blob = self.crypto.encrypt(json.dumps(data).encode(), name.encode())
        await self._put_once(name, blob, ttl)

    async def take_once(self, kind: str, key: str) -> dict[str, Any] | None:
        """Fetch and delete atomically: a second take of the same key gets None."""
        name = f"{kind}:{key}"
        blob = await self._take_once(name)
        if blob is None:
            return None
        try:
            data: dict[str, Any] = json.loads(self.crypto.decrypt(blob, name.encode()))
        except (DecryptError, ValueError):
            return None
        return data

    async def seen_once(self, kind: str, key: str) -> bool:
        """Whether `remember_once` has recorded this key (and it has not expired)."""
        return await self._seen_once(f"{kind}:{key}")

    async def remember_once(self, kind: str, key: str, ttl: float) -> bool:
        """Set-if-absent for ``ttl`` seconds: True the first time a key is seen, False on a replay
        (every replica of a shared store sees the same answer). Used for logout-token ``jti``."""
        return await self._remember_once(f"{kind}:{key}", ttl)

    # coordination ------------------------------------------------------------------------------
    async def wait_for_change(self, session_id: str, timeout: float) -> None:
        """Return when a change of this session is published, or after ``timeout``."""
        # a future woken by `on_change`, not an Event and asyncio.wait_for: on Python 3.11 wait_for
        # runs the wait in a task of its own (issue 26)
        waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        watch = self.on_change(session_id, timeout, functools.partial(_wake, waiter))
        try:
            await waiter
        finally:
            watch.cancel()

    def on_change(self, session_id: str, timeout: float, callback: Callable[[], object]) -> ChangeWatch:
        """Call ``callback()`` once, when a change of this session is announced or after
        ``timeout``, whichever comes first (`ChangeWatch.cancel`: not at all). What the session
        watcher of open streams waits with, without a task or a future (it waits most of its
        life; issue 26, part 4); the timeout is a deadline of the store's `Timers`, not a loop
        timer (~600 B each)."""
        self._listen_for_changes()
        tag = self.crypto.tag(session_id)
        watch = ChangeWatch(self, tag, callback)
        self._waiters.setdefault(tag, []).append(watch)
        watch.timer = self._timers.call_later(timeout, ChangeWatch.fire, watch)
        return watch

    def _forget_waiter(self, tag: str, waiter: ChangeWatch) -> None:
        waiters = self._waiters.get(tag)
        if waiters is not None:
            if waiter in waiters:
                waiters.remove(waiter)
            if not waiters:
                del self._waiters[tag]

    async def publish_change(self, session_id: str) -> None:
        self._notify(self.crypto.tag(session_id))

    def _notify(self, tag: str) -> None:
        """A change of the session whose tag (`SessionCrypto.tag`) this is: forget its recent copy
        and wake its waiters."""
        self._changes += 1
        self._recent.pop(tag, None)
        for watch in list(self._waiters.get(tag, ())):  # a `ChangeWatch` forgets itself as it fires
            watch.fire()

    @property
    def changes(self) -> int:
        """How many change announcements (of any session) this process has seen: a reader that
        compares it before and after a look knows whether one raced the look."""
        return self._changes

    def _listen_for_changes(self) -> None:
        """Make sure other replicas' change announcements reach `_notify` (a shared store's
        subscription); a process-local store hears all its changes already."""

    async def note_idp_answer(self, replica: str, started: float) -> None:
        """Record that ``replica`` got an answer from the IdP to a call it started at ``started``
        (store clock). Shared stores keep the newest such start, for `idp_answered_since`."""

    async def idp_answered_since(self, started: float, replica: str) -> bool:
        """Whether ANOTHER replica got an IdP answer to a call it started after ``started``: a hung
        call of ours is then our own path's fault (a partition), not a slow IdP. Never for a store
        that is not shared (there are no other replicas)."""
        return False

    async def ping(self) -> None:
        """Raise StoreUnavailable when the backend cannot serve requests."""

    async def close(self) -> None:
        """Release connections and background tasks."""

    # helpers -----------------------------------------------------------------------------------
    def _seal(self, session: Session) -> tuple[bytes, bytes | None]:
        extras = session.extras_json()
        sealed = None if extras is None else self.crypto.encrypt(extras, _extras_associated(session.id))
        return self.crypto.encrypt(session.to_json(), session.id.encode()), sealed

    def _ttl(self, session: Session, now: float) -> float:
        """Idle life counted from the last use (``last_seen``), capped by the absolute lifetime."""
        return max(1.0, min(self.expires_at(session)) - now)

    # backend -----------------------------------------------------------------------------------
    @abstractmethod
    async def _get(self, session_id: str) -> Record | None: ...

    @abstractmethod
    async def _create(
        self, session_id: str, blob: bytes, extras: bytes | None, now: float, ttl: float, sid: str | None, sub: str
    ) -> None: ...

    @abstractmethod
    async def _compare_and_set(
        self,
        session_id: str,
        expected: int,
        new: int,
        blob: bytes,
        extras: bytes | None,
        ttl: float,
        end_claim: str | None,
    ) -> bool: ...

    @abstractmethod
    async def _claim(
        self, session_id: str, version: int, holder: str, seconds: float, takeover: tuple[float, float] | None
    ) -> Claim: ...

    @abstractmethod
    async def _renew(self, session_id: str, holder: str, seconds: float) -> bool: ...

    @abstractmethod
    async def _mark_unused(self, session_id: str, holder: str) -> bool: ...

    @abstractmethod
    async def _unused_said(self, session_id: str, holder: str) -> bool: ...

    @abstractmethod
    async def _release(self, session_id: str, holder: str) -> None: ...

    @abstractmethod
    async def _touch(self, session_id: str, seen: float, ttl: float) -> None: ...

    @abstractmethod
    async def _delete(self, session_id: str) -> None: ...

    @abstractmethod
    async def _put_once(self, name: str, blob: bytes, ttl: float) -> None: ...

    @abstractmethod
    async def _take_once(self, name: str) -> bytes | None: ...

    @abstractmethod
    async def _remember_once(self, name: str, ttl: float) -> bool: ...

    @abstractmethod
    async def _seen_once(self, name: str) -> bool: ...


def _extras_associated(session_id: str) -> bytes:
    """The extras are bound to their session and told apart from its main blob (no swapping)."""
    return f"{session_id}\x00extras".encode()


class ChangeWatch:
    """`SessionStore.on_change`'s registration: it calls its callback once, at the session's next
    change announcement or at its timeout."""

    __slots__ = ("_callback", "_store", "_tag", "timer")

    def __init__(self, store: SessionStore, tag: str, callback: Callable[[], object]) -> None:
        self._store = store
        self._tag = tag
        self._callback: Callable[[], object] | None = callback
        self.timer: Timer | None = None

    def done(self) -> bool:
        return self._callback is None

    def fire(self, _: object = None) -> None:
        """A change was announced, or the timeout came: the callback, once."""
        callback = self._callback
        if callback is None:
            return
        self.cancel()
        callback()

    def cancel(self) -> None:
        self._callback = None
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None
        self._store._forget_waiter(self._tag, self)


def _wake(waiter: asyncio.Future[None]) -> None:
    if not waiter.done():
        waiter.set_result(None)
