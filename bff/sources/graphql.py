"""Remote GraphQL sources: a GraphQL service's root fields on our graph, from its SDL or from
introspection at start, each field's whole sub-selection delegated to the service (`bff.sources.delegate`).

The service's object types, interfaces, unions, enums, input types and custom scalars become Strawberry
types of the same names (a name taken in the schema is renamed, with a warning); its Query fields
become our Query fields and its Mutation fields our Mutation fields, each named as the service names it
(after ``prefix``). The result is Python source: the declarative mount executes it and
`bff sources generate` writes it for a team to take over, so both serve the same answers.

Root fields are nullable here whatever the service says: a failing service nulls its own fields,
never the team's whole answer. Subscriptions, fields that return a root type, the service's own
executable directives and defaults a module cannot write are named in `Generated.warnings`, one
line each, never a crash."""

from __future__ import annotations

import builtins
import json
import keyword
import textwrap
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from graphql import (
    BooleanValueNode,
    DirectiveLocation,
    EnumValueNode,
    FloatValueNode,
    GraphQLArgument,
    GraphQLEnumType,
    GraphQLError,
    GraphQLField,
    GraphQLInputField,
    GraphQLInputObjectType,
    GraphQLInterfaceType,
    GraphQLList,
    GraphQLNamedType,
    GraphQLNonNull,
    GraphQLObjectType,
    GraphQLScalarType,
    GraphQLSchema,
    GraphQLUnionType,
    IntValueNode,
    NullValueNode,
    StringValueNode,
    Undefined,
    build_ast_schema,
    build_client_schema,
    get_introspection_query,
    get_named_type,
    is_introspection_type,
    is_non_null_type,
    is_scalar_type,
    is_specified_directive,
    is_specified_scalar_type,
    parse,
)

from bff.sources.links import RemoteOperation
from bff.sources.mount import Mounted, SourceError, mount, send_at_start
from bff.sources.names import Unique, snake
from bff.sources.openapi import Generated

__all__ = ["GraphQLGenerator", "GraphQLSource", "graphql", "introspect"]

#: the scalars every GraphQL schema has, as Python annotations
_BUILTIN_SCALARS = {"String": "str", "Int": "int", "Float": "float", "Boolean": "bool", "ID": "strawberry.ID"}
#: a service's type of one of these names (not its root) is renamed: our roots have them
_ROOT_NAMES = frozenset({"Query", "Mutation", "Subscription"})
#: names a class body may not bind: the module's own names and the builtins annotations use
_CLASS_RESERVED = frozenset({"list", "str", "int", "float", "bool", "object", "classmethod", "cls", "l", "O", "I"})
#: names the generated module's own code uses
_MODULE_NAMES = frozenset(
    {
        "strawberry",
        "enum",
        "dg",
        "Annotated",
        "Any",
        "NewType",
        "SCALARS",
        "UPSTREAM",
        "remote",
        "Query",
        "Mutation",
        "TYPES",
    }
)
_EXECUTABLE = frozenset(
    {
        DirectiveLocation.QUERY,
        DirectiveLocation.MUTATION,
        DirectiveLocation.SUBSCRIPTION,
        DirectiveLocation.FIELD,
        DirectiveLocation.FRAGMENT_DEFINITION,
        DirectiveLocation.FRAGMENT_SPREAD,
        DirectiveLocation.INLINE_FRAGMENT,
        DirectiveLocation.VARIABLE_DEFINITION,
    }
)
#: the longest line the generated code writes (the project's ruff line length)
LINE = 120


