"""bff.selects: what a field's selection includes, through fragments, aliases and directives."""

from __future__ import annotations

import asyncio
import gc
import weakref
from types import SimpleNamespace
from typing import Any

import pytest
import strawberry
from graphql import OperationDefinitionNode, parse
from strawberry.types import Info

from bff import build_schema, selects

PATHS = ("items.product", "items.product.name", "totalCents", "items", "items.quantity")


@strawberry.type
class Product:
    name: str


@strawberry.type
class Item:
    quantity: int
    product: Product


@strawberry.type
class Order:
    total_cents: int
    items: list[Item]


@strawberry.type
class Query:
    @strawberry.field
    def order(self, info: Info) -> Order:
        seen: list[str] = info.context["seen"]
        selected = [path for path in PATHS if selects(info, path)]
        seen.extend(selected)
        info.context.setdefault("by_key", {})[info.path.key] = set(selected)
        return Order(total_cents=1, items=[Item(quantity=1, product=Product(name="p"))])


SCHEMA = build_schema(query=Query)


def _seen(query: str, variables: dict[str, Any] | None = None) -> set[str]:
    seen: list[str] = []
    result = asyncio.run(SCHEMA.execute(query, variable_values=variables, context_value={"seen": seen}))
    assert result.errors is None, result.errors
    return set(seen)


@pytest.mark.parametrize(
    ("query", "expected"),
    [
        ("{ order { totalCents } }", {"totalCents"}),
        ("{ order { items { quantity } } }", {"items", "items.quantity"}),
        ("{ order { a: items { b: product { c: name } } } }", {"items", "items.product", "items.product.name"}),
        (
            "{ order { ...F } } fragment F on Order { items { ... on Item { product { name } } } }",
            {"items", "items.product", "items.product.name"},
        ),
        ("{ order { __typename } }", set()),
    ],
)
def test_paths_through_aliases_and_fragments(query: str, expected: set[str]) -> None:
    assert _seen(query) == expected
    assert _seen(query) == expected  # memoized per document node: the same answer again


def test_a_conditional_field_counts_as_selected() -> None:
    query = "query($on: Boolean!) { order { totalCents @include(if: $on) items { quantity } } }"
    assert "totalCents" in _seen(query, {"on": False})


def test_merged_fields_are_all_looked_at() -> None:
    assert _seen("{ order { items { quantity } } order { totalCents } }") >= {"items", "totalCents"}


def test_one_fragment_merged_differently_in_two_places() -> None:
    """The answer depends on every merged node, not only the first (which both places share)."""
    context: dict[str, Any] = {"seen": []}
    query = (
        "{ a: order { ...F } b: order { ...F items { product { name } } } } fragment F on Order { items { quantity } }"
    )
    result = asyncio.run(SCHEMA.execute(query, context_value=context))
    assert result.errors is None
    assert "items.product" not in context["by_key"]["a"]
    assert "items.product" in context["by_key"]["b"]


def test_the_memo_keeps_no_document_alive() -> None:
    document = parse("{ order { items { product { name } } } }")
    operation = document.definitions[0]
    assert isinstance(operation, OperationDefinitionNode)
    field = operation.selection_set.selections[0]
    info = SimpleNamespace(field_nodes=[field], fragments={})
    assert selects(info, "items.product")
    alive = weakref.ref(field)
    del document, operation, field, info
    gc.collect()
    assert alive() is None
