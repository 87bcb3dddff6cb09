"""`bff.timers.Timers`: deadlines come in order and on time, a cancelled one never comes, cancelled
entries do not pile up, one failing callback does not stop the others; under asyncio's loop and
uvloop's (whose timers may fire a little early)."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Any

import pytest
import uvloop

from bff.timers import Timers

LOOPS: dict[str, Callable[[], asyncio.AbstractEventLoop]] = {
    "asyncio": asyncio.new_event_loop,
    "uvloop": uvloop.new_event_loop,
}


def _run(kind: str, scenario: Callable[[], Any]) -> Any:
    with asyncio.Runner(loop_factory=LOOPS[kind]) as runner:
        return runner.run(scenario())


@pytest.mark.parametrize("kind", LOOPS)
def test_deadlines_come_in_order_and_not_before_their_time(kind: str) -> None:
    async def scenario() -> list[tuple[str, float, float]]:
        loop = asyncio.get_running_loop()
        timers = Timers()
        came: list[tuple[str, float, float]] = []
        start = loop.time()
        for name, delay in (("c", 0.06), ("a", 0.02), ("b", 0.04), ("a2", 0.02)):
            timers.call_at(start + delay, lambda arg: came.append((arg[0], arg[1], loop.time())), (name, start + delay))
        await asyncio.sleep(0.1)
        assert len(timers) == 0
        return came

    came = _run(kind, scenario)
    assert [name for name, _, _ in came] == ["a", "a2", "b", "c"]
    assert all(at >= when - 0.0011 for _, when, at in came)  # uvloop: at most a millisecond early


@pytest.mark.parametrize("kind", LOOPS)
def test_a_cancelled_deadline_never_comes_and_cancelled_ones_do_not_pile_up(kind: str) -> None:
    async def scenario() -> tuple[list[int], int, int]:
        timers = Timers()
        came: list[int] = []
        pending = [timers.call_later(3600 + n, came.append, n) for n in range(1000)]
        for timer in pending:
            timer.cancel()
        piled = len(timers._heap)  # compacted as the cancelled ones passed half of it
        soon = [timers.call_later(0.01 * n, came.append, n) for n in range(1, 4)]
        soon[1].cancel()
        soon[1].cancel()  # twice: counted once
        await asyncio.sleep(0.08)
        return came, piled, len(timers)

    came, piled, left = _run(kind, scenario)
    assert came == [1, 3]
    assert piled <= 2 * 64 + 2 and left == 0


def test_a_failing_callback_is_logged_and_the_others_still_come(caplog: pytest.LogCaptureFixture) -> None:
    async def scenario() -> list[str]:
        timers = Timers()
        came: list[str] = []

        def fail(_: object) -> None:
            raise RuntimeError("boom")

        timers.call_later(0.01, fail)
        timers.call_later(0.01, came.append, "after")
        # a callback that sets a deadline comes back to the heap, and the loop timer follows it
        timers.call_later(0.02, lambda _: timers.call_later(0.01, came.append, "chained"))
        await asyncio.sleep(0.08)
        return came

    with caplog.at_level(logging.ERROR, logger="bff"):
        came = _run("asyncio", scenario)
    assert came == ["after", "chained"]
    assert "a timer's callback failed" in caplog.text


def test_a_new_loop_starts_afresh() -> None:
    timers = Timers()
    came: list[str] = []

    async def first() -> None:
        timers.call_later(0.05, came.append, "old loop")

    async def second() -> None:
        timers.call_later(0.01, came.append, "new loop")
        await asyncio.sleep(0.1)

    _run("asyncio", first)  # closed before its deadline came
    old = timers._heap[0][2]
    _run("asyncio", second)
    assert came == ["new loop"]
    old.cancel()  # an old loop's timer cancelled late counts for nothing in the new heap
    assert len(timers) == 0 and timers._dead == 0