@dataclass
class GraphQLSource:
    """A remote GraphQL service, the upstream ``name`` (see `graphql`)."""

    name: str
    sdl: str | None = None
    prefix: str = ""
    endpoint: str | None = None
    timeout: float = 10.0
    #: the BFF's own token (client credentials), asked for only when the service refuses introspection
    token: Callable[[], str | None] | None = field(default=None, repr=False, compare=False)
    _remote_schema: tuple[GraphQLSchema, str, list[str]] | None = field(
        default=None, init=False, repr=False, compare=False
    )

    def schema(self) -> tuple[GraphQLSchema, str, list[str]]:
        """The service's schema (introspected once), where it came from, and what reading it noticed."""
        if self._remote_schema is None:
            self._remote_schema = self._read()
        return self._remote_schema

    def _read(self) -> tuple[GraphQLSchema, str, list[str]]:
        spec = self.sdl.strip() if self.sdl is not None else "introspect"
        if spec == "introspect":
            if not self.endpoint:
                raise SourceError(
                    f"source {self.name!r}: nothing to introspect: set BFF_UPSTREAMS__{self.name.upper()}__URL "
                    "or give the service's SDL"
                )
            schema = introspect(self.endpoint, self.name, timeout=self.timeout, token=self.token)
            return schema, f"introspection of {self.endpoint}", []
        if "{" in spec or "\n" in spec:
            text, origin = spec, "its SDL"
        else:
            try:
                text = Path(spec).read_text(encoding="utf-8")
            except OSError as exc:
                raise SourceError(f"source {self.name!r}: cannot read {spec}: {exc.strerror or exc}") from None
            origin = f"its SDL ({Path(spec).name})"
        schema, notes = _from_sdl(text, self.name)
        return schema, origin, notes

    def generate(self, taken_types: Sequence[str] = (), *, links: Sequence[Any] = ()) -> Generated:
        if links:
            on = ", ".join(sorted({str(getattr(getattr(plan, "link", plan), "on", plan)) for plan in links}))
            raise SourceError(
                f"source {self.name!r}: links on the types of a remote GraphQL source are not supported ({on})"
            )
        schema, origin, notes = self.schema()
        generated = GraphQLGenerator(self.name, schema, prefix=self.prefix, taken_types=taken_types, origin=origin)
        generated.warnings.extend(notes)
        return generated.generate()

    def mount(self, taken_types: Sequence[str] = ()) -> Mounted:
        return mount(self, taken_types)

    def mount_all(self, sources: Sequence[Any], taken_types: Sequence[str] = ()) -> list[Mounted]:
        from bff.sources.assemble import mount_all

        return mount_all(sources, taken_types)


def graphql(name: str, sdl: str | None = None, *, endpoint: str | None = None, prefix: str = "") -> GraphQLSource:
    """The root fields of the GraphQL service ``name`` (the upstream its calls go to:
    ``BFF_UPSTREAMS__<NAME>__URL`` and its token settings), its schema from ``sdl`` (SDL text or the
    path of a file) or, when that is None or ``"introspect"``, from introspecting ``endpoint`` at
    start (no token). ``prefix`` is put before every mounted field name."""
    return GraphQLSource(name, sdl, prefix, endpoint)


def _q(text: str) -> str:
    """A string literal as ruff format writes it (double quotes unless the text has some)."""
    if '"' in text and "'" not in text:
        return repr(text)
    literal: str = json.dumps(text, ensure_ascii=False)
    return literal


def _one_line(text: object) -> str:
    return " ".join(str(text).split())


def introspect(
    endpoint: str, name: str, *, timeout: float = 10.0, token: Callable[[], str | None] | None = None
) -> GraphQLSchema:
    """The schema of the service at ``endpoint``, introspected without a token (synchronously:
    sources are read at start): first with what recent servers answer (``specifiedByURL``, deprecated
    arguments, ``@oneOf``), then, if the service refuses that, the standard query of older ones.
    `SourceError` with one line otherwise."""
    where = f"source {name!r}: introspection of {endpoint}"
    full = get_introspection_query(descriptions=True, specified_by_url=True, input_value_deprecation=True, one_of=True)
    headers = {"accept": "application/json"}
    try:
        data = _introspection(endpoint, full, where, timeout, headers)
    except _Unauthorized as refused:
        # a service that wants a token gets the BFF's own (client credentials), when it has one
        bearer = token() if token is not None else None
        if bearer is None:
            raise SourceError(str(refused)) from None
        headers["authorization"] = f"Bearer {bearer}"
        data = _introspection_or_older(endpoint, full, where, timeout, headers)
    except _Refused:
        data = _introspection_or_older(endpoint, None, where, timeout, headers)
    try:
        return build_client_schema(data)  # type: ignore[arg-type]
    except (TypeError, ValueError, KeyError, GraphQLError) as exc:
        raise SourceError(f"{where}: unreadable answer: {_one_line(exc)}") from None


def _introspection_or_older(
    endpoint: str, query: str | None, where: str, timeout: float, headers: dict[str, str]
) -> dict[str, Any]:
    """``query``, then the standard query of older servers if the service refuses it."""
    try:
        if query is not None:
            try:
                return _introspection(endpoint, query, where, timeout, headers)
            except _Refused:
                pass
        return _introspection(endpoint, get_introspection_query(descriptions=True), where, timeout, headers)
    except _Unauthorized as refused:
        raise SourceError(str(refused)) from None
    except _Refused as refused:
        raise SourceError(f"{where} was refused: {refused}") from None


class _Refused(Exception):
    """The service answered the introspection query with GraphQL errors (the first one's message)."""


class _Unauthorized(Exception):
    """The service answered 401 or 403: it wants a token (the message says so)."""


