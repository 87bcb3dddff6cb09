"""Each private Strawberry internal `bff` reads (all in `bff.graphql._strawberry`), named and checked
against the installed Strawberry: an upgrade that moves one fails here, by name, not deep inside the
compiled plan or the document gate."""

from __future__ import annotations

import ast
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import strawberry
from graphql import GraphQLError, GraphQLSchema
from strawberry.types import ExecutionContext, Info
from strawberry.types.graphql import OperationType

from bff.graphql import _strawberry

seen: dict[str, Any] = {}


@strawberry.type
class Query:
    plain: str = "plain"

    @strawberry.field
    def resolved(self, info: Info) -> str:
        seen["info"] = info
        return "resolved"


class Recording(strawberry.Schema):
    def process_errors(self, errors: list[GraphQLError], execution_context: ExecutionContext | None = None) -> None:
        seen["processed"] = errors


schema = Recording(query=Query)


def test_schema_graphql_schema_and_back() -> None:
    core = _strawberry.graphql_schema(schema)  # Schema._schema
    assert isinstance(core, GraphQLSchema)
    assert _strawberry.strawberry_schema_of(core) is schema  # GraphQLSchema._strawberry_schema


def test_process_errors_reaches_the_schemas_hook() -> None:
    context = ExecutionContext(query="{ plain }", schema=schema, allowed_operations=[OperationType.QUERY])
    errors = [GraphQLError("boom")]
    _strawberry.process_errors(schema, errors, context)  # Schema._process_errors
    assert seen["processed"] == errors


def test_provided_operation_name_is_what_the_client_sent() -> None:
    document = "query A { plain } query B { plain }"
    sent = ExecutionContext(
        query=document, schema=schema, allowed_operations=[OperationType.QUERY], provided_operation_name="B"
    )
    assert _strawberry.provided_operation_name(sent) == "B"  # ExecutionContext._provided_operation_name
    none = ExecutionContext(query=document, schema=schema, allowed_operations=[OperationType.QUERY])
    assert _strawberry.provided_operation_name(none) is None


async def test_info_raw_info_and_info_factory() -> None:
    result = await schema.execute("{ resolved }")
    assert result.errors is None
    info = seen["info"]
    raw = _strawberry.raw_info(info)  # Info._raw_info
    assert raw is not info and raw.field_name == "resolved" and raw.field_nodes[0].name.value == "resolved"
    assert _strawberry.raw_info(raw) is raw
    field = info._field
    rebuilt = _strawberry.info_factory(type(info), field)(raw)  # Info(_raw_info=, _field=)
    assert rebuilt.field_name == "resolved" and _strawberry.raw_info(rebuilt) is raw


def test_basic_resolver_and_field_exception_handlers() -> None:
    fields = _strawberry.graphql_schema(schema).query_type.fields  # type: ignore[union-attr]
    assert _strawberry.is_basic_resolver(fields["plain"].resolve)  # the name _get_basic_result
    assert not _strawberry.is_basic_resolver(fields["resolved"].resolve)
    handlers = _strawberry.field_exception_handlers(fields["resolved"].resolve)  # the wrapper's closure cell
    assert handlers is not None and len(handlers) == 0
    assert _strawberry.field_exception_handlers(len) is None


PRIVATE = ("_schema", "_raw_info", "_provided_operation_name", "_process_errors", "_strawberry_schema", "__closure__")


def test_no_other_module_reads_them() -> None:
    """The one module is the only reader: a private read elsewhere fails here."""
    package = Path(_strawberry.__file__).parents[1]
    problems = []
    for path in package.rglob("*.py"):
        if path.name == "_strawberry.py":
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Attribute) and node.attr in PRIVATE:
                problems.append(f"{path.relative_to(package.parent)}:{node.lineno} .{node.attr}")
            if isinstance(node, ast.Constant) and node.value in (*PRIVATE, "_get_basic_result"):
                problems.append(f"{path.relative_to(package.parent)}:{node.lineno} {node.value!r}")
            if isinstance(node, ast.keyword) and node.arg in ("_raw_info", "_field"):
                problems.append(f"{path.relative_to(package.parent)}:{node.lineno} {node.arg}=")
    assert problems == []


@strawberry.type
class _Ticks:
    @strawberry.subscription
    async def ticks(self) -> AsyncIterator[int]:
        yield 1


def test_a_subscription_fields_resolve_is_recognised_as_the_events_identity() -> None:
    core = _strawberry.graphql_schema(strawberry.Schema(query=Query, subscription=_Ticks))
    assert core.subscription_type is not None
    resolve = core.subscription_type.fields["ticks"].resolve
    assert _strawberry.is_event_resolver(resolve)  # lambda event, *_, **__: event (schema_converter)
    event = object()
    assert resolve(event, None) is event
    assert not _strawberry.is_event_resolver(core.query_type.fields["resolved"].resolve)
    assert not _strawberry.is_event_resolver(lambda event: None)  # another module's lambda
