"""A team's schema as a test fixture: its own root types, nothing from the demo API.

Served by reference (``tests.api.user_schema:schema``) through the CLI, the uvicorn factory and
`bff.testing`."""

from __future__ import annotations

import strawberry
from strawberry.types import Info

from bff import Context, build_schema


@strawberry.type
class Leaf:
    name: str


@strawberry.type
class Branch:
    @strawberry.field
    def branch(self) -> Branch:
        return Branch()

    @strawberry.field
    def leaf(self) -> Leaf:
        return Leaf(name="leaf")


@strawberry.type
class Query:
    @strawberry.field
    def hello(self) -> str:
        return "hello from a team's own schema"

    @strawberry.field
    def tree(self) -> Branch:
        return Branch()

    @strawberry.field
    async def who(self, info: Info[Context, None]) -> str | None:
        user = await info.context.user()
        return user.sub if user else None


@strawberry.type
class Mutation:
    @strawberry.mutation
    def echo(self, text: str) -> str:
        return text


schema = build_schema(query=Query, mutation=Mutation)
plain = strawberry.Schema(query=Query)  # NOT built with bff.build_schema: refused
