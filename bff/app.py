"""The app factory: `create_app(settings)`; `app_from_env()` for ``uvicorn --factory``; and
`load_schema`, which turns a ``package.module:attribute`` reference (``--schema``, ``BFF_SCHEMA``)
into the schema to serve."""

from __future__ import annotations

import contextlib
import importlib
import logging
import os
import sys
from collections.abc import AsyncIterator, Mapping
from typing import Any

import httpx
from fastapi import FastAPI
from fastapi.staticfiles import StaticFiles
from pydantic import ValidationError
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response
from starlette.types import ASGIApp, Receive, Scope, Send
from strawberry import Schema as StrawberrySchema

from bff.graphql.documents.persisted import PersistedDocuments, load_manifest
from bff.graphql.errors import BFFSchema
from bff.graphql.schema import HOW_TO_BUILD, SchemaError, add_sources, build_schema, for_settings
from bff.graphql.transport.http import STATIC_DIR, GraphQLHTTPHandler
from bff.graphql.transport.websocket import GraphQLWebSocketHandler
from bff.logs import configure_logging
from bff.resources import open_resources
from bff.runtime import settle_heap
from bff.serving import SignalsEndStreams
from bff.settings import Settings, invalid_configuration, unknown_variable_message, unknown_variables
from bff.telemetry import instrument
from bff.web import auth, health, native, sessions_api
from bff.web.middleware import (
    AccessLogMiddleware,
    BodyLimitMiddleware,
    CSRFMiddleware,
    GraphQLEntry,
    LastResortMiddleware,
    NoStoreMiddleware,
    OriginLoggingCORSMiddleware,
    RefusedOrigins,
    RequestIdMiddleware,
    SecurityHeadersMiddleware,
)
from bff.web.responses import error_response


async def _http_error(request: Request, exc: Exception) -> Response:
    """Unknown paths and methods are JSON answers like every other refusal."""
    status = exc.status_code if isinstance(exc, HTTPException) else 500
    detail = exc.detail if isinstance(exc, HTTPException) else "Internal server error"
    error = {404: "not_found", 405: "method_not_allowed"}.get(status, "http_error")
    headers = exc.headers if isinstance(exc, HTTPException) and exc.headers else {}
    response = error_response(status, error, str(detail))
    response.headers.update(headers)
    return response


