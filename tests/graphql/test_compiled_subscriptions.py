"""Subscriptions on the compiled plan (`DirectExecution.subscribe`) against Strawberry's
``Schema.stream``: the same results, event by event, for the same documents (the differential test
of the compiled path, for streams): plain and resolved payload fields, field errors nullable and
not, a source stream refused at once, one that is not a stream, one that fails part way, variables,
fragments, ``__typename``, and the authorization guard of a subscription field. Over HTTP, the second
stream of a document runs on its plan and answers as the first."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from typing import Any

import pytest
import strawberry
from strawberry.types.execution import PreExecutionError

from bff import RequiresScopes, build_schema
from bff.errors import Forbidden, UpstreamTimeout
from bff.graphql.execution.direct import DirectExecution
from bff.graphql.transport.streams import ALL_OPERATIONS, _pre_execution_errors, result_payload
from tests.graphql.test_authorization import PLAIN, SCOPED, Ctx


@strawberry.type
class Item:
    n: int

    @strawberry.field
    def double(self) -> int:
        return self.n * 2

    @strawberry.field
    async def later(self) -> str:
        await asyncio.sleep(0)
        return f"later {self.n}"

    @strawberry.field
    def fails(self) -> str | None:
        raise RuntimeError("boom (never shown)")

    @strawberry.field
    def refuses(self) -> str | None:
        raise Forbidden()

    @strawberry.field
    def must(self) -> str:
        if self.n == 1:
            raise RuntimeError("the second item has none")
        return "ok"


class _FailingClose:
    """A source that is not a generator (a pub/sub handle, say) whose close fails."""

    def __init__(self) -> None:
        self.left = 2

    def __aiter__(self) -> _FailingClose:
        return self

    async def __anext__(self) -> int:
        if not self.left:
            raise StopAsyncIteration
        self.left -= 1
        return self.left

    async def aclose(self) -> None:
        raise RuntimeError("unsubscribe failed")


@strawberry.type
class Query:
    ok: bool = True


@strawberry.type
class Subscription:
    @strawberry.subscription
    async def count(self, to: int = 3) -> AsyncIterator[Item]:
        for n in range(to):
            yield Item(n=n)

    @strawberry.subscription
    async def numbers(self, to: int) -> AsyncIterator[int]:
        for n in range(to):
            yield n

    @strawberry.subscription
    def refused_now(self) -> AsyncIterator[int]:
        raise Forbidden()

    @strawberry.subscription
    def not_a_stream(self) -> AsyncIterator[int]:
        return 5  # type: ignore[return-value]

    @strawberry.subscription
    async def breaks(self, bff_error: bool = False) -> AsyncIterator[int]:
        yield 1
        if bff_error:
            raise UpstreamTimeout("accounts")
        raise RuntimeError("the source broke (never shown)")

    @strawberry.subscription
    def unsubscribe_fails(self) -> AsyncIterator[int]:
        return _FailingClose()  # type: ignore[return-value]

    @strawberry.subscription(directives=[RequiresScopes(scopes=[["vault"]])])
    async def guarded(self) -> AsyncIterator[int]:
        for n in range(2):
            yield n


SCHEMA = build_schema(query=Query, subscription=Subscription)

DOCUMENTS: dict[str, tuple[str, dict[str, Any] | None]] = {
    "plain": ("subscription { count { n } }", None),
    "resolved": ("subscription { count { n double later } }", None),
    "aliases-typename": ("subscription { c: count(to: 2) { __typename m: n d: double } }", None),
    "fragments": (
        "subscription { count { ...F ... on Item { later } } } fragment F on Item { n double }",
        None,
    ),
    "nullable-errors": ("subscription { count { n fails refuses } }", None),
    "non-null-error": ("subscription { count { n must } }", None),
    "scalar-events": ("subscription S($to: Int!) { numbers(to: $to) }", {"to": 4}),
    "variables": ("subscription S($to: Int) { count(to: $to) { n } }", {"to": 2}),
    "refused-at-once": ("subscription { refusedNow }", None),
    "not-a-stream": ("subscription { notAStream }", None),
    "breaks": ("subscription { breaks }", None),
    "breaks-bff-error": ("subscription { breaks(bffError: true) }", None),
    "guarded-allowed": ("subscription { guarded }", None),
    "close-fails": ("subscription { unsubscribeFails }", None),
}


def _shape(result: Any, context: Any) -> tuple[str, Any]:
    """What `stream_results` makes of one result: the errors of a refusal, or the payload."""
    if isinstance(result, PreExecutionError):
        return "refused", _pre_execution_errors(result, context)
    return "next", result_payload(result, context)


async def _collect(source: Any, context: Any) -> list[tuple[str, Any]]:
    async with contextlib.aclosing(source):
        return [_shape(result, context) async for result in source]


async def _both(query: str, variables: dict[str, Any] | None, user: Any) -> tuple[list[Any], list[Any]]:
    """(Strawberry's results, the compiled path's) for one document; Strawberry's run caches and
    validates it, as the first stream of a document does."""
    context = Ctx(user)
    strawberry_results = await _collect(
        await SCHEMA.stream(
            query, variable_values=variables, context_value=context, allowed_operation_types=ALL_OPERATIONS
        ),
        context,
    )
    direct = DirectExecution(SCHEMA)
    context = Ctx(user)
    source = await direct.subscribe(query, variables, context, None, ALL_OPERATIONS)
    assert source is not None, "the compiled path declined a cached, valid subscription"
    return strawberry_results, await _collect(source, context)


@pytest.mark.parametrize("name", DOCUMENTS)
async def test_the_compiled_path_answers_as_strawberry(name: str) -> None:
    query, variables = DOCUMENTS[name]
    expected, compiled = await _both(query, variables, SCOPED)
    assert compiled == expected
    assert expected, "no result at all: the case exercises nothing"


async def test_the_cases_cover_events_errors_and_refusals() -> None:
    """Guards against a case that silently stopped exercising what it names."""
    seen = {name: (await _both(query, variables, SCOPED))[1] for name, (query, variables) in DOCUMENTS.items()}
    codes = {
        name: [error["extensions"]["code"] for _, body in results for error in _errors(body)]
        for name, results in seen.items()
    }
    assert [body for _, body in seen["resolved"]][2] == (
        {"data": {"count": {"n": 2, "double": 4, "later": "later 2"}}},
        False,
    )
    assert codes["nullable-errors"] == ["INTERNAL_SERVER_ERROR", "FORBIDDEN"] * 3
    second = seen["non-null-error"][1][1][0]  # count is non-null: the error nulls the whole data
    assert second["data"] is None and second["errors"][0]["path"] == ["count", "must"]
    assert seen["refused-at-once"][0][0] == "refused" and codes["refused-at-once"] == ["FORBIDDEN"]
    assert seen["not-a-stream"][0][0] == "refused"
    assert codes["breaks"] == ["INTERNAL_SERVER_ERROR"] and codes["breaks-bff-error"] == ["UPSTREAM_TIMEOUT"]
    assert len(seen["scalar-events"]) == 4 and len(seen["guarded-allowed"]) == 2
    assert [body for _, body in seen["close-fails"]] == [({"data": {"unsubscribeFails": n}}, False) for n in (1, 0)]


def _errors(body: Any) -> list[dict[str, Any]]:
    if isinstance(body, list):  # a refusal's errors
        return body
    payload, _ = body
    return list(payload.get("errors", ()))


async def test_a_guarded_subscription_is_denied_alike() -> None:
    """Denied at the subscription's start (its ``subscribe``), and checked at every event (its resolve)."""
    expected, compiled = await _both("subscription { guarded }", None, PLAIN)
    assert compiled == expected
    assert [error["extensions"]["code"] for _, body in compiled for error in _errors(body)] == ["FORBIDDEN"]


