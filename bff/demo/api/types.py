"""GraphQL types of the demo API, built from upstream JSON (shape errors become UPSTREAM_ERROR).

Written only against the public API (`bff.Context`, `bff.errors`), as a team's own types are."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from typing import Any, cast
from urllib.parse import quote

import strawberry
from strawberry.types import Info

from bff import (
    Authenticated,
    Context,
    Policy,
    QueryRejected,
    RequiresScopes,
    StepUpRequired,
    Unauthenticated,
    UpstreamError,
    User as SignedInUser,
    selects,
)
from bff.demo.api.loaders import product_loader

MAX_PAGE = 100
MAX_ORDER_LINES = 20
MAX_QUANTITY = 99
#: the Authentication Context Class of a strong sign-in (the dev IdP's second factor), which the
#: demo's ``strong-sign-in`` policy asks for (step-up: STEP_UP_REQUIRED with a login URL)
STRONG_ACR = "urn:bff:loa:2"


#: what reading upstream JSON of an unexpected shape raises (caught by each ``from_json``, without
#: a context manager: those run once per object of an answer)
SHAPE_ERRORS = (KeyError, TypeError, ValueError, AttributeError)


def shape_error(upstream: str) -> UpstreamError:
    return UpstreamError(upstream, f"Upstream {upstream!r} answered an unexpected shape")


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
        try:
            return cls(
                id=strawberry.ID(str(data["id"])),
                name=str(data["name"]),
                price_cents=int(data["priceCents"]),
            )
        except SHAPE_ERRORS:
            raise shape_error("catalog") from None


class CatalogProducts:
    """The products of a page of orders, fetched in one catalog call (through the request's
    DataLoader) before the orders are returned, so that ``product`` and ``totalCents`` read them
    synchronously. A failed call is kept and raised by each field that reads one of its products,
    so the errors are where they were when each field loaded its own products: at
    ``items[i].product`` and at ``totalCents``, with the same message and code."""

    __slots__ = ("found", "parsed")

    def __init__(self, found: dict[str, dict[str, Any] | Exception | None]) -> None:
        self.found = found  # a product's data, None (unknown to the catalog), or its batch's error
        self.parsed: dict[str, Product] = {}  # each product built once, however many items name it

    def get(self, product_id: str) -> Product | None:
        product = self.parsed.get(product_id)
        if product is None:
            data = self.found.get(product_id)
            if isinstance(data, Exception):
                raise data.with_traceback(None)
            if data is None:
                return None
            product = self.parsed[product_id] = Product.from_json(data)
        return product

    @classmethod
    async def fetch(cls, context: Context, orders: list[Order]) -> None:
        """Load every product of ``orders`` in one call (or one per ``max_batch_size``) and give
        them to their items; a failed batch fails only the fields that read its products."""
        ids = list(dict.fromkeys(item.product_id for order in orders for item in order.items))
        loader = context.loader("products", product_loader)
        pending = list(map(loader.load, ids))
        found: dict[str, dict[str, Any] | Exception | None] = {}
        # Awaited one by one, not gathered: they are answered together (one batch), so only the
        # first await waits; gather would add a callback, a scheduled call and a wrapper per key.
        try:
            for product_id, future in zip(ids, pending, strict=True):
                try:
                    found[product_id] = await future
                except Exception as error:
                    found[product_id] = error
        except BaseException:  # a cancellation is not an answer: leave nothing behind (as gather did)
            for future in pending:
                if isinstance(future, asyncio.Future):
                    future.cancel()
            raise
        products = cls(found)
        for order in orders:
            order.products = products
            for item in order.items:
                item.products = products


def _needs_products(info: Info[Context, None]) -> bool:
    """Whether the orders the current field returns will be asked for their products."""
    return selects(info, "items.product") or selects(info, "totalCents")


@strawberry.type
class OrderItem:
    quantity: int
    product_id: strawberry.Private[str]
    products: strawberry.Private[CatalogProducts | None] = None

    @strawberry.field
    def product(self, info: Info[Context, None]) -> Product | None:
        if self.products is None:  # an item nobody prefetched for: load it (graphql-core awaits it)
            return cast("Product | None", self._load(info.context))
        return self.products.get(self.product_id)

    async def _load(self, context: Context) -> Product | None:
        data = await context.loader("products", product_loader).load(self.product_id)
        return Product.from_json(data) if data is not None else None


@strawberry.type
class Order:
    id: strawberry.ID
    placed_at: datetime
    items: list[OrderItem]
    products: strawberry.Private[CatalogProducts | None] = None

    @strawberry.field
    def total_cents(self, info: Info[Context, None]) -> int:
        """Sum of price x quantity; items whose product the catalog does not know count 0."""
        if self.products is None:  # an order nobody prefetched for (graphql-core awaits it)
            return cast(int, self._load_total(info.context))
        return self._total(self.products.get)

    def _total(self, product: Callable[[str], Product | None]) -> int:
        total = 0
        for item in self.items:
            found = product(item.product_id)
            if found is not None:
                total += found.price_cents * item.quantity
        return total

    async def _load_total(self, context: Context) -> int:
        await CatalogProducts.fetch(context, [self])
        assert self.products is not None
        return self._total(self.products.get)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Order:
        try:
            return cls(
                id=strawberry.ID(str(data["id"])),
                placed_at=datetime.fromisoformat(str(data["placedAt"]).replace("Z", "+00:00")),
                items=[
                    OrderItem(quantity=int(item["quantity"]), product_id=str(item["productId"]))
                    for item in data["items"]
                ],
            )
        except SHAPE_ERRORS:
            raise shape_error("accounts") from None


@strawberry.type(description="How the user signed in last (the ID token's acr, amr and auth_time).")
class SignIn:
    acr: str | None
    methods: list[str]
    at: datetime | None

    @classmethod
    def of(cls, user: SignedInUser) -> SignIn:
        at = None if user.auth_time is None else datetime.fromtimestamp(user.auth_time, UTC)
        return cls(acr=user.acr, methods=list(user.amr), at=at)


async def strong_sign_in(user: SignedInUser, arguments: Mapping[str, Any]) -> bool:
    """The demo's ``@policy``: personal security details need a strong (two-factor) sign-in; a
    weaker one is asked to step up rather than refused."""
    if user.acr != STRONG_ACR:
        raise StepUpRequired(acr_values=STRONG_ACR)
    return True


#: the demo schema's policies (``build_schema(policies=...)``)
POLICIES = {"strong-sign-in": strong_sign_in}


@strawberry.type
class User:
    id: strawberry.ID
    name: str
    email: str

    @strawberry.field(  # type: ignore[untyped-decorator]
        description="How you signed in last: needs a strong sign-in (step-up otherwise).",
        directives=[Policy(policies=[["strong-sign-in"]])],
    )
    async def last_sign_in(self, info: Info[Context, None]) -> SignIn | None:
        user = await info.context.user()
        if user is None:
            raise Unauthenticated()
        return SignIn.of(user)

    @strawberry.field
    async def orders(self, info: Info[Context, None], first: int | None = 10) -> list[Order]:
        accounts = info.context.rest("accounts")
        limit = _page(first)
        data = await accounts.get_json(f"/users/{quote(str(self.id), safe='')}/orders", {"limit": limit})
        if not isinstance(data, list):
            raise UpstreamError("accounts", "Upstream 'accounts' answered an unexpected shape")
        orders = [Order.from_json(order) for order in data[:limit]]
        if _needs_products(info):  # every product of the page in one catalog call, before the orders
            await CatalogProducts.fetch(info.context, orders)
        return orders

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> User:
        try:
            return cls(id=strawberry.ID(str(data["id"])), name=str(data["name"]), email=str(data["email"]))
        except SHAPE_ERRORS:
            raise shape_error("accounts") from None


SEARCH_PRODUCTS = """
query Search($query: String!, $first: Int) {
  searchProducts(query: $query, first: $first) { id name priceCents }
}
"""


@strawberry.type
class Query:
    @strawberry.field(  # type: ignore[untyped-decorator]
        description="The signed-in user; null with UNAUTHENTICATED when signed out.",
        directives=[Authenticated()],
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
            "a POST is never retried automatically. Null with UPSTREAM_ERROR when the upstream refuses it, "
            "FORBIDDEN without the orders:write scope."
        ),
        directives=[RequiresScopes(scopes=[["orders:write"]])],
    )
    async def place_order(self, info: Info[Context, None], items: list[OrderLineInput]) -> Order | None:
        if not 0 < len(items) <= MAX_ORDER_LINES:
            raise QueryRejected(f"an order has 1 to {MAX_ORDER_LINES} lines")
        if any(not 0 < line.quantity <= MAX_QUANTITY for line in items):
            raise QueryRejected(f"quantity must be between 1 and {MAX_QUANTITY}")
        body = {"items": [{"productId": str(line.product_id), "quantity": line.quantity} for line in items]}
        # post_json sends a POST, which the upstream client never retries (not idempotent); a call
        # that is safe to repeat says so: request("PUT", path, json=body, idempotent=True)
        order = Order.from_json(await info.context.rest("accounts").post_json("/orders", body))
        if _needs_products(info):
            await CatalogProducts.fetch(info.context, [order])
        return order
