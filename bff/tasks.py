"""Tasks shared by several awaiters through `asyncio.shield` (one upstream GET, one session read,
one refresh): when every awaiter has gone away (a cancelled sibling, a client that hung up), the
task's failure must still count as retrieved, or asyncio logs "Task exception was never retrieved"
at error level for what is an ordinary, already-handled outcome."""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine
from typing import Any, TypeVar

T = TypeVar("T")


def retrieve(task: asyncio.Future[Any]) -> None:
    """A done callback that marks the task's exception as seen."""
    if not task.cancelled():
        task.exception()


def shared_task(work: Coroutine[Any, Any, T], *, name: str | None = None) -> asyncio.Task[T]:
    """A task meant to be awaited through `asyncio.shield` by whoever needs its result."""
    task = asyncio.ensure_future(work)
    if name is not None:
        task.set_name(name)
    task.add_done_callback(retrieve)
    return task
