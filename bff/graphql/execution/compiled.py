"""A compiled execution plan for cached, validated documents: graphql-core's execution algorithm
with every decision that depends only on the document and the schema taken once, ahead of time.

`compile_plan` turns one operation of a validated document into a `Plan` (or raises `Unsupported`
saying why); `Plan.execute` runs it for one request and returns graphql-core's `ExecutionResult`.
What the plan decides once instead of per field and per request:

- which fields each selection set selects (graphql-core's own ``collect_fields``, fragments and
  merged fields included), their definitions, resolvers and return types;
- arguments written as constants (coerced once; per request only when they hold variables or
  values a resolver could mutate);
- how each value completes (non-null check, list, leaf ``coerce_output_value``, object);
- plain fields (Strawberry's "basic" fields: no resolver, no extension, the default resolver)
  are attribute reads, with no ``info`` and no ``Path`` unless an error needs one.

What stays exactly as graphql-core does it: resolvers are called with the ``info`` the schema's
executor class builds (Strawberry's ``Info`` wraps it) and with graphql-core's coerced arguments;
awaitable siblings of one selection set and awaitable items of one list are gathered together
(``gather_with_cancel``, the single-awaitable shortcut included), so DataLoaders batch as before;
errors are located at their ``path``, a null in a non-null position propagates to the nearest
nullable parent, and errors below an already nulled position are dropped (``CollectedErrors``).

A subscription compiles too: `Plan.source` makes its source event stream as graphql-core's
``create_source_event_stream`` does, and `Plan.execute` with the event as root value is its
``execute_subscription_event`` (Strawberry's resolve of the subscription field, which answers the
event unchanged, is not called).

Not compiled (`Unsupported`; the caller executes the document with graphql-core instead):
mutations, any directive in the operation or its fragments (``@skip``,
``@include``, ``@defer``, ``@stream``, custom ones), fragment variables, fields of abstract type
(interfaces, unions: a runtime type resolution), introspection fields other than ``__typename``,
schemas with a default field or type resolver other than graphql-core's.

Where the outcome may differ from graphql-core's: nowhere in ``data``; in ``errors`` only in their
order when several fail concurrently (each implementation appends errors as awaitables settle),
and, like graphql-core itself, in which errors of cancelled siblings are still recorded once a
non-null error has nulled their common parent (timing-dependent in both).
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass, field
from types import CoroutineType, GeneratorType
from typing import Any

from graphql import (
    DocumentNode,
    ExecutionResult,
    FieldNode,
    FragmentDefinitionNode,
    GraphQLAbstractType,
    GraphQLBoolean,
    GraphQLError,
    GraphQLField,
    GraphQLID,
    GraphQLInt,
    GraphQLList,
    GraphQLNonNull,
    GraphQLObjectType,
    GraphQLOutputType,
    GraphQLSchema,
    GraphQLString,
    Node,
    OperationDefinitionNode,
    OperationType,
    Undefined,
    VariableNode,
    is_abstract_type,
    is_leaf_type,
    is_list_type,
    is_non_null_type,
    is_object_type,
    located_error,
)
from graphql.execution.collect_fields import FieldDetails, FragmentDetails, collect_fields, collect_subfields
from graphql.execution.execute import assert_event_stream, default_field_resolver
from graphql.execution.values import VariableValues, get_argument_values
from graphql.pyutils import Path, gather_with_cancel, is_iterable
from graphql.type.definition import GraphQLResolveInfoHelpers
from strawberry.types.base import StrawberryMaybe, StrawberryOptional
from strawberry.types.field import StrawberryField
from strawberry.types.fields.resolver import StrawberryResolver

from bff.graphql._strawberry import (
    field_exception_handlers,
    info_factory,
    is_basic_resolver,
    is_event_resolver,
    strawberry_schema_of,
)
from bff.graphql.authorization import GUARD, GUARD_WRAP, unguarded_resolve

__all__ = ["Plan", "Unsupported", "compile_plan"]

IsAwaitable = Callable[[Any], bool]

#: values that are never awaitable: no is_awaitable call for them
_PLAIN: frozenset[type] = frozenset({str, int, float, bool, type(None), list, dict, tuple})
#: the built-in scalars' output coercion, by function (a custom scalar named alike has its own),
#: and the Python type each returns unchanged (`_Completion.plain`; Int within 32 bits)
_PLAIN_LEAVES: dict[Any, type] = {
    GraphQLString.coerce_output_value: str,
    GraphQLID.coerce_output_value: str,
    GraphQLBoolean.coerce_output_value: bool,
    GraphQLInt.coerce_output_value: int,
}
_MIN_INT, _MAX_INT = -(2**31), 2**31 - 1
_IMMUTABLE = (str, int, float, bool, type(None))

# completion kinds
_LEAF, _OBJECT, _LIST, _ABSTRACT, _ERROR = 1, 2, 3, 4, 5
#: an interface or union with more possible types is left to graphql-core (each is compiled)
_MOST_POSSIBLE_TYPES = 64
# field kinds
_TYPENAME, _ATTRIBUTE, _RESOLVE = 1, 2, 3


class Unsupported(Exception):
    """The document uses something the plan does not compile; ``reason`` is a metric label."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


