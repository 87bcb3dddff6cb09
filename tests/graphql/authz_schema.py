"""A schema that uses every authorization directive, on every kind of place Apollo allows them, with
resolvers that count their calls (a denied field must make none)."""

from __future__ import annotations

import asyncio
import enum
from collections import Counter
from collections.abc import AsyncIterator, Mapping
from typing import Annotated, Any

import strawberry

from bff import Authenticated, Policy, RequiresScopes, StepUpRequired, User, build_schema

calls: Counter[str] = Counter()


def counted(name: str, value: Any) -> Any:
    calls[name] += 1
    return value


@strawberry.enum(directives=[Authenticated()])
class Level(enum.Enum):
    LOW = "low"
    HIGH = "high"


@strawberry.interface
class Node:
    id: strawberry.ID


@strawberry.type
class Doc(Node):
    title: str


@strawberry.type(directives=[RequiresScopes(scopes=[["vault"]])])
class Vault(Node):
    code: str


@strawberry.type
class Me:
    name: str

    @strawberry.field(directives=[RequiresScopes(scopes=[["contact:read"]])])
    def email(self) -> str:
        return counted("email", "me@example.com")

    @strawberry.field(directives=[RequiresScopes(scopes=[["contact:read"]])])
    def backup_email(self) -> str | None:
        return counted("backup_email", "backup@example.com")


@strawberry.type
class Query:
    @strawberry.field
    def public(self) -> str:
        return counted("public", "hello")

    @strawberry.field(directives=[Authenticated()])
    async def me(self) -> Me | None:
        return counted("me", Me(name="Ada"))

    @strawberry.field(directives=[RequiresScopes(scopes=[["secret:read"]])])
    async def secret(self) -> str | None:
        return counted("secret", "42")

    @strawberry.field(directives=[RequiresScopes(scopes=[["a", "b"], ["c"]])])
    def either(self) -> str | None:
        return counted("either", "yes")

    @strawberry.field(directives=[Policy(policies=[["is-owner"]])])
    def owned(self, owner: str) -> str | None:
        return counted("owned", f"{owner}'s")

    @strawberry.field(directives=[Policy(policies=[["strong"]])])
    def strong(self) -> str | None:
        return counted("strong", "strong")

    @strawberry.field
    def level(self) -> Level | None:
        return counted("level", Level.HIGH)

    @strawberry.field
    def vault(self) -> Vault | None:
        return counted("vault", Vault(id=strawberry.ID("v1"), code="1234"))

    @strawberry.field
    def nodes(self) -> list[Node] | None:
        return counted("nodes", [Doc(id=strawberry.ID("d1"), title="t"), Vault(id=strawberry.ID("v1"), code="1234")])

    @strawberry.field
    def items(self) -> list[Annotated[Doc | Vault, strawberry.union("Item")]] | None:
        return counted("items", [Doc(id=strawberry.ID("d1"), title="t"), Vault(id=strawberry.ID("v1"), code="1234")])


@strawberry.type
class Mutation:
    @strawberry.mutation(directives=[RequiresScopes(scopes=[["orders:write"]])])
    def place(self) -> str | None:
        return counted("place", "placed")


@strawberry.type
class Subscription:
    @strawberry.subscription(directives=[RequiresScopes(scopes=[["ticks"]])])
    async def ticks(self, every: float = 0.05) -> AsyncIterator[int]:
        number = 0
        while True:
            calls["ticks"] += 1
            yield number
            number += 1
            await asyncio.sleep(every)


async def is_owner(user: User, arguments: Mapping[str, Any]) -> bool:
    calls["policy:is-owner"] += 1
    return arguments.get("owner") == user.sub


def strong(user: User, arguments: Mapping[str, Any]) -> bool:
    calls["policy:strong"] += 1
    if user.acr != "urn:bff:loa:2":
        raise StepUpRequired(acr_values="urn:bff:loa:2")
    return True


schema = build_schema(
    query=Query,
    mutation=Mutation,
    subscription=Subscription,
    types=[Doc, Vault],
    policies={"is-owner": is_owner, "strong": strong},
)
