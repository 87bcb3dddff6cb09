"""The demo schema, with the extensions every `bff` schema should carry."""

from __future__ import annotations

from strawberry.schema.config import StrawberryConfig

from bff.api.types import Query
from bff.graphql.errors import BFFSchema
from bff.graphql.limits import Limits, extensions


def build_schema(query: type = Query, *, limits: Limits | None = None, production: bool = False) -> BFFSchema:
    """Built once per app, with the error mapping and the limits that refuse abusive documents
    before any resolver runs. Pass your own ``query`` type to serve your API instead of the demo's."""
    limits = limits or Limits(introspection=not production)
    return BFFSchema(
        query=query,
        extensions=extensions(limits),
        config=StrawberryConfig(disable_field_suggestions=production),
    )