@dataclass(slots=True)
class _Completion:
    """How a value of one output type completes."""

    type: GraphQLOutputType
    non_null: bool
    kind: int
    #: leaf: the type's coerce_output_value
    coerce: Callable[[Any], Any] | None = None
    #: list: the items' completion
    item: _Completion | None = None
    #: object: the selected fields
    object_type: GraphQLObjectType | None = None
    fields: list[_Field] = field(default_factory=list)
    is_type_of: Callable[[Any, Any], Any] | None = None
    #: abstract: each possible object type's completion, by name, and how the value's is found
    possible: dict[str, _Completion] | None = None
    resolve_type: Callable[[Any, Any, Any], Any] | None = None
    #: an abstract value that resolved to no possible type: this error
    error: GraphQLError | None = None
    #: leaf: the Python type its built-in scalar answers unchanged (str for String and ID, bool
    #: for Boolean, int for Int within 32 bits), completed without a call; None for the rest
    plain: Any = None


@dataclass(slots=True)
class _Field:
    key: str
    name: str
    kind: int
    parent_type: GraphQLObjectType
    definition: GraphQLField | None
    nodes: list[FieldNode]
    return_type: GraphQLOutputType
    non_null: bool
    completion: _Completion | None
    attribute: str = ""
    resolve: Callable[..., Any] | None = None
    #: constant arguments coerced once; None when they are coerced per request
    arguments: dict[str, Any] | None = None
    first_node: FieldNode | None = None
    #: the object type's name, for __typename
    typename: str = ""
    #: whether the resolver needs info (also for is_type_of of the value's type)
    needs_info: bool = False
    #: the resolver is called directly (not behind a guard): its info may be a `_LazyInfo`
    lazy_info: bool = False
    #: the completion's ``plain`` type (a leaf of a built-in scalar), else None
    plain: Any = None


class _Run:
    """One execution: the attributes the executor class's ``build_resolve_info`` reads, and the
    errors collected so far (graphql-core's ``CollectedErrors``)."""

    __slots__ = (
        "_error_positions",
        "abort_signal",
        "async_helpers",
        "background",
        "context_value",
        "errors",
        "fragment_definitions",
        "is_awaitable",
        "operation",
        "operation_extensions",
        "root_value",
        "schema",
        "variable_values",
    )

    def __init__(self, plan: Plan, context_value: Any, variable_values: VariableValues, root_value: Any) -> None:
        self.schema = plan.schema
        self.fragment_definitions = plan.fragment_definitions
        self.operation = plan.operation
        self.root_value = root_value
        self.context_value = context_value
        self.variable_values = variable_values
        self.is_awaitable = plan.is_awaitable
        self.abort_signal = None
        self.operation_extensions = None
        # the background's track, not a method of the run: no run <-> helpers cycle
        self.background = _Background(plan.is_awaitable)
        self.async_helpers = GraphQLResolveInfoHelpers(gather=self._gather, track=self.background.track)
        self.errors: list[GraphQLError] = []
        self._error_positions: set[Path | None] | None = None  # made by the first error

    @staticmethod
    def _gather(values: Sequence[Awaitable[Any]]) -> Awaitable[list[Any]]:
        return gather_with_cancel(*values)

    def settle(self, awaitables: Iterable[Any]) -> None:
        self.background.settle(awaitables)

    def add_error(self, error: GraphQLError, path: Path | None) -> None:
        positions = self._error_positions
        if positions is None:
            positions = self._error_positions = set()
        elif None in positions:
            return
        current = path
        while current is not None:
            if current in positions:
                return
            current = current.prev
        positions.add(path)
        self.errors.append(error)


class _Background:
    """A run's abandoned awaitables, settling in the background; their set is made on first use:
    most runs abandon none, and a subscription's source keeps its run (in its info) for the
    stream's lifetime (issue 26, part 4)."""

    __slots__ = ("futures", "is_awaitable")

    def __init__(self, is_awaitable: IsAwaitable) -> None:
        self.is_awaitable = is_awaitable
        self.futures: set[Any] | None = None

    def track(self, values: Sequence[Any]) -> None:
        self.settle([value for value in values if self.is_awaitable(value)])

    def settle(self, awaitables: Iterable[Any]) -> None:
        if self.futures is None:
            self.futures = set()
        _settle(self.futures, awaitables)


