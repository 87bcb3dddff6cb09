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
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any, Protocol

import strawberry
from strawberry import Schema as StrawberrySchema
from strawberry.extensions import SchemaExtension
from strawberry.schema.config import StrawberryConfig
from strawberry.schema.name_converter import NameConverter
from strawberry.tools import merge_types
from strawberry.types.base import get_object_definition

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


class MountedSource(Protocol):
    """What a declarative source (`bff.sources`) adds: root classes of generated fields."""

    query: type | None
    mutation: type | None
    types: list[str]
    scalars: dict[object, Any]
    classes: list[Any]


class DeclarativeSource(Protocol):
    """A `bff.sources` source, as `build_schema` sees it (this layer does not import that one)."""

    @property
    def name(self) -> str: ...

    def mount_all(
        self, sources: Sequence[DeclarativeSource], taken_types: Sequence[str] = ()
    ) -> Sequence[MountedSource]: ...


def build_schema(
    query: type | None = None,
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
    sources: Iterable[DeclarativeSource] = (),
) -> BFFSchema:
    """A schema of your own root types (``@strawberry.type`` classes), with the error mapping, the
    query limits and the parse/validation caches attached.

    ``extensions`` are your own Strawberry extensions; they run after `bff`'s (which refuse a
    document before anything else sees it). ``limits`` are a floor: the app serves the schema with
    its `Settings`' limits (``BFF_MAX_DEPTH``..., ``BFF_INTROSPECTION``) made at least as strict as
    these, never looser. ``production`` matters only when you execute the schema yourself: the app
    uses ``BFF_ENV``. ``policies`` are the functions ``@policy`` names (`bff.Policy`): a policy
    used and not registered is a `SchemaError`. ``sources`` (`bff.sources.openapi`, ...) add their
    generated root fields beside yours (``query`` may then be None)."""
    query, mutation, scalars, classes = with_sources(query, mutation, tuple(sources), tuple(types))
    types = [*types, *classes]
    if scalars:
        scalar_overrides = {**scalars, **(scalar_overrides or {})}
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


def add_sources(schema: BFFSchema, sources: Sequence[DeclarativeSource]) -> BFFSchema:
    """``schema`` (built by `build_schema`) with the root fields of ``sources`` added."""
    options = schema.bff_options
    if not sources or not isinstance(options, SchemaOptions):
        return schema
    taken = schema.schema_converter.type_map  # the schema is built: no second build to learn its names
    query, mutation, scalars, classes = with_sources(options.query, options.mutation, sources, options.types, taken)
    overrides = {**scalars, **(options.scalar_overrides or {})}
    types = (*options.types, *classes)
    return _build(
        dataclasses.replace(options, query=query, mutation=mutation, types=types, scalar_overrides=overrides or None)
    )


def with_sources(
    query: type | None,
    mutation: type | None,
    sources: Sequence[DeclarativeSource],
    types: Sequence[Any] = (),
    taken_names: Iterable[str] | None = None,
) -> tuple[type, type | None, dict[object, Any], list[Any]]:
    """``query`` and ``mutation`` with the root fields of ``sources`` merged in, the scalar
    definitions and the classes their types need (a field name taken twice is a `SchemaError`; a
    source's type named like one of yours is renamed, with a warning). ``taken_names``: your types'
    names when a schema of them is built already."""
    if not sources:
        if query is None:
            raise SchemaError(f"a schema needs a Query type: {HOW_TO_BUILD}")
        return query, mutation, {}, []
    taken: set[str] = set(taken_names or ())
    if taken_names is None and query is not None:
        taken.update(StrawberrySchema(query=query, mutation=mutation, types=list(types)).schema_converter.type_map)
    scalars: dict[object, Any] = {}
    classes: list[Any] = []
    queries = [query] if query is not None else []
    mutations = [mutation] if mutation is not None else []
    try:
        every = sources[0].mount_all(sources, sorted(taken))
    except ValueError as exc:
        raise SchemaError(str(exc)) from None
    for mounted in every:
        for root, kept in ((mounted.query, queries), (mounted.mutation, mutations)):
            if root is not None:
                kept.append(root)
        scalars.update(mounted.scalars)
        classes.extend(mounted.classes)
    # GraphQL needs a Query type: sources that mount mutations only, or nothing (every operation
    # refused, each named in a warning), get this one rather than no schema at all
    merged_query = _merged("Query", queries) or _NoQuery
    return merged_query, _merged("Mutation", mutations), scalars, classes


#: Strawberry's default naming (``list_pets`` -> ``listPets``), to find a root field named twice
_NAMES = NameConverter()


def _up() -> bool:
    return True


@strawberry.type(name="Query", description="The sources mount no query field; GraphQL asks for a Query type.")
class _NoQuery:
    sources: bool = strawberry.field(resolver=_up, name="_sources", description="Always true: the schema is up.")


def _merged(name: str, roots: list[type]) -> type | None:
    if not roots:
        return None
    if len(roots) == 1:
        return roots[0]
    seen: dict[str, type] = {}
    for root in roots:
        definition = get_object_definition(root, strict=True)
        for field in definition.fields:
            field_name = _NAMES.from_field(field)  # the name the schema gives it (camelCase by default)
            if field_name in seen:
                raise SchemaError(
                    f"the {name} field {field_name!r} comes from both {_origin(seen[field_name])} and "
                    f"{_origin(root)}: set a PREFIX on the source (BFF_UPSTREAMS__<NAME>__PREFIX) or rename it"
                )
            seen[field_name] = root
    return merge_types(name, tuple(roots))


def _origin(root: type) -> str:
    module = root.__module__
    if module.startswith("bff_sources_generated."):
        return f"source {module.split('.')[1].rsplit('_', 1)[0]!r}"
    return f"{module}.{root.__qualname__}"


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
