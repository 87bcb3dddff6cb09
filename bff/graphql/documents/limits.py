"""Query limits: tokens, fragment structure, depth, aliases, validation work and cost, all checked
before any resolver or upstream call, and all linear in the size of the document.

`DocumentGate` is the one extension that does the work before execution, in this order:

1. parse (cached; bounded by ``max_tokens``) and select the operation (`bff.graphql.documents.parsing`);
2. the document's shape, in one pass per definition: fragment cycles are refused up front, and
   each fragment's depth, alias count and expanded field count are computed once (in dependency
   order) and reused wherever it is spread, saturating at the limit, so a chain of fragments that
   spread the next one twice costs what it weighs, not 2**n;
3. graphql-core's validation (cached), with a work budget on OverlappingFieldsCanBeMerged, the one
   specified rule that is quadratic in the number of same-named fields;

parsing and validating a large document (a few milliseconds up to ~150 ms for a 1 MB string) run
in a worker thread, so that the event loop keeps serving other requests meanwhile;
4. the variables, coerced as execution would coerce them (wrong types, missing or null required
   values are BAD_USER_INPUT);
5. the cost, computed on the coerced values (defaults included), fragments memoized.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

from graphql import (
    DocumentNode,
    FieldNode,
    FragmentDefinitionNode,
    FragmentSpreadNode,
    GraphQLError,
    GraphQLInterfaceType,
    GraphQLList,
    GraphQLNonNull,
    GraphQLObjectType,
    GraphQLSchema,
    InlineFragmentNode,
    OperationDefinitionNode,
    OverlappingFieldsCanBeMergedRule,
    SelectionSetNode,
    Undefined,
    ValidationRule,
    get_named_type,
    validate,
    value_from_ast,
)
from graphql.execution.values import VariableValues, get_variable_values
from graphql.validation.validate import ValidationAbortedError
from strawberry.extensions import DisableIntrospection, SchemaExtension
from strawberry.schema.validation_rules.maybe_null import MaybeNullValidationRule
from strawberry.schema.validation_rules.one_of import OneOfInputValidationRule

from bff.graphql._strawberry import graphql_schema, provided_operation_name
from bff.graphql.documents.lru import LRU
from bff.graphql.documents.parsing import CACHE_CHARS, INLINE_CHARS, MAX_CACHED_CHARS, DocumentCache, select_operation

TOO_COMPLEX = "QUERY_TOO_COMPLEX"
BAD_USER_INPUT = "BAD_USER_INPUT"


@dataclass(frozen=True, slots=True)
class Limits:
    max_depth: int = 12
    max_tokens: int = 2000
    max_aliases: int = 30
    max_cost: int = 5000
    #: fields once every fragment spread is written out: refuses absurd spread counts
    max_expanded_fields: int = 10_000
    #: assumed size of a list field that takes no size argument
    default_list_size: int = 10
    #: assumed size of a list whose size argument is unknown (omitted without default, or null)
    max_page_size: int = 100
    #: arguments that bound the size of a list field
    size_arguments: tuple[str, ...] = ("first", "last", "limit")
    #: work budget of OverlappingFieldsCanBeMerged (graphql-core's default is 500,000: ~0.5 s)
    overlap_budget: int = 20_000
    introspection: bool = True

    def tightened(self, floor: Limits | None) -> Limits:
        """These limits, made at least as strict as ``floor`` everywhere (`build_schema`'s ``limits``
        are a floor that the app's settings can tighten, never loosen): the smaller maximum, the
        larger assumed list size, both size-argument names, introspection only if both allow it."""
        if floor is None:
            return self
        return Limits(
            max_depth=min(self.max_depth, floor.max_depth),
            max_tokens=min(self.max_tokens, floor.max_tokens),
            max_aliases=min(self.max_aliases, floor.max_aliases),
            max_cost=min(self.max_cost, floor.max_cost),
            max_expanded_fields=min(self.max_expanded_fields, floor.max_expanded_fields),
            default_list_size=max(self.default_list_size, floor.default_list_size),
            max_page_size=max(self.max_page_size, floor.max_page_size),
            size_arguments=tuple(dict.fromkeys((*self.size_arguments, *floor.size_arguments))),
            overlap_budget=min(self.overlap_budget, floor.overlap_budget),
            introspection=self.introspection and floor.introspection,
        )


def _is_list(type_: Any) -> bool:
    if isinstance(type_, GraphQLNonNull):
        type_ = type_.of_type
    return isinstance(type_, GraphQLList)


def _fields_of(type_: Any) -> dict[str, Any]:
    return type_.fields if isinstance(type_, GraphQLObjectType | GraphQLInterfaceType) else {}


def _too_complex(message: str, nodes: Any = None, **extensions: Any) -> GraphQLError:
    return GraphQLError(message, nodes=nodes, extensions={"code": TOO_COMPLEX, **extensions})


# -- shape: fragment cycles, depth, aliases, expanded size ----------------------------------------


def _spread_names(selection_set: SelectionSetNode) -> set[str]:
    names: set[str] = set()
    stack = [selection_set]
    while stack:
        for selection in stack.pop().selections:
            if isinstance(selection, FragmentSpreadNode):
                names.add(selection.name.value)
            elif selection.selection_set is not None:  # type: ignore[attr-defined]
                stack.append(selection.selection_set)  # type: ignore[attr-defined]
    return names


def fragment_order(fragments: dict[str, FragmentDefinitionNode]) -> list[str] | GraphQLError:
    """Fragment names, each after every fragment it spreads; an error for the first cycle found.
    Iterative, so a chain of hundreds of fragments cannot exhaust the interpreter's stack."""
    spreads = {name: sorted(_spread_names(f.selection_set) & fragments.keys()) for name, f in fragments.items()}
    order: list[str] = []
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    for root in fragments:
        if root in state:
            continue
        state[root] = 1
        stack: list[tuple[str, Iterator[str]]] = [(root, iter(spreads[root]))]
        while stack:
            name, children = stack[-1]
            child = next(children, None)
            if child is None:
                stack.pop()
                state[name] = 2
                order.append(name)
            elif state.get(child) == 1:
                return GraphQLError(
                    f"Cannot spread fragment '{child}' within itself.",
                    nodes=[fragments[child]],
                    extensions={"code": "GRAPHQL_VALIDATION_FAILED"},
                )
            elif child not in state:
                state[child] = 1
                stack.append((child, iter(spreads[child])))
    return order


@dataclass(slots=True)
class _Shape:
    depth: int = 0
    aliases: int = 0
    fields: int = 0


class ShapeChecker:
    """Depth, aliases and expanded fields of every operation, each fragment measured once."""

    def __init__(self, limits: Limits) -> None:
        self.limits = limits
        self._memo: dict[str, _Shape] = {}

    def check(self, document: DocumentNode) -> GraphQLError | None:
        fragments: dict[str, FragmentDefinitionNode] = {}
        for definition in document.definitions:
            if isinstance(definition, FragmentDefinitionNode):
                fragments.setdefault(definition.name.value, definition)
        order = fragment_order(fragments)
        if isinstance(order, GraphQLError):
            return order
        for name in order:  # dependencies first: every spread below is already measured
            self._memo[name] = self._measure(fragments[name].selection_set)
        limits = self.limits
        aliases = fields = 0
        for definition in document.definitions:
            if not isinstance(definition, OperationDefinitionNode):
                continue
            shape = self._measure(definition.selection_set)
            if shape.depth > limits.max_depth:
                label = definition.name.value if definition.name else "anonymous"
                return _too_complex(
                    f"'{label}' exceeds the maximum operation depth of {limits.max_depth}", [definition]
                )
            aliases, fields = aliases + shape.aliases, fields + shape.fields
            if aliases > limits.max_aliases:
                return _too_complex(f"{aliases} aliases found. Allowed: {limits.max_aliases}")
            if fields > limits.max_expanded_fields:
                return _too_complex(
                    f"The document selects more than {limits.max_expanded_fields} fields once its fragments "
                    "are expanded"
                )
        return None

    def _measure(self, selection_set: SelectionSetNode) -> _Shape:
        # Recursion only follows the nesting of one definition, which the parser bounds.
        limits = self.limits
        shape = _Shape()
        for selection in selection_set.selections:
            if isinstance(selection, FieldNode):
                shape.fields += 1
                shape.aliases += selection.alias is not None
                if selection.selection_set is not None:
                    child = self._measure(selection.selection_set)
                    if not selection.name.value.startswith("__"):  # introspection has its own rule
                        shape.depth = max(shape.depth, 1 + child.depth)
                    shape.aliases += child.aliases
                    shape.fields += child.fields
            else:
                if isinstance(selection, InlineFragmentNode):
                    child = self._measure(selection.selection_set)
                else:
                    child = self._memo.get(selection.name.value, _Shape())  # type: ignore[attr-defined]
                shape.depth = max(shape.depth, child.depth)
                shape.aliases += child.aliases
                shape.fields += child.fields
            # saturate: past a limit the exact figure no longer matters
            shape.depth = min(shape.depth, limits.max_depth + 1)
            shape.aliases = min(shape.aliases, limits.max_aliases + 1)
            shape.fields = min(shape.fields, limits.max_expanded_fields + 1)
        return shape


# -- cost ------------------------------------------------------------------------------------------


class CostCalculator:
    """Cost = every field selected, multiplied by the sizes of the lists it sits in.

    A list's size is its size argument (``first``...) read from the coerced variables, else the
    argument's default, else ``max_page_size`` when the argument exists but its value is unknown;
    a list without a size argument counts ``default_list_size``. Each fragment's cost is computed
    once (cost is linear in the multiplier) and every figure saturates just above ``max_cost``."""

    def __init__(
        self,
        schema: GraphQLSchema,
        fragments: dict[str, FragmentDefinitionNode],
        variables: dict[str, Any],
        limits: Limits,
    ) -> None:
        self.schema = schema
        self.fragments = fragments
        self.variables = variables
        self.limits = limits
        self.cap = limits.max_cost + 1
        self._memo: dict[str, int] = {}

    def operation(self, operation: OperationDefinitionNode) -> int:
        root = self.schema.get_root_type(operation.operation)
        if root is None:
            return 0
        order = fragment_order(self.fragments)
        for name in order if isinstance(order, list) else ():
            fragment = self.fragments[name]
            self._memo[name] = self._selections(
                self.schema.get_type(fragment.type_condition.name.value), fragment.selection_set
            )
        return self._selections(root, operation.selection_set)

    def _selections(self, parent: Any, selection_set: SelectionSetNode) -> int:
        total = 0
        for selection in selection_set.selections:
            if isinstance(selection, FieldNode):
                total += 1
                field = _fields_of(parent).get(selection.name.value)
                if field is not None and selection.selection_set is not None:
                    size = self._list_size(field, selection) if _is_list(field.type) else 1
                    if size:
                        total += size * self._selections(get_named_type(field.type), selection.selection_set)
            elif isinstance(selection, InlineFragmentNode):
                condition = selection.type_condition
                owner = self.schema.get_type(condition.name.value) if condition else parent
                total += self._selections(owner, selection.selection_set)
            elif isinstance(selection, FragmentSpreadNode):
                total += self._memo.get(selection.name.value, 0)
            if total >= self.cap:
                return self.cap  # stop: the limit is passed
        return total

    def _list_size(self, field: Any, node: FieldNode) -> int:
        names = self.limits.size_arguments
        arg_name = next((name for name in names if name in field.args), None)
        if arg_name is None:
            return self.limits.default_list_size
        arg_def = field.args[arg_name]
        value: Any = Undefined
        for argument in node.arguments or ():
            if argument.name.value == arg_name:
                value = value_from_ast(argument.value, arg_def.type, self.variables)
        if value is Undefined:  # omitted, or a variable that was not provided: the argument's default
            value = arg_def.default_value
        if isinstance(value, int) and not isinstance(value, bool):
            return min(max(value, 0), self.cap)
        return self.limits.max_page_size


# -- the gate --------------------------------------------------------------------------------------


def budgeted_overlap_rule(budget: int) -> type[ValidationRule]:
    class BudgetedOverlappingFieldsCanBeMerged(OverlappingFieldsCanBeMergedRule):
        def __init__(self, context: Any) -> None:
            super().__init__(context)
            self.rule_context.remaining_complexity_budget = budget

    return BudgetedOverlappingFieldsCanBeMerged


@dataclass
class ValidationCaches:
    """What every request of one schema shares: the parse and validation caches."""

    limits: Limits
    documents: DocumentCache
    overlap_rule: type[ValidationRule]
    rule_sets: dict[tuple[type[Any], ...], tuple[type[Any], ...]] = field(default_factory=dict)
    #: (query, rules) of the documents that passed: only those are cached, with their parse
    #: bounded in entries (512) and in what the documents weigh together, in characters (as the parse cache)
    valid: LRU[tuple[str, tuple[type[Any], ...]], bool] = field(
        default_factory=lambda: LRU(maxsize=512, max_weight=CACHE_CHARS, weigh=lambda key, _: len(key[0]))
    )

    #: the cost of each operation without variables (its document alone decides it), by the
    #: operation node's id (the node is kept with it, so the id is not reused meanwhile); bounded as
    #: the documents are, by the characters of the documents the nodes come from
    fixed_costs: LRU[int, tuple[OperationDefinitionNode, int]] = field(
        default_factory=lambda: LRU(maxsize=512, max_weight=CACHE_CHARS, weigh=lambda _, entry: _chars(entry[0]))
    )

    def rules(self, requested: tuple[type[Any], ...]) -> tuple[type[Any], ...]:
        rules = self.rule_sets.get(requested)
        if rules is None:
            swapped = [self.overlap_rule if r is OverlappingFieldsCanBeMergedRule else r for r in requested]
            rules = (*swapped, MaybeNullValidationRule, OneOfInputValidationRule)
            self.rule_sets[requested] = rules
        return rules

    async def validate(
        self, schema: GraphQLSchema, query: str, document: DocumentNode, rules: Any
    ) -> list[GraphQLError]:
        """The document's shape and validation errors. Only valid documents are remembered (with
        their parse): a cache that kept every rejected document would be the attacker's to fill."""
        key = (query, rules)
        if self.valid.get(key):
            return []
        if len(query) > INLINE_CHARS:
            errors = await self.documents.off_loop(self._check, schema, document, rules)
        else:
            errors = self._check(schema, document, rules)
        if not errors and len(query) <= MAX_CACHED_CHARS:
            self.documents.remember(query, document)
            self.valid.put(key, True)
        return errors

    def variables_and_cost(
        self,
        schema: GraphQLSchema,
        document: DocumentNode,
        operation: OperationDefinitionNode,
        variables: dict[str, Any] | None,
    ) -> tuple[VariableValues | None, list[GraphQLError]]:
        """The operation's coerced variables (defaults applied) and the errors that refuse it:
        variables of the wrong type (BAD_USER_INPUT) or a cost over the limit, computed on the
        coerced values so that it does not depend on how the query is written."""
        coerced = get_variable_values(schema, operation.variable_definitions or (), variables or {}, 20)
        if isinstance(coerced, list):
            return None, [
                GraphQLError(error.message, nodes=error.nodes, extensions={"code": BAD_USER_INPUT}) for error in coerced
            ]
        limits = self.limits
        if operation.variable_definitions:
            cost = self._cost(schema, document, operation, coerced.coerced)
        else:
            known = self.fixed_costs.get(id(operation))
            if known is not None and known[0] is operation:
                cost = known[1]
            else:
                cost = self._cost(schema, document, operation, coerced.coerced)
                if _chars(operation) <= MAX_CACHED_CHARS:
                    self.fixed_costs.put(id(operation), (operation, cost))
        if cost <= limits.max_cost:
            return coerced, []
        return coerced, [
            _too_complex(
                f"Query cost exceeds the limit of {limits.max_cost}; ask for fewer items",
                [operation],
                maxCost=limits.max_cost,
            )
        ]

    def _cost(
        self, schema: GraphQLSchema, document: DocumentNode, operation: OperationDefinitionNode, variables: Any
    ) -> int:
        fragments = {d.name.value: d for d in document.definitions if isinstance(d, FragmentDefinitionNode)}
        return CostCalculator(schema, fragments, variables, self.limits).operation(operation)

    def _check(self, schema: GraphQLSchema, document: DocumentNode, rules: Any) -> list[GraphQLError]:
        shape_error = ShapeChecker(self.limits).check(document)
        return [shape_error] if shape_error is not None else _validate(schema, document, rules)


def _chars(node: OperationDefinitionNode) -> int:
    """The length of the document ``node`` was parsed from (what it weighs in a cache); a node
    without its source (built, not parsed) counts as too large to keep."""
    loc = node.loc
    return len(loc.source.body) if loc is not None else MAX_CACHED_CHARS + 1


def _validate(schema: GraphQLSchema, document: DocumentNode, rules: Sequence[type[Any]]) -> list[GraphQLError]:
    errors = validate(schema, document, rules, max_errors=50)
    return [
        _too_complex("Validation aborted: the document is too complex to validate")
        if isinstance(error, ValidationAbortedError) and error.message == "Validation aborted."
        else error
        for error in errors
    ]


class DocumentGate(SchemaExtension):
    """Everything between the request and execution; see the module's docstring."""

    def __init__(self, shared: ValidationCaches) -> None:
        self.shared = shared
        self.operation: OperationDefinitionNode | None = None

    async def on_parse(self) -> AsyncIterator[None]:
        context = self.execution_context
        if context.graphql_document is None and context.query:
            context.graphql_document = await self.shared.documents.parse(context.query)
        if context.graphql_document is not None:
            # before Strawberry picks the operation type itself (first operation, unknown names)
            # the name the client sent: Strawberry's ``operation_name`` falls back to the first
            # operation's, which would silently run the first of several
            requested = provided_operation_name(context)
            self.operation = select_operation(context.graphql_document, requested)
        yield

    async def on_validate(self) -> AsyncIterator[None]:
        context = self.execution_context
        document, operation = context.graphql_document, self.operation
        if document is not None and operation is not None and context.query:
            schema = graphql_schema(context.schema)
            rules = self.shared.rules(tuple(context.validation_rules))
            errors = await self.shared.validate(schema, context.query, document, rules)
            if not errors:
                _, errors = self.shared.variables_and_cost(schema, document, operation, context.variables)
            context.pre_execution_errors = errors
        yield


def extensions(limits: Limits) -> list[Callable[[], SchemaExtension]]:
    """Factories, not instances: Strawberry builds fresh extensions per request; the caches they
    use are built once here and shared."""
    shared = ValidationCaches(limits, DocumentCache(limits.max_tokens), budgeted_overlap_rule(limits.overlap_budget))
    factories: list[Callable[[], SchemaExtension]] = [lambda: DocumentGate(shared)]
    if not limits.introspection:
        factories.insert(0, DisableIntrospection)
    return factories
