"""The demo schema, with the extensions every `bff` schema should carry."""

from __future__ import annotations

from collections.abc import Callable

from strawberry.extensions import (
    DisableIntrospection,
    MaxAliasesLimiter,
    MaxTokensLimiter,
    ParserCache,
    QueryDepthLimiter,
    SchemaExtension,
    ValidationCache,
)
from strawberry.schema.config import StrawberryConfig

from bff.api.types import Query
from bff.graphql.errors import BFFSchema


def build_schema(query: type = Query, *, production: bool = False) -> BFFSchema:
    """Built once per app, with the error mapping and limits that refuse abusive documents before
    any resolver runs. Pass your own ``query`` type to serve your API instead of the demo's."""
    # Factories, not instances: Strawberry builds fresh extensions per request (the parser and
    # validation caches are shared across instances of the same size).
    extensions: list[Callable[[], SchemaExtension]] = [
        lambda: ParserCache(maxsize=256),
        lambda: ValidationCache(maxsize=256),
        lambda: QueryDepthLimiter(max_depth=12),
        lambda: MaxAliasesLimiter(max_alias_count=30),
        lambda: MaxTokensLimiter(max_token_count=2000),
    ]
    if production:
        extensions.append(DisableIntrospection)
    return BFFSchema(
        query=query,
        extensions=extensions,
        config=StrawberryConfig(disable_field_suggestions=production),
    )