def _introspection(endpoint: str, query: str, where: str, timeout: float, headers: dict[str, str]) -> dict[str, Any]:

    response = send_at_start("POST", endpoint, f"{where} failed", timeout, json={"query": query}, headers=headers)
    if response.status_code in (401, 403):
        raise _Unauthorized(
            f"{where} was refused (HTTP {response.status_code}): the service wants a token (set BFF_OIDC_* for "
            "the BFF's own, by client credentials) or give its SDL instead"
        )
    try:
        body = response.json()
    except ValueError:
        raise SourceError(f"{where} failed: HTTP {response.status_code}, not JSON") from None
    errors = body.get("errors") if isinstance(body, dict) else None
    if errors:
        first = errors[0].get("message") if isinstance(errors[0], dict) else errors[0]
        raise _Refused(_one_line(first))
    data = body.get("data") if isinstance(body, dict) else None
    if response.status_code >= 400 or not isinstance(data, dict):
        raise SourceError(f"{where} failed: HTTP {response.status_code}, no introspection data")
    return data


def _from_sdl(text: str, name: str) -> tuple[GraphQLSchema, list[str]]:
    try:
        document = parse(text)
    except GraphQLError as exc:
        raise SourceError(f"source {name!r}: the SDL does not parse: {_one_line(exc.message)}") from None
    try:
        return build_ast_schema(document), []
    except (TypeError, GraphQLError) as exc:
        # a subgraph's SDL uses directives it does not define (@key...): read it as it is
        note = f"source {name!r}: the SDL is not valid on its own ({_one_line(exc)[:200]}); read without checks"
    try:
        return build_ast_schema(document, assume_valid_sdl=True), [note]
    except (TypeError, ValueError, KeyError, GraphQLError) as exc:
        raise SourceError(f"source {name!r}: the SDL does not build a schema: {_one_line(exc)[:300]}") from None


# -- code text ---------------------------------------------------------------------------------------


@dataclass
class _Call:
    """Code that breaks over lines when it is too long: ``head`` items ``close``, the items
    separated by ``sep`` (one a line when broken)."""

    head: str
    items: list[Any]
    close: str
    sep: str = ", "


@dataclass
class _Text:
    """A string literal, in parenthesized pieces when it is too long for its line."""

    text: str


def _flat(node: Any) -> str:
    if isinstance(node, str):
        return node
    if isinstance(node, _Text):
        return _q(node.text)
    if isinstance(node, tuple):
        return "".join(_flat(part) for part in node)
    return f"{node.head}{node.sep.join(_flat(item) for item in node.items)}{node.close}"


def _render(node: Any, column: int, indent: int, trail: int = 0) -> str:
    """``node`` starting at ``column`` (continuation lines at ``indent``), ``trail`` characters
    following it on its last line."""
    flat = _flat(node)
    if isinstance(node, str) or column + len(flat) + trail <= LINE:
        return flat
    inner = " " * (indent + 4)
    if isinstance(node, tuple):  # parts written one after the other
        out = ""
        for index, part in enumerate(node):
            last = index == len(node) - 1
            text = _render(part, column, indent, trail if last else 0)
            out += text
            column = len(text.rsplit("\n", 1)[-1]) if "\n" in text else column + len(text)
        return out
    if isinstance(node, _Text):
        return (
            "(\n"
            + "\n".join(inner + _q(chunk) for chunk in _chunks(node.text, LINE - indent - 8))
            + f"\n{' ' * indent})"
        )
    if node.sep == " | ":  # an expression: ``a | b``
        lines = [inner + _render(item, indent + 4, indent + 4) for item in node.items]
        joined = f"\n{inner}{node.sep.strip()} ".join(line.strip() for line in lines)
        return f"{node.head}\n{inner}{joined}\n{' ' * indent}{node.close}"
    lines = [inner + _render(item, indent + 4, indent + 4, 1) + "," for item in node.items]
    body = "\n".join(lines)
    return f"{node.head}\n{body}\n{' ' * indent}{node.close}"


def _chunks(text: str, width: int) -> list[str]:
    chunks: list[str] = []
    current = ""
    for word in _words(text):
        if current and len(_q(current + word)) > width:
            chunks.append(current)
            current = ""
        current += word
    return [*chunks, current] if current or not chunks else chunks


def _words(text: str) -> list[str]:
    words: list[str] = []
    for part in text.split(" "):
        words.append(part + " ")
    words[-1] = words[-1][:-1]
    return [w for w in words if w]


def _kw(name: str, value: Any) -> tuple[str, Any]:
    return (f"{name}=", value)


def _described(description: str | None) -> list[Any]:
    return [_kw("description", _Text(description))] if description else []


