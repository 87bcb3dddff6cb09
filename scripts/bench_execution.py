#!/usr/bin/env python
"""GraphQL execution alone, in process: the demo's viewer query over canned upstream answers, run
by Strawberry's ``Schema.execute``, by graphql-core directly and by the compiled plan (microseconds
per execution, medians of 5 batches; no HTTP, no session, no upstream I/O).

    python scripts/bench_execution.py
"""

from __future__ import annotations

import asyncio
import statistics
import time
from typing import Any

from benchkit import ROOT  # noqa: F401 - makes the project importable
from graphql import OperationDefinitionNode, execute, parse
from graphql.execution.values import get_variable_values
from strawberry.dataloader import DataLoader
from strawberry.execution import optimized_is_awaitable
from strawberry.schema.schema import StrawberryGraphQLCoreExecutionContext

from bff.demo import data
from bff.demo.api import schema
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


class FakeContext:
    """What the demo's resolvers use of `bff.Context`, answering from the demo's data."""

    def __init__(self) -> None:
        self._loaders: dict[str, Any] = {}
        self.request_id = "bench"

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


if __name__ == "__main__":
    asyncio.run(main())
