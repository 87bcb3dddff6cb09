"""The demo upstreams of the contract: REST "accounts" and GraphQL "catalog".

Both require a bearer token (validated by a `TokenValidator`), can add an artificial latency, and
count what they serve so tests and benchmarks can assert the BFF's call pattern.
"""

from __future__ import annotations

import asyncio
import functools
import inspect
import json
import time
from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from graphql import DocumentNode, ExecutionResult, GraphQLError, build_schema, execute, parse, validate
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from bff.demo import data
from bff.demo.tokens import TokenValidator


@dataclass
class UpstreamStats:
    """What an upstream saw: calls by route, refused tokens, and when each call ran."""

    calls: Counter[str] = field(default_factory=Counter)
    unauthorized: int = 0
    traceparents: list[str] = field(default_factory=list)
    spans: list[tuple[str, float, float]] = field(default_factory=list)

    def reset(self) -> None:
        self.calls.clear()
        self.unauthorized = 0
        self.spans.clear()


class _CannotValidate(Exception):
    """The token could not be checked (the IdP is slow or down): 503, not 401, so that callers
    do not take a perfectly good token for a revoked one."""


async def _authorize(request: Request, validator: TokenValidator, stats: UpstreamStats) -> str | None:
    scheme, _, token = request.headers.get("authorization", "").partition(" ")
    if scheme.lower() != "bearer" or not token:
        stats.unauthorized += 1
        return None
    try:
        subject = await validator.subject(token.strip())
    except Exception as exc:  # whatever broke, the answer is "cannot validate now"
        raise _CannotValidate() from exc
    if subject is None:
        stats.unauthorized += 1
    return subject


def _cannot_validate(request: Request, exc: Exception) -> Response:
    return JSONResponse({"error": "temporarily_unavailable"}, status_code=503)


def _unauthorized() -> Response:
    return JSONResponse(
        {"error": "invalid_token"},
        status_code=401,
        headers={"WWW-Authenticate": 'Bearer error="invalid_token"'},
    )


ORDER_STATUSES = ("PLACED", "PACKED", "SHIPPED", "DELIVERED")


def accounts_app(validator: TokenValidator, *, latency: float = 0.0, status_step: float = 5.0) -> Starlette:
    """GET /me, GET /users/{id}/orders?limit=N (a user sees only their own orders, newest placed
    first), POST /orders {"items": [{"productId", "quantity"}]} -> 201 with the new order (kept in
    memory; 422 for an unknown product) and GET /orders/{id}/status -> {"orderId", "status"} (one of
    `ORDER_STATUSES`, advancing every ``status_step`` seconds from the first look, unless set in
    ``app.state.statuses``; 404 for another user's order)."""
    stats = UpstreamStats()
    placed: dict[str, list[dict[str, Any]]] = {}
    statuses: dict[str, str] = {}
    first_look: dict[str, float] = {}

    async def order_status(request: Request) -> Response:
        sub = await _authorize(request, validator, stats)
        if sub is None:
            return _unauthorized()
        order_id = request.path_params["order_id"]
        if not order_id.startswith(f"o-{sub}-"):
            return JSONResponse({"error": "not found"}, status_code=404)
        stats.calls["GET /orders/{id}/status"] += 1
        await asyncio.sleep(latency)
        status = statuses.get(order_id)
        if status is None:
            step = int((time.monotonic() - first_look.setdefault(order_id, time.monotonic())) / status_step)
            status = ORDER_STATUSES[min(step, len(ORDER_STATUSES) - 1)]
        return JSONResponse({"orderId": order_id, "status": status})

    async def me(request: Request) -> Response:
        started = time.monotonic()
        sub = await _authorize(request, validator, stats)
        if sub is None:
            return _unauthorized()
        stats.calls["GET /me"] += 1
        if "traceparent" in request.headers:
            stats.traceparents.append(request.headers["traceparent"])
        await asyncio.sleep(latency)
        stats.spans.append(("me", started, time.monotonic()))
        return JSONResponse(data.user(sub))

    async def user_orders(request: Request) -> Response:
        started = time.monotonic()
        sub = await _authorize(request, validator, stats)
        if sub is None:
            return _unauthorized()
        user_id = request.path_params["user_id"]
        if user_id != sub:
            return JSONResponse({"error": "forbidden"}, status_code=403)
        try:
            limit = max(0, min(int(request.query_params.get("limit", "10")), 100))
        except ValueError:
            return JSONResponse({"error": "limit must be an integer"}, status_code=400)
        stats.calls["GET /users/{id}/orders"] += 1
        await asyncio.sleep(latency)
        stats.spans.append(("orders", started, time.monotonic()))
        mine = placed.get(user_id, [])[::-1]
        return JSONResponse((mine + data.orders(user_id, limit))[:limit])

    async def place_order(request: Request) -> Response:
        sub = await _authorize(request, validator, stats)
        if sub is None:
            return _unauthorized()
        stats.calls["POST /orders"] += 1
        try:
            body = json.loads(await request.body())
            items = [{"productId": str(i["productId"]), "quantity": int(i["quantity"])} for i in body["items"]]
        except (ValueError, KeyError, TypeError):
            return JSONResponse({"error": 'expected {"items": [{"productId", "quantity"}]}'}, status_code=400)
        unknown = [item["productId"] for item in items if item["productId"] not in data.PRODUCTS]
        if not items or unknown:
            return JSONResponse({"error": "unknown products", "productIds": unknown}, status_code=422)
        await asyncio.sleep(latency)
        mine = placed.setdefault(sub, [])
        order = {
            "id": f"o-{sub}-new-{len(mine) + 1}",
            "placedAt": datetime.now(UTC).isoformat(),
            "items": items,
        }
        mine.append(order)
        return JSONResponse(order, status_code=201)

    app = Starlette(
        routes=[
            Route("/me", me),
            Route("/users/{user_id}/orders", user_orders),
            Route("/orders", place_order, methods=["POST"]),
            Route("/orders/{order_id}/status", order_status),
        ],
        exception_handlers={_CannotValidate: _cannot_validate},
    )
    app.state.stats = stats
    app.state.placed = placed
    app.state.statuses = statuses
    return app