def _settle(background: set[Any], awaitables: Iterable[Any]) -> None:
    """Settle abandoned awaitables in the background (graphql-core's settle_in_background)."""
    for awaitable in awaitables:
        future = asyncio.ensure_future(awaitable)
        background.add(future)
        future.add_done_callback(_discard_settled(background))


def _discard_settled(background: set[Any]) -> Callable[[Any], None]:
    def done(future: Any) -> None:
        background.discard(future)
        if not future.cancelled():
            future.exception()

    return done


class _LazyInfo:
    """graphql-core's resolve info for a resolver the plan calls directly, built when something
    reads more of it than ``context``: most resolvers read only that (Strawberry's ``Info.context``),
    and building the info for each of them was ~3 % of a viewer request's instructions (issue 26)."""

    __slots__ = ("_built", "_field", "_path", "_plan", "_run", "context")

    def __init__(self, plan: Plan, run: _Run, field: _Field, path: Path) -> None:
        self.context = run.context_value
        self._plan = plan
        self._run = run
        self._field = field
        self._path = path
        self._built: Any = None

    def __getattr__(self, name: str) -> Any:
        built = self._built
        if built is None:
            built = self._built = self._plan._info(self._run, self._field, self._path)
        return getattr(built, name)


class Plan:
    """A compiled operation; `execute` runs it for one request (a new `_Run` each time)."""

    def __init__(
        self,
        schema: GraphQLSchema,
        document: DocumentNode,
        operation: OperationDefinitionNode,
        root: _Completion,
        build_resolve_info: Callable[..., Any],
        is_awaitable: IsAwaitable,
    ) -> None:
        self.schema = schema
        self.document = document
        self.operation = operation
        self.root = root
        self.fragment_definitions = {
            d.name.value: d for d in document.definitions if isinstance(d, FragmentDefinitionNode)
        }
        self._build_resolve_info = build_resolve_info
        self.is_awaitable = is_awaitable
        #: the types whose values are never awaitable: the plain ones, and each class `_awaitable`
        #: found so whose every instance answers alike (issue 26: is_awaitable's isinstance and
        #: hasattr checks on every object a resolver returns)
        self.sync_types: set[type] = set(_PLAIN)

    def _awaitable(self, value: Any) -> bool:
        """``is_awaitable(value)``; a no for a class that cannot answer otherwise for another of
        its instances (no ``__await__``, no attribute hooks, not a coroutine or generator) is
        remembered in `sync_types` (at most 256 classes)."""
        if self.is_awaitable(value):
            return True
        cls = type(value)
        if (
            len(self.sync_types) < 256
            and getattr(cls, "__getattribute__", None) is object.__getattribute__
            and not hasattr(cls, "__getattr__")
            and not hasattr(cls, "__await__")
            and not issubclass(cls, (CoroutineType, GeneratorType))
        ):
            self.sync_types.add(cls)
        return False

    def execute(
        self, context_value: Any, variable_values: VariableValues, root_value: Any = None
    ) -> ExecutionResult | Awaitable[ExecutionResult]:
        """Execute the plan; returns the result, or an awaitable of it when a resolver is async.
        Like graphql-core's ``execute``, it never raises for a field error."""
        run = _Run(self, context_value, variable_values, root_value)
        try:
            data = self._execute_fields(run, self.root.fields, root_value, None)
        except GraphQLError as error:
            run.add_error(error, None)
            return ExecutionResult(None, run.errors or None)
        if self.is_awaitable(data):
            return self._await_root(run, data)
        return ExecutionResult(data, run.errors or None)

    def source(self, context_value: Any, variable_values: VariableValues, root_value: Any = None) -> Any:
        """A subscription plan's source event stream (graphql-core's ``create_source_event_stream``):
        the subscription field's ``subscribe`` called as graphql-core calls it; returns its async
        iterable, an awaitable of it, or an `ExecutionResult` with the one error that refused it."""
        field = self.root.fields[0]
        definition = field.definition
        assert definition is not None
        path = Path(None, field.key, field.parent_type.name)
        try:
            info = self._info(_Run(self, context_value, variable_values, root_value), field, path)
            arguments = get_argument_values(definition, field.first_node, variable_values)  # type: ignore[arg-type]
            subscribe = definition.subscribe or default_field_resolver
            result = subscribe(root_value, info, **arguments)
            if self.is_awaitable(result):
                return self._await_source(result, field, path)
            return assert_event_stream(result)
        except Exception as error:
            return _refused(error, field, path)

    @staticmethod
    async def _await_source(result: Awaitable[Any], field: _Field, path: Path) -> Any:
        try:
            return assert_event_stream(await result)
        except Exception as error:
            return _refused(error, field, path)

    async def _await_root(self, run: _Run, data: Awaitable[dict[str, Any]]) -> ExecutionResult:
        try:
            completed = await data
        except GraphQLError as error:
            run.add_error(error, None)
            return ExecutionResult(None, run.errors or None)
        return ExecutionResult(completed, run.errors or None)

    # -- fields ----------------------------------------------------------------------------------

    def _info(self, run: _Run, plan: _Field, path: Path) -> Any:
        return self._build_resolve_info(run, plan.definition, plan.nodes, plan.parent_type, path)

    def _execute_fields(self, run: _Run, fields: list[_Field], source: Any, path: Path | None) -> Any:
        results: dict[str, Any] = {}
        pending: list[str] | None = None
        is_awaitable = self.is_awaitable
        sync_types = self.sync_types
        try:
            for plan in fields:
                key = plan.key
                kind = plan.kind
                if kind == _TYPENAME:
                    results[key] = plan.typename
                    continue
                field_path: Path | None = None
                info: Any = None
                value: Any
                try:
                    if kind == _ATTRIBUTE:
                        value = getattr(source, plan.attribute)
                    else:
                        field_path = Path(path, key, plan.parent_type.name)
                        if plan.lazy_info:
                            info = _LazyInfo(self, run, plan, field_path)
                        elif plan.needs_info:
                            info = self._info(run, plan, field_path)
                        arguments = plan.arguments
                        if arguments is None:
                            arguments = get_argument_values(
                                plan.definition,  # type: ignore[arg-type]
                                plan.first_node,  # type: ignore[arg-type]
                                run.variable_values,
                            )
                        value = plan.resolve(source, info, **arguments)  # type: ignore[misc]
                    plain = plan.plain
                    if type(value) is plain and (plain is not int or _MIN_INT <= value <= _MAX_INT):
                        results[key] = value  # what the scalar's coercion would answer, without the calls
                        continue
                    if type(value) not in sync_types and self._awaitable(value):
                        if field_path is None:
                            field_path = Path(path, key, plan.parent_type.name)
                        results[key] = self._complete_awaitable(
                            run,
                            plan,
                            plan.completion,  # type: ignore[arg-type]
                            value,
                            field_path,
                            path,
                            info,
                        )
                        if pending is None:
                            pending = []
                        pending.append(key)
                        continue
                    completed = self._complete(run, plan, plan.completion, value, field_path, path, info)  # type: ignore[arg-type]
                    if type(completed) not in _PLAIN and is_awaitable(completed):
                        if field_path is None:
                            field_path = Path(path, key, plan.parent_type.name)
                        results[key] = self._await_completed(run, plan, plan.completion, completed, field_path)  # type: ignore[arg-type]
                        if pending is None:
                            pending = []
                        pending.append(key)
                        continue
                    results[key] = completed
                except Exception as raw_error:
                    if field_path is None:
                        field_path = Path(path, key, plan.parent_type.name)
                    self._field_error(run, raw_error, plan.nodes, plan.non_null, field_path)
                    results[key] = None
        except Exception:
            if pending:
                run.settle([results[key] for key in pending])
            raise
        if pending is None:
            return results
        return self._gather_fields(results, pending)

    @staticmethod
    async def _gather_fields(results: dict[str, Any], pending: list[str]) -> dict[str, Any]:
        if len(pending) == 1:
            key = pending[0]
            results[key] = await results[key]
        else:
            awaited = await gather_with_cancel(*(results[key] for key in pending))
            results.update(zip(pending, awaited, strict=True))
        return results

    @staticmethod
    def _field_error(run: _Run, raw_error: Exception, nodes: list[FieldNode], non_null: bool, path: Path) -> None:
        error = located_error(raw_error, nodes, path.as_list())
        if non_null:
            raise error
        run.add_error(error, path)

    async def _complete_awaitable(
        self,
        run: _Run,
        plan: _Field,
        completion: _Completion,
        value: Any,
        path: Path,
        parent: Path | None,
        info: Any,
    ) -> Any:
        """A field's or a list item's awaitable value, resolved and completed as ``completion``
        (a failure is that position's error)."""
        try:
            resolved = await value
            completed = self._complete(run, plan, completion, resolved, path, parent, info)
            if type(completed) is not dict and self.is_awaitable(completed):
                completed = await completed
        except Exception as raw_error:
            self._field_error(run, raw_error, plan.nodes, completion.non_null, path)
            return None
        return completed

    async def _await_completed(
        self, run: _Run, plan: _Field, completion: _Completion, completed: Awaitable[Any], path: Path
    ) -> Any:
        try:
            return await completed
        except Exception as raw_error:
            self._field_error(run, raw_error, plan.nodes, completion.non_null, path)
            return None

    # -- values ----------------------------------------------------------------------------------

    def _complete(
        self,
        run: _Run,
        plan: _Field,
        completion: _Completion,
        value: Any,
        path: Path | None,
        parent_path: Path | None,
        info: Any,
    ) -> Any:
        """graphql-core's complete_value for ``completion``'s type. ``path`` may be None for a leaf
        (a plain field's path is built only when an error needs it: from ``parent_path``)."""
        if isinstance(value, Exception):
            raise value
        if value is None or value is Undefined:
            if completion.non_null:
                raise TypeError(f"Cannot return null for non-nullable field {plan.parent_type.name}.{plan.name}.")
            return None
        kind = completion.kind
        if kind == _ERROR:
            raise completion.error  # type: ignore[misc]
        if kind == _LEAF:
            coerced = completion.coerce(value)  # type: ignore[misc]
            if coerced is Undefined or coerced is None:
                raise TypeError(
                    f"Expected `{completion.type}.coerce_output_value({value!r})` to return non-nullable value,"
                    f" returned: {coerced!r}"
                )
            return coerced
        if path is None:
            path = Path(parent_path, plan.key, plan.parent_type.name)
        if kind == _OBJECT:
            if completion.is_type_of is not None:
                if info is None:
                    info = self._info(run, plan, path)
                accepted = completion.is_type_of(value, info)
                if self.is_awaitable(accepted):
                    return self._complete_object_after(run, completion, value, path, accepted, plan)
                if not accepted:
                    raise _invalid_return_type(completion, value, plan.nodes)
            return self._execute_fields(run, completion.fields, value, path)
        if kind == _ABSTRACT:
            if info is None:
                info = self._info(run, plan, path)
            runtime = completion.resolve_type(value, info, completion.type)  # type: ignore[misc]
            if self.is_awaitable(runtime):
                return self._complete_abstract_after(run, plan, completion, value, path, info, runtime)
            return self._complete(
                run, plan, _runtime_completion(completion, runtime, plan, value), value, path, None, info
            )
        return self._complete_list(run, plan, completion, value, path, info)

    async def _complete_abstract_after(
        self, run: _Run, plan: _Field, completion: _Completion, value: Any, path: Path, info: Any, runtime: Any
    ) -> Any:
        """graphql-core's complete_abstract_value when ``resolve_type`` answered an awaitable."""
        chosen = _runtime_completion(completion, await runtime, plan, value)
        completed = self._complete(run, plan, chosen, value, path, None, info)
        if type(completed) is not dict and self.is_awaitable(completed):
            return await completed
        return completed

    async def _complete_object_after(
        self, run: _Run, completion: _Completion, value: Any, path: Path, accepted: Awaitable[Any], plan: _Field
    ) -> Any:
        if not await accepted:
            raise _invalid_return_type(completion, value, plan.nodes)
        fields = self._execute_fields(run, completion.fields, value, path)
        if type(fields) is not dict and self.is_awaitable(fields):
            return await fields
        return fields

    def _complete_list(
        self, run: _Run, plan: _Field, completion: _Completion, value: Any, path: Path, info: Any
    ) -> Any:
        if hasattr(value, "__aiter__"):
            return self._complete_async_iterable(run, plan, completion, value, path, info)
        if not is_iterable(value):
            raise GraphQLError(
                f"Expected Iterable, but did not find one for field '{plan.parent_type.name}.{plan.name}'."
            )
        return self._complete_items(run, plan, completion, value, path, info)

    async def _complete_async_iterable(
        self, run: _Run, plan: _Field, completion: _Completion, value: Any, path: Path, info: Any
    ) -> Any:
        items = [item async for item in value]
        completed = self._complete_items(run, plan, completion, items, path, info)
        if type(completed) is not list and self.is_awaitable(completed):
            return await completed
        return completed

    def _complete_items(
        self, run: _Run, plan: _Field, completion: _Completion, items: Iterable[Any], path: Path, info: Any
    ) -> Any:
        item = completion.item
        assert item is not None
        is_awaitable = self.is_awaitable
        leaf = item.kind == _LEAF
        plain = item.plain
        sync_types = self.sync_types
        completed: list[Any] = []
        append = completed.append
        pending: list[int] | None = None
        iterator = iter(items)
        index = 0
        try:
            for value in iterator:
                if type(value) is plain and (plain is not int or _MIN_INT <= value <= _MAX_INT):
                    append(value)  # as in `_execute_fields`
                    index += 1
                    continue
                item_path = None if leaf else Path(path, index, None)
                if type(value) not in sync_types and self._awaitable(value):
                    if item_path is None:
                        item_path = Path(path, index, None)
                    append(self._complete_awaitable(run, plan, item, value, item_path, None, info))
                    if pending is None:
                        pending = []
                    pending.append(index)
                else:
                    try:
                        done = self._complete(run, plan, item, value, item_path, None, info)
                        if not leaf and type(done) is not dict and is_awaitable(done):
                            append(self._await_completed(run, plan, item, done, item_path))  # type: ignore[arg-type]
                            if pending is None:
                                pending = []
                            pending.append(index)
                        else:
                            append(done)
                    except Exception as raw_error:
                        if item_path is None:
                            item_path = Path(path, index, None)
                        self._field_error(run, raw_error, plan.nodes, item.non_null, item_path)
                        append(None)
                index += 1
        except Exception:
            abandoned = [completed[i] for i in pending or ()]
            abandoned.extend(value for value in iterator if is_awaitable(value))
            if abandoned:
                run.settle(abandoned)
            raise
        if pending is None:
            return completed
        return self._gather_items(completed, pending)

    @staticmethod
    async def _gather_items(completed: list[Any], pending: list[int]) -> list[Any]:
        if len(pending) == 1:
            index = pending[0]
            completed[index] = await completed[index]
        else:
            awaited = await gather_with_cancel(*(completed[index] for index in pending))
            for index, value in zip(pending, awaited, strict=True):
                completed[index] = value
        return completed