def create_app(
    settings: Settings,
    *,
    schema: Any | None = None,
    transports: Mapping[str, httpx.AsyncBaseTransport] | None = None,
) -> FastAPI:
    """A BFF for ``settings``, serving ``schema`` (default: the one ``settings.schema_ref`` names).

    The schema must come from `bff.build_schema`; it is served with the limits, introspection and
    suggestion rules of ``settings`` whatever it was built with (`SchemaError` otherwise).
    ``transports`` are a test seam: per-upstream (or ``"oidc"``) transports instead of sockets."""
    production = settings.env == "production"
    schema = for_settings(settings_schema(settings) if schema is None else schema, settings)

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[dict[str, Any]]:
        async with open_resources(settings, transports=transports) as resources:
            app.state.resources = resources  # for embedding code and tests; requests use their state
            # the discovery look /readyz shares for a few seconds (issue 24)
            state = {"resources": resources, "discovery": health.DiscoveryCheck()}
            # under plain uvicorn, SIGTERM/SIGINT end the streams first, as `bff serve` does
            signals = SignalsEndStreams(state)
            signals.install()
            try:
                yield state
            finally:
                signals.uninstall()

    app = BFFApp(
        title="bff",
        lifespan=lifespan,
        docs_url=None if production else "/docs",
        redoc_url=None,
        openapi_url=None if production else "/openapi.json",
        # Starlette's slash redirect builds its Location from the Host header: "/x/" is a 404 instead
        redirect_slashes=False,
    )
    handler = GraphQLHTTPHandler(
        schema,
        persisted=PersistedDocuments(
            load_manifest(settings.trusted_documents) if settings.trusted_documents else None,
            apq=settings.persisted_queries,
        ),
        graphiql=settings.graphiql_enabled,
        max_body_bytes=settings.max_body_bytes,
        batch_max_operations=settings.batch_max_operations,
    )
    app.add_api_route("/graphql", handler, methods=["GET", "POST", "PUT", "PATCH", "DELETE"], include_in_schema=False)
    # subscriptions over graphql-transport-ws on the same path (the Origin rule: CSRFMiddleware)
    sockets = GraphQLWebSocketHandler(
        schema, handler.documents, max_message_bytes=settings.max_body_bytes, direct=handler.direct
    )
    app.router.add_websocket_route("/graphql", sockets.handle)
    if settings.graphiql_enabled:
        app.mount("/_bff/graphiql", StaticFiles(directory=STATIC_DIR), name="graphiql-assets")
    app.include_router(auth.router)
    app.include_router(native.router)
    app.include_router(sessions_api.router)
    app.include_router(health.router)
    auth.install_error_handlers(app)
    app.add_exception_handler(HTTPException, _http_error)

    # added first, so innermost: inside every bff middleware below, past FastAPI's own layers
    app.add_middleware(GraphQLRoute, handler=handler, route=_route(app, "/graphql"))
    # one body limit for every route (issue 24); inside the access log, the request id and CORS
    app.add_middleware(BodyLimitMiddleware, max_bytes=settings.max_body_bytes)
    allowed = [settings.public_origin, *settings.cors_origins]
    refused = RefusedOrigins(settings.public_origin)  # each refused origin logged once, with the setting
    app.add_middleware(CSRFMiddleware, cookie_name=settings.cookie_name, allowed_origins=allowed, refused=refused)
    app.add_middleware(
        OriginLoggingCORSMiddleware,
        refused=refused,
        allow_origins=allowed,
        allow_credentials=True,
        allow_methods=["GET", "POST"],
        allow_headers=["content-type", "x-csrf", "authorization", "x-request-id"],
    )
    if production:
        app.add_middleware(SecurityHeadersMiddleware)
    app.add_middleware(NoStoreMiddleware)
    app.add_middleware(AccessLogMiddleware)
    app.add_middleware(RequestIdMiddleware)
    if settings.otel_enabled:
        instrument(app)  # its middleware must see every request: no GraphQLEntry
    else:
        app.graphql_entry = GraphQLEntry(
            handler,
            route=_route(app, "/graphql"),
            # the same rule as the stack's (only its `refusal` is used)
            csrf=CSRFMiddleware(app.router, cookie_name=settings.cookie_name, allowed_origins=allowed, refused=refused),
            cors_origins=allowed,
            max_bytes=settings.max_body_bytes,
            security_headers=production,
        )
    # added last, so outermost: only Starlette's own ServerErrorMiddleware is outside it, and that
    # one never sees an exception again
    app.add_middleware(LastResortMiddleware)
    return app


def settings_schema(settings: Settings) -> BFFSchema:
    """The schema ``settings`` serve: ``BFF_SCHEMA``'s, with the declarative sources of the upstreams
    (``BFF_UPSTREAMS__<NAME>__OPENAPI``/``__GRAPHQL``) added; the sources alone when they are
    configured and ``BFF_SCHEMA`` is not."""
    from bff.sources import from_settings

    declared = from_settings(settings)
    if not declared:
        return load_schema(settings.schema_ref)
    if "schema_ref" not in settings.model_fields_set:
        return build_schema(sources=declared)
    return add_sources(load_schema(settings.schema_ref), declared)


