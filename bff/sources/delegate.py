"""What modules generated from a remote GraphQL service (`bff.sources.graphql`) call at run time:
delegation, as a gateway does it.

A mounted root field forwards its whole sub-selection to the service: the client's aliases,
arguments, inline fragments, the fragments it spreads and the variables it uses, with ``__typename``
added where a value's type must be known (interfaces, unions). The root fields of one source that an
operation selects go as ONE upstream query, each aliased ``f0``, ``f1``... (`Remote.query`, batched
per request and per operation); each mutation field is its own call, in order (`Remote.mutate`).
Calls go through the upstream client of that name: the session's token for it, the request deadline,
the breaker.

Below the root, the service's answer is served as it came: each field reads its value by its response
key (`value`), so aliases stay the client's own; a type inside an interface or a union knows itself by
``__typename`` (`is_type`). The service's errors come back at their place in our answer: an error at
``["f0", "a", 1, "b"]`` is ours at ``[<the root field's response key>, "a", 1, "b"]``, with the
service's message (its public GraphQL message), our code ``UPSTREAM_ERROR`` and the upstream's name;
one without a usable path goes on the root field that came back null."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import strawberry
from graphql import (
    FieldNode,
    FragmentDefinitionNode,
    FragmentSpreadNode,
    GraphQLError,
    GraphQLInputObjectType,
    GraphQLInputType,
    GraphQLList,
    GraphQLNamedType,
    GraphQLNonNull,
    GraphQLSchema,
    InlineFragmentNode,
    ListTypeNode,
    ListValueNode,
    NamedTypeNode,
    NameNode,
    NonNullTypeNode,
    ObjectValueNode,
    SelectionNode,
    SelectionSetNode,
    TypeNode,
    Undefined,
    ValueNode,
    VariableDefinitionNode,
    VariableNode,
    get_named_type,
    is_abstract_type,
    is_enum_type,
    is_scalar_type,
    print_ast,
    type_from_ast,
)
from strawberry.dataloader import DataLoader

from bff.errors import UpstreamError
from bff.graphql._strawberry import raw_info

__all__ = ["JSON", "Remote", "is_type", "same", "to_json", "value"]

log = logging.getLogger("bff.sources")

#: the longest message of the service's errors shown as it is (the rest is cut)
MAX_MESSAGE = 1000
_TYPENAME = FieldNode(name=NameNode(value="__typename"), arguments=(), directives=())
#: pieces kept per source (a piece is derived from a cached document's nodes: identical requests
#: build their upstream query once)
_PIECES = 1024


def value(root: Any, info: strawberry.Info) -> Any:
    """A field's value in the service's answer: read by its response key (aliases kept). A value
    is an exception where the service reported an error: GraphQL raises it at that place."""
    if isinstance(root, dict):
        return root.get(info.path.key)
    return None


def is_type(obj: Any, name: str) -> bool:
    """Whether ``obj`` (an object of the service's answer) is of the service's type ``name``: its
    ``__typename``, which every forwarded selection of an interface or a union asks for (an object
    without one is in a position of its own type)."""
    return isinstance(obj, dict) and obj.get("__typename", name) == name


def same(value: Any) -> Any:
    """The service's own scalars pass through as they are, both ways."""
    return value


#: the service's scalar ``JSON``: Strawberry's own (any JSON value, as it is)
JSON = strawberry.scalars.JSON


@dataclass(frozen=True)
class _Piece:
    """One root field as part of an upstream query: its text (without the alias), the variable
    definitions and the fragments it needs, by name."""

    text: str
    variables: Mapping[str, str]
    fragments: Mapping[str, str]

    def with_arguments(self, arguments: Mapping[str, Any], types: Mapping[str, str]) -> tuple[_Piece, dict[str, Any]]:
        """A link's piece (``field`` then its selection) with ``arguments`` as variables of our
        own (typed by ``types``), and their values."""
        if not arguments:
            return self, {}
        name, _, selection = self.text.partition(" ")
        # each argument a variable of its own name, unless the client's sub-selection uses that name
        own = {k: k if k not in self.variables else f"bff_{k}" for k in arguments}
        written = ", ".join(f"{k}: ${own[k]}" for k in arguments)
        variables = dict(self.variables)
        for k, variable in own.items():
            variables[variable] = f"${variable}: {types.get(k, 'String')}"
        values = {own[k]: v for k, v in arguments.items()}
        return _Piece(f"{name}({written}) {selection}".rstrip(), variables, self.fragments), values


#: the alias of the key field a batched link adds to each item (to match items to parents)
_KEY = "__bff_key"


class Remote:
    """A remote GraphQL service's root fields, delegated. ``renamed`` maps the names of our types
    that differ from the service's (a name taken in the schema) to the service's."""

    def __init__(self, upstream: str, *, renamed: Mapping[str, str] | None = None) -> None:
        self.upstream = upstream
        self.renamed = dict(renamed or {})
        self._key = f"bff.sources.graphql:{upstream}"
        self._pieces: dict[tuple[int, ...], tuple[tuple[Any, ...], _Piece]] = {}

    async def query(self, info: Any, field: str) -> Any:
        """The value of the service's Query field ``field`` for this root field (its sub-selection
        forwarded), fetched with the other root fields of this source in the same operation."""
        raw = raw_info(info)
        piece = self._piece(raw, field)
        batch: _Batch = info.context.loader(self._key, self._batch)
        found = await batch.load(piece, raw)
        if isinstance(found, Exception):
            raise found
        return found

    async def mutate(self, info: Any, field: str) -> Any:
        """The service's Mutation field ``field``: one call of its own (mutations run in order),
        never retried."""
        raw = raw_info(info)
        (found,) = await self.execute(info.context, [(self._piece(raw, field), raw)], mutation=True)
        if isinstance(found, Exception):
            raise found
        return found

    async def link(
        self,
        info: Any,
        field: str,
        arguments: Mapping[str, Any],
        *,
        mounted: str,
        gather: str | None = None,
        key: Any = None,
        key_field: str = "id",
    ) -> Any:
        """The service's Query field ``field`` for a link (`bff.sources.links`) from another
        source's type: the link field's own sub-selection is forwarded under ``field`` with
        ``arguments`` (JSON values, sent as variables typed as ``mounted``, our name of that field,
        declares them). With ``gather``, the keys of every
        parent asking in the same tick go as that one list argument, in ONE call per request, and
        each parent gets the item whose ``key_field`` equals its ``key``."""
        raw = raw_info(info)
        template = self._link_piece(raw, field, key_field if gather else None)
        types = self._argument_types(raw, mounted)
        if gather is None:
            piece, values = template.with_arguments(arguments, types)
            (found,) = await self.execute(info.context, [(piece, raw)], mutation=False, values=values)
            if isinstance(found, Exception):
                raise found
            return found
        if key is None:
            return None
        loader_key = f"{self._key}:link:{field}:{gather}:{template.text}:{sorted(arguments.items())!r}"

        def make(_context: Any) -> DataLoader[Any, Any]:
            async def load(keys: list[Any]) -> list[Any]:
                piece, values = template.with_arguments({**arguments, gather: list(keys)}, types)
                (found,) = await self.execute(info.context, [(piece, raw)], mutation=False, values=values)
                if isinstance(found, Exception):
                    raise found
                index: dict[str, Any] = {}
                for item in found if isinstance(found, list) else ():
                    if isinstance(item, dict) and item.get(_KEY) is not None:
                        index.setdefault(str(item[_KEY]), item)
                return [index.get(str(k)) for k in keys]

            return DataLoader(load_fn=load)

        return await info.context.loader(loader_key, make).load(key)

    def _argument_types(self, raw: Any, mounted: str) -> dict[str, str]:
        """The argument types of our field ``mounted`` (the service's, renamed back), printed."""
        query = raw.schema.query_type
        definition = query.fields.get(mounted) if query is not None else None
        if definition is None:
            return {}
        return {name: self._printed(argument.type) for name, argument in definition.args.items()}

    def _printed(self, type_: Any) -> str:
        if isinstance(type_, GraphQLNonNull):
            return f"{self._printed(type_.of_type)}!"
        if isinstance(type_, GraphQLList):
            return f"[{self._printed(type_.of_type)}]"
        return str(self.renamed.get(type_.name, type_.name))

    def _link_piece(self, raw: Any, field: str, key_field: str | None) -> _Piece:
        held = (raw.schema, raw.operation, *raw.field_nodes)
        cache_key = (-1, hash(field), hash(key_field), *map(id, held))
        cached = self._pieces.get(cache_key)
        if cached is not None and all(a is b for a, b in zip(cached[0], held, strict=True)):
            return cached[1]
        piece = _Forwarded(raw.schema, raw.fragments, self.renamed).linked(raw, field, key_field)
        if len(self._pieces) >= _PIECES:
            self._pieces.clear()
        self._pieces[cache_key] = (held, piece)
        return piece

    def _batch(self, context: Any) -> _Batch:
        return _Batch(self, context)

    # -- the upstream query ------------------------------------------------------------------------

    def _piece(self, raw: Any, field: str) -> _Piece:
        nodes = raw.field_nodes
        held = (raw.schema, raw.operation, *nodes)
        key = tuple(map(id, held))
        cached = self._pieces.get(key)
        if cached is not None and all(a is b for a, b in zip(cached[0], held, strict=True)):
            return cached[1]
        piece = _Forwarded(raw.schema, raw.fragments, self.renamed).piece(raw.operation, nodes, field)
        if len(self._pieces) >= _PIECES:
            self._pieces.clear()
        self._pieces[key] = (held, piece)
        return piece

    def document(self, pieces: Sequence[_Piece], *, mutation: bool = False) -> str:
        """The upstream query of ``pieces`` (root field ``i`` aliased ``f{i}``)."""
        definitions: dict[str, str] = {}
        fragments: dict[str, str] = {}
        fields = []
        for index, piece in enumerate(pieces):
            fields.append(f"f{index}: {piece.text}")
            definitions.update(piece.variables)
            fragments.update(piece.fragments)
        head = "mutation" if mutation else "query"
        if definitions:
            head += f"({', '.join(definitions.values())})"
        return "\n".join([f"{head} {{", *fields, "}", *fragments.values()])

    async def execute(
        self,
        context: Any,
        entries: Sequence[tuple[_Piece, Any]],
        *,
        mutation: bool,
        values: Mapping[str, Any] | None = None,
    ) -> list[Any]:
        """One upstream call for ``entries`` (pieces of one operation, with the resolve info of
        their root field): the value of each root field, or the exception it raises. ``values``:
        variables of our own (a link's arguments), beside the client's."""
        text = self.document([piece for piece, _ in entries], mutation=mutation)
        names = {name for piece, _ in entries for name in piece.variables} - set(values or ())
        variables = {**_variable_values(entries[0][1], names), **(values or {})}
        body = await _post(context.graphql(self.upstream), text, variables, idempotent=not mutation)
        return self._results(body, entries)

    # -- the answer ----------------------------------------------------------------------------------

    def _results(self, body: Any, entries: Sequence[tuple[_Piece, Any]]) -> list[Any]:
        if not isinstance(body, dict):
            malformed = UpstreamError(self.upstream, f"Upstream {self.upstream!r} sent a malformed answer")
            return [malformed for _ in entries]
        data = body.get("data")
        values = [data.get(f"f{index}") for index in range(len(entries))] if isinstance(data, dict) else []
        values += [None] * (len(entries) - len(values))
        loose: list[str] = []
        errors = body.get("errors")
        for error in errors if isinstance(errors, list) else ():
            message = _message(error, self.upstream)
            path = error.get("path") if isinstance(error, dict) else None
            index = _root_index(path, len(entries))
            if index is None:
                loose.append(message)
                continue
            assert isinstance(path, list)
            ours = [*entries[index][1].path.as_list(), *path[1:]]
            failure = GraphQLError(message, path=ours, original_error=UpstreamError(self.upstream, message))
            values[index], placed = _place(values[index], path[1:], failure)
            if not placed:
                loose.append(message)
        if loose:
            for index, found in enumerate(values):
                if found is None:
                    values[index] = UpstreamError(self.upstream, loose[0])
            log.debug("upstream %s: errors not placed in the answer: %s", self.upstream, loose)
        return values


class _Batch:
    """The root fields of one source selected in one request: collected while the operation's
    root fields start (the same turns of the event loop), then sent as one upstream query per
    operation."""

    def __init__(self, remote: Remote, context: Any) -> None:
        self.remote = remote
        self.context = context
        self.waiting: list[tuple[_Piece, Any, asyncio.Future[Any]]] = []
        self.counted = 0
        self.tasks: set[asyncio.Task[None]] = set()

    def load(self, piece: _Piece, raw: Any) -> asyncio.Future[Any]:
        loop = asyncio.get_running_loop()
        future: asyncio.Future[Any] = loop.create_future()
        self.waiting.append((piece, raw, future))
        if len(self.waiting) == 1:
            self.counted = 1
            loop.call_soon(self._tick)
        return future

    def _tick(self) -> None:
        loop = asyncio.get_running_loop()
        if len(self.waiting) != self.counted:  # more came in: one more turn for the rest of them
            self.counted = len(self.waiting)
            loop.call_soon(self._tick)
            return
        waiting, self.waiting = self.waiting, []
        groups: dict[tuple[int, int], list[tuple[_Piece, Any, asyncio.Future[Any]]]] = {}
        for entry in waiting:
            raw = entry[1]
            groups.setdefault((id(raw.operation), id(raw.variable_values)), []).append(entry)
        for entries in groups.values():
            task = loop.create_task(self._send(entries))
            self.tasks.add(task)
            task.add_done_callback(self.tasks.discard)

    async def _send(self, entries: list[tuple[_Piece, Any, asyncio.Future[Any]]]) -> None:
        live = [entry for entry in entries if not entry[2].done()]
        if not live:
            return
        try:
            values = await self.remote.execute(self.context, [(p, raw) for p, raw, _ in live], mutation=False)
        except asyncio.CancelledError:
            for _, _, future in live:
                future.cancel()
            raise
        except Exception as exc:
            for _, _, future in live:
                if not future.done():
                    future.set_exception(exc)
            return
        for (_, _, future), found in zip(live, values, strict=True):
            if not future.done():
                future.set_result(found)


async def _post(client: Any, query: str, variables: dict[str, Any], *, idempotent: bool) -> Any:
    """POST ``{query, variables}`` through the upstream's `GraphQLClient`: the whole decoded answer,
    ``data`` and ``errors`` both (``GraphQLClient.execute`` raises on any error)."""
    return await client.request(query, variables, idempotent=idempotent)


def _message(error: Any, upstream: str) -> str:
    message = error.get("message") if isinstance(error, dict) else None
    if not isinstance(message, str) or not message.strip():
        return f"Upstream {upstream!r} answered with an error"
    return message if len(message) <= MAX_MESSAGE else message[:MAX_MESSAGE] + "…"


def _root_index(path: Any, count: int) -> int | None:
    if not isinstance(path, list) or not path or not isinstance(path[0], str):
        return None
    key = path[0]
    if not key.startswith("f") or not key[1:].isdigit():
        return None
    index = int(key[1:])
    return index if index < count and key == f"f{index}" else None


def _place(found: Any, rest: Sequence[Any], failure: Exception) -> tuple[Any, bool]:
    """``found`` with ``failure`` where the service's error nulled it: the first null along the
    error's path (the service propagated the null that far up). GraphQL raises it there, with the
    error's own full path."""
    if found is None:
        return failure, True
    if not rest:
        return found, False  # a value beside an error: kept
    step = rest[0]
    if isinstance(found, dict) and isinstance(step, str):
        found[step], placed = _place(found.get(step), rest[1:], failure)
        return found, placed
    if isinstance(found, list) and isinstance(step, int) and 0 <= step < len(found):
        found[step], placed = _place(found[step], rest[1:], failure)
        return found, placed
    return found, False


# -- the forwarded selection -------------------------------------------------------------------------


class _Forwarded:
    """Builds the piece of one root field: its selection as the service knows it (type names the
    service's, ``__typename`` where the type is abstract), the fragments and variables it uses."""

    def __init__(
        self, schema: GraphQLSchema, fragments: Mapping[str, FragmentDefinitionNode], renamed: Mapping[str, str]
    ):
        self.schema = schema
        self.fragments = fragments
        self.renamed = renamed
        self.variables: dict[str, None] = {}
        self.used: dict[str, str] = {}

    def piece(self, operation: Any, nodes: Sequence[FieldNode], field: str) -> _Piece:
        first = nodes[0]
        self._values(first.arguments)
        parent = self.schema.query_type if operation.operation.value == "query" else self.schema.mutation_type
        definition = parent.fields.get(first.name.value) if parent is not None else None
        selection = None
        selections = [s for node in nodes if node.selection_set is not None for s in node.selection_set.selections]
        if definition is not None and (selections or any(node.selection_set for node in nodes)):
            selection = self._selection_set(selections, get_named_type(definition.type))
        forwarded = FieldNode(
            alias=None, name=NameNode(value=field), arguments=first.arguments, directives=(), selection_set=selection
        )
        return self._finished(operation, forwarded)

    def _finished(self, operation: Any, forwarded: FieldNode) -> _Piece:
        """``forwarded`` with the definitions of the operation's variables it uses (in the
        service's type names) and the fragments it spreads."""
        definitions = {}
        for variable in operation.variable_definitions or ():
            name = variable.variable.name.value
            if name in self.variables:
                definitions[name] = print_ast(
                    VariableDefinitionNode(
                        variable=variable.variable,
                        type=self._type_node(variable.type),
                        default_value=variable.default_value,
                        directives=(),
                    )
                )
        return _Piece(print_ast(forwarded), definitions, dict(self.used))

    def linked(self, raw: Any, field: str, key_field: str | None) -> _Piece:
        """A link field's sub-selection under the service's ``field`` (arguments added later, by
        `_Piece.with_arguments`), with the key field aliased when items are matched by key."""
        nodes = raw.field_nodes
        selections = [s for node in nodes if node.selection_set is not None for s in node.selection_set.selections]
        named = get_named_type(raw.return_type)
        selection = self._selection_set(selections, named) if selections else None
        if key_field is not None and selection is not None:
            keyed = FieldNode(alias=NameNode(value=_KEY), name=NameNode(value=key_field), arguments=(), directives=())
            selection = SelectionSetNode(selections=(*selection.selections, keyed))
        forwarded = FieldNode(
            alias=None, name=NameNode(value=field), arguments=(), directives=(), selection_set=selection
        )
        return self._finished(raw.operation, forwarded)

    def _remote(self, name: str) -> str:
        return self.renamed.get(name, name)

    def _type_node(self, node: TypeNode) -> Any:
        """``node`` (a variable's type, a type condition) with the service's type names."""
        if isinstance(node, NonNullTypeNode):
            return NonNullTypeNode(type=self._type_node(node.type))
        if isinstance(node, ListTypeNode):
            return ListTypeNode(type=self._type_node(node.type))
        assert isinstance(node, NamedTypeNode)
        return NamedTypeNode(name=NameNode(value=self._remote(node.name.value)))

    def _selection_set(self, selections: Sequence[SelectionNode], parent: GraphQLNamedType) -> SelectionSetNode:
        asked = any(isinstance(s, FieldNode) and s.alias is None and s.name.value == "__typename" for s in selections)
        out: list[SelectionNode] = [_TYPENAME] if is_abstract_type(parent) and not asked else []
        fields = getattr(parent, "fields", {})
        for selection in selections:
            self._values(selection.directives)
            if isinstance(selection, FieldNode):
                self._values(selection.arguments)
                sub = selection.selection_set
                definition = fields.get(selection.name.value)
                if sub is not None and definition is not None:
                    sub = self._selection_set(sub.selections, get_named_type(definition.type))
                out.append(
                    FieldNode(
                        alias=selection.alias,
                        name=selection.name,
                        arguments=selection.arguments,
                        directives=selection.directives,
                        selection_set=sub,
                    )
                )
            elif isinstance(selection, InlineFragmentNode):
                condition = selection.type_condition
                inner = self.schema.get_type(condition.name.value) if condition is not None else parent
                out.append(
                    InlineFragmentNode(
                        type_condition=self._type_node(condition) if condition is not None else None,
                        directives=selection.directives,
                        selection_set=self._selection_set(selection.selection_set.selections, inner or parent),
                    )
                )
            elif isinstance(selection, FragmentSpreadNode):
                self._fragment(selection.name.value)
                out.append(selection)
        return SelectionSetNode(selections=tuple(out))

    def _fragment(self, name: str) -> None:
        if name in self.used:
            return
        self.used[name] = ""  # a fragment spreads itself only in an invalid document, but never loop
        definition = self.fragments[name]
        self._values(definition.directives)
        condition = definition.type_condition
        inner = self.schema.get_type(condition.name.value)
        assert inner is not None
        node = FragmentDefinitionNode(
            name=definition.name,
            type_condition=self._type_node(condition),
            directives=definition.directives,
            selection_set=self._selection_set(definition.selection_set.selections, inner),
        )
        self.used[name] = print_ast(node)

    def _values(self, nodes: Iterable[Any] | None) -> None:
        """The variables used in arguments or directives (their values, at any depth)."""
        for node in nodes or ():
            if hasattr(node, "arguments"):  # a directive
                self._values(node.arguments)
            else:
                self._value(node.value)

    def _value(self, node: ValueNode) -> None:
        if isinstance(node, VariableNode):
            self.variables[node.name.value] = None
        elif isinstance(node, ListValueNode):
            for item in node.values:
                self._value(item)
        elif isinstance(node, ObjectValueNode):
            for field in node.fields:
                self._value(field.value)


# -- variables -------------------------------------------------------------------------------------


def _variable_values(raw: Any, names: Iterable[str]) -> dict[str, Any]:
    """The values of the variables ``names`` as JSON. Strawberry hands resolvers graphql-core's
    coerced values (defaults applied), so they go back through their input types: a variable the
    client left out without a default stays out, a default applied here goes explicitly (the same
    value the service would apply). graphql-core's own info keeps each original input: that one is
    forwarded as the client sent it."""
    values = raw.variable_values
    sources = getattr(values, "sources", None)
    out: dict[str, Any] = {}
    if isinstance(sources, Mapping):
        for name in names:
            source = sources.get(name)
            if source is not None and source.value is not Undefined:
                out[name] = source.value
        return out
    coerced = values if isinstance(values, Mapping) else {}
    types = {
        definition.variable.name.value: type_from_ast(raw.schema, definition.type)
        for definition in raw.operation.variable_definitions or ()
    }
    for name in names:
        type_ = types.get(name)
        if name in coerced and type_ is not None:
            out[name] = to_json(coerced[name], type_)
    return out


def to_json(found: Any, type_: GraphQLInputType) -> Any:
    """A coerced input value as the JSON a client would send for it."""
    if found is None or found is Undefined:
        return None
    if isinstance(type_, GraphQLNonNull):
        return to_json(found, type_.of_type)
    if isinstance(type_, GraphQLList):
        items = found if isinstance(found, list | tuple) else [found]
        return [to_json(item, type_.of_type) for item in items]
    if isinstance(type_, GraphQLInputObjectType):
        out = {}
        for name, field in type_.fields.items():
            key = field.out_name or name
            item = found.get(key, Undefined) if isinstance(found, Mapping) else getattr(found, key, Undefined)
            if item is not Undefined and item is not strawberry.UNSET:
                out[name] = to_json(item, field.type)
        return out
    if is_enum_type(type_) or is_scalar_type(type_):
        return type_.serialize(found)
    return found
