"""A schema for hostile-client tests (issue 24), served by reference through ``bff serve`` and
``bff demo`` (``--schema tests.support.hostile_schema:schema``): answers as large as a client asks
for, and subscriptions anyone may keep open."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import strawberry

from bff import build_schema

#: the largest answer `blob` gives
MAX_BLOB = 2 * 1024 * 1024


@strawberry.type
class Query:
    @strawberry.field
    def ok(self) -> bool:
        return True

    @strawberry.field
    def blob(self, size: int) -> str:
        """``size`` characters (at most 2 MiB): an answer that fills a socket that nobody reads."""
        return "x" * max(0, min(size, MAX_BLOB))


@strawberry.type
class Subscription:
    @strawberry.subscription
    async def forever(self) -> AsyncIterator[int]:
        """One event, then nothing, for as long as the client keeps it open (signed in or not)."""
        yield 0
        await asyncio.Event().wait()

    @strawberry.subscription
    async def flood(self, size: int, interval: float = 0.01) -> AsyncIterator[str]:
        """``size`` characters every ``interval`` seconds, for anyone."""
        chunk = "x" * max(0, min(size, MAX_BLOB))
        while True:
            yield chunk
            await asyncio.sleep(max(0.001, interval))


schema = build_schema(query=Query, subscription=Subscription)
