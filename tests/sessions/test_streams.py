"""The stream registry's watcher against the memory store: it looks at a session at once (an expiry
is announced by no one) and misses no announcement made while it looks."""

from __future__ import annotations

import asyncio
import time

from bff.metrics import Metrics
from bff.sessions.crypto import SessionCrypto
from bff.sessions.memory import MemorySessionStore
from bff.sessions.models import Session, TokenSet
from bff.sessions.streams import StreamRegistry


def _session() -> Session:
    now = time.time()
    return Session(
        id=Session.new_id(),
        sub="alice",
        sid=None,
        tokens=TokenSet(access_token="at", refresh_token="rt", expires_at=now + 60, issued_at=now),
        created_at=now,
        last_seen=now,
        claims={},
    )


def _registry(store: MemorySessionStore) -> StreamRegistry:
    return StreamRegistry(store, Metrics(), per_session=5, per_process=10, recheck_seconds=30.0)


async def test_an_idle_expiry_ends_the_stream_at_its_deadline_not_a_recheck_later() -> None:
    store = MemorySessionStore(SessionCrypto(["secret"]), idle_seconds=1, absolute_seconds=3600)
    session = _session()
    await store.create(session)
    registry = _registry(store)
    stream = registry.open(session.id)
    started = time.monotonic()
    await asyncio.wait_for(stream.ended.wait(), 3)
    assert stream.reason == "session_ended"
    assert 0.9 <= time.monotonic() - started < 2.0
    registry.close(stream, "session_ended")
    await registry.shutdown(0.1)


class _LogoutDuringTheFirstLook(MemorySessionStore):
    """The first look reads the session, which a logout deletes (and announces) before the look returns."""

    looks = 0

    async def get(self, session_id: str, *, touch: bool = True) -> Session | None:
        session = await super().get(session_id, touch=touch)
        self.looks += 1
        if self.looks == 1:
            await self.delete(session_id)
        return session


async def test_a_logout_announced_while_the_watcher_looks_is_not_missed() -> None:
    store = _LogoutDuringTheFirstLook(SessionCrypto(["secret"]), idle_seconds=3600, absolute_seconds=7200)
    session = _session()
    await store.create(session)
    registry = _registry(store)
    stream = registry.open(session.id)
    await asyncio.wait_for(stream.ended.wait(), 1)
    assert stream.reason == "session_ended"
    assert store.looks == 2
    registry.close(stream, "session_ended")
    await registry.shutdown(0.1)


async def test_shutdown_is_idempotent_the_second_call_waits_for_the_first() -> None:
    """`bff.serving`, a signal and the lifespan's end may each start the shutdown: it runs once."""
    store = MemorySessionStore(SessionCrypto(["secret"]), idle_seconds=3600, absolute_seconds=7200)
    registry = _registry(store)
    stream = registry.open(None)

    async def goes_after(delay: float) -> None:
        await stream.ended.wait()
        await asyncio.sleep(delay)
        registry.close(stream, "shutdown")

    closer = asyncio.create_task(goes_after(0.2))
    first = asyncio.create_task(registry.shutdown(2.0))
    await asyncio.sleep(0)
    await registry.shutdown(0.0)  # with no grace, it would return at once if it ran again
    assert first.done()
    await closer
    assert len(registry) == 0
    await asyncio.wait_for(registry.shutdown(2.0), 0.1)  # done already: returns at once


async def test_between_looks_the_watcher_is_no_task_and_a_logout_still_ends_the_stream() -> None:
    """The watcher waits as a registration with the store (a callback and a deadline), not a task;
    the logout's announcement starts the look that ends the stream; closing the last stream of a
    session forgets the registration."""
    store = MemorySessionStore(SessionCrypto(["secret"]), idle_seconds=3600, absolute_seconds=7200)
    session, other = _session(), _session()
    await store.create(session)
    await store.create(other)
    registry = _registry(store)
    stream, kept = registry.open(session.id), registry.open(other.id)
    for _ in range(20):
        await asyncio.sleep(0.01)
        if not [t for t in asyncio.all_tasks() if t.get_name() == "bff-stream-watch"]:
            break
    assert not [t for t in asyncio.all_tasks() if t.get_name() == "bff-stream-watch"]
    assert len(store._waiters) == 2 and len(store._timers) == 2
    await store.delete(session.id)  # announces the change
    await asyncio.wait_for(stream.ended.wait(), 1)
    assert stream.reason == "session_ended" and kept.reason is None
    registry.close(stream, "session_ended")
    registry.close(kept, "client_closed")
    assert not store._waiters and len(store._timers) == 0
    await registry.shutdown(0.1)
