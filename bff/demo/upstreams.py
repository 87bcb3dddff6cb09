"""The demo upstreams of the contract: REST "accounts" and GraphQL "catalog".

Both require a bearer token (validated by a `TokenValidator`), can add an artificial latency, and
count what they serve so tests and benchmarks can assert the BFF's call pattern.
"""

from __future__ import annotations

import asyncio
import functools
import inspect
import json
import secrets
import time
from collections import Counter
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from graphql import DocumentNode, ExecutionResult, GraphQLError, build_schema, execute, parse, validate
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

from bff.demo import data
from bff.demo.tokens import TokenValidator, token_expiry


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
#: how often an open order-events stream looks at the order (statuses live in this process's memory)
EVENTS_TICK_SECONDS = 0.05
#: a comment line on an idle order-events stream this often, so that clients' idle timeouts hold
EVENTS_HEARTBEAT_SECONDS = 15.0


def _json_array(ref: str) -> dict[str, Any]:
    return {"type": "array", "items": {"$ref": f"#/components/schemas/{ref}"}}


def _answer(schema: dict[str, Any], description: str = "ok") -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": schema}}}


_REFUSED = {"401": {"description": "no valid bearer token"}, "404": {"description": "not the caller's"}}

#: the accounts service's own description (GET /openapi.json), which `bff demo --declarative`
#: mounts as a declarative source (`bff.sources.openapi`)
ACCOUNTS_OPENAPI: dict[str, Any] = {
    "openapi": "3.1.0",
    "info": {"title": "Demo accounts", "version": "1.0"},
    "paths": {
        "/me": {
            "get": {
                "operationId": "me",
                "summary": "The signed-in user",
                "responses": {"200": _answer({"$ref": "#/components/schemas/User"}), **_REFUSED},
            }
        },
        "/users/{userId}/orders": {
            "get": {
                "operationId": "userOrders",
                "summary": "A user's orders, newest first (only the caller's own)",
                "parameters": [
                    {"name": "userId", "in": "path", "required": True, "schema": {"type": "string"}},
                    {"name": "limit", "in": "query", "schema": {"type": "integer", "minimum": 0, "maximum": 100}},
                ],
                "responses": {"200": _answer(_json_array("Order")), **_REFUSED},
            }
        },
        "/orders": {
            "post": {
                "operationId": "placeOrder",
                "summary": "Place an order",
                "requestBody": {
                    "required": True,
                    "content": {"application/json": {"schema": {"$ref": "#/components/schemas/NewOrder"}}},
                },
                "responses": {"201": _answer({"$ref": "#/components/schemas/Order"}, "placed"), **_REFUSED},
            }
        },
        "/orders/{orderId}/status": {
            "get": {
                "operationId": "orderStatus",
                "parameters": [{"name": "orderId", "in": "path", "required": True, "schema": {"type": "string"}}],
                "responses": {"200": _answer({"$ref": "#/components/schemas/OrderStatus"}), **_REFUSED},
            }
        },
    },
    "components": {
        "schemas": {
            "User": {
                "type": "object",
                "required": ["id", "name", "email"],
                "properties": {"id": {"type": "string"}, "name": {"type": "string"}, "email": {"type": "string"}},
            },
            "OrderItem": {
                "type": "object",
                "required": ["productId", "quantity"],
                "properties": {"productId": {"type": "string"}, "quantity": {"type": "integer", "minimum": 1}},
            },
            "Order": {
                "type": "object",
                "required": ["id", "placedAt", "items"],
                "properties": {
                    "id": {"type": "string"},
                    "placedAt": {"type": "string", "format": "date-time"},
                    "items": _json_array("OrderItem"),
                },
            },
            "NewOrder": {
                "type": "object",
                "required": ["items"],
                "properties": {"items": _json_array("OrderItem")},
            },
            "OrderStatus": {
                "type": "object",
                "required": ["orderId", "status"],
                "properties": {
                    "orderId": {"type": "string"},
                    "status": {"type": "string", "enum": list(ORDER_STATUSES)},
                },
            },
        }
    },
}


async def accounts_openapi(request: Request) -> Response:
    """The service's OpenAPI document: public, like the index."""
    return JSONResponse(ACCOUNTS_OPENAPI)


async def accounts_index(request: Request) -> Response:
    """GET at the service's base URL: names the service and its routes, no data, no token needed.
    A base URL that answers (rather than 404) tells `bff check` and the start-up report it is right."""
    return JSONResponse({"service": "accounts", "routes": ["/me", "/users/{id}/orders", "/orders"]})


