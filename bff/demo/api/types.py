"""GraphQL types of the demo API, built from upstream JSON (shape errors become UPSTREAM_ERROR).

Written only against the public API (`bff.Context`, `bff.errors`), as a team's own types are."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime
from typing import Any
from urllib.parse import quote

import strawberry
from strawberry.types import Info

from bff import Context, QueryRejected, UpstreamError
from bff.demo.api.loaders import product_loader

MAX_PAGE = 100
MAX_ORDER_LINES = 20
MAX_QUANTITY = 99


@contextmanager
def _shape(upstream: str) -> Iterator[None]:
    try:
        yield
    except (KeyError, TypeError, ValueError, AttributeError):
        raise UpstreamError(upstream, f"Upstream {upstream!r} answered an unexpected shape") from None


def _page(first: int | None) -> int:
    if first is None:
        return 10
    if first < 0 or first > MAX_PAGE:
        raise QueryRejected(f"first must be between 0 and {MAX_PAGE}")
    return first


@strawberry.type
class Product:
    id: strawberry.ID
    name: str
    price_cents: int

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Product:
        with _shape("catalog"):
            return cls(
                id=strawberry.ID(str(data["id"])),
                name=str(data["name"]),
                price_cents=int(data["priceCents"]),
            )


@strawberry.type
class OrderItem:
    quantity: int
    product_id: strawberry.Private[str]

    @strawberry.field
    async def product(self, info: Info[Context, None]) -> Product | None:
        data = await info.context.loader("products", product_loader).load(self.product_id)
        return Product.from_json(data) if data is not None else None


@strawberry.type
class Order:
    id: strawberry.ID
    placed_at: datetime
    items: list[OrderItem]

    @strawberry.field
    async def total_cents(self, info: Info[Context, None]) -> int:
        """Sum of price x quantity; items whose product the catalog does not know count 0."""
        loader = info.context.loader("products", product_loader)
        products = await loader.load_many([item.product_id for item in self.items])
        total = 0
        for item, product in zip(self.items, products, strict=True):
            if product is not None:
                total += Product.from_json(product).price_cents * item.quantity
        return total

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Order:
        with _shape("accounts"):
            return cls(
                id=strawberry.ID(str(data["id"])),
                placed_at=datetime.fromisoformat(str(data["placedAt"]).replace("Z", "+00:00")),
                items=[
                    OrderItem(quantity=int(item["quantity"]), product_id=str(item["productId"]))
                    for item in data["items"]
                ],
            )


@strawberry.type
class User:
    id: strawberry.ID
    name: str
    email: str

    @strawberry.field
    async def orders(self, info: Info[Context, None], first: int | None = 10) -> list[Order]:
        accounts = info.context.rest("accounts")
        limit = _page(first)
        data = await accounts.get_json(f"/users/{quote(str(self.id), safe='')}/orders", {"limit": limit})
        if not isinstance(data, list):
            raise UpstreamError("accounts", "Upstream 'accounts' answered an unexpected shape")
        return [Order.from_json(order) for order in data[:limit]]

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> User:
        with _shape("accounts"):
            return cls(id=strawberry.ID(str(data["id"])), name=str(data["name"]), email=str(data["email"]))


SEARCH_PRODUCTS = """
query Search($query: String!, $first: Int) {
  searchProducts(query: $query, first: $first) { id name priceCents }
}
"""


@strawberry.type
class Query:
    @strawberry.field(  # type: ignore[untyped-decorator]
        description="The signed-in user; null with UNAUTHENTICATED when signed out."
    )
    async def viewer(self, info: Info[Context, None]) -> User | None:
        return User.from_json(await info.context.rest("accounts").get_json("/me"))

    @strawberry.field
    async def search_products(self, info: Info[Context, None], query: str, first: int | None = 10) -> list[Product]:
        data = await info.context.graphql("catalog").execute(SEARCH_PRODUCTS, {"query": query, "first": _page(first)})
        products = data.get("searchProducts")
        if not isinstance(products, list):
            raise UpstreamError("catalog", "Upstream 'catalog' answered an unexpected shape")
        return [Product.from_json(p) for p in products]


@strawberry.input(description="One line of a new order.")
class OrderLineInput:
    product_id: strawberry.ID
    quantity: int


@strawberry.type
class Mutation:
    @strawberry.mutation(  # type: ignore[untyped-decorator]
        description=(
            "Places an order for the signed-in user (POST /orders on the accounts upstream). Sent once: "
            "a POST is never retried automatically. Null with UPSTREAM_ERROR when the upstream refuses it."
        )
    )
    async def place_order(self, info: Info[Context, None], items: list[OrderLineInput]) -> Order | None:
        if not 0 < len(items) <= MAX_ORDER_LINES:
            raise QueryRejected(f"an order has 1 to {MAX_ORDER_LINES} lines")
        if any(not 0 < line.quantity <= MAX_QUANTITY for line in items):
            raise QueryRejected(f"quantity must be between 1 and {MAX_QUANTITY}")
        body = {"items": [{"productId": str(line.product_id), "quantity": line.quantity} for line in items]}
        # post_json sends a POST, which the upstream client never retries (not idempotent); a call
        # that is safe to repeat says so: request("PUT", path, json=body, idempotent=True)
        return Order.from_json(await info.context.rest("accounts").post_json("/orders", body))
