#!/usr/bin/env python
"""GraphQL execution alone, in process: the demo's viewer query over canned upstream answers, run
by Strawberry's ``Schema.execute``, by graphql-core directly and by the compiled plan (microseconds
per execution, medians of 5 batches; no HTTP, no session, no upstream I/O). Then the compiled plan
over three schemas that differ only in ``viewer``'s directive: none, the demo's ``@authenticated``
and ``@requiresScopes`` (`benchapi/scoped.py`): the authorization's cost (issue 27).

    python scripts/bench_execution.py
"""

from __future__ import annotations

import asyncio
import statistics
import time
from typing import Any

import strawberry
from benchapi.scoped import schema as scoped_schema
from benchkit import ROOT  # noqa: F401 - makes the project importable
from graphql import OperationDefinitionNode, execute, parse
from graphql.execution.values import get_variable_values
from strawberry.dataloader import DataLoader
from strawberry.execution import optimized_is_awaitable
from strawberry.schema.schema import StrawberryGraphQLCoreExecutionContext
from strawberry.types import Info

from bff import Context, User, build_schema
from bff.demo import data
from bff.demo.api import schema
from bff.demo.api.live import Subscription
from bff.demo.api.types import POLICIES, Mutation, Query as DemoQuery, User as DemoUser
from bff.graphql.execution.compiled import compile_plan

VIEWER = "{ viewer { id name orders { id totalCents items { quantity product { id name priceCents } } } } }"

ME = data.user("alice")
ORDERS = data.orders("alice", 10)


class _Rest:
    async def get_json(self, path: str, params: Any = None) -> Any:
        return ME if path == "/me" else ORDERS[: (params or {}).get("limit", 10)]


class _Catalog:
    async def execute(self, query: str, variables: dict[str, Any]) -> Any:
        return {"productsByIds": [data.PRODUCTS.get(i) for i in variables["ids"]]}


@strawberry.type
class PlainQuery(DemoQuery):
    @strawberry.field  # type: ignore[untyped-decorator]
    async def viewer(self, info: Info[Context, None]) -> DemoUser | None:
        return DemoUser.from_json(await info.context.rest("accounts").get_json("/me"))


#: the demo schema without any directive on viewer
plain_schema = build_schema(query=PlainQuery, mutation=Mutation, subscription=Subscription, policies=POLICIES)
ALICE = User(sub="alice", name="Alice Example", scopes=frozenset({"orders:read", "orders:write"}))


class FakeContext:
    """What the demo's resolvers (and the authorization) use of `bff.Context`, answering from the
    demo's data."""

    def __init__(self) -> None:
        self._loaders: dict[str, Any] = {}
        self._authz: dict[int, Any] = {}
        self.request_id = "bench"

    async def user(self) -> User:
        return ALICE

    def rest(self, name: str) -> _Rest:
        return _Rest()

    def graphql(self, name: str) -> _Catalog:
        return _Catalog()

    def loader(self, key: str, factory: Any) -> DataLoader[Any, Any]:
        if key not in self._loaders:
            self._loaders[key] = factory(self)
        return self._loaders[key]  # type: ignore[no-any-return]


async def main() -> None:
    gql = schema._schema
    document = parse(VIEWER)
    operation = next(d for d in document.definitions if isinstance(d, OperationDefinitionNode))
    plan = compile_plan(
        gql,
        document,
        operation,
        build_resolve_info=StrawberryGraphQLCoreExecutionContext.build_resolve_info,
        is_awaitable=optimized_is_awaitable,
    )

    async def strawberry_path() -> Any:
        return await schema.execute(VIEWER, context_value=FakeContext())

    async def graphql_core() -> Any:
        return await execute(  # type: ignore[misc]
            gql,
            document,
            context_value=FakeContext(),
            is_awaitable=optimized_is_awaitable,  # type: ignore[arg-type]
            executor_class=StrawberryGraphQLCoreExecutionContext,
        )

    async def compiled() -> Any:
        variables = get_variable_values(gql, (), {})
        return await plan.execute(FakeContext(), variables)  # type: ignore[arg-type, misc]

    reference = (await graphql_core()).data
    assert reference["viewer"]["orders"], "the demo data has orders"
    for run in (strawberry_path, compiled):
        result = await run()
        assert result.data == reference, result
        assert not result.errors, result
    figures: dict[str, list[float]] = {}
    for _ in range(5):
        for name, run in (("strawberry", strawberry_path), ("graphql-core", graphql_core), ("compiled", compiled)):
            count = 300
            started = time.perf_counter()
            for _ in range(count):
                await run()
            figures.setdefault(name, []).append((time.perf_counter() - started) / count * 1e6)
    for name, values in figures.items():
        print(f"{name:13} {statistics.median(values):7.0f} us per viewer execution")
    await directives()


async def directives() -> None:
    """The compiled plan of the viewer query under each directive on ``viewer``, alternated."""
    document = parse(VIEWER)
    operation = next(d for d in document.definitions if isinstance(d, OperationDefinitionNode))
    plans = {}
    for name, served in (("none", plain_schema), ("@authenticated", schema), ("@requiresScopes", scoped_schema)):
        gql = served._schema
        plans[name] = (
            gql,
            compile_plan(
                gql,
                document,
                operation,
                build_resolve_info=StrawberryGraphQLCoreExecutionContext.build_resolve_info,
                is_awaitable=optimized_is_awaitable,
            ),
        )
    figures: dict[str, list[float]] = {}
    for _ in range(7):
        for name, (gql, plan) in plans.items():
            variables = get_variable_values(gql, (), {})
            count = 400
            started = time.perf_counter()
            for _ in range(count):
                result = await plan.execute(FakeContext(), variables)  # type: ignore[arg-type, misc]
            figures.setdefault(name, []).append((time.perf_counter() - started) / count * 1e6)
            assert not result.errors, result
            assert result.data["viewer"]["orders"], result
    base = statistics.median(figures["none"])
    for name, values in figures.items():
        median = statistics.median(values)
        print(f"viewer {name:16} {median:7.0f} us per compiled execution ({median / base - 1:+.1%})")


if __name__ == "__main__":
    asyncio.run(main())
