"""Query limits: depth, tokens and aliases (Strawberry's extensions) and a cost limit that
multiplies list sizes, so one query cannot ask for millions of upstream items.

All of them refuse a document at validation time: before any resolver or upstream call.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

from graphql import (
    DocumentNode,
    FieldNode,
    FragmentDefinitionNode,
    FragmentSpreadNode,
    GraphQLError,
    GraphQLList,
    GraphQLNonNull,
    GraphQLSchema,
    InlineFragmentNode,
    OperationDefinitionNode,
    SelectionSetNode,
    get_named_type,
    validate,
    value_from_ast,
)
from strawberry.extensions import (
    AddValidationRules,
    DisableIntrospection,
    MaxAliasesLimiter,
    MaxTokensLimiter,
    ParserCache,
    QueryDepthLimiter,
    SchemaExtension,
    ValidationCache,
)


@dataclass(frozen=True, slots=True)
class Limits:
    max_depth: int = 12
    max_tokens: int = 2000
    max_aliases: int = 30
    max_cost: int = 5000
    #: assumed size of a list field without a ``first`` argument
    default_list_size: int = 10
    introspection: bool = True


def _is_list(type_: Any) -> bool:
    if isinstance(type_, GraphQLNonNull):
        type_ = type_.of_type
    return isinstance(type_, GraphQLList)


class CostCalculator:
    """Cost = every field selected, multiplied by the sizes of the lists it sits in (``first``,
    else the argument's default, else ``default_list_size``)."""

    def __init__(
        self,
        schema: GraphQLSchema,
        fragments: dict[str, FragmentDefinitionNode],
        variables: dict[str, Any],
        default_list_size: int,
    ) -> None:
        self.schema = schema
        self.fragments = fragments
        self.variables = variables
        self.default_list_size = default_list_size

    def operation(self, operation: OperationDefinitionNode) -> int:
        root = self.schema.get_root_type(operation.operation)
        return self._selections(root, operation.selection_set, 1) if root else 0

    def _selections(self, parent: Any, selection_set: SelectionSetNode | None, multiplier: int) -> int:
        if selection_set is None:
            return 0
        total = 0
        for node in self._fields(parent, selection_set):
            field_node, owner = node
            field = owner.fields.get(field_node.name.value) if hasattr(owner, "fields") else None
            total += multiplier
            if field is None:
                continue
            size = self._list_size(field, field_node) if _is_list(field.type) else 1
            child = get_named_type(field.type)
            total += self._selections(child, field_node.selection_set, multiplier * size)
        return total

    def _fields(self, parent: Any, selection_set: SelectionSetNode) -> Iterator[tuple[FieldNode, Any]]:
        for selection in selection_set.selections:
            if isinstance(selection, FieldNode):
                yield selection, parent
            elif isinstance(selection, InlineFragmentNode):
                condition = selection.type_condition
                owner = self.schema.get_type(condition.name.value) if condition else parent
                yield from self._fields(owner, selection.selection_set)
            elif isinstance(selection, FragmentSpreadNode):
                fragment = self.fragments.get(selection.name.value)
                if fragment is not None:
                    yield from self._fields(
                        self.schema.get_type(fragment.type_condition.name.value), fragment.selection_set
                    )

    def _list_size(self, field: Any, node: FieldNode) -> int:
        for argument in node.arguments or ():
            if argument.name.value == "first":
                arg_def = field.args.get("first")
                value = value_from_ast(argument.value, arg_def.type, self.variables) if arg_def else None
                if isinstance(value, int):
                    return max(value, 0)
        arg_def = field.args.get("first")
        if arg_def is not None and isinstance(arg_def.default_value, int):
            return max(arg_def.default_value, 0)
        return self.default_list_size


class CostLimiter(SchemaExtension):
    """Refuses, at validation, an operation whose cost exceeds ``max_cost``."""

    def __init__(self, max_cost: int, default_list_size: int = 10) -> None:
        self.max_cost = max_cost
        self.default_list_size = default_list_size

    def on_validate(self) -> Iterator[None]:
        # Runs before Strawberry checks for validation errors, and after ValidationCache (registered
        # earlier) has validated; a cost error joins the validation errors.
        context = self.execution_context
        document = context.graphql_document
        if document is not None:
            if context.pre_execution_errors is None:
                context.pre_execution_errors = validate(context.schema._schema, document, context.validation_rules)
            if not context.pre_execution_errors:
                error = self._check(document)
                if error is not None:
                    context.pre_execution_errors = [error]
        yield

    def _check(self, document: DocumentNode) -> GraphQLError | None:
        context = self.execution_context
        fragments = {d.name.value: d for d in document.definitions if isinstance(d, FragmentDefinitionNode)}
        operations = [d for d in document.definitions if isinstance(d, OperationDefinitionNode)]
        if context.operation_name:
            operations = [o for o in operations if o.name and o.name.value == context.operation_name]
        if not operations:
            return None
        calculator = CostCalculator(context.schema._schema, fragments, context.variables or {}, self.default_list_size)
        try:
            cost = calculator.operation(operations[0])
        except (GraphQLError, TypeError, ValueError):
            return None  # variables that do not coerce are reported by execution, with their own error
        if cost <= self.max_cost:
            return None
        return GraphQLError(
            f"Query cost {cost} exceeds the limit of {self.max_cost}; ask for fewer items",
            nodes=[operations[0]],
            extensions={"code": "QUERY_TOO_COMPLEX", "cost": cost, "maxCost": self.max_cost},
        )


def extensions(limits: Limits) -> list[Callable[[], SchemaExtension]]:
    """Factories, not instances: Strawberry builds fresh extensions per request (the parser and
    validation caches are shared across instances of the same size)."""
    # The depth and alias rules are built ONCE: built per request, each would be a new class, and
    # ValidationCache (keyed by the rules) would miss on every request.
    rules = [
        *QueryDepthLimiter(max_depth=limits.max_depth).validation_rules,
        *MaxAliasesLimiter(max_alias_count=limits.max_aliases).validation_rules,
    ]
    factories: list[Callable[[], SchemaExtension]] = [
        lambda: AddValidationRules(rules),
        lambda: ParserCache(maxsize=512),
        lambda: ValidationCache(maxsize=512),
        lambda: MaxTokensLimiter(max_token_count=limits.max_tokens),
        lambda: CostLimiter(limits.max_cost, limits.default_list_size),
    ]
    if not limits.introspection:
        factories.append(DisableIntrospection)
    return factories
