"""bff: a Backend-for-Frontend that owns the OIDC login and token refresh server-side.

The public surface a team builds on (everything else may move between versions)::

    from bff import build_schema, Context           # your root types -> a schema with the safeguards
    from bff import UpstreamError, QueryRejected     # the error classes (each carries extensions.code)
    from bff import selects                          # does this field select a path? (prefetch in one call)
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

__version__ = "0.1.0"

_EXPORTS = {
    "build_schema": "bff.graphql.schema",
    "Limits": "bff.graphql.limits",
    "SchemaError": "bff.graphql.schema",
    "Context": "bff.graphql.context",
    "selects": "bff.graphql.selection",
    "Settings": "bff.settings",
    "create_app": "bff.app",
    "load_schema": "bff.app",
    "BFFError": "bff.errors",
    "Unauthenticated": "bff.errors",
    "AuthProviderUnavailable": "bff.errors",
    "UpstreamError": "bff.errors",
    "UpstreamTimeout": "bff.errors",
    "UpstreamUnauthorized": "bff.errors",
    "QueryRejected": "bff.errors",
    "UpstreamTokenRefused": "bff.errors",
    "User": "bff.sessions.models",
}

__all__ = [
    "AuthProviderUnavailable",
    "BFFError",
    "Context",
    "Limits",
    "QueryRejected",
    "SchemaError",
    "Settings",
    "Unauthenticated",
    "UpstreamError",
    "UpstreamTimeout",
    "UpstreamTokenRefused",
    "UpstreamUnauthorized",
    "User",
    "build_schema",
    "create_app",
    "load_schema",
    "selects",
]

if TYPE_CHECKING:
    from bff.app import create_app, load_schema
    from bff.errors import (
        AuthProviderUnavailable,
        BFFError,
        QueryRejected,
        Unauthenticated,
        UpstreamError,
        UpstreamTimeout,
        UpstreamTokenRefused,
        UpstreamUnauthorized,
    )
    from bff.graphql.context import Context
    from bff.graphql.limits import Limits
    from bff.graphql.schema import SchemaError, build_schema
    from bff.graphql.selection import selects
    from bff.sessions.models import User
    from bff.settings import Settings


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'bff' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted([*globals(), *_EXPORTS])