def _deprecated(reason: str | None) -> list[Any]:
    return [_kw("deprecation_reason", _Text(reason))] if reason else []


# -- the generator -----------------------------------------------------------------------------------


class GraphQLGenerator:
    """The module of one remote GraphQL service's schema."""

    def __init__(
        self,
        upstream: str,
        schema: GraphQLSchema,
        *,
        prefix: str = "",
        taken_types: Iterable[str] = (),
        origin: str = "its schema",
    ) -> None:
        self.upstream = upstream
        self.schema = schema
        self.prefix = prefix
        self.origin = origin
        self.warnings: list[str] = []
        #: the Query fields by mounted name, for links to this source
        self.operations: dict[str, RemoteOperation] = {}
        self._taken = Unique(set(taken_types))
        self._python = Unique(set(_MODULE_NAMES) | set(dir(builtins)) | set(keyword.kwlist) | {"annotations", "enum"})
        self.ours: dict[str, str] = {}  # the service's type name -> ours
        self.python: dict[str, str] = {}  # the service's type name -> the Python name
        self.members: dict[str, dict[str, str]] = {}  # enum -> value -> Python member name
        self.roots = {t.name for t in (schema.query_type, schema.mutation_type, schema.subscription_type) if t}
        self.imports: set[str] = set()

    def warn(self, text: str) -> None:
        line = f"source {self.upstream!r}: {text}"
        if line not in self.warnings:
            self.warnings.append(line)

    # -- which types -------------------------------------------------------------------------------

    def _reachable(self) -> list[GraphQLNamedType]:
        """The types the Query and Mutation fields lead to (implementations of an interface too)."""
        seen: dict[str, GraphQLNamedType] = {}
        stack: list[GraphQLNamedType] = []

        def add(type_: Any) -> None:
            named = get_named_type(type_)
            if named.name in seen or named.name in self.roots or is_introspection_type(named):
                return
            if is_specified_scalar_type(named):
                return
            seen[named.name] = named
            stack.append(named)

        def fields_of(type_: Any) -> None:
            for item in type_.fields.values():
                add(item.type)
                for argument in getattr(item, "args", {}).values():
                    add(argument.type)

        for root in (self.schema.query_type, self.schema.mutation_type):
            if root is not None:
                fields_of(root)
        while stack:
            named = stack.pop()
            if isinstance(named, GraphQLObjectType | GraphQLInterfaceType | GraphQLInputObjectType):
                fields_of(named)
            if isinstance(named, GraphQLObjectType | GraphQLInterfaceType):
                for interface in named.interfaces:
                    add(interface)
            if isinstance(named, GraphQLInterfaceType):
                for possible in self.schema.get_possible_types(named):
                    add(possible)
            if isinstance(named, GraphQLUnionType):
                for member in named.types:
                    add(member)
        return list(seen.values())

    def _name(self, named: GraphQLNamedType) -> None:
        remote = named.name
        if remote == "JSON" and is_scalar_type(named):
            self.ours[remote], self.python[remote] = "JSON", self._python("JSON")
            return
        base = f"{remote}_" if remote in _ROOT_NAMES else remote
        ours = self._taken(base)
        if ours != remote:
            why = "the name of a root type" if remote in _ROOT_NAMES else "the name is taken"
            self.warn(f"type {remote} is named {ours} here ({why})")
        self.ours[remote] = ours
        python = ours[0].upper() + ours[1:] if ours[0].islower() else ours
        self.python[remote] = self._python(python)

    # -- annotations ---------------------------------------------------------------------------------

    def _inner(self, type_: Any) -> str:
        if isinstance(type_, GraphQLNonNull):
            return self._inner(type_.of_type)
        if isinstance(type_, GraphQLList):
            return f"list[{self.annotation(type_.of_type)}]"
        if type_.name in _BUILTIN_SCALARS and is_specified_scalar_type(type_):
            return _BUILTIN_SCALARS[type_.name]
        return self.python[type_.name]

    def annotation(self, type_: Any, *, nullable: bool = False) -> str:
        inner = self._inner(type_)
        return inner if is_non_null_type(type_) and not nullable else f"{inner} | None"

    def _returns_root(self, type_: Any) -> bool:
        return get_named_type(type_).name in self.roots

    def _default_of(self, item: GraphQLArgument | GraphQLInputField, type_: Any) -> tuple[bool, str | None]:
        """(whether ``item`` has a default, that default as Python code or None when a module
        cannot write it as a plain value)."""
        default = getattr(item, "default", None)  # graphql-core 3.3: a value or the SDL's literal
        if default is not None:
            literal = getattr(default, "literal", None)
            if literal is not None:
                return True, self._literal(literal, type_)
            if default.value is not Undefined:
                return True, self._default(default.value, type_)
        if item.default_value is not Undefined:
            return True, self._default(item.default_value, type_)
        return False, None

    def _literal(self, node: Any, type_: Any) -> str | None:
        """An SDL default (a literal) as Python code; None for lists and input objects."""
        named = get_named_type(type_)
        if isinstance(node, NullValueNode):
            return "None"
        if isinstance(type_.of_type if isinstance(type_, GraphQLNonNull) else type_, GraphQLList):
            return None
        if isinstance(node, EnumValueNode) and isinstance(named, GraphQLEnumType):
            member = self.members.get(named.name, {}).get(node.value)
            return f"{self.python[named.name]}.{member}" if member else None
        if isinstance(node, IntValueNode | FloatValueNode):
            return self._scalar_value(named, node.value)
        if isinstance(node, BooleanValueNode):
            return self._scalar_value(named, "True" if node.value else "False")
        if isinstance(node, StringValueNode):
            return self._scalar_value(named, _q(node.value))
        return None

    def _default(self, found: Any, type_: Any) -> str | None:
        """A default value as Python code, None when a module cannot write it as a plain value."""
        if found is None:
            return "None"
        named = get_named_type(type_)
        if isinstance(type_, GraphQLNonNull):
            type_ = type_.of_type
        if isinstance(type_, GraphQLList):
            return None
        if isinstance(named, GraphQLEnumType):
            for name, definition in named.values.items():
                if definition.value == found or name == found:
                    return f"{self.python[named.name]}.{self.members[named.name][name]}"
            return None
        if isinstance(named, GraphQLScalarType) and isinstance(found, str | int | float | bool):
            return self._scalar_value(named, _q(found) if isinstance(found, str) else repr(found))
        return None

    def _scalar_value(self, named: GraphQLNamedType, code: str) -> str:
        """A scalar's default as the value of its annotation (``strawberry.ID("x")``, ``Money(5)``)."""
        if named.name == "ID" and is_specified_scalar_type(named):
            return f"strawberry.ID({code})"
        if is_specified_scalar_type(named) or named.name == "JSON":
            return code
        return f"{self.python[named.name]}({code})"

    # -- the module ----------------------------------------------------------------------------------

    def generate(self) -> Generated:
        query = self.schema.query_type
        if query is None:
            raise SourceError(f"source {self.upstream!r}: the service's schema has no Query type")
        subscription = self.schema.subscription_type
        if subscription is not None and subscription.fields:
            self.warn(f"subscriptions are not mounted ({', '.join(subscription.fields)})")
        for directive in self.schema.directives:
            if not is_specified_directive(directive) and _EXECUTABLE.intersection(directive.locations):
                self.warn(f"the directive @{directive.name} is not mounted: an operation using it is refused")
        reachable = self._reachable()
        for named in sorted(reachable, key=lambda t: t.name):
            self._name(named)
        scalars = [t for t in reachable if isinstance(t, GraphQLScalarType)]
        enums = [t for t in reachable if isinstance(t, GraphQLEnumType)]
        interfaces = _ordered([t for t in reachable if isinstance(t, GraphQLInterfaceType)])
        objects = [t for t in reachable if isinstance(t, GraphQLObjectType)]
        unions = [t for t in reachable if isinstance(t, GraphQLUnionType)]
        inputs = [t for t in reachable if isinstance(t, GraphQLInputObjectType)]
        in_abstract = {t.name for t in objects if t.interfaces}
        in_abstract.update(member.name for union in unions for member in union.types)

        blocks: list[str] = []
        if scalars:
            blocks.append(self._scalars(scalars))
        blocks.extend(self._enum(t) for t in enums)
        blocks.extend(self._object(t, abstract=False) for t in interfaces)
        blocks.extend(self._object(t, abstract=t.name in in_abstract) for t in objects)
        blocks.extend(self._union(t) for t in unions)
        blocks.extend(self._input(t) for t in inputs)
        query_fields, query_block = self._root(query, "Query")
        blocks.append(query_block)
        mutation_fields: list[str] = []
        mutation = self.schema.mutation_type
        if mutation is not None:
            mutation_fields, mutation_block = self._root(mutation, "Mutation")
            if mutation_fields:
                blocks.append(mutation_block)
        implementations = [self.python[t.name] for t in objects if t.interfaces]
        if implementations:
            blocks.append(
                "#: types the schema knows only through an interface: build_schema(types=...) takes them\n"
                + _render(("TYPES = ", _Call("(", implementations, ",)" if len(implementations) == 1 else ")")), 0, 0)
            )
        renamed = {self.ours[name]: name for name in sorted(self.ours) if self.ours[name] != name}
        remote_args: list[Any] = ["UPSTREAM"]
        if renamed:
            remote_args.append(_kw("renamed", _Call("{", [f"{_q(k)}: {_q(v)}" for k, v in renamed.items()], "}")))
        head = [
            self._header(),
            f"UPSTREAM = {_q(self.upstream)}\n"
            + "#: the service's root fields, delegated (one upstream query for all of an operation's)\n"
            + _render(("remote = ", _Call("dg.Remote(", remote_args, ")")), 0, 0),
        ]
        code = "\n\n".join(head) + "\n\n\n" + "\n\n\n".join(blocks) + "\n"
        types = [self.ours[t.name] for t in reachable]
        return Generated(self.upstream, code, query_fields, mutation_fields, types, self.warnings, self.operations)

    def _header(self) -> str:
        typing = [name for name in ("Annotated", "Any", "NewType") if name in self.imports]
        about = (
            f"GraphQL fields of the upstream {self.upstream!r}, from {self.origin}: generated by bff, yours to "
            "edit (`bff sources generate`). Each root field forwards its whole sub-selection to the service, and "
            "the root fields of one operation go as one upstream query, with the session's token for this "
            "upstream; below the root each field reads its value by response key, so aliases stay the client's own."
        )
        quotes = '"' * 3
        lines = [
            quotes + textwrap.fill(about.replace(quotes, "'" * 3), width=100) + quotes,
            "",
            "from __future__ import annotations",
            "",
        ]
        if "enum" in self.imports:
            lines.append("import enum")
        if typing:
            lines.append(f"from typing import {', '.join(typing)}")
        # one block: where the module is a team's, bff is a third-party package like strawberry
        lines += ["", "import strawberry", "from bff.sources import delegate as dg"]
        return "\n".join(lines)

    def _scalars(self, scalars: list[GraphQLScalarType]) -> str:
        """The service's own scalars: their values pass through as they are, both ways (a
        ``JSON`` scalar is Strawberry's own)."""
        self.imports.update({"NewType", "Any"})
        types: list[str] = []
        definitions: list[Any] = []
        for scalar in scalars:
            python = self.python[scalar.name]
            if self.ours[scalar.name] == "JSON" and scalar.name == "JSON":
                types.append(f"{python} = dg.JSON")
                continue
            types.append(f"{python} = NewType({_q(python)}, object)")
            arguments: list[Any] = [_kw("name", _q(self.ours[scalar.name]))]
            arguments += _described(scalar.description)
            if scalar.specified_by_url:
                arguments.append(_kw("specified_by_url", _Text(scalar.specified_by_url)))
            arguments += [_kw("serialize", "dg.same"), _kw("parse_value", "dg.same")]
            definitions.append((f"{python}: ", _Call("strawberry.scalar(", arguments, ")")))
        block = "\n".join(types)
        if definitions:
            block += (
                "\n#: the schema's scalar_overrides for these (build_schema adds them for a mounted source)\n"
                + _render(("SCALARS: dict[object, Any] = ", _Call("{", definitions, "}")), 0, 0)
            )
        return block

    def _enum(self, type_: GraphQLEnumType) -> str:
        self.imports.add("enum")
        python = self.python[type_.name]
        arguments = [_kw("name", _q(self.ours[type_.name])), *_described(type_.description)]
        lines = [_render(("@", _Call("strawberry.enum(", arguments, ")")), 0, 0), f"class {python}(enum.Enum):"]
        members = Unique({"name", "value", "mro"} | _MODULE_NAMES)
        self.members[type_.name] = {}
        for name, definition in type_.values.items():
            usable = name.isidentifier() and not keyword.iskeyword(name) and not name.startswith("_")
            member = members(name if usable else f"V{name}" if name.startswith("_") else f"{name}_")
            self.members[type_.name][name] = member
            extra = _described(definition.description) + _deprecated(definition.deprecation_reason)
            if member != name:
                extra.insert(0, _kw("name", _q(name)))
            if extra:
                value = _Call("strawberry.enum_value(", [_q(name), *extra], ")")
                lines.append("    " + _render((f"{member} = ", value), 4, 4))
            else:
                lines.append(f"    {member} = {_q(name)}")
        return "\n".join(lines)

    def _object(self, type_: GraphQLObjectType | GraphQLInterfaceType, *, abstract: bool) -> str:
        interface = isinstance(type_, GraphQLInterfaceType)
        python = self.python[type_.name]
        decorator = "strawberry.interface(" if interface else "strawberry.type("
        arguments = [_kw("name", _q(self.ours[type_.name])), *_described(type_.description)]
        bases = _bases(type_.interfaces)
        head = f"class {python}({', '.join(self.python[b.name] for b in bases)}):" if bases else f"class {python}:"
        lines = [_render(("@", _Call(decorator, arguments, ")")), 0, 0), head]
        attributes = Unique({"is_type_of", "resolve_type"} | _MODULE_NAMES | _CLASS_RESERVED)
        body: list[tuple[bool, str]] = []  # (a method, its code)
        for name, definition in type_.fields.items():
            if self._returns_root(definition.type):
                self.warn(
                    f"{type_.name}.{name} returns the root type {get_named_type(definition.type).name}: not mounted"
                )
                continue
            attribute = attributes(snake(name))
            if definition.args:
                body.append((True, self._method(type_.name, name, attribute, definition)))
                continue
            call = _Call(
                "strawberry.field(",
                [
                    _kw("name", _q(name)),
                    *_described(definition.description),
                    *_deprecated(definition.deprecation_reason),
                    _kw("resolver", "dg.value"),
                ],
                ")",
            )
            body.append((False, "    " + _render((f"{attribute}: {self.annotation(definition.type)} = ", call), 4, 4)))
        if abstract:
            self.imports.add("Any")
            body.append(
                (
                    True,
                    "    @classmethod\n"
                    "    def is_type_of(cls, obj: Any, info: Any) -> bool:\n"
                    f"        return dg.is_type(obj, {_q(type_.name)})",
                )
            )
        if not body:
            body.append((False, "    pass"))
        return "\n".join(lines) + "\n" + "\n\n".join(_grouped(body))

    def _parameters(self, where: str, arguments: dict[str, GraphQLArgument]) -> list[Any]:
        names = Unique({"self", "info", "value", "cls", "l", "O", "I"})
        parameters: list[Any] = ["self", "info: strawberry.Info"]
        if arguments:
            self.imports.add("Annotated")
            parameters.append("*")
        for name, argument in arguments.items():
            python = names(snake(name))
            annotation = self.annotation(argument.type)
            default: str | None = None
            has_default, default = self._default_of(argument, argument.type)
            if has_default:
                if default is not None and "(" in default:
                    default = None  # a call in a parameter's default: kept out (ruff B008)
                if default is None:
                    self.warn(
                        f"{where}({name}:): its default is not written here; the argument may be left out "
                        "and the service applies it"
                    )
                    annotation = self.annotation(argument.type, nullable=True)
                    default = "strawberry.UNSET"
            elif not is_non_null_type(argument.type):
                default = "strawberry.UNSET"
            call = _Call(
                "strawberry.argument(",
                [
                    _kw("name", _q(name)),
                    *_described(argument.description),
                    *_deprecated(argument.deprecation_reason),
                ],
                ")",
            )
            parameters.append(
                (f"{python}: ", _Call("Annotated[", [annotation, call], "]"), f" = {default}" if default else "")
            )
        return parameters

    def _method(self, parent: str, name: str, attribute: str, definition: GraphQLField) -> str:
        returns = self.annotation(definition.type)
        decorator = _Call(
            "strawberry.field(",
            [_kw("name", _q(name)), *_described(definition.description), *_deprecated(definition.deprecation_reason)],
            ")",
        )
        signature = _Call(
            f"def {attribute}(", self._parameters(f"{parent}.{name}", definition.args), f") -> {returns}:"
        )
        return "\n".join(
            [
                _decorated(decorator, 4),
                "    " + _render(signature, 4, 4),
                f"        value: {returns} = dg.value(self, info)",
                "        return value",
            ]
        )

    def _union(self, type_: GraphQLUnionType) -> str:
        self.imports.add("Annotated")
        members = [self.python[m.name] for m in type_.types if m.name not in self.roots]
        union = _Call("strawberry.union(", [_q(self.ours[type_.name]), *_described(type_.description)], ")")
        alias = _Call("Annotated[", [_Call("", members, "", " | ") if len(members) > 1 else members[0], union], "]")
        return _render((f"{self.python[type_.name]} = ", alias), 0, 0)

    def _input(self, type_: GraphQLInputObjectType) -> str:
        arguments = [_kw("name", _q(self.ours[type_.name])), *_described(type_.description)]
        if getattr(type_, "is_one_of", False):
            arguments.append(_kw("one_of", "True"))
        lines = [_render(("@", _Call("strawberry.input(", arguments, ")")), 0, 0), f"class {self.python[type_.name]}:"]
        names = Unique({"is_type_of"} | _MODULE_NAMES | _CLASS_RESERVED)
        for name, definition in type_.fields.items():
            lines.append("    " + self._input_field(type_.name, name, names(snake(name)), definition))
        return "\n".join(lines)

    def _input_field(self, parent: str, name: str, attribute: str, definition: GraphQLInputField) -> str:
        annotation = self.annotation(definition.type)
        has_default, default = self._default_of(definition, definition.type)
        if has_default:
            if default is None:
                self.warn(f"{parent}.{name}: its default is not written here; the service applies it")
                annotation = self.annotation(definition.type, nullable=True)
                default = "strawberry.UNSET"
        elif not is_non_null_type(definition.type):
            default = "strawberry.UNSET"
        arguments = [
            _kw("name", _q(name)),
            *_described(definition.description),
            *_deprecated(definition.deprecation_reason),
        ]
        if default is not None:
            arguments.append(_kw("default", default))
        return _render((f"{attribute}: {annotation} = ", _Call("strawberry.field(", arguments, ")")), 4, 4)

    def _root(self, root: GraphQLObjectType, kind: str) -> tuple[list[str], str]:
        methods = Unique(_MODULE_NAMES | _CLASS_RESERVED)
        mounted: list[str] = []
        body: list[str] = []
        for name, definition in root.fields.items():
            if self._returns_root(definition.type):
                self.warn(
                    f"{root.name}.{name} returns the root type {get_named_type(definition.type).name}: not mounted"
                )
                continue
            ours = self.prefix + name
            mounted.append(ours)
            returns = self.annotation(definition.type, nullable=True)
            if kind == "Query":
                listed = definition.type.of_type if isinstance(definition.type, GraphQLNonNull) else definition.type
                item = self.python[get_named_type(listed).name] if isinstance(listed, GraphQLList) else None
                self.operations[ours] = RemoteOperation(name, frozenset(definition.args), returns, item)
            decorator = _Call(
                "strawberry.mutation(" if kind == "Mutation" else "strawberry.field(",
                [
                    _kw("name", _q(ours)),
                    *_described(definition.description),
                    *_deprecated(definition.deprecation_reason),
                ],
                ")",
            )
            parameters = self._parameters(f"{root.name}.{name}", definition.args)
            signature = _Call(f"async def {methods(snake(ours))}(", parameters, f") -> {returns}:")
            call = "remote.mutate" if kind == "Mutation" else "remote.query"
            body.append(
                "\n".join(
                    [
                        _decorated(decorator, 4),
                        "    " + _render(signature, 4, 4),
                        "        " + _render((f"value: {returns} = await {call}(info, ", _q(name), ")"), 8, 8),
                        "        return value",
                    ]
                )
            )
        head = f'@strawberry.type(name="{kind}")\nclass {kind}:\n'
        return mounted, head + ("\n\n".join(body) if body else "    pass")