def _runtime_completion(completion: _Completion, runtime: Any, plan: _Field, value: Any) -> _Completion:
    """The completion of the object type an abstract value resolved to (graphql-core's
    ensure_valid_runtime_type, with its messages)."""
    from graphql.pyutils import inspect

    abstract = completion.type
    possible = completion.possible or {}
    chosen = possible.get(runtime) if isinstance(runtime, str) else None
    if chosen is not None:
        return chosen
    field_name = f"{plan.parent_type.name}.{plan.name}"
    if runtime is None:
        message = (
            f"Abstract type '{abstract}' must resolve to an Object type at runtime for field '{field_name}'."
            f" Either the '{abstract}' type should provide a 'resolve_type' function or each possible type should"
            " provide an 'is_type_of' function."
        )
    elif not isinstance(runtime, str):
        message = (
            f"Abstract type '{abstract}' must resolve to an Object type at runtime for field '{field_name}' with"
            f" value {inspect(value)}, received '{inspect(runtime)}', which is not a valid Object type name."
        )
    else:
        message = f"Runtime Object type '{runtime}' is not a possible type for '{abstract}'."
    return _Completion(
        type=abstract, non_null=completion.non_null, kind=_ERROR, error=GraphQLError(message, plan.nodes)
    )


def _invalid_return_type(completion: _Completion, value: Any, nodes: list[FieldNode]) -> GraphQLError:
    from graphql.pyutils import inspect

    return GraphQLError(f"Expected value of type '{completion.object_type}' but got: {inspect(value)}.", nodes)