def load_schema(reference: str) -> BFFSchema:
    """The schema ``package.module:attribute`` names, imported like uvicorn imports an app (the
    working directory is on the path). Raises `SchemaError` with a one-line message for a
    reference that names nothing, or something that is not a schema built by `bff.build_schema`."""
    module_name, sep, attribute = reference.partition(":")
    if not sep or not module_name or not attribute:
        raise SchemaError(f"schema reference {reference!r} must look like package.module:attribute")
    cwd = os.getcwd()
    if cwd not in sys.path and "" not in sys.path:
        # last, not first: a stray file in the working directory (a json.py, a redis.py) must not
        # shadow an installed module for the whole process
        sys.path.append(cwd)
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        missing = getattr(exc, "name", None)
        if missing and (module_name == missing or module_name.startswith(missing + ".")):
            raise SchemaError(f"schema reference {reference!r}: no module named {missing!r}") from None
        raise SchemaError(f"schema reference {reference!r}: importing {module_name} failed: {exc}") from None
    value: Any = module
    for part in attribute.split("."):
        try:
            value = getattr(value, part)
        except AttributeError:
            raise SchemaError(f"schema reference {reference!r}: {module_name} has no attribute {attribute!r}") from None
    if not isinstance(value, BFFSchema) or value.bff_options is None:
        if isinstance(value, StrawberrySchema):
            kind = "a strawberry.Schema built without bff.build_schema (no limits, error mapping, production mode)"
        elif isinstance(value, type):
            kind = f"the class {value.__qualname__}"
        else:
            kind = f"a {type(value).__qualname__}"
        raise SchemaError(f"schema reference {reference!r} names {kind}, not a schema: {HOW_TO_BUILD}")
    return value


class BFFApp(FastAPI):
    """FastAPI, with ``POST /graphql`` taken by `GraphQLEntry` before FastAPI's and our middleware
    stacks when every check of theirs passes (`GraphQLEntry.takes`); everything else goes through
    them as usual."""

    graphql_entry: GraphQLEntry | None = None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        entry = self.graphql_entry
        if entry is not None and scope["type"] == "http" and not self.root_path and entry.takes(scope):
            scope["app"] = self
            await entry(scope, receive, send)
            return
        await super().__call__(scope, receive, send)


class GraphQLRoute:
    """HTTP ``/graphql`` straight to its handler. It sits inside every bff middleware (request id,
    access log, CORS, the CSRF/Origin rule, the body limit, the last-resort guard: nothing of them is
    skipped), but past FastAPI's exception and exit-stack layers, its router and its endpoint
    wrapper, which the handler needs none of (it answers every refusal itself; anything it raises
    reaches `LastResortMiddleware` as before). Measured with scripts/bench_cpu.py (issue 26): see
    BENCHMARKS.md's ladder. The route stays registered, for the access log's label and for anything
    that lists the app's routes."""

    def __init__(self, app: ASGIApp, *, handler: GraphQLHTTPHandler, route: Any) -> None:
        self.app = app
        self.handler = handler
        self.route = route

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"] != "/graphql":
            await self.app(scope, receive, send)
            return
        scope["route"] = self.route
        response = await self.handler(Request(scope, receive))
        await response(scope, receive, send)


def _route(app: FastAPI, path: str) -> Any:
    return next(route for route in app.router.routes if getattr(route, "path", None) == path)


def app_from_env() -> FastAPI:
    """Entry point for ``uvicorn --factory bff.app:app_from_env`` (and every ``bff serve`` worker):
    settings from the environment, the schema ``BFF_SCHEMA`` names, JSON logs with the ``bff.access``
    line and uvicorn's own access log silenced (it would log query strings: authorization codes).
    A bad configuration or schema reference ends the process with one line on stderr."""
    try:
        settings = Settings()
    except ValidationError as exc:
        raise SystemExit("bff: " + invalid_configuration(exc)) from None
    configure_logging(settings.log_level, json=True)
    _route_uvicorn_logs()
    for name in unknown_variables(os.environ):
        logging.getLogger("bff").warning(unknown_variable_message(name))
    try:
        app = create_app(settings)
    except SchemaError as exc:
        raise SystemExit(f"bff: {exc}") from None
    settle_heap()
    return app


def _route_uvicorn_logs() -> None:
    """Under ``uvicorn --factory`` uvicorn has already installed its own handlers: its lines go
    through ours instead (JSON), and its access log (request lines with query strings) is dropped
    whatever ``--access-log`` says; `AccessLogMiddleware` writes ``bff.access`` instead."""
    for name in ("uvicorn", "uvicorn.error", "uvicorn.access"):
        logger = logging.getLogger(name)
        logger.handlers.clear()
        logger.propagate = True
    logging.getLogger("uvicorn.access").setLevel(logging.WARNING)
