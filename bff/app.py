"""The app factory: `create_app(settings)`; `app_from_env()` for ``uvicorn --factory``."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Mapping
from typing import Any

import httpx
from fastapi import FastAPI
from fastapi.middleware.cors import CORSMiddleware
from fastapi.staticfiles import StaticFiles

from bff.api import build_schema
from bff.graphql.router import STATIC_DIR, BFFGraphQLRouter
from bff.resources import open_resources
from bff.settings import Settings
from bff.web import auth, health, native
from bff.web.middleware import CSRFMiddleware, RequestIdMiddleware


def create_app(
    settings: Settings,
    *,
    schema: Any | None = None,
    transports: Mapping[str, httpx.AsyncBaseTransport] | None = None,
) -> FastAPI:
    """A BFF for ``settings``. ``schema`` replaces the demo API; ``transports`` are a test seam."""
    production = settings.env == "production"
    schema = schema if schema is not None else build_schema(production=production)

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
    )
    app.include_router(
        BFFGraphQLRouter(schema, graphiql=settings.graphiql_enabled, include_in_schema=False),
        prefix="/graphql",
    )
    if settings.graphiql_enabled:
        app.mount("/_bff/graphiql", StaticFiles(directory=STATIC_DIR), name="graphiql-assets")
    app.include_router(auth.router)
    app.include_router(native.router)
    app.include_router(health.router)
    auth.install_error_handlers(app)

    allowed = [settings.public_origin, *settings.cors_origins]
    app.add_middleware(CSRFMiddleware, cookie_name=settings.cookie_name, allowed_origins=allowed)
    app.add_middleware(
        CORSMiddleware,
        allow_origins=allowed,
        allow_credentials=True,
        allow_methods=["GET", "POST"],
        allow_headers=["content-type", "x-csrf", "authorization", "x-request-id"],
    )
    app.add_middleware(RequestIdMiddleware)
    return app


def app_from_env() -> FastAPI:
    """Entry point for ``uvicorn --factory bff.app:app_from_env`` (and ``bff serve``)."""
    return create_app(Settings())
