"""bff: a Backend-for-Frontend that owns the OIDC login and token refresh server-side.

The public surface a team builds on (everything else may move between versions)::

    from bff import build_schema, Context           # your root types -> a schema with the safeguards
    from bff import UpstreamError, QueryRejected     # the error classes (each carries extensions.code)
    from bff import selects                          # does this field select a path? (prefetch in one call)
    from bff import User, RestClient, GraphQLClient  # what the context hands a resolver
    from bff import Settings, create_app             # configuration and the app factory
    import bff.testing                               # a signed-in test client, upstream mocks

In a resolver, ``await info.context.user()`` is the signed-in `User` (or None), and
``info.context.rest("name")``, ``info.context.graphql("name")`` and ``info.context.loader("key", factory)``
are the upstream clients and per-request DataLoaders.
Names are imported on first use, so ``import bff`` stays cheap.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

__version__ = "0.3.0"

#: the public surface, name -> module; `__all__` is its keys (declared once, here)
_EXPORTS = {
    "build_schema": "bff.graphql.schema",
    "Authenticated": "bff.graphql.authorization",
    "RequiresScopes": "bff.graphql.authorization",
    "Policy": "bff.graphql.authorization",
    "PolicyFunction": "bff.graphql.authorization",
    "Limits": "bff.graphql.documents.limits",
    "SchemaError": "bff.graphql.schema",
    "Context": "bff.graphql.context",
    "ClientRequest": "bff.graphql.context",
    "User": "bff.sessions.models",
    "selects": "bff.graphql.selection",
    "RestClient": "bff.upstream.rest",
    "GraphQLClient": "bff.upstream.graphql",
    "UpstreamEvent": "bff.upstream.sse",
    "Backoff": "bff.upstream.sse",
    "Settings": "bff.settings",
    "create_app": "bff.app",
    "load_schema": "bff.app",
    "BFFError": "bff.errors",
    "Unauthenticated": "bff.errors",
    "Forbidden": "bff.errors",
    "StepUpRequired": "bff.errors",
    "AuthProviderUnavailable": "bff.errors",
    "UpstreamError": "bff.errors",
    "UpstreamTimeout": "bff.errors",
    "UpstreamUnauthorized": "bff.errors",
    "UpstreamTokenRefused": "bff.errors",
    "QueryRejected": "bff.errors",
}

__all__ = sorted(_EXPORTS)

# explicit re-exports (``X as X``) for type checkers, which cannot read a computed `__all__`
if TYPE_CHECKING:
    from bff.app import create_app as create_app, load_schema as load_schema
    from bff.errors import (
        AuthProviderUnavailable as AuthProviderUnavailable,
        BFFError as BFFError,
        Forbidden as Forbidden,
        QueryRejected as QueryRejected,
        StepUpRequired as StepUpRequired,
        Unauthenticated as Unauthenticated,
        UpstreamError as UpstreamError,
        UpstreamTimeout as UpstreamTimeout,
        UpstreamTokenRefused as UpstreamTokenRefused,
        UpstreamUnauthorized as UpstreamUnauthorized,
    )
    from bff.graphql.authorization import (
        Authenticated as Authenticated,
        Policy as Policy,
        PolicyFunction as PolicyFunction,
        RequiresScopes as RequiresScopes,
    )
    from bff.graphql.context import ClientRequest as ClientRequest, Context as Context
    from bff.graphql.documents.limits import Limits as Limits
    from bff.graphql.schema import SchemaError as SchemaError, build_schema as build_schema
    from bff.graphql.selection import selects as selects
    from bff.sessions.models import User as User
    from bff.settings import Settings as Settings
    from bff.upstream.graphql import GraphQLClient as GraphQLClient
    from bff.upstream.rest import RestClient as RestClient
    from bff.upstream.sse import Backoff as Backoff, UpstreamEvent as UpstreamEvent


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'bff' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted([*globals(), *_EXPORTS])
