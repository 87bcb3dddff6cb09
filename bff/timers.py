"""Many long-lived timers on one event loop, for the price of a heap entry each.

An open stream waits on three deadlines at all times: its next heartbeat, its maximum lifetime and
its session watcher's next look. An event loop timer (``call_at``) costs about 600 B under uvloop (a
``TimerHandle``, a libuv timer and a copy of the contextvars context), most of an open stream's
memory after its connection's (issue 26, part 4). `Timers` keeps such deadlines in one heap behind
one loop timer, set for the earliest. Written by hand: asyncio has no cheaper timer, and the
libraries that schedule (APScheduler and kin) are built for jobs, not for thousands of deadlines
that are mostly cancelled before they come.

A cancelled timer stays in the heap until it comes up or the heap is compacted (when over half of it
is cancelled), so that cancelling costs no search. Callbacks run in an empty contextvars context, not
a copy of whichever caller's armed the loop timer.
"""

from __future__ import annotations

import asyncio
import contextvars
import heapq
import itertools
import logging
from collections.abc import Callable
from typing import Any

log = logging.getLogger("bff")

#: a uvloop timer may fire up to a millisecond before its time by the loop's clock: a deadline this
#: close is due
_EARLY = 0.001
#: the heap is compacted when more of it than this is cancelled (and over half of it)
_COMPACT_AFTER = 64


class Timer:
    """One deadline of `Timers`; `cancel` it when it is no longer wanted."""

    __slots__ = ("_owner", "argument", "callback", "when")

    def __init__(self, owner: Timers, when: float, callback: Callable[[Any], object], argument: Any) -> None:
        self._owner = owner
        self.when = when
        self.callback: Callable[[Any], object] | None = callback
        self.argument = argument

    def cancel(self) -> None:
        if self.callback is not None:
            self.callback = self.argument = None
            self._owner._cancelled()

    def cancelled(self) -> bool:
        return self.callback is None


class Timers:
    """The deadlines of one event loop (the first that uses it; a use from another loop starts
    afresh, dropping the deadlines of the old one)."""

    def __init__(self) -> None:
        self._heap: list[tuple[float, int, Timer]] = []
        self._order = itertools.count()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._handle: asyncio.TimerHandle | None = None
        self._armed_at = float("inf")
        self._dead = 0
        #: the callbacks' context: an empty one, not a copy of whichever caller armed the loop timer
        self._context = contextvars.Context()

    def __len__(self) -> int:
        """Deadlines pending (not cancelled, not come)."""
        return len(self._heap) - self._dead

    def call_at(self, when: float, callback: Callable[[Any], object], argument: Any = None) -> Timer:
        """Call ``callback(argument)`` at ``when`` (the loop's clock)."""
        loop = asyncio.get_running_loop()
        if loop is not self._loop:
            self._reset(loop)
        timer = Timer(self, when, callback, argument)
        heapq.heappush(self._heap, (when, next(self._order), timer))
        if when < self._armed_at:
            self._arm(loop, when)
        return timer

    def call_later(self, delay: float, callback: Callable[[Any], object], argument: Any = None) -> Timer:
        return self.call_at(asyncio.get_running_loop().time() + delay, callback, argument)

    def _reset(self, loop: asyncio.AbstractEventLoop) -> None:
        if self._handle is not None:
            self._handle.cancel()
        for _, _, timer in self._heap:  # the old loop's: a later cancel counts for nothing here
            timer.callback = timer.argument = None
        self._heap, self._dead, self._handle, self._armed_at = [], 0, None, float("inf")
        self._loop = loop

    def _arm(self, loop: asyncio.AbstractEventLoop, when: float) -> None:
        if self._handle is not None:
            self._handle.cancel()
        self._handle = loop.call_at(when, self._run, context=self._context)
        self._armed_at = when

    def _cancelled(self) -> None:
        self._dead += 1
        heap = self._heap
        if self._dead > _COMPACT_AFTER and self._dead * 2 > len(heap):
            heap[:] = [entry for entry in heap if entry[2].callback is not None]
            heapq.heapify(heap)
            self._dead = 0

    def _run(self) -> None:
        self._handle, self._armed_at = None, float("inf")
        loop = self._loop
        assert loop is not None
        heap = self._heap
        due = loop.time() + _EARLY
        try:
            while heap and heap[0][0] <= due:
                timer = heapq.heappop(heap)[2]
                callback, argument = timer.callback, timer.argument
                if callback is None:
                    self._dead -= 1
                    continue
                timer.callback = timer.argument = None
                try:
                    callback(argument)
                except Exception:  # as the loop would: one failing callback does not stop the others
                    log.exception("a timer's callback failed")
        finally:  # whatever a callback raised, the deadlines after it still come
            if heap and self._loop is loop:
                self._arm(loop, heap[0][0])
