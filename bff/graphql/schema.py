"""`build_schema`: a Strawberry schema from a team's own root types, with the safeguards attached.

What every schema served by `bff` carries: the error mapping (`BFFSchema`), the document gate
(parse and validation caches, token, depth, alias and cost limits, variables checked before any
resolver runs: `bff.graphql.documents.limits`), introspection and field suggestions off in production.

A schema remembers how it was built, so that the app can apply its own `Settings` to it
(`for_settings`): the served schema has the mode of the configuration it runs under, and its limits,
tightened by the schema's own ``limits`` where those are stricter: a floor the settings cannot loosen.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from strawberry.extensions import SchemaExtension
from strawberry.schema.config import StrawberryConfig

from bff.graphql._strawberry import graphql_schema
from bff.graphql.authorization import Authorizer, PolicyFunction
from bff.graphql.documents.limits import Limits, extensions
from bff.graphql.errors import BFFSchema
from bff.settings import Settings

Extension = type[SchemaExtension] | Callable[[], SchemaExtension]

HOW_TO_BUILD = (
    "build it with bff.build_schema: `from bff import build_schema; "
    "schema = build_schema(query=Query, mutation=Mutation)`"
)


class SchemaError(ValueError):
    """A schema `bff` will not serve (it would lose its safeguards); the message says how to fix it."""


@dataclasses.dataclass(frozen=True)
class SchemaOptions:
    """The arguments of `build_schema`, kept so the app can rebuild the schema under its settings."""

    query: type
    mutation: type | None = None
    subscription: type | None = None
    types: tuple[Any, ...] = ()
    extensions: tuple[Extension, ...] = ()
    directives: tuple[Any, ...] = ()
    schema_directives: tuple[Any, ...] = ()
    scalar_overrides: Mapping[object, Any] | None = None
    config: StrawberryConfig | None = None
    limits: Limits = dataclasses.field(default_factory=Limits)
    production: bool = False
    #: the ``limits`` the schema was built with: the strictest the app may serve it with
    floor: Limits | None = None
    #: the ``@policy`` functions by name
    policies: tuple[tuple[str, PolicyFunction], ...] = ()


def build_schema(
    query: type,
    mutation: type | None = None,
    subscription: type | None = None,
    *,
    types: Iterable[Any] = (),
    extensions: Iterable[Extension] = (),
    directives: Iterable[Any] = (),
    schema_directives: Iterable[Any] = (),
    scalar_overrides: Mapping[object, Any] | None = None,
    config: StrawberryConfig | None = None,
    limits: Limits | None = None,
    production: bool = False,
    policies: Mapping[str, PolicyFunction] | None = None,
) -> BFFSchema:
    """A schema of your own root types (``@strawberry.type`` classes), with the error mapping, the
    query limits and the parse/validation caches attached.

    ``extensions`` are your own Strawberry extensions; they run after `bff`'s (which refuse a
    document before anything else sees it). ``limits`` are a floor: the app serves the schema with
    its `Settings`' limits (``BFF_MAX_DEPTH``..., ``BFF_INTROSPECTION``) made at least as strict as
    these, never looser. ``production`` matters only when you execute the schema yourself: the app
    uses ``BFF_ENV``. ``policies`` are the functions ``@policy`` names (`bff.Policy`): a policy
    used and not registered is a `SchemaError`."""
    options = SchemaOptions(
        query=query,
        mutation=mutation,
        subscription=subscription,
        types=tuple(types),
        extensions=tuple(extensions),
        directives=tuple(directives),
        schema_directives=tuple(schema_directives),
        scalar_overrides=scalar_overrides,
        config=config,
        limits=(limits or Limits()).tightened(Limits(introspection=not production)),
        production=production,
        floor=limits,
        policies=tuple(sorted((policies or {}).items(), key=lambda item: item[0])),
    )
    return _build(options)


def _build(options: SchemaOptions) -> BFFSchema:
    # no suggestions ("Did you mean 'secretField'?") wherever introspection is off: they would
    # reveal the schema piece by piece
    quiet = options.production or not options.limits.introspection
    config = dataclasses.replace(options.config or StrawberryConfig(), disable_field_suggestions=quiet)
    schema = BFFSchema(
        query=options.query,
        mutation=options.mutation,
        subscription=options.subscription,
        types=options.types,
        directives=options.directives,
        schema_directives=options.schema_directives,
        scalar_overrides=options.scalar_overrides,
        extensions=[*extensions(options.limits), *options.extensions],
        config=config,
    )
    schema.bff_options = options
    authorizer = Authorizer(dict(options.policies))
    try:
        guarded = authorizer.install(graphql_schema(schema))
    except ValueError as exc:
        raise SchemaError(str(exc)) from None
    schema.bff_authorizer = authorizer if guarded else None
    return schema


def limits_from_settings(settings: Settings) -> Limits:
    return Limits(
        max_depth=settings.max_depth,
        max_tokens=settings.max_tokens,
        max_aliases=settings.max_aliases,
        max_cost=settings.max_cost,
        introspection=settings.introspection_enabled,
    )


def for_settings(schema: Any, settings: Settings) -> BFFSchema:
    """``schema`` with the limits and the mode of ``settings`` (the same object when it has them
    already); raises `SchemaError` for a schema that was not built by `build_schema`."""
    options = getattr(schema, "bff_options", None)
    if not isinstance(schema, BFFSchema) or not isinstance(options, SchemaOptions):
        kind = f"a {type(schema).__module__}.{type(schema).__qualname__}"
        if isinstance(schema, type):
            kind = f"the class {schema.__module__}.{schema.__qualname__}"
        raise SchemaError(
            f"{kind} is not a schema bff can serve with its limits, error mapping and production mode: {HOW_TO_BUILD}"
        )
    wanted = dataclasses.replace(
        options,
        limits=limits_from_settings(settings).tightened(options.floor),
        production=settings.env == "production",
    )
    return schema if wanted == options else _build(wanted)
