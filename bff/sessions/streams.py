"""Open streams (subscriptions) per session, and ending them when their session ends.

Every replica keeps its own registry. For each session with at least one open stream, one watcher
looks whether the session still exists (a look that does not count as activity), at once and then
after each of the store's change announcements of that session (`SessionStore.on_change`:
Redis pub/sub across replicas, in-process for the memory store). Logout, back-channel logout and
revocation delete the session and announce it, so their streams end at once on every replica;
expiry is announced by no one, so the watcher also looks when the session's idle or absolute
deadline is due, and at least every ``recheck_seconds``.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
from collections.abc import Callable

from bff.errors import ShuttingDown, StoreUnavailable, StreamLimitExceeded
from bff.metrics import Metrics
from bff.sessions.store import ChangeWatch, SessionStore
from bff.timers import Timers

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
    """One open stream. `end` records its ``reason`` when it must stop and calls ``interrupt``,
    which its transport sets while it waits for the stream's next result; ``ended`` is an event
    for whoever would rather wait for it."""

    __slots__ = ("_ended", "interrupt", "reason", "session_id")

    def __init__(self, session_id: str | None) -> None:
        self.session_id = session_id
        self.reason: str | None = None
        self.interrupt: Callable[[], None] | None = None
        self._ended: asyncio.Event | None = None

    @property
    def ended(self) -> asyncio.Event:
        """Set once the stream must stop. Made on first use: the transports are woken through
        ``interrupt``, and an event (with its queue of waiters) for each of the open streams was
        a good part of the memory each holds."""
        if self._ended is None:
            self._ended = asyncio.Event()
            if self.reason is not None:
                self._ended.set()
        return self._ended

    def end(self, reason: str) -> None:
        if self.reason is None:
            self.reason = reason
        if self._ended is not None:
            self._ended.set()
        if self.interrupt is not None:
            self.interrupt()


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
        #: the open streams' deadlines (lifetime, heartbeats): a heap entry each, not a loop timer
        self.timers = Timers()
        self._by_session: dict[str, list[Stream]] = {}  # a list: a session has one or a few
        #: per watched session: the task of its look under way, or the store's `ChangeWatch` that
        #: starts the next one (no task while it waits)
        self._watchers: dict[str, asyncio.Task[None] | ChangeWatch] = {}
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
            mine = self._by_session.setdefault(session_id, [])
            if len(mine) >= self.per_session:
                self.metrics.streams_refused.labels("per_session").inc()
                raise StreamLimitExceeded(f"this session already has its maximum of {self.per_session} open streams")
        stream = Stream(session_id or None)
        self._open.add(stream)
        self._empty.clear()
        self.metrics.streams_open.inc()
        if session_id:
            self._by_session[session_id].append(stream)
            watcher = self._watchers.get(session_id)
            if watcher is None or watcher.done():  # done: it found the session gone, or failed
                self._look(session_id)
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
            if stream in mine:
                mine.remove(stream)
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

    def _look(self, session_id: str) -> None:
        """Start the next look at a watched session (a short task)."""
        if session_id in self._by_session:
            self._watchers[session_id] = asyncio.create_task(self._watch(session_id), name="bff-stream-watch")

    async def _watch(self, session_id: str) -> None:
        """Look at the session; end its streams when it is gone; otherwise have the store call
        `_look` again when a change is announced, its idle or absolute deadline is due, or
        ``recheck_seconds`` have gone by.

        An announcement made while a look is under way (a logout racing it) must not be missed:
        the store counts its announcements (of any session), and a look during which the count
        moved is made again at once. From the count's last reading to the registration with the
        store (`SessionStore.on_change`) nothing is awaited. Between looks the watcher is no task
        and no future, only that registration: an open stream's memory was mostly such tasks."""
        store = self.store
        while True:
            announced = store.changes
            try:
                session = await store.get(session_id, touch=self.keep_alive)
            except StoreUnavailable:
                timeout = 1.0  # a store outage ends nothing: look again
            else:
                if session is None:
                    self.end_session(session_id)
                    return
                deadline = min(
                    session.created_at + store.absolute_seconds,
                    session.last_seen + store.idle_seconds,
                )
                timeout = max(0.05, min(self.recheck_seconds, deadline - store.now() + 0.05))
                del session  # not held while waiting: a session's copy per watcher (issue 26, part 4)
            if store.changes == announced:
                break
        if self._watchers.get(session_id) is asyncio.current_task():
            self._watchers[session_id] = store.on_change(session_id, timeout, functools.partial(self._look, session_id))

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
                if isinstance(watcher, asyncio.Task):
                    with contextlib.suppress(asyncio.CancelledError, Exception):
                        await watcher
        finally:
            self._shut_down.set()