CATALOG_SDL = """
type Product { id: ID!, name: String!, priceCents: Int! }
type Query {
  productsByIds(ids: [ID!]!): [Product]!
  searchProducts(query: String!, first: Int = 10): [Product!]!
}
"""


def catalog_app(validator: TokenValidator, *, latency: float = 0.0) -> Starlette:
    """POST {query, variables} at ``/graphql``."""
    stats = UpstreamStats()
    schema = build_schema(CATALOG_SDL)

    @functools.lru_cache(maxsize=256)
    def parsed(query: str) -> DocumentNode | list[GraphQLError]:
        """Parse and validate each distinct document once (the BFF sends the same few)."""
        try:
            document = parse(query)
        except GraphQLError as error:
            return [error]
        errors = validate(schema, document)
        return errors or document

    root = {
        "productsByIds": lambda _info, ids: [data.PRODUCTS.get(i) for i in ids],
        "searchProducts": lambda _info, query, first=10: data.search(query, first),
    }

    async def endpoint(request: Request) -> Response:
        started = time.monotonic()
        if await _authorize(request, validator, stats) is None:
            return _unauthorized()
        try:
            body = json.loads(await request.body())
            query, variables = body["query"], body.get("variables") or {}
        except (ValueError, KeyError, TypeError):
            return JSONResponse({"errors": [{"message": "expected JSON {query, variables}"}]}, status_code=400)
        stats.calls["POST /graphql"] += 1
        await asyncio.sleep(latency)
        document = parsed(query)
        if isinstance(document, list):
            result = ExecutionResult(None, document)
        else:
            outcome = execute(schema, document, root_value=root, variable_values=variables)
            result = await outcome if inspect.isawaitable(outcome) else outcome
        stats.spans.append(("catalog", started, time.monotonic()))
        payload: dict[str, Any] = {"data": result.data}
        if result.errors:
            payload["errors"] = [error.formatted for error in result.errors]
        return JSONResponse(payload)

    app = Starlette(
        routes=[Route("/graphql", endpoint, methods=["POST"])], exception_handlers={_CannotValidate: _cannot_validate}
    )
    app.state.stats = stats
    return app
