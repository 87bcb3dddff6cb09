"""Open streams (subscriptions) per session, and ending them when their session ends.

Every replica keeps its own registry. For each session with at least one open stream, one watcher
looks whether the session still exists (a look that does not count as activity), at once and then
after each of the store's change announcements of that session (`SessionStore.wait_for_change`:
Redis pub/sub across replicas, in-process for the memory store). Logout, back-channel logout and
revocation delete the session and announce it, so their streams end at once on every replica;
expiry is announced by no one, so the watcher also looks when the session's idle or absolute
deadline is due, and at least every ``recheck_seconds``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging

from bff.errors import ShuttingDown, StoreUnavailable, StreamLimitExceeded
from bff.metrics import Metrics
from bff.sessions.store import SessionStore

log = logging.getLogger("bff")

REASONS = (
    "complete",
    "client_closed",
    "session_ended",
    "unauthenticated",
    "max_duration",
    "shutdown",
    "error",
)


class Stream:
    """One open stream. ``ended`` is set (with ``reason``) when it must stop."""

    __slots__ = ("ended", "reason", "session_id")

    def __init__(self, session_id: str | None) -> None:
        self.session_id = session_id
        self.ended = asyncio.Event()
        self.reason: str | None = None

    def end(self, reason: str) -> None:
        if self.reason is None:
            self.reason = reason
        self.ended.set()


class StreamRegistry:
    def __init__(
        self,
        store: SessionStore,
        metrics: Metrics,
        *,
        per_session: int,
        per_process: int,
        keep_alive: bool = False,
        recheck_seconds: float = 30.0,
    ) -> None:
        self.store = store
        self.metrics = metrics
        self.per_session = per_session
        self.per_process = per_process
        self.keep_alive = keep_alive  # whether the watcher's look counts as activity
        self.recheck_seconds = recheck_seconds
        self._open: set[Stream] = set()
        self._by_session: dict[str, set[Stream]] = {}
        self._watchers: dict[str, asyncio.Task[None]] = {}
        self.closing = False
        #: set when the process starts shutting down, for connections that hold no stream yet
        self.draining = asyncio.Event()
        self._empty = asyncio.Event()
        self._empty.set()
        self._held = 0  # connections that must say goodbye before shutdown goes on
        self._released = asyncio.Event()
        self._released.set()
        self._shut_down: asyncio.Event | None = None  # set once `shutdown` has done its work

    def __len__(self) -> int:
        return len(self._open)

    def open(self, session_id: str | None) -> Stream:
        """Register a stream; raises `StreamLimitExceeded` when a limit is reached, `ShuttingDown`
        once `shutdown` has begun."""
        if self.closing:
            raise ShuttingDown("the server is shutting down")
        if len(self._open) >= self.per_process:
            self.metrics.streams_refused.labels("per_process").inc()
            raise StreamLimitExceeded(f"this server holds its maximum of {self.per_process} open streams")
        if session_id:
            mine = self._by_session.setdefault(session_id, set())
            if len(mine) >= self.per_session:
                self.metrics.streams_refused.labels("per_session").inc()
                raise StreamLimitExceeded(f"this session already has its maximum of {self.per_session} open streams")
        stream = Stream(session_id or None)
        self._open.add(stream)
        self._empty.clear()
        self.metrics.streams_open.inc()
        if session_id:
            self._by_session[session_id].add(stream)
            watcher = self._watchers.get(session_id)
            if watcher is None or watcher.done():  # done: it found the session gone, or failed
                self._watchers[session_id] = asyncio.create_task(self._watch(session_id), name="bff-stream-watch")
        return stream

    def close(self, stream: Stream, reason: str) -> None:
        """Forget a stream that stopped (its first reason counts)."""
        stream.end(reason)
        if stream not in self._open:
            return
        self._open.discard(stream)
        if not self._open:
            self._empty.set()
        self.metrics.streams_open.dec()
        self.metrics.streams_ended.labels(stream.reason or reason).inc()
        session_id = stream.session_id
        if session_id is None:
            return
        mine = self._by_session.get(session_id)
        if mine is not None:
            mine.discard(stream)
            if not mine:
                del self._by_session[session_id]
                watcher = self._watchers.pop(session_id, None)
                if watcher is not None:
                    watcher.cancel()

    def hold(self) -> None:
        """Count a connection that closes itself when `draining` is set (a WebSocket: ``complete``
        for each operation, then 1001): `shutdown` waits for its `release` as for a stream."""
        self._held += 1
        self._released.clear()

    def release(self) -> None:
        self._held -= 1
        if self._held <= 0:
            self._held = 0
            self._released.set()

    def end_session(self, session_id: str, reason: str = "session_ended") -> None:
        for stream in list(self._by_session.get(session_id, ())):
            stream.end(reason)

    async def _watch(self, session_id: str) -> None:
        """Look at the session at once, then whenever a change is announced, its idle or absolute
        deadline is due, or ``recheck_seconds`` have gone by; end its streams when it is gone.

        The wait for the next announcement starts before each look, so one made while the look is
        under way (a logout racing it) wakes the next wait instead of being missed."""
        while True:
            change = asyncio.ensure_future(self.store.wait_for_change(session_id, self.recheck_seconds))
            try:
                await asyncio.sleep(0)  # the waiter registers in its first step
                try:
                    session = await self.store.get(session_id, touch=self.keep_alive)
                except StoreUnavailable:
                    timeout = 1.0  # a store outage ends nothing: look again
                else:
                    if session is None:
                        self.end_session(session_id)
                        return
                    deadline = min(
                        session.created_at + self.store.absolute_seconds,
                        session.last_seen + self.store.idle_seconds,
                    )
                    timeout = max(0.05, min(self.recheck_seconds, deadline - self.store.now() + 0.05))
                await asyncio.wait({change}, timeout=timeout)
            finally:
                if not change.done():
                    change.cancel()
                    with contextlib.suppress(asyncio.CancelledError):
                        await change

    async def shutdown(self, grace: float = 2.0) -> None:
        """End every stream (its client gets a ``complete``) and wait up to ``grace`` for them, and
        for the connections held open, to go. Idempotent: several parties may start the shutdown
        (`bff.serving`, a signal, the lifespan's end); the first does it, the others wait for it."""
        if self._shut_down is not None:
            await self._shut_down.wait()
            return
        self._shut_down = asyncio.Event()
        try:
            self.closing = True
            self.draining.set()
            for stream in list(self._open):
                stream.end("shutdown")
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(asyncio.gather(self._empty.wait(), self._released.wait()), grace)
            for watcher in list(self._watchers.values()):
                watcher.cancel()
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await watcher
        finally:
            self._shut_down.set()