async def test_closing_the_results_closes_the_source_stream() -> None:
    closed = asyncio.Event()

    @strawberry.type
    class Watched:
        @strawberry.subscription
        async def forever(self) -> AsyncIterator[int]:
            try:
                while True:
                    yield 1
                    await asyncio.sleep(0)
            finally:
                closed.set()

    schema = build_schema(query=Query, subscription=Watched)
    query = "subscription { forever }"
    warm = await schema.stream(query, context_value=Ctx(SCOPED), allowed_operation_types=ALL_OPERATIONS)
    await anext(warm)
    await warm.aclose()
    closed.clear()
    source = await DirectExecution(schema).subscribe(query, None, Ctx(SCOPED), None, ALL_OPERATIONS)
    assert source is not None
    assert (await anext(source)).data == {"forever": 1}
    await source.aclose()
    assert closed.is_set()


@pytest.mark.parametrize(
    ("query", "variables", "operation_name"),
    [
        ("subscription { count { n } }", None, None),  # not cached yet
        ("{ ok }", None, None),  # not a subscription
        ("subscription A { count { n } } subscription B { numbers(to: 1) }", None, None),  # no name
        ("subscription S($to: Int!) { numbers(to: $to) }", {"to": "x"}, None),  # variables refused
    ],
)
async def test_anything_else_is_left_to_strawberry(
    query: str, variables: dict[str, Any] | None, operation_name: str | None
) -> None:
    direct = DirectExecution(SCHEMA)
    if query != "subscription { count { n } }":
        # cached where the document is valid: what is refused is the request, not the document
        with contextlib.suppress(Exception):
            await _collect(await SCHEMA.stream(query, context_value=Ctx(SCOPED)), Ctx(SCOPED))
    else:
        direct = DirectExecution(build_schema(query=Query, subscription=Subscription))
    assert await direct.subscribe(query, variables, Ctx(SCOPED), operation_name, ALL_OPERATIONS) is None
