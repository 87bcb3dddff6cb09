"""Every read of Strawberry's private internals, in one place.

`bff` is pinned to the Strawberry minor range it was tested with (pyproject.toml); these are the
names that range is pinned for. `tests/graphql/test_strawberry_internals.py` names each one and
fails loudly, naming it, on an upgrade that moves or renames it. Nothing else in `bff` reads a
private Strawberry (or graphql-core) attribute; a new need goes here, with its test.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

from graphql import GraphQLError, GraphQLResolveInfo, GraphQLSchema
from strawberry.types import ExecutionContext

#: the function name of Strawberry's resolver for a field without a resolver of its own
BASIC_RESOLVER_NAME = "_get_basic_result"


def graphql_schema(schema: Any) -> GraphQLSchema:
    """The graphql-core schema behind a Strawberry schema (``Schema._schema``)."""
    result: GraphQLSchema = schema._schema
    return result


def strawberry_schema_of(schema: GraphQLSchema) -> Any | None:
    """The Strawberry schema a graphql-core schema was built by (``GraphQLSchema._strawberry_schema``)."""
    return getattr(schema, "_strawberry_schema", None)


def process_errors(schema: Any, errors: list[GraphQLError], execution_context: ExecutionContext) -> None:
    """Strawberry's error hook as its own execution calls it (``Schema._process_errors``): the
    schema's `process_errors` and the extensions' view of the errors."""
    schema._process_errors(errors, execution_context)


def provided_operation_name(context: ExecutionContext) -> str | None:
    """The operation name the client sent (``ExecutionContext._provided_operation_name``); the public
    ``operation_name`` falls back to the document's first operation."""
    name: str | None = getattr(context, "_provided_operation_name", context.operation_name)
    return name


def raw_info(info: Any) -> GraphQLResolveInfo[Any]:
    """graphql-core's resolve info behind Strawberry's ``Info`` (``Info._raw_info``); a graphql-core
    info is returned as it is."""
    raw: GraphQLResolveInfo[Any] = getattr(info, "_raw_info", info)
    return raw


def info_factory(info_class: type, strawberry_field: Any) -> Callable[[GraphQLResolveInfo[Any]], Any]:
    """Builds Strawberry's ``Info`` for a field from graphql-core's info, as Strawberry does
    (``Info(_raw_info=, _field=)``); a partial, so the compiled plan pays one C-level call."""
    return functools.partial(info_class, _field=strawberry_field)


def is_basic_resolver(resolve: Any) -> bool:
    """Whether ``resolve`` is Strawberry's resolver for a field without one (reads the attribute)."""
    return resolve is not None and getattr(resolve, "__name__", "") == BASIC_RESOLVER_NAME


def field_exception_handlers(resolve: Any) -> Any | None:
    """The exception handlers Strawberry matched for a field at build time, read from its resolver
    wrapper's closure (``field_exception_handlers``); None when ``resolve`` is not that wrapper."""
    code = getattr(resolve, "__code__", None)  # None: not Strawberry's wrapper (a partial, a tracer)
    if code is None:
        return None
    cells = dict(zip(code.co_freevars, getattr(resolve, "__closure__", None) or (), strict=True))
    handlers = cells.get("field_exception_handlers")
    return None if handlers is None else handlers.cell_contents


#: the module and name of Strawberry's resolve of a subscription field: ``lambda event, *_, **__: event``
_EVENT_RESOLVER = ("strawberry.schema.schema_converter", "<lambda>", ("event",))


def is_event_resolver(resolve: Any) -> bool:
    """Whether ``resolve`` is Strawberry's resolve of a subscription field, which answers each
    event of the source stream unchanged (the compiled plan then takes the event as it is)."""
    code = getattr(resolve, "__code__", None)
    return (
        code is not None
        and (
            getattr(resolve, "__module__", None),
            getattr(resolve, "__name__", None),
            code.co_varnames[:1],
        )
        == _EVENT_RESOLVER
    )