def _decorated(call: _Call, indent: int) -> str:
    """A Strawberry decorator with arguments: mypy --strict calls it untyped."""
    text = _render(("@", call), indent, indent)
    first, _, rest = text.partition("\n")
    first = f"{' ' * indent}{first}  # type: ignore[untyped-decorator]"
    return f"{first}\n{rest}" if rest else first


def _grouped(body: list[tuple[bool, str]]) -> list[str]:
    """Plain fields together, each method apart (a blank line around it)."""
    out: list[str] = []
    previous_method = True
    for method, block in body:
        if out and not method and not previous_method:
            out[-1] += "\n" + block
        else:
            out.append(block)
        previous_method = method
    return out


def _bases(interfaces: Sequence[GraphQLInterfaceType]) -> list[GraphQLInterfaceType]:
    """The interfaces a class derives from: those no other listed interface already implements
    (Python's method resolution order forbids naming a base after one of its subclasses)."""
    implied: set[str] = set()
    for interface in interfaces:
        stack = list(interface.interfaces)
        while stack:
            parent = stack.pop()
            if parent.name not in implied:
                implied.add(parent.name)
                stack.extend(parent.interfaces)
    return [i for i in interfaces if i.name not in implied]


def _ordered(interfaces: list[GraphQLInterfaceType]) -> list[GraphQLInterfaceType]:
    """Interfaces after the interfaces they implement."""
    by_name = {i.name: i for i in interfaces}
    done: dict[str, GraphQLInterfaceType] = {}

    def visit(interface: GraphQLInterfaceType, path: frozenset[str]) -> None:
        if interface.name in done or interface.name in path:
            return
        for parent in interface.interfaces:
            if parent.name in by_name:
                visit(by_name[parent.name], path | {interface.name})
        done[interface.name] = interface

    for interface in interfaces:
        visit(interface, frozenset())
    return list(done.values())
