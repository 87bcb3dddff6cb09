"""Executing cached, validated documents without Strawberry's per-request machinery.

For a document `DocumentGate` has already parsed and validated (it is in the gate's caches),
Strawberry's ``Schema.execute`` adds per request: an ``ExecutionContext``, fresh extension
instances and their hook runner (``on_operation``, ``on_parse``, ``on_validate``, ``on_execute``,
``get_results``), a middleware manager, then graphql-core's ``execute`` with the schema's executor
class, ``process_errors`` (logging) and `BFFSchema`'s error mapping. `DirectExecution` does the
same steps itself when that is equivalent, i.e. when every extension of the schema is one of
`bff`'s own (`DocumentGate`, introspection off: ``AddValidationRules``) or implements no hook at
all; any other extension (a team's tracing, Strawberry's directive support) keeps the whole
request on ``Schema.execute``. A document seen for the first time goes through ``Schema.execute``
too (it is parsed, validated and cached there).

The same steps, in the same order: parse (the gate's cache), operation selection
(`select_operation`), the operation type allowed for the method, validation (a cache hit), the
variables and the cost (the gate's own check), then execution: graphql-core's ``execute`` with
the schema's executor class (so resolvers get the same ``info``), or, when enabled and the
operation compiles, the plan of `bff.graphql.execution.compiled`. Errors are logged by the schema's
``_process_errors`` (`bff.graphql._strawberry`) and mapped by `to_graphql_error`, exactly as on the Strawberry path.
"""

from __future__ import annotations

import contextlib
import functools
import inspect
import logging
from collections.abc import AsyncGenerator, Callable, Iterable
from typing import Any

from graphql import (
    DocumentNode,
    ExecutionResult as GraphQLExecutionResult,
    GraphQLError,
    OperationDefinitionNode,
    execute,
    specified_rules,
)
from graphql.execution.values import VariableValues, get_variable_values
from strawberry.execution import optimized_is_awaitable
from strawberry.extensions import AddValidationRules, SchemaExtension
from strawberry.schema.exceptions import InvalidOperationTypeError
from strawberry.schema.schema import StrawberryGraphQLCoreExecutionContext
from strawberry.types import ExecutionContext, ExecutionResult
from strawberry.types.execution import PreExecutionError
from strawberry.types.graphql import OperationType

from bff.graphql._strawberry import graphql_schema, process_errors
from bff.graphql.documents.limits import DocumentGate, ValidationCaches
from bff.graphql.documents.lru import LRU
from bff.graphql.documents.parsing import CACHE_CHARS, OperationSelectionError, select_operation
from bff.graphql.errors import BFFSchema, to_graphql_error
from bff.graphql.execution.compiled import Plan, Unsupported, compile_plan
from bff.metrics import Metrics

__all__ = ["DirectExecution"]

_HOOKS = ("on_operation", "on_parse", "on_validate", "on_execute", "resolve", "get_results")
#: plans (or the reason there is none) of this many (document, operation name) pairs
PLAN_CACHE_SIZE = 512
#: ... whose documents weigh this much together, in characters
PLAN_CACHE_CHARS = CACHE_CHARS

log = logging.getLogger("bff")


def _inert(extension: SchemaExtension) -> bool:
    cls = type(extension)
    return all(getattr(cls, hook) is getattr(SchemaExtension, hook) for hook in _HOOKS)


