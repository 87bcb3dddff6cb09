"""A schema for `scripts/bench_refresh.py --audiences K`: three fields, each reading ``/me`` from its own
upstream (``u1``, ``u2``, ``u3``, all the demo accounts service), so that one query needs up to three
tokens of the session. Served with ``BFF_SCHEMA=audiences:schema`` and this folder on ``PYTHONPATH``."""

from __future__ import annotations

import strawberry
from strawberry.types import Info

from bff import Context, build_schema


async def _me(info: Info[Context, None], upstream: str) -> str:
    body = await info.context.rest(upstream).get_json("/me")
    return str(body["id"])


@strawberry.type
class Query:
    @strawberry.field
    async def one(self, info: Info[Context, None]) -> str:
        return await _me(info, "u1")

    @strawberry.field
    async def two(self, info: Info[Context, None]) -> str:
        return await _me(info, "u2")

    @strawberry.field
    async def three(self, info: Info[Context, None]) -> str:
        return await _me(info, "u3")


schema = build_schema(query=Query)