# -- compiling -------------------------------------------------------------------------------------


def _uses_directives_or_variables(nodes: Iterable[Node]) -> tuple[bool, bool]:
    """Whether any node in or below ``nodes`` carries a directive, and whether any is a variable."""
    directives = variables = False
    stack: list[Any] = list(nodes)
    while stack:
        current = stack.pop()
        if isinstance(current, VariableNode):
            variables = True
            continue
        if getattr(current, "directives", None):
            directives = True
        for key in current.keys:
            if key == "loc":
                continue
            value = getattr(current, key, None)
            if isinstance(value, Node):
                stack.append(value)
            elif isinstance(value, tuple | list):
                stack.extend(item for item in value if isinstance(item, Node))
    return directives, variables


def _plain_field(strawberry_field: Any) -> bool:
    """Whether the field gets its value as `StrawberryField` does (a subclass may not)."""
    return type(strawberry_field).get_result is StrawberryField.get_result


def _basic_attribute(definition: GraphQLField) -> str | None:
    """The attribute a Strawberry basic field reads (no resolver, no field extension, the default
    resolver ``getattr``), or None when the field's resolver must be called."""
    if not is_basic_resolver(definition.resolve):
        return None
    strawberry_field = (definition.extensions or {}).get("strawberry-definition")
    if strawberry_field is None:
        return None
    if getattr(strawberry_field, "base_resolver", True) or getattr(strawberry_field, "extensions", True):
        return None
    if getattr(strawberry_field, "default_resolver", None) is not getattr or not _plain_field(strawberry_field):
        return None
    name = getattr(strawberry_field, "python_name", None)
    return name if isinstance(name, str) else None


