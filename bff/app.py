"""The app factory: `create_app(settings)`; `app_from_env()` for ``uvicorn --factory``."""

from __future__ import annotations

import contextlib
import gc
from collections.abc import AsyncIterator, Mapping
from typing import Any

import httpx
from fastapi import FastAPI
from fastapi.middleware.cors import CORSMiddleware
from fastapi.staticfiles import StaticFiles
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response

from bff.api import build_schema
from bff.graphql.http import STATIC_DIR, GraphQLHTTPHandler
from bff.graphql.limits import Limits
from bff.graphql.persisted import PersistedDocuments, load_manifest
from bff.logs import configure_logging
from bff.resources import open_resources
from bff.settings import Settings
from bff.telemetry import instrument
from bff.web import auth, health, native
from bff.web.middleware import (
    AccessLogMiddleware,
    CSRFMiddleware,
    LastResortMiddleware,
    NoStoreMiddleware,
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
    """A BFF for ``settings``. ``schema`` replaces the demo API; ``transports`` are a test seam."""
    production = settings.env == "production"
    if schema is None:
        limits = Limits(
            max_depth=settings.max_depth,
            max_tokens=settings.max_tokens,
            max_aliases=settings.max_aliases,
            max_cost=settings.max_cost,
            introspection=settings.introspection_enabled,
        )
        schema = build_schema(limits=limits, production=production)

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[dict[str, Any]]:
        async with open_resources(settings, transports=transports) as resources:
            app.state.resources = resources  # for embedding code and tests; requests use their state
            yield {"resources": resources}

    app = FastAPI(
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
    if settings.graphiql_enabled:
        app.mount("/_bff/graphiql", StaticFiles(directory=STATIC_DIR), name="graphiql-assets")
    app.include_router(auth.router)
    app.include_router(native.router)
    app.include_router(health.router)
    auth.install_error_handlers(app)
    app.add_exception_handler(HTTPException, _http_error)

    allowed = [settings.public_origin, *settings.cors_origins]
    app.add_middleware(CSRFMiddleware, cookie_name=settings.cookie_name, allowed_origins=allowed)
    app.add_middleware(
        CORSMiddleware,
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
        instrument(app)
    # added last, so outermost: only Starlette's own ServerErrorMiddleware is outside it, and that
    # one never sees an exception again
    app.add_middleware(LastResortMiddleware)
    return app


def settle_heap() -> None:
    """Move everything built at start-up (modules, schema, app) out of the garbage collector's
    sight: a full collection then walks only what requests create, which keeps its pauses, and so
    the event loop's, short (~60 ms less per full collection on a small machine)."""
    gc.collect()
    gc.freeze()


def app_from_env() -> FastAPI:
    """Entry point for ``uvicorn --factory bff.app:app_from_env`` (and every ``bff serve`` worker)."""
    settings = Settings()
    configure_logging(settings.log_level, json=True)
    app = create_app(settings)
    settle_heap()
    return app