class DirectExecution:
    """One per schema: decides once whether the schema allows the direct path, then serves it."""

    def __init__(self, schema: Any) -> None:
        self.schema = schema
        self.graphql_schema = graphql_schema(schema)
        self.reason = self._ineligible(schema)
        #: bounded in documents and in their size: only valid documents get here, but any client may
        #: vary them (issue 24)
        self._plans: LRU[tuple[str, str | None], Plan | str] = LRU(
            maxsize=PLAN_CACHE_SIZE, max_weight=PLAN_CACHE_CHARS, weigh=lambda key, _: len(key[0])
        )
        self._validation = _validation(schema)
        #: the plans whose operation takes no variables and passed the cost check, with its type:
        #: run again without parsing, selecting, validating or costing (bounded as the plans are)
        self._ready: LRU[tuple[str, str | None], tuple[Plan, OperationType]] = LRU(
            maxsize=PLAN_CACHE_SIZE, max_weight=PLAN_CACHE_CHARS, weigh=lambda key, _: len(key[0])
        )

    async def validates(self, query: str) -> bool:
        """Whether ``query`` parses within the token limit and passes the schema's validation
        (its rules, the gate's shape limits) as a request would: what APQ may register (issue 24).
        A valid document is cached as its first execution would cache it."""
        if self._validation is None:
            return False  # a schema without bff's gate: nothing is known valid
        shared, rules = self._validation
        try:
            document = await shared.documents.parse(query)
        except GraphQLError:
            return False
        return not await shared.validate(self.graphql_schema, query, document, rules)

    def _ineligible(self, schema: Any) -> str | None:
        """Why the direct path would not be equivalent to ``Schema.execute`` (None: it would)."""
        if not isinstance(schema, BFFSchema):
            return "not a BFFSchema"
        if schema.config.enable_experimental_incremental_execution:
            return "incremental execution"
        rules: list[Any] = list(specified_rules)
        gate: DocumentGate | None = None
        for extension in schema.get_extensions():
            if isinstance(extension, DocumentGate):
                gate = extension
            elif type(extension).on_operation is AddValidationRules.on_operation and all(
                getattr(type(extension), hook) is getattr(SchemaExtension, hook) for hook in _HOOKS[1:]
            ):
                rules.extend(extension.validation_rules)  # type: ignore[attr-defined]
            elif not _inert(extension):
                return f"extension {type(extension).__name__} has hooks"
        if gate is None:
            return "no DocumentGate"
        self.shared = gate.shared
        self.rules = self.shared.rules(tuple(rules))
        self.executor_class = schema.execution_context_class
        return None

    async def execute(
        self,
        query: str,
        variables: dict[str, Any] | None,
        context: Any,
        operation_name: str | None,
        allowed: set[OperationType],
        *,
        compiled: bool = True,
        metrics: Metrics | None = None,
    ) -> ExecutionResult | None:
        """The result of a cached, validated document; None when the document is not cached (or
        the schema does not allow this path): the caller then uses ``Schema.execute``. Raises what
        ``Schema.execute`` raises for the request mistakes (`OperationSelectionError`,
        ``InvalidOperationTypeError``)."""
        if self.reason is not None:
            return None
        shared, schema = self.shared, self.graphql_schema
        ready = self._ready.get((query, operation_name)) if compiled else None
        if ready is not None and shared.valid.get((query, self.rules)):
            # a document run here before, whose operation takes no variables and passed the cost
            # check: nothing of this request can change that (issue 26: ~1 % of a worker's CPU)
            if ready[1] not in allowed:
                raise InvalidOperationTypeError(ready[1])
            if metrics is not None:
                metrics.child(metrics.graphql_compiled, "compiled", "").inc()
            none = get_variable_values(schema, (), {})
            assert isinstance(none, VariableValues)
            execution = functools.partial(ready[0].execute, context, none)
            return await self._run(execution, query, variables, context, operation_name, allowed)
        if (query, self.rules) not in shared.valid:
            return None
        document, operation = await self._operation(query, operation_name)
        operation_type = OperationType(operation.operation.value)
        if operation_type not in allowed:
            raise InvalidOperationTypeError(operation_type)
        coerced, errors = await self._inputs(query, document, operation, variables)
        if errors:
            return self._result(None, errors, query, variables, context, operation_name, allowed)
        plan = self._plan(query, operation_name, document, operation, metrics) if compiled else None
        if plan is not None and coerced is not None:
            if not operation.variable_definitions:
                self._ready.put((query, operation_name), (plan, operation_type))
            execution = functools.partial(plan.execute, context, coerced)  # the values the cost check coerced
            return await self._run(execution, query, variables, context, operation_name, allowed)
        core = functools.partial(
            execute,
            schema,
            document,
            context_value=context,
            variable_values=variables,
            operation_name=operation.name.value if operation.name else None,
            is_awaitable=optimized_is_awaitable,  # type: ignore[arg-type]
            executor_class=self.executor_class,
            operation_extensions=None,
        )
        return await self._run(core, query, variables, context, operation_name, allowed)

    async def subscribe(
        self,
        query: str,
        variables: dict[str, Any] | None,
        context: Any,
        operation_name: str | None,
        allowed: Iterable[OperationType],
        *,
        metrics: Metrics | None = None,
    ) -> AsyncGenerator[ExecutionResult, None] | None:
        """The results of a cached, valid subscription whose plan compiles, as ``Schema.stream``
        yields them (a `PreExecutionError` when its source stream could not be made, then one
        result per event; a failure of the source stream is one last result); None for anything
        else (not cached, another operation type, a refusal of any kind, no plan): the caller
        then uses ``Schema.stream``, which answers those as it always has.

        What it saves an open stream is Strawberry's and graphql-core's machinery around it, kept
        for the stream's lifetime (issue 26, part 4: about a fifth of an open stream's memory and
        of the CPU of an event)."""
        if self.reason is not None or OperationType.SUBSCRIPTION not in allowed:
            return None
        if (query, self.rules) not in self.shared.valid:
            return None
        try:
            document, operation = await self._operation(query, operation_name)
        except OperationSelectionError:
            return None
        if operation.operation.value != OperationType.SUBSCRIPTION.value:
            return None
        coerced, errors = await self._inputs(query, document, operation, variables)
        if errors or coerced is None:
            return None
        plan = self._plan(query, operation_name, document, operation, metrics)
        if plan is None:
            return None
        return self._events(plan, coerced, (query, variables, context, operation_name, allowed))

    async def _operation(self, query: str, operation_name: str | None) -> tuple[DocumentNode, OperationDefinitionNode]:
        """The cached document's parse and the operation the request runs (raises
        `OperationSelectionError`)."""
        document = await self.shared.documents.parse(query)
        return document, select_operation(document, operation_name)

    async def _inputs(
        self, query: str, document: DocumentNode, operation: OperationDefinitionNode, variables: dict[str, Any] | None
    ) -> tuple[VariableValues | None, list[GraphQLError]]:
        """The operation's coerced variables, or the errors that refuse it: validation (a cache hit
        for a cached document, the LRU touched), then the variables and the cost."""
        errors = await self.shared.validate(self.graphql_schema, query, document, self.rules)
        if errors:
            return None, errors
        return self.shared.variables_and_cost(self.graphql_schema, document, operation, variables)

    async def _events(
        self, plan: Plan, coerced: VariableValues, request: tuple[str, Any, Any, str | None, Iterable[OperationType]]
    ) -> AsyncGenerator[ExecutionResult, None]:
        """What `subscribe` returns. Nothing of an event (the event, its result) is held while the
        next one is awaited: an open stream's memory is what it holds while it waits."""
        context = request[2]
        source = plan.source(context, coerced)
        if inspect.isawaitable(source):
            source = await source
        if isinstance(source, GraphQLExecutionResult):  # the field refused, or gave no stream
            errors = source.errors or []
            self._log_errors(errors, *request)  # not mapped: as Strawberry yields a refusal
            yield PreExecutionError(data=None, errors=errors)
            return
        events = aiter(source)
        started = getattr(context, "_event_started", None)  # a bff Context (the package's own use)
        try:
            while True:
                try:
                    event = await anext(events)
                    if started is not None:
                        started()  # the event's deadline starts now, not when the wait for it did
                    result: Any = plan.execute(context, coerced, event)
                    del event
                    if inspect.isawaitable(result):
                        result = await result
                except StopAsyncIteration:
                    return
                except Exception as exc:  # as Strawberry: one result with the error, then the end
                    error = exc if isinstance(exc, GraphQLError) else GraphQLError(str(exc), original_error=exc)
                    yield self._result(None, [error], *request)
                    return
                answer = self._result(result.data, result.errors, *request)
                del result
                yield answer
                del answer
        finally:
            close = getattr(events, "aclose", None)
            if close is not None:
                with contextlib.suppress(Exception):  # as graphql-core's aclosing: the stream is over
                    await close()

    async def _run(
        self,
        execution: Callable[[], Any],
        query: str,
        variables: dict[str, Any] | None,
        context: Any,
        operation_name: str | None,
        allowed: set[OperationType],
    ) -> ExecutionResult:
        """The result of ``execution`` (a plan's, or graphql-core's), its failure as one error."""
        try:
            result: Any = execution()
            if inspect.isawaitable(result):
                result = await result
        except Exception as exc:  # Strawberry answers these as one error too
            error = exc if isinstance(exc, GraphQLError) else GraphQLError(str(exc), original_error=exc)
            return self._result(None, [error], query, variables, context, operation_name, allowed)
        return self._result(result.data, result.errors, query, variables, context, operation_name, allowed)

    def _plan(
        self,
        query: str,
        operation_name: str | None,
        document: Any,
        operation: OperationDefinitionNode,
        metrics: Metrics | None,
    ) -> Plan | None:
        key = (query, operation_name)
        plan = self._plans.get(key)
        if plan is None:
            try:
                plan = compile_plan(
                    self.graphql_schema,
                    document,
                    operation,
                    build_resolve_info=self.executor_class.build_resolve_info,
                    is_awaitable=optimized_is_awaitable,
                )
            except Unsupported as exc:
                plan = exc.reason
            except Exception:  # a schema the compiler misjudged: graphql-core runs it, as before
                log.warning("compiling a plan failed; executing with graphql-core", exc_info=True)
                plan = "compile_error"
            if self.executor_class is not StrawberryGraphQLCoreExecutionContext:
                plan = "executor_class"  # a custom executor may complete values its own way
            self._plans.put(key, plan)
        if isinstance(plan, str):
            if metrics is not None:
                metrics.child(metrics.graphql_compiled, "fallback", plan).inc()
            return None
        if metrics is not None:
            metrics.child(metrics.graphql_compiled, "compiled", "").inc()
        return plan

    def _result(
        self,
        data: dict[str, Any] | None,
        errors: list[GraphQLError] | None,
        query: str,
        variables: dict[str, Any] | None,
        context: Any,
        operation_name: str | None,
        allowed: Iterable[OperationType],
    ) -> ExecutionResult:
        if errors:
            self._log_errors(errors, query, variables, context, operation_name, allowed)
            request_id = getattr(context, "request_id", None)
            errors = [to_graphql_error(error, str(request_id) if request_id else None) for error in errors]
        return ExecutionResult(data=data, errors=errors or None, extensions={})

    def _log_errors(
        self,
        errors: list[GraphQLError],
        query: str,
        variables: dict[str, Any] | None,
        context: Any,
        operation_name: str | None,
        allowed: Iterable[OperationType],
    ) -> None:
        # Strawberry's execution context exists only for the logs of the errors
        execution_context = ExecutionContext(
            query=query,
            schema=self.schema,
            allowed_operations=set(allowed),
            context=context,
            variables=variables,
            provided_operation_name=operation_name,
        )
        process_errors(self.schema, errors, execution_context)


def _validation(schema: Any) -> tuple[ValidationCaches, tuple[type[Any], ...]] | None:
    """The gate's caches and the validation rules a request of ``schema`` is checked with (the
    specified rules and those of every ``AddValidationRules`` extension, as Strawberry adds them)."""
    if not hasattr(schema, "get_extensions"):
        return None
    rules: list[Any] = list(specified_rules)
    shared: ValidationCaches | None = None
    for extension in schema.get_extensions():
        if isinstance(extension, DocumentGate):
            shared = extension.shared
        elif isinstance(extension, AddValidationRules):
            rules.extend(extension.validation_rules)
    return None if shared is None else (shared, shared.rules(tuple(rules)))