def _refused(error: Exception, field: _Field, path: Path) -> ExecutionResult:
    """A subscription whose source stream could not be made: its one error, at the field."""
    return ExecutionResult(None, [located_error(error, field.nodes, path.as_list())])


def _the_event(source: Any, info: Any, **arguments: Any) -> Any:
    return source


#: Python types of arguments that Strawberry passes to a resolver unchanged
_PASSED_AS_IS = frozenset({str, int, float, bool})


def _direct_resolver(schema: GraphQLSchema, definition: GraphQLField) -> Callable[..., Any] | None:
    """For a Strawberry field whose resolver Strawberry would call plainly (no field extension,
    no exception handler, arguments that need no conversion: scalars of the built-in types), a
    function that calls it the same way without Strawberry's per-call wrapper (argument
    conversion, the extension chain, and for async resolvers one more coroutine); None otherwise.
    The resolver receives the same ``self``/root, ``info`` and keyword arguments."""
    strawberry_schema = strawberry_schema_of(schema)
    strawberry_field = (definition.extensions or {}).get("strawberry-definition")
    resolve = unguarded_resolve(definition) or definition.resolve
    if strawberry_schema is None or strawberry_field is None or resolve is None:
        return None
    resolver = getattr(strawberry_field, "base_resolver", None)
    if resolver is None or strawberry_field.extensions or strawberry_field.is_subscription:
        return None
    if not _plain_field(strawberry_field) or type(resolver).__call__ is not StrawberryResolver.__call__:
        return None
    # the handlers Strawberry matched for this field at build time (None: not its wrapper)
    handlers = field_exception_handlers(resolve)
    if handlers is None or handlers:
        return None
    config = strawberry_schema.config
    names: list[tuple[str, str]] = []
    for argument in strawberry_field.arguments:
        type_ = argument.type
        if isinstance(type_, StrawberryOptional) and not isinstance(type_, StrawberryMaybe):
            type_ = type_.of_type
        if getattr(type_, "__supertype__", type_) not in _PASSED_AS_IS:  # NewTypes such as ID too
            return None
        names.append((config.name_converter.from_argument(argument), argument.python_name))
    function = resolver.wrapped_func
    if not callable(function):
        return None
    make_info = info_factory(config.info_class, strawberry_field)
    takes_self = resolver.self_parameter is not None
    source_names = [p.name for p in (resolver.parent_parameter, resolver.root_parameter) if p is not None]
    info_name = resolver.info_parameter.name if resolver.info_parameter is not None else None

    if takes_self and not names and not source_names:
        # the usual method resolver without arguments: no dict comprehension (a function call of
        # its own on Python 3.11) and no loop per call
        if info_name is None:
            return lambda source, info, **arguments: function(source)

        def call_with_info(source: Any, info: Any, **arguments: Any) -> Any:
            return function(source, **{info_name: make_info(info)})

        return call_with_info

    def call(source: Any, info: Any, **arguments: Any) -> Any:
        kwargs = {python: arguments[name] for name, python in names if name in arguments}
        for name in source_names:
            kwargs[name] = source
        if info_name is not None:
            kwargs[info_name] = make_info(info)
        return function(source, **kwargs) if takes_self else function(**kwargs)

    return call