def accounts_app(validator: TokenValidator, *, latency: float = 0.0, status_step: float = 5.0) -> Starlette:
    """GET /me, GET /users/{id}/orders?limit=N (a user sees only their own orders, newest placed
    first), POST /orders {"items": [{"productId", "quantity"}]} -> 201 with the new order (kept in
    memory; 422 for an unknown product), GET /orders/{id}/status -> {"orderId", "status"} (one of
    `ORDER_STATUSES`, advancing every ``status_step`` seconds from the first look, unless set in
    ``app.state.statuses``; 404 for another user's order) and GET /orders/{id}/events, the same
    as Server-Sent Events (see `order_events`)."""
    stats = UpstreamStats()
    placed: dict[str, list[dict[str, Any]]] = {}
    statuses: dict[str, str] = {}
    first_look: dict[str, float] = {}
    # each order's statuses in the order they were reached: status n (from 1) is event id
    # "<instance>.n", so that an id from before a restart is never taken for one of this run's
    history: dict[str, list[str]] = {}
    instance = secrets.token_hex(4)

    def status_now(order_id: str) -> list[str]:
        """The order's history, brought up to now (steps of the clock no one looked at included)."""
        seen = history.setdefault(order_id, [])
        status = statuses.get(order_id)
        if status is None:
            step = int((time.monotonic() - first_look.setdefault(order_id, time.monotonic())) / status_step)
            step = min(step, len(ORDER_STATUSES) - 1)
            reached = ORDER_STATUSES.index(seen[-1]) if seen and seen[-1] in ORDER_STATUSES else -1
            seen.extend(ORDER_STATUSES[reached + 1 : step + 1] if reached < step else ())
            status = ORDER_STATUSES[step]
        if not seen or seen[-1] != status:
            seen.append(status)
        return seen

    async def own_order(request: Request, route: str) -> tuple[str, str] | Response:
        """(order id, bearer token) of a caller's own order, or the answer refusing it."""
        sub = await _authorize(request, validator, stats)
        if sub is None:
            return _unauthorized()
        order_id = request.path_params["order_id"]
        if not order_id.startswith(f"o-{sub}-"):
            return JSONResponse({"error": "not found"}, status_code=404)
        stats.calls[route] += 1
        await asyncio.sleep(latency)
        return order_id, request.headers["authorization"].partition(" ")[2].strip()

    async def order_status(request: Request) -> Response:
        found = await own_order(request, "GET /orders/{id}/status")
        if isinstance(found, Response):
            return found
        order_id, _token = found
        return JSONResponse({"orderId": order_id, "status": status_now(order_id)[-1]})

    async def order_events(request: Request) -> Response:
        """``event: status`` with ``{"orderId", "status"}``: the current status, then each change,
        ``id:`` counting the order's statuses. With ``Last-Event-ID`` it resumes after that status
        (nothing twice); an id it does not know (from before a restart) starts over with the
        current status. The stream is closed when the bearer token it was opened with expires."""
        found = await own_order(request, "GET /orders/{id}/events")
        if isinstance(found, Response):
            return found
        order_id, token = found
        expires = await token_expiry(validator, token)
        last_instance, _, last = request.headers.get("last-event-id", "").partition(".")
        sent = int(last) if last_instance == instance and last.isdigit() else None

        async def events() -> AsyncIterator[bytes]:
            nonlocal sent
            seen = status_now(order_id)
            if sent is None or sent > len(seen):
                sent = len(seen) - 1
            quiet_since = time.monotonic()
            while expires is None or time.time() < expires:
                seen = status_now(order_id)
                for n in range(sent + 1, len(seen) + 1):
                    body = json.dumps({"orderId": order_id, "status": seen[n - 1]})
                    yield f"id: {instance}.{n}\nevent: status\ndata: {body}\n\n".encode()
                    quiet_since = time.monotonic()
                sent = len(seen)
                if time.monotonic() - quiet_since >= EVENTS_HEARTBEAT_SECONDS:
                    yield b": keep-alive\n\n"
                    quiet_since = time.monotonic()
                await asyncio.sleep(EVENTS_TICK_SECONDS)
            stats.calls["closed on expiry /orders/{id}/events"] += 1

        return StreamingResponse(events(), media_type="text/event-stream", headers={"Cache-Control": "no-store"})

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
            Route("/", accounts_index),
            Route("/openapi.json", accounts_openapi),
            Route("/me", me),
            Route("/users/{user_id}/orders", user_orders),
            Route("/orders", place_order, methods=["POST"]),
            Route("/orders/{order_id}/status", order_status),
            Route("/orders/{order_id}/events", order_events),
        ],
        exception_handlers={_CannotValidate: _cannot_validate},
    )
    app.state.stats = stats
    app.state.placed = placed
    app.state.statuses = statuses
    app.state.history = history
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

    async def sdl(request: Request) -> Response:
        """The service's schema (public): what `bff demo --declarative` mounts as a GraphQL source."""
        return Response(CATALOG_SDL.strip() + "\n", media_type="text/plain; charset=utf-8")

    app = Starlette(
        routes=[Route("/graphql", endpoint, methods=["POST"]), Route("/schema.graphql", sdl)],
        exception_handlers={_CannotValidate: _cannot_validate},
    )
    app.state.stats = stats
    return app
