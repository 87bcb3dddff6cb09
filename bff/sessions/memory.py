"""The embedded, single-process store (aiocache's in-memory backend, TTLs included)."""

from __future__ import annotations

import asyncio
import dataclasses
import hashlib
import time

from aiocache import SimpleMemoryCache

from bff.sessions.store import Claim, Record, SessionStore, claim_started


def _key(kind: str, secret: str) -> str:
    # aiocache logs its keys at debug level: never a session id, state or handoff code in clear.
    return f"{kind}:{hashlib.sha256(secret.encode()).hexdigest()}"


def _live(record: Record | None) -> Record | None:
    """The record with an expired claim read as no claim."""
    if record is not None and record.claim is not None and record.claim_until <= time.time():
        return dataclasses.replace(record, claim=None, claim_until=0.0)
    return record


class MemorySessionStore(SessionStore):
    """Good for one process (``bff demo``, tests). Several replicas need the Redis store."""

    shared = False

    def __init__(self, *args: object, **kwargs: object) -> None:
        super().__init__(*args, **kwargs)  # type: ignore[arg-type]
        # timeout=0: aiocache otherwise wraps every call in asyncio.wait_for, a task per call.
        self._cache = SimpleMemoryCache(timeout=0)
        self._index: dict[str, set[str]] = {}
        self._creates = 0
        # Reads and writes of one record interleave across awaits; this keeps compare-and-set atomic.
        self._write = asyncio.Lock()

    async def _get(self, session_id: str) -> Record | None:
        return _live(await self._cache.get(_key("s", session_id)))

    async def _create(
        self, session_id: str, blob: bytes, extras: bytes | None, now: float, ttl: float, sid: str | None, sub: str
    ) -> None:
        async with self._write:
            await self._put(session_id, Record(1, blob, now, extras=extras), ttl)
            self._creates += 1
            if self._creates % 1000 == 0:
                await self._prune()
            for index in (f"sid:{sid}" if sid else None, f"sub:{sub}"):
                if index:
                    self._index.setdefault(index, set()).add(session_id)

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
        async with self._write:
            current = await self._get(session_id)
            if current is None or current.version != expected:
                return False
            claim, until = current.claim, current.claim_until
            if end_claim is not None and claim == end_claim:
                claim, until = None, 0.0
            await self._put(
                session_id,
                dataclasses.replace(current, version=new, blob=blob, extras=extras, claim=claim, claim_until=until),
                ttl,
            )
            return True

    async def _claim(
        self, session_id: str, version: int, holder: str, seconds: float, takeover: tuple[float, float] | None
    ) -> Claim:
        async with self._write:
            raw: Record | None = await self._cache.get(_key("s", session_id))
            current = _live(raw)
            if raw is None or current is None or current.version != version:
                return Claim.MOVED
            now = time.time()
            if current.claim is not None and current.claim != holder:
                since = claim_started(current.claim)
                if takeover is None or since is None or not takeover[0] < now - since < takeover[1]:
                    return Claim.BUSY
            claimed = dataclasses.replace(current, claim=holder, claim_until=now + seconds)
            await self._put(session_id, claimed)
            lapsed = raw.claim is not None and raw.claim != holder and current.claim is None
            return Claim.LAPSED if lapsed else Claim.TAKEN

    async def _mark_unused(self, session_id: str, holder: str) -> bool:
        async with self._write:
            current = await self._get(session_id)
            if current is None or current.claim != holder:
                return False
            await self._put(session_id, dataclasses.replace(current, unused=holder))
            return True

    async def _unused_said(self, session_id: str, holder: str) -> bool:
        current = await self._get(session_id)
        return current is not None and current.unused == holder

    async def _renew(self, session_id: str, holder: str, seconds: float) -> bool:
        async with self._write:
            current = await self._get(session_id)
            if current is None or current.claim != holder:
                return False
            await self._put(session_id, dataclasses.replace(current, claim_until=time.time() + seconds))
            return True

    async def _release(self, session_id: str, holder: str) -> None:
        async with self._write:
            current = await self._get(session_id)
            if current is not None and current.claim == holder:
                await self._put(session_id, dataclasses.replace(current, claim=None, claim_until=0.0))

    async def _put(self, session_id: str, record: Record, ttl: float | None = None) -> None:
        """Write a record; without ``ttl`` it keeps the expiry it had."""
        if ttl is not None:
            record = dataclasses.replace(record, expires_at=time.time() + ttl)
        await self._cache.set(_key("s", session_id), record, ttl=max(0.001, record.expires_at - time.time()))

    async def _touch(self, session_id: str, seen: float, ttl: float) -> None:
        async with self._write:
            current: Record | None = await self._cache.get(_key("s", session_id))
            if current is not None:
                await self._put(session_id, dataclasses.replace(current, seen=seen), ttl)

    async def _delete(self, session_id: str) -> None:
        async with self._write:
            await self._cache.delete(_key("s", session_id))

    async def _unindex(self, session_id: str, sid: str | None, sub: str) -> None:
        for index in (f"sid:{sid}" if sid else None, f"sub:{sub}"):
            members = self._index.get(index) if index else None
            if members is not None:
                members.discard(session_id)
                if not members:
                    del self._index[index]  # type: ignore[arg-type]

    async def _sessions_of(self, sub: str) -> list[tuple[str, Record]]:
        index = f"sub:{sub}"
        found = []
        for session_id in list(self._index.get(index, ())):
            record = await self._get(session_id)
            if record is None:
                await self._unindex(session_id, None, sub)
            else:
                found.append((session_id, record))
        return found

    async def _prune(self) -> None:
        """Forget index entries of sessions that expired (TTL) rather than ended (aiocache's public
        ``exists``: its own dict is private)."""
        for index in list(self._index):
            self._index[index] = {s for s in self._index[index] if await self._cache.exists(_key("s", s))}
            if not self._index[index]:
                del self._index[index]

    async def delete_where(self, *, sid: str | None = None, sub: str | None = None) -> int:
        index = f"sid:{sid}" if sid else f"sub:{sub}"
        ended = 0
        for session_id in self._index.pop(index, set()):
            if await self._get(session_id) is not None:
                ended += 1
            await self.delete(session_id)
        return ended

    async def _put_once(self, name: str, blob: bytes, ttl: float) -> None:
        await self._cache.set(_key("o", name), blob, ttl=ttl)

    async def _take_once(self, name: str) -> bytes | None:
        async with self._write:
            blob: bytes | None = await self._cache.get(_key("o", name))
            if blob is not None:
                await self._cache.delete(_key("o", name))
            return blob

    async def _remember_once(self, name: str, ttl: float) -> bool:
        # add() is set-if-absent; it raises when the key exists
        try:
            await self._cache.add(_key("r", name), True, ttl=ttl)
        except ValueError:
            return False
        return True

    async def _seen_once(self, name: str) -> bool:
        return bool(await self._cache.exists(_key("r", name)))

    async def close(self) -> None:
        await self._cache.clear()