class _Compiler:
    def __init__(
        self,
        schema: GraphQLSchema,
        document: DocumentNode,
        operation: OperationDefinitionNode,
        field_resolver: Callable[..., Any],
    ) -> None:
        self.schema = schema
        self.operation = operation
        self.fragments: dict[str, FragmentDetails] = {}
        for definition in document.definitions:
            if isinstance(definition, FragmentDefinitionNode):
                if definition.variable_definitions:
                    raise Unsupported("fragment_variables")
                self.fragments[definition.name.value] = FragmentDetails(definition, None)
        self.variables = VariableValues({}, {})
        self.field_resolver = field_resolver

    def root(self) -> _Completion:
        kind = self.operation.operation
        if kind not in (OperationType.QUERY, OperationType.SUBSCRIPTION):
            raise Unsupported(kind.value)  # a mutation's fields run one after the other
        root_type = self.schema.get_root_type(kind)
        if root_type is None:
            raise Unsupported(f"no_{kind.value}_type")
        grouped = collect_fields(self.schema, self.fragments, self.variables, root_type, self.operation)
        completion = _Completion(type=root_type, non_null=False, kind=_OBJECT, object_type=root_type)
        completion.fields = self.fields(root_type, grouped.grouped_field_set)
        return completion

    def fields(self, parent_type: GraphQLObjectType, grouped: dict[str, list[FieldDetails]]) -> list[_Field]:
        plans = []
        for key, details in grouped.items():
            plans.append(self.field(parent_type, key, details))
        return plans

    def field(self, parent_type: GraphQLObjectType, key: str, details: list[FieldDetails]) -> _Field:
        nodes = [detail.node for detail in details]
        if any(detail.fragment_variable_values is not None or detail.defer_usage is not None for detail in details):
            raise Unsupported("directives")
        first = nodes[0]
        name = first.name.value
        if name == "__typename":
            return _Field(
                key=key,
                name=name,
                kind=_TYPENAME,
                parent_type=parent_type,
                definition=None,
                nodes=nodes,
                return_type=GraphQLNonNull(self.schema.type_map["String"]),  # type: ignore[arg-type]
                non_null=True,
                completion=None,
                typename=parent_type.name,
            )
        if name.startswith("__"):
            raise Unsupported("introspection")
        definition = parent_type.fields.get(name)
        if definition is None:  # a validated document selects only existing fields
            raise Unsupported("unknown_field")
        return_type = definition.type
        completion = self.completion(return_type, details)
        guarded = GUARD in (definition.extensions or {})
        attribute = None if guarded else _basic_attribute(definition)
        plan = _Field(
            key=key,
            name=name,
            kind=_RESOLVE,
            parent_type=parent_type,
            definition=definition,
            nodes=nodes,
            return_type=return_type,
            non_null=is_non_null_type(return_type),
            completion=completion,
            first_node=first,
            plain=completion.plain,
        )
        if attribute is not None and not definition.args and not first.arguments:
            plan.kind = _ATTRIBUTE
            plan.attribute = attribute
            plan.needs_info = False
            return plan
        if not guarded and parent_type is self.schema.subscription_type and is_event_resolver(definition.resolve):
            # a subscription's field answers each event of its source stream as it is
            plan.resolve = _the_event
            plan.arguments = {}
            return plan
        direct = _direct_resolver(self.schema, definition)
        if guarded:  # behind its guard (`bff.graphql.authorization`): the fast resolver too
            wrap = (definition.extensions or {}).get(GUARD_WRAP)
            direct = wrap(direct) if direct is not None and wrap is not None else None
        plan.resolve = direct or definition.resolve or self.field_resolver
        plan.needs_info = True
        plan.lazy_info = direct is not None and not guarded
        if definition.args or first.arguments:
            _, has_variables = _uses_directives_or_variables(first.arguments or ())
            if not has_variables:
                try:
                    arguments = get_argument_values(definition, first, self.variables)
                except Exception:  # coerced per request instead, where it is a field error
                    arguments = None
                if arguments is not None and all(isinstance(value, _IMMUTABLE) for value in arguments.values()):
                    plan.arguments = arguments
        else:
            plan.arguments = {}
        return plan

    def completion(self, type_: GraphQLOutputType, details: list[FieldDetails]) -> _Completion:
        non_null = is_non_null_type(type_)
        inner = type_.of_type if isinstance(type_, GraphQLNonNull) else type_
        if is_list_type(inner):
            assert isinstance(inner, GraphQLList)
            item = self.completion(inner.of_type, details)
            return _Completion(type=inner, non_null=non_null, kind=_LIST, item=item)
        if is_leaf_type(inner):
            coerce = inner.coerce_output_value
            plain = _PLAIN_LEAVES.get(coerce)
            return _Completion(type=inner, non_null=non_null, kind=_LEAF, coerce=coerce, plain=plain)
        if is_abstract_type(inner):
            return self.abstract(inner, non_null, details)
        if not is_object_type(inner):
            raise Unsupported("output_type")
        assert isinstance(inner, GraphQLObjectType)
        return self.object(inner, non_null, details)

    def object(self, object_type: GraphQLObjectType, non_null: bool, details: list[FieldDetails]) -> _Completion:
        """An object type: its selection compiled."""
        collected = collect_subfields(self.schema, self.fragments, self.variables, self.operation, object_type, details)
        completion = _Completion(
            type=object_type,
            non_null=non_null,
            kind=_OBJECT,
            object_type=object_type,
            is_type_of=object_type.is_type_of,
        )
        completion.fields = self.fields(object_type, collected.grouped_field_set)
        return completion

    def abstract(self, inner: GraphQLAbstractType, non_null: bool, details: list[FieldDetails]) -> _Completion:
        """An interface or a union: each possible object type's selection compiled, the value's
        type found at run time by the type's ``resolve_type`` (graphql-core's default otherwise)."""
        from graphql.execution.executor import default_type_resolver

        possible_types = self.schema.get_possible_types(inner)
        if len(possible_types) > _MOST_POSSIBLE_TYPES:
            raise Unsupported("abstract_type")
        possible = {object_type.name: self.object(object_type, non_null, details) for object_type in possible_types}
        return _Completion(
            type=inner,
            non_null=non_null,
            kind=_ABSTRACT,
            possible=possible,
            resolve_type=inner.resolve_type or default_type_resolver,
        )


def compile_plan(
    schema: GraphQLSchema,
    document: DocumentNode,
    operation: OperationDefinitionNode,
    *,
    build_resolve_info: Callable[..., Any],
    is_awaitable: IsAwaitable,
    field_resolver: Callable[..., Any] | None = None,
) -> Plan:
    """The plan of ``operation`` (a validated document's); raises `Unsupported`.

    ``build_resolve_info`` is the executor class's method (called unbound with the run as self),
    so resolvers receive the info they would receive from graphql-core with that executor class."""
    definitions = [operation, *(d for d in document.definitions if isinstance(d, FragmentDefinitionNode))]
    directives, _ = _uses_directives_or_variables(definitions)
    if directives:
        raise Unsupported("directives")
    compiler = _Compiler(schema, document, operation, field_resolver or default_field_resolver)
    return Plan(schema, document, operation, compiler.root(), build_resolve_info, is_awaitable)
