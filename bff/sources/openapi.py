"""OpenAPI 3.0/3.1 sources: a REST service's own document becomes Query fields (GET) and Mutation
fields (every other method), each named by its ``operationId`` as written, with types from its
schemas. The result is Python source (a Strawberry module): the declarative mount executes it and
`bff sources generate` writes it for a team to take over, so both serve the same answers.

Unsupported constructs (a non-JSON body, a cookie parameter, an external ``$ref``, a ``oneOf`` of
scalars...) are named in `Generated.warnings`, one line each; the operation or the value is then
skipped or served as ``JSON``, never a crash."""

from __future__ import annotations

import keyword
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from bff.sources.links import Link, RemoteOperation
from bff.sources.mount import Mounted, SourceError, read_document
from bff.sources.names import Unique, graphql_name, pascal, snake, type_name

METHODS = ("get", "put", "post", "delete", "patch")
#: request headers an argument may never set: the session's credentials and the transport's own
_RESERVED_HEADERS = frozenset(
    {"authorization", "cookie", "host", "content-length", "content-type", "transfer-encoding", "dpop", "connection"}
)


@dataclass
class Generated:
    """One source's module: its code, its root classes' names, what it refused."""

    upstream: str
    code: str
    query_fields: list[str]
    mutation_fields: list[str]
    types: list[str]
    warnings: list[str] = field(default_factory=list)
    #: the operations by mounted field name (for links)
    operations: dict[str, Any] = field(default_factory=dict)


@dataclass
class Operation:
    """A generated operation, for links from other types: its fetch function (the upstream's JSON),
    its arguments (GraphQL name -> Python parameter) and how its answer is typed and converted."""

    function: str
    arguments: dict[str, str]
    result: _Ref


@dataclass
class LinkPlan:
    """A link as the generator of its parent type writes it: the target operation's fetch function
    (in ``module``, or in the same module when None) and how its answer is typed."""

    link: Link
    module: str | None
    operation_name: str
    operation: Operation | RemoteOperation
    target_types: frozenset[str]

    @property
    def function(self) -> str:
        assert isinstance(self.operation, Operation)
        return self.operation.function

    @property
    def result(self) -> _Ref:
        assert isinstance(self.operation, Operation)
        return self.operation.result

    def parameter(self, argument: str, where: str) -> str:
        if isinstance(self.operation, RemoteOperation):
            if argument in self.operation.arguments:
                return argument
            known = ", ".join(sorted(self.operation.arguments)) or "none"
            raise SourceError(f"{where}: {self.operation_name} has no argument {argument!r} ({known})")
        try:
            return self.operation.arguments[argument]
        except KeyError:
            known = ", ".join(sorted(self.operation.arguments)) or "none"
            raise SourceError(
                f"{where}: {self.operation_name} has no argument {argument!r} (it has: {known})"
            ) from None

    def item_annotation(self) -> str:
        inner = self.result.annotation.removeprefix("list[").removesuffix("]")
        return inner.removesuffix(" | None")

    def imports(self, batched: bool) -> list[str]:
        """The target module's names the link's resolver uses: its fetch function, its converters."""
        names = {self.function}
        if self.result.item_convert:
            names.add(self.result.item_convert)
        names.update(re.findall(r"(?<![.\w])([A-Za-z_][A-Za-z_0-9]*_from_json)\b", self.result.convert))
        return sorted(names)

    def qualified(self, annotation: str) -> str:
        """``annotation`` with the target module's types made lazy references (no import cycle)."""
        if self.module is None:
            return annotation
        return re.sub(
            r"\b([A-Za-z_][A-Za-z_0-9]*)\b",
            lambda m: (
                f"Annotated[{m.group(1)}, strawberry.lazy({self.module!r})]"
                if m.group(1) in self.target_types
                else m.group(1)
            ),
            annotation,
        )


@dataclass
class _Ref:
    """How a value of one schema is typed and converted in the generated code."""

    annotation: str  # the Python annotation (non-null form)
    convert: str  # a format string of one ``{}``: the JSON value -> the value (``{}`` alone: as is)
    nullable: bool = False  # null is one of the schema's own values (``nullable``, a ``null`` member)

    @property
    def item_convert(self) -> str | None:
        """For a list of objects or unions: the function converting one item (links use it)."""
        found = re.fullmatch(r"rt\.objects\(([A-Za-z_][A-Za-z_0-9]*), \{\}\)", self.convert)
        return found.group(1) if found else None


def _callable(convert: str) -> str:
    """A conversion (``f({})``) as a callable expression: ``f``, or a lambda."""
    found = re.fullmatch(r"([A-Za-z_][A-Za-z_0-9.]*)\(\{\}\)", convert)
    if found:
        return found.group(1)
    return "lambda value: " + convert.format("value")


#: names a generated module defines or imports: no type, function or attribute may take them
_MODULE_GLOBALS = frozenset(
    {
        "Annotated",
        "Any",
        "TYPE_CHECKING",
        "UPSTREAM",
        "datetime",
        "enum",
        "strawberry",
        "rt",
        "remote",
        "Authenticated",
        "RequiresScopes",
    }
)
_ROOTS = frozenset({"Query", "Mutation", "Subscription"})


class OpenAPIGenerator:
    def __init__(
        self,
        upstream: str,
        document: Mapping[str, Any],
        *,
        prefix: str = "",
        include: Iterable[str] = (),
        exclude: Iterable[str] = (),
        names: Mapping[str, str] | None = None,
        taken_types: Iterable[str] = (),
        links: Iterable[LinkPlan] = (),
        authorize: Mapping[str, Any] | None = None,
    ) -> None:
        self.upstream = upstream
        self.authorize = dict(authorize or {})
        self._directives_used: set[str] = set()
        self.links: dict[str, list[LinkPlan]] = {}
        for plan in links:
            self.links.setdefault(plan.link.parent_type, []).append(plan)
        self.doc = document
        self.prefix = prefix
        self.include = frozenset(include)
        self.exclude = frozenset(exclude)
        self.names = dict(names or {})
        self.warnings: list[str] = []
        self._types = Unique({*taken_types, *_MODULE_GLOBALS, *_ROOTS})
        self._functions = Unique(set(_MODULE_GLOBALS))
        self._by_ref: dict[tuple[str, bool], _Ref] = {}
        self._in_progress: set[tuple[str, bool]] = set()
        self._enums: dict[tuple[str, ...], _Ref] = {}
        self._blocks: list[str] = []
        #: union aliases, written after every class (a union may name a class defined later)
        self._unions: list[str] = []
        self._type_names: list[str] = []
        self.operations: dict[str, Operation] = {}
        #: the types of other sources' modules that link fields name (imported for type checkers only)
        self._type_checking: dict[str, set[str]] = {}
        version = str(document.get("openapi", ""))
        if not version.startswith("3."):
            raise ValueError(f"{upstream}: not an OpenAPI 3 document (openapi: {version or 'missing'})")

    # -- $ref ------------------------------------------------------------------------------------

    def _resolve(self, schema: Any) -> tuple[Any, str | None]:
        """(the schema a ``$ref`` points at, the pointer of the last ``$ref`` followed)."""
        pointer = None
        seen = 0
        while isinstance(schema, dict) and "$ref" in schema:
            ref = schema["$ref"]
            if not isinstance(ref, str) or not ref.startswith("#/"):
                self.warn(f"external $ref {ref!r} is not supported: served as JSON")
                return {}, None
            target: Any = self.doc
            for part in ref[2:].split("/"):
                part = part.replace("~1", "/").replace("~0", "~")
                if isinstance(target, list) and part.isdigit() and int(part) < len(target):
                    target = target[int(part)]
                else:
                    target = target.get(part) if isinstance(target, dict) else None
            if target is None:
                self.warn(f"$ref {ref!r} points nowhere: served as JSON")
                return {}, None
            pointer = ref
            schema = target
            seen += 1
            if seen > 32:
                self.warn(f"$ref {ref!r} loops: served as JSON")
                return {}, None
        return (schema if isinstance(schema, dict) else {}), pointer

    def warn(self, text: str) -> None:
        line = " ".join(f"source {self.upstream!r}: {text}".split())  # one line, whatever a name holds
        if line not in self.warnings:
            self.warnings.append(line)

    # -- schemas -> types ------------------------------------------------------------------------

    @staticmethod
    def _nullable(schema: Mapping[str, Any]) -> tuple[Any, bool]:
        kind = schema.get("type")
        nullable = bool(schema.get("nullable"))
        if isinstance(kind, list):
            others = [k for k in kind if k != "null"]
            nullable = nullable or len(others) < len(kind)
            kind = others[0] if len(others) == 1 else (others or None)
        elif kind == "null":
            nullable = True
        return kind, nullable

    def _merged(self, schema: Mapping[str, Any], depth: int = 0) -> dict[str, Any]:
        """``allOf`` composed into one object schema (properties and required of every part)."""
        if "allOf" not in schema or depth > 16:
            return dict(schema)
        merged: dict[str, Any] = {k: v for k, v in schema.items() if k != "allOf"}
        properties: dict[str, Any] = dict(merged.get("properties") or {})
        required: list[Any] = list(merged.get("required") or [])
        for part in schema["allOf"] or []:
            resolved, _ = self._resolve(part)
            resolved = self._merged(resolved, depth + 1)
            properties.update(resolved.get("properties") or {})
            required.extend(resolved.get("required") or [])
            for key in ("discriminator", "description", "enum", "format"):
                if key in resolved and key not in merged:
                    merged[key] = resolved[key]
            if "type" in resolved and "type" not in merged:
                merged["type"] = resolved["type"]
        if properties:
            merged["properties"] = properties
            merged["required"] = required
            merged.setdefault("type", "object")
        return merged

    def ref(self, schema: Any, context: str, *, output: bool = True) -> _Ref:
        """The type of ``schema`` (named by its component, else by ``context``)."""
        outer = schema if isinstance(schema, dict) else {}
        _, outer_nullable = self._nullable(outer)
        resolved, pointer = self._resolve(schema)
        parts = resolved.get("allOf")
        if isinstance(parts, list) and len(parts) == 1 and not resolved.get("properties"):
            # ``allOf: [{$ref: X}]`` beside a description or ``nullable``: X itself
            inner = self.ref(parts[0], context, output=output)
            nullable = inner.nullable or self._nullable(resolved)[1] or outer_nullable
            return _Ref(inner.annotation, inner.convert, nullable)
        resolved = self._merged(resolved)
        _, nullable = self._nullable(resolved)
        nullable = nullable or outer_nullable
        name = pointer.rsplit("/", 1)[-1] if pointer else None
        # an enum is the same type for inputs and outputs; an object, a list or a date is not
        shared = "enum" in resolved and not resolved.get("properties")
        key = (pointer, output or shared) if pointer else None
        if key is not None:
            if key in self._by_ref:
                found = self._by_ref[key]
                return _Ref(found.annotation, found.convert, found.nullable or nullable)
            if key in self._in_progress:
                self.warn(f"{pointer}: refers to itself through a list or a union: served as JSON")
                return _Ref("rt.JSON", "{}", True)
            self._in_progress.add(key)
        try:
            ref = self._ref(resolved, name or context, output, key)
        finally:
            if key is not None:
                self._in_progress.discard(key)
        if key is not None:
            self._by_ref[key] = ref
        return _Ref(ref.annotation, ref.convert, ref.nullable or nullable)

    def _ref(self, schema: dict[str, Any], context: str, output: bool, key: tuple[str, bool] | None) -> _Ref:
        kind, _ = self._nullable(schema)
        for combinator in ("oneOf", "anyOf"):
            if combinator in schema and not schema.get("properties"):
                return self._alternatives(schema, combinator, context, output, key)
        if "enum" in schema and kind in ("string", None):
            values = [v for v in schema["enum"] or () if v is not None]
            if values and all(isinstance(v, str) for v in values):
                return self._enum(values, context, schema.get("description"))
        if kind == "array" or (kind is None and "items" in schema):
            item = self.ref(schema.get("items") or {}, f"{context}Item", output=output)
            inner = f"{item.annotation} | None" if item.nullable else item.annotation
            convert = "rt.scalars({})" if item.convert == "{}" else f"rt.objects({_callable(item.convert)}, {{}})"
            return _Ref(f"list[{inner}]", convert)
        if kind == "integer":
            return _Ref("rt.BigInt" if schema.get("format") == "int64" else "int", "{}")
        if kind == "number":
            return _Ref("float", "{}")
        if kind == "boolean":
            return _Ref("bool", "{}")
        if kind == "string":
            if schema.get("format") == "date-time":
                return _Ref("datetime.datetime", "rt.date_time({})" if output else "{}")
            if schema.get("format") == "date":
                return _Ref("datetime.date", "rt.date({})" if output else "{}")
            return _Ref("str", "{}")
        if (kind == "object" or kind is None) and schema.get("properties"):
            return self._object(schema, context, output, key)
        if isinstance(kind, list):
            self.warn(f"{context}: a value of several types ({', '.join(map(str, kind))}) is served as JSON")
        return _Ref("rt.JSON", "{}")

    def _enum(self, values: list[str], context: str, description: str | None) -> _Ref:
        unique = tuple(dict.fromkeys(values))
        remembered = (context, *unique)
        if remembered in self._enums:  # an object's inline enum, met for its input and its output
            return self._enums[remembered]
        name = self._types(type_name(context))
        members = Unique({"name", "value", "mro"})
        graphql_names = Unique()
        lines = [f"@strawberry.enum(name={name!r}{_description(description)})", f"class {name}(enum.Enum):"]
        for value in unique:
            gql = graphql_name(value, "VALUE")
            gql = graphql_names(f"{gql}_" if gql in ("true", "false", "null") else gql)
            member = re.sub(r"\W", "_", value) or "VALUE"
            if member[0].isdigit() or member.startswith("_"):
                member = f"V{member}" if member.startswith("_") else f"V_{member}"
            member = members(f"{member}_" if keyword.iskeyword(member) else member)
            if member == gql:
                lines.append(f"    {member} = {value!r}")
            else:
                lines.append(f"    {member} = strawberry.enum_value({value!r}, name={gql!r})")
        self._blocks.append("\n".join(lines))
        self._type_names.append(name)
        ref = _Ref(name, f"rt.enum_member({name}, {{}})")
        self._enums[remembered] = ref
        return ref

    def _alternatives(
        self, schema: dict[str, Any], combinator: str, context: str, output: bool, key: tuple[str, bool] | None
    ) -> _Ref:
        members = []
        nullable = False
        for option in schema[combinator] or []:
            resolved, pointer = self._resolve(option)
            kind, _ = self._nullable(resolved)
            if kind == "null" and not resolved.get("properties"):
                nullable = True
                continue
            members.append((option, resolved, pointer))
        if len(members) == 1:
            ref = self.ref(members[0][0], context, output=output)
            return _Ref(ref.annotation, ref.convert, True if nullable else ref.nullable)
        objects = [m for m in members if self._merged(m[1]).get("properties")]
        if not members or len(objects) != len(members):
            self.warn(f"{context}: {_article(combinator)} {combinator} of non-object schemas is served as JSON")
            return _Ref("rt.JSON", "{}", nullable)
        if not output:
            self.warn(
                f"{context}: {_article(combinator)} {combinator} input is served as JSON (GraphQL has no input unions)"
            )
            return _Ref("rt.JSON", "{}", nullable)
        name = self._types(type_name(context))
        function = self._functions(f"{snake(name)}_from_json")
        ref = _Ref(name, f"{function}({{}})", nullable)
        if key is not None:
            self._by_ref[key] = ref  # before the members: a member may contain the union
        options = []
        for index, (option, resolved, pointer) in enumerate(objects):
            member_name = pointer.rsplit("/", 1)[-1] if pointer else None
            member = self.ref(option, member_name or f"{context}Option{index + 1}", output=True)
            options.append((member, self._merged(resolved), member_name))
        annotations = " | ".join(dict.fromkeys(member.annotation for member, _, _ in options))
        self._unions.append(
            f"{name} = Annotated[{annotations}, strawberry.union({name!r}{_description(schema.get('description'))})]"
        )
        discriminator = schema.get("discriminator") or {}
        prop = discriminator.get("propertyName") if isinstance(discriminator, dict) else None
        mapping: dict[str, str] = {}
        if prop:
            for value, target in (discriminator.get("mapping") or {}).items():
                mapping.setdefault(str(target).rsplit("/", 1)[-1], str(value))
        lines = [
            f"def {function}(data: Any) -> {annotations} | None:",
            "    if not isinstance(data, dict):",
            "        return None",
        ]
        branches = []
        if prop:
            for member, merged, member_name in options:
                values: set[str] = set()
                if member_name:
                    values.add(mapping.get(member_name, member_name))
                enum_values = ((merged.get("properties") or {}).get(prop) or {}).get("enum") or []
                values.update(v for v in enum_values if isinstance(v, str))
                if values:
                    branches.append(f"    if kind in {tuple(sorted(values))!r}:")
                    branches.append(f"        return {member.convert.format('data')}")
        if branches:
            lines.append(f"    kind = data.get({prop!r})")
            lines.extend(branches)
        choices = ", ".join(
            f"({tuple(r for r in merged.get('required') or () if isinstance(r, str))!r}, "
            f"{tuple((merged.get('properties') or {}).keys())!r})"
            for _, merged, _ in options
        )
        lines.append(f"    chosen = rt.choose(data, ({choices},))")
        for index, (member, _, _) in enumerate(options):
            lines.append(f"    if chosen == {index}:")
            lines.append(f"        return {member.convert.format('data')}")
        lines.append("    return None")
        self._blocks.append("\n".join(lines))
        self._type_names.append(name)
        return ref

    def _object(self, schema: dict[str, Any], context: str, output: bool, key: tuple[str, bool] | None) -> _Ref:
        base = type_name(context)
        name = self._types(base if output or base.endswith("Input") else f"{base}Input")
        function = self._functions(f"{snake(name)}_from_json") if output else ""
        ref = _Ref(name, f"{function}({{}})" if output else "{}")
        if key is not None:
            self._by_ref[key] = ref  # before the properties: a schema may refer to itself
        required = {r for r in schema.get("required") or () if isinstance(r, str)}
        attributes = Unique({"from_json", "is_type_of", *_MODULE_GLOBALS})
        graphql_names = Unique()
        fields = []
        for prop, prop_schema in (schema.get("properties") or {}).items():
            resolved, _ = self._resolve(prop_schema)
            if output and resolved.get("writeOnly"):
                continue
            if not output and resolved.get("readOnly"):
                continue
            gql = graphql_names(graphql_name(str(prop)))
            if gql != prop:
                self.warn(f"{name}.{prop}: not a GraphQL name, served as {gql}")
            prop_ref = self.ref(prop_schema, pascal(base, str(prop)), output=output)
            is_required = prop in required and not prop_ref.nullable
            description = resolved.get("description") if isinstance(resolved.get("description"), str) else None
            fields.append((gql, attributes(snake(gql)), prop_ref, description, is_required, str(prop)))
        if not fields:
            self.warn(f"{name}: no property left for {'answers' if output else 'inputs'}: served as JSON")
            ref = _Ref("rt.JSON", "{}")
            if key is not None:
                self._by_ref[key] = ref
            return ref
        decorator = "strawberry.type" if output else "strawberry.input"
        lines = [f"@{decorator}(name={name!r}{_description(schema.get('description'))})", f"class {name}:"]
        # a link named like a property replaces it (``assignee`` the id -> ``assignee`` the person):
        # the property stays, private, as the link's key
        replaced = {plan.link.field_name for plan in self.links.get(name, [])} if output else set()
        for gql, attribute, prop_ref, description, is_required, prop in fields:
            annotation = _annotation(prop_ref, nullable=not is_required)
            if gql in replaced:
                lines.append(f"    {attribute}: strawberry.Private[{_annotation(prop_ref, nullable=True)}]")
                continue
            extra = "" if output or is_required else ", default=strawberry.UNSET"
            if not output and gql != prop:  # the body carries the document's own name (rt.to_json)
                extra += f", metadata={{'json': {prop!r}}}"
            described = _description(description)
            lines.append(f"    {attribute}: {annotation} = strawberry.field(name={gql!r}{described}{extra})")
        if output:
            properties = {prop: attribute for _g, attribute, _r, _d, _q, prop in fields}
            for plan in self.links.get(name, []):
                lines.append(self._link_method(plan, properties, attributes, name))
        self._blocks.append("\n".join(lines))
        if output:
            body = [
                f"def {function}(data: Any) -> {name} | None:",
                "    if not isinstance(data, dict):",
                "        return None",
                "    get: Any = data.get  # the upstream's JSON: typed by the fields it fills",
                f"    return {name}(",
            ]
            for _gql, attribute, prop_ref, _d, _r, prop in fields:
                body.append(f"        {attribute}={prop_ref.convert.format(f'get({prop!r})')},")
            body.append("    )")
            self._blocks.append("\n".join(body))
        self._type_names.append(name)
        return ref

    def _link_method(self, plan: LinkPlan, properties: dict[str, str], attributes: Unique, owner: str) -> str:
        """The resolver of a link field (a module-level function before its class) and the field."""
        link = plan.link
        where = f"link {link.on} <- {link.to}"
        batched = link.batched_argument()
        passed = [f"{plan.parameter(argument, where)}={value!r}" for argument, value in link.literals().items()]
        for argument, prop in link.parent_properties().items():
            if prop not in properties:
                raise SourceError(f"{where}: {link.parent_type} has no property {prop!r}")
            passed.append(f"{plan.parameter(argument, where)}=root.{properties[prop]}")
        if isinstance(plan.operation, RemoteOperation):
            return self._remote_link(plan, properties, attributes, owner, passed, batched)
        target = plan.qualified
        imported = ", ".join(plan.imports(batched is not None))
        imports = f"    from {plan.module} import {imported}\n" if plan.module else ""
        attribute = attributes(snake(link.field_name))
        resolver = self._functions(f"resolve_{snake(owner)}_{attribute}")
        if plan.module:
            used = re.findall(r"[A-Za-z_][A-Za-z_0-9]*", plan.result.annotation)
            self._type_checking.setdefault(plan.module, set()).update(n for n in used if n in plan.target_types)
        if batched is not None:
            argument, prop = batched
            if prop not in properties:
                raise SourceError(f"{where}: {link.parent_type} has no property {prop!r}")
            if plan.result.item_convert is None:
                raise SourceError(f"{where}: {plan.operation_name} does not answer a list of objects")
            annotation = f"{target(plan.item_annotation())} | None"
            gathered = f"{plan.parameter(argument, where)}=keys"
            fetch = f"lambda keys: {plan.function}({', '.join(['info', *passed, gathered])})"
            body = (
                f"    value: {annotation} = await rt.batched(\n"
                f"        info,\n        {link.on!r},\n        root.{properties[prop]},\n"
                f"        {fetch},\n        {link.key!r},\n        {plan.result.item_convert},\n"
                "    )\n"
            )
        else:
            annotation = target(_annotation(plan.result, nullable=True))
            call = f"await {plan.function}({', '.join(['info', *passed])})"
            absent = [f"root.{properties[prop]} is None" for prop in link.parent_properties().values()]
            missing = f"    if {' or '.join(absent)}:\n        return None\n" if absent else ""
            body = f"{missing}{imports}    value: {annotation} = {_convert(plan.result, call)}\n"
            imports = ""
        signature = f"async def {resolver}(root: {owner}, info: strawberry.Info) -> {annotation}:"
        self._blocks.append(f"{signature}\n{imports}{body}    return value")
        described = _description(link.description)
        return (
            f"    {attribute}: {annotation} = strawberry.field(\n"
            f"        resolver={resolver}, name={link.field_name!r}{described}\n"
            "    )"
        )

    def _remote_link(
        self,
        plan: LinkPlan,
        properties: dict[str, str],
        attributes: Unique,
        owner: str,
        passed: list[str],
        batched: tuple[str, str] | None,
    ) -> str:
        """A link to a remote GraphQL source's Query field: the link field's own sub-selection is
        forwarded under that field (`bff.sources.delegate.Remote.link`)."""
        link = plan.link
        operation = plan.operation
        assert isinstance(operation, RemoteOperation)
        assert plan.module is not None
        where = f"link {link.on} <- {link.to}"
        attribute = attributes(snake(link.field_name))
        resolver = self._functions(f"resolve_{snake(owner)}_{attribute}")
        arguments = "{" + ", ".join(f"{a.split('=', 1)[0]!r}: {a.split('=', 1)[1]}" for a in passed) + "}"
        if batched is not None:
            argument, prop = batched
            if prop not in properties:
                raise SourceError(f"{where}: {link.parent_type} has no property {prop!r}")
            if operation.item is None:
                raise SourceError(f"{where}: {plan.operation_name} does not answer a list")
            plan.parameter(argument, where)
            shown = operation.item
            annotation = f"{plan.qualified(shown)} | None"
            call = (
                f"await remote.link(\n        info,\n        {operation.field!r},\n        {arguments},\n"
                f"        mounted={plan.operation_name!r},\n"
                f"        gather={argument!r},\n        key=root.{properties[prop]},\n"
                f"        key_field={link.key!r},\n    )"
            )
            missing = ""
        else:
            shown = operation.annotation
            annotation = plan.qualified(operation.annotation)
            call = f"await remote.link(info, {operation.field!r}, {arguments}, mounted={plan.operation_name!r})"
            absent = [f"root.{properties[prop]} is None" for prop in link.parent_properties().values()]
            missing = f"    if {' or '.join(absent)}:\n        return None\n" if absent else ""
        used = re.findall(r"[A-Za-z_][A-Za-z_0-9]*", shown)
        self._type_checking.setdefault(plan.module, set()).update(n for n in used if n in plan.target_types)
        signature = f"async def {resolver}(root: {owner}, info: strawberry.Info) -> {annotation}:"
        self._blocks.append(
            f"{signature}\n{missing}    from {plan.module} import remote\n\n"
            f"    value: {annotation} = {call}\n    return value"
        )
        return (
            f"    {attribute}: {annotation} = strawberry.field(\n"
            f"        resolver={resolver}, name={link.field_name!r}{_description(link.description)}\n"
            "    )"
        )

    # -- operations -> root fields ---------------------------------------------------------------

    def _selected(self, operation_id: str, tags: list[str]) -> bool:
        keys = {operation_id, *tags, *(f"tag:{t}" for t in tags)}
        if self.include and not keys & self.include:
            return False
        return not keys & self.exclude

    def generate(self) -> Generated:
        roots: dict[str, list[str]] = {"Query": [], "Mutation": []}
        fields: dict[str, list[str]] = {"Query": [], "Mutation": []}
        methods = Unique()
        mounted = Unique()
        paths = self.doc.get("paths") or {}
        base_path = self._base_path()
        for path, raw_item in paths.items():
            item, _ = self._resolve(raw_item)  # a path item may be a $ref
            if not isinstance(item, dict):
                continue
            shared = item.get("parameters") or []
            for method in METHODS:
                operation, _ = self._resolve(item.get(method))
                if not isinstance(operation, dict) or not operation:
                    continue
                operation_id = operation.get("operationId") or _derived_id(method, path)
                tags = [str(t) for t in operation.get("tags") or []]
                if not self._selected(str(operation_id), tags):
                    continue
                root = "Query" if method == "get" else "Mutation"
                name = self.prefix + graphql_name(self.names.get(str(operation_id), str(operation_id)))
                if name in mounted:
                    self.warn(f"{method.upper()} {path}: the field name {name} is taken; skipped")
                    continue
                code = self._operation(name, method, base_path + str(path), operation, shared, methods)
                if code is not None:
                    mounted(name)
                    roots[root].append(code)
                    fields[root].append(name)
            for method in ("head", "options", "trace"):
                if isinstance(item.get(method), dict):
                    self.warn(f"{method.upper()} {path}: not mounted (only GET, PUT, POST, DELETE and PATCH are)")
        for kind in ("callbacks",):
            if any(
                isinstance(op, dict) and op.get(kind)
                for it in paths.values()
                if isinstance(it, dict)
                for op in it.values()
            ):
                self.warn(f"{kind} are not supported: not mounted")
        if self.doc.get("webhooks"):
            self.warn("webhooks are not supported: not mounted")
        header = _HEADER.format(upstream=self.upstream)
        blocks = [*self._blocks, *self._unions]  # union aliases after every class they name
        body = "\n".join([*blocks, *(code for codes in roots.values() for code in codes)])
        if "datetime." not in body:
            header = header.replace("import datetime\n", "")
        if "enum.Enum" not in body:
            header = header.replace("import enum\n", "")
        typing = [n for n in ("Annotated", "Any") if re.search(rf"\b{n}\b", body)]
        typing_line = f"from typing import {', '.join(typing)}\n" if typing else ""
        header = header.replace("from typing import Annotated, Any\n", typing_line)
        if self._type_checking:
            if typing_line:
                header = header.replace("from typing import ", "from typing import TYPE_CHECKING, ")
            else:
                header = header.replace("\nimport strawberry", "from typing import TYPE_CHECKING\n\nimport strawberry")
            imports = "".join(
                f"\n    from {module} import {', '.join(sorted(names))}"
                for module, names in sorted(self._type_checking.items())
            )
            header += f"\n\nif TYPE_CHECKING:{imports}"
        if self._directives_used:
            header = header.replace(
                "from bff.sources import runtime as rt",
                f"from bff import {', '.join(sorted(self._directives_used))}\nfrom bff.sources import runtime as rt",
            )
        if "strawberry." not in body:
            header = header.replace("import strawberry\n", "")
        if "rt." not in body:
            header = header.replace("from bff.sources import runtime as rt", "")
        header = re.sub(r"\n{3,}", "\n\n", header).rstrip("\n")
        parts = [f"{header}\n\nUPSTREAM = {self.upstream!r}", *blocks]
        for root, codes in roots.items():
            if codes:
                parts.append(f"@strawberry.type(name={root!r})\nclass {root}:\n" + "\n".join(codes))
        code = "\n\n\n".join(parts) + "\n"
        return Generated(
            self.upstream, code, fields["Query"], fields["Mutation"], self._type_names, self.warnings, self.operations
        )

    def _base_path(self) -> str:
        """The path of the document's first server when it is relative (``/api/v3``): under the
        upstream's URL. An absolute server URL is the upstream's URL itself (``BFF_UPSTREAMS__*__URL``
        says where the service is)."""
        servers = self.doc.get("servers") or []
        server = servers[0] if servers and isinstance(servers[0], dict) else {}
        url = server.get("url", "")
        if not isinstance(url, str) or not url.startswith("/"):
            return ""
        variables = server.get("variables") or {}
        for name in re.findall(r"\{([^}]*)\}", url):
            default = (variables.get(name) or {}).get("default") if isinstance(variables, dict) else None
            if default is None:
                self.warn(f"server variable {name!r} has no default: left out of the base path")
            url = url.replace("{" + name + "}", str(default or ""))
        return re.sub("/+", "/", url).rstrip("/")

    def _operation(
        self,
        name: str,
        method: str,
        path: str,
        operation: dict[str, Any],
        shared: list[Any],
        methods: Unique,
    ) -> str | None:
        where = f"{method.upper()} {path}"
        context = pascal(name)
        parameters: dict[tuple[str, str], dict[str, Any]] = {}
        for raw in [*shared, *(operation.get("parameters") or [])]:
            parameter, _ = self._resolve(raw)
            if "name" in parameter and "in" in parameter:
                parameters[(str(parameter["in"]), str(parameter["name"]))] = parameter
        arguments = Unique({"self", "info", "data", "rt", "value"})
        arguments_by_name: dict[str, str] = {}
        args: list[tuple[bool, str]] = []
        groups: dict[str, list[tuple[str, str]]] = {"path": [], "query": [], "header": []}
        styles: dict[str, str] = {}
        graphql_args = Unique()
        for (location, pname), parameter in parameters.items():
            if location == "cookie":
                self.warn(f"{where}: cookie parameter {pname!r} is not supported: not an argument")
                if parameter.get("required"):
                    self.warn(f"{where}: needs the cookie parameter {pname!r}; skipped")
                    return None
                continue
            if location == "header" and pname.lower() in _RESERVED_HEADERS:
                self.warn(f"{where}: header parameter {pname!r} is set by bff, not an argument")
                continue
            if location not in groups:
                continue
            required = bool(parameter.get("required")) or location == "path"
            schema = parameter.get("schema")
            as_json = False
            if schema is None and isinstance(parameter.get("content"), dict) and parameter["content"]:
                schema = (next(iter(parameter["content"].values())) or {}).get("schema") or {}
                as_json = True  # a parameter described by `content`: its value goes as JSON text
            if schema is None:
                if required:
                    self.warn(f"{where}: the required parameter {pname!r} has no schema; skipped")
                    return None
                self.warn(f"{where}: parameter {pname!r} has no schema: not an argument")
                continue
            if self._scalar_alternatives(schema):
                ref = _Ref("str", "{}")  # `oneOf: [integer, string]` (an id or a name): its text
            else:
                ref = self.ref(schema, pascal(context, pname), output=False)
            if ref.annotation.startswith("rt.JSON") and location != "query" and not as_json:
                if required:
                    self.warn(f"{where}: the {location} parameter {pname!r} is not a scalar; skipped")
                    return None
                self.warn(f"{where}: {location} parameter {pname!r} is not a scalar: not an argument")
                continue
            style = "json" if as_json else parameter.get("style")
            explode = parameter.get("explode")
            if location == "query" and (style not in (None, "form") or explode is False):
                styles[pname] = f"{style or 'form'}{'' if explode is not False else ',false'}"
            gql = graphql_args(graphql_name(pname))
            python = arguments(snake(gql))
            arguments_by_name[gql] = python
            annotation = _annotation(ref, nullable=not required)
            described = _description(parameter.get("description"))
            argument = f"{python}: Annotated[{annotation}, strawberry.argument(name={gql!r}{described})]"
            args.append((required, argument if required else f"{argument} = strawberry.UNSET"))
            groups[location].append((pname, python))
        declared = {p for p, _ in groups["path"]}
        missing = [p for p in re.findall(r"\{([^}]*)\}", path) if p not in declared]
        if missing:
            self.warn(f"{where}: the path parameter {missing[0]!r} is not declared; skipped")
            return None
        body_argument = None
        request_body, _ = self._resolve(operation.get("requestBody") or {})
        content = request_body.get("content") or {} if request_body else {}
        media = next((m for m in content if _is_json(m)), None)
        if request_body and media is None:
            kinds = ", ".join(content) or "body"
            if request_body.get("required") or method not in ("get", "delete"):
                self.warn(f"{where}: a {kinds} request body is not supported; skipped")
                return None
            self.warn(f"{where}: its optional {kinds} request body is not supported: sent without one")
        if request_body and media is not None:
            ref = self.ref((content[media] or {}).get("schema") or {}, f"{context}Input", output=False)
            required = bool(request_body.get("required"))
            body_argument = arguments("body")
            gql = graphql_args("input")
            arguments_by_name[gql] = body_argument
            annotation = _annotation(ref, nullable=not required)
            argument = f"{body_argument}: Annotated[{annotation}, strawberry.argument(name={gql!r})]"
            args.append((required, argument if required else f"{argument} = strawberry.UNSET"))
        result = self._result(operation, context, where)
        if result is None:
            return None
        ordered = [a for r, a in args if r] + [a for r, a in args if not r]
        python_name = methods(snake(name))
        fetch = self._functions(f"{python_name}_json")
        passed = [p for _, p in groups["path"] + groups["query"] + groups["header"]]
        if body_argument is not None:
            passed.append(body_argument)
        self._fetch_function(fetch, method, path, groups, body_argument, ordered, styles)
        self.operations[name] = Operation(
            function=fetch,
            arguments={gql: python for gql, python in arguments_by_name.items()},
            result=result,
        )
        resolver = self._functions(f"resolve_{python_name}")
        returns = _annotation(result, nullable=True)
        description = operation.get("summary") or operation.get("description")
        deprecated = ", deprecation_reason='deprecated in the OpenAPI document'" if operation.get("deprecated") else ""
        value = result.convert.format("data")
        self._blocks.append(
            "\n".join(
                [
                    f"async def {resolver}({_signature(['info: strawberry.Info', *ordered], indent='')}) -> {returns}:",
                    f"    data = await {fetch}({', '.join(['info', *(f'{p}={p}' for p in passed)])})",
                    f"    value: {returns} = {value}",
                    "    return value",
                ]
            )
        )
        # a field with its resolver given, not a decorated method: `strawberry.field(...)` as a
        # decorator is untyped, which `mypy --strict` refuses in the ejected code
        directives = self._directives(name, str(operation.get("operationId") or ""))
        return (
            f"    {python_name}: {returns} = strawberry.field(\n"
            f"        resolver={resolver}, name={name!r}{_description(description)}{deprecated}{directives}\n"
            "    )"
        )

    def _directives(self, name: str, operation_id: str) -> str:
        """The authorization directives `openapi(authorize=...)` puts on the field ``name``
        (by field name, operationId or ``*``): ``"authenticated"``, or scopes ``[["a", "b"], ["c"]]``
        (`bff.RequiresScopes`: any inner list, all of its scopes)."""
        rule = next((self.authorize[k] for k in (name, operation_id, "*") if k in self.authorize), None)
        if rule is None:
            return ""
        if rule == "authenticated":
            self._directives_used.add("Authenticated")
            return ", directives=[Authenticated()]"
        if isinstance(rule, str):
            rule = [[rule]]
        scopes = [[str(scope) for scope in group] for group in rule]
        self._directives_used.add("RequiresScopes")
        return f", directives=[RequiresScopes(scopes={scopes!r})]"

    def _fetch_function(
        self,
        function: str,
        method: str,
        path: str,
        groups: dict[str, list[tuple[str, str]]],
        body_argument: str | None,
        ordered: list[str],
        styles: dict[str, str],
    ) -> None:
        """The call of one operation, apart from its field: a link from another type calls it too."""
        plain = [re.sub(r"Annotated\[(.*), strawberry\.argument\(.*\)\]", r"\1", a) for a in ordered]
        call = [f"info, UPSTREAM, {method.upper()!r}, {path!r}"]
        for location, argument in (("path", "path_params"), ("query", "query"), ("header", "headers")):
            if groups[location]:
                items = ", ".join(f"{p!r}: {v}" for p, v in groups[location])
                call.append(f"{argument}={{{items}}}")
        if styles:
            call.append(f"styles={styles!r}")
        if body_argument is not None:
            call.append(f"body={body_argument}")
        self._blocks.append(
            "\n".join(
                [
                    f"async def {function}({_signature(['info: strawberry.Info', *plain], indent='')}) -> Any:",
                    f"    return await rt.call({', '.join(call)})",
                ]
            )
        )

    def _result(self, operation: dict[str, Any], context: str, where: str) -> _Ref | None:
        """The type of the first 2xx answer with a JSON body (else ``default``'s), Boolean for an
        operation that answers no content."""
        responses = {str(code): response for code, response in (operation.get("responses") or {}).items()}
        ordered = sorted((c for c in responses if c.startswith("2")), key=lambda c: c.upper())
        if not ordered and "default" in responses:
            ordered = ["default"]  # no success answer described: `default` is the only answer
        empty = other = None
        for code in ordered:
            response, _ = self._resolve(responses[code])
            content = response.get("content") or {}
            media = next((m for m in content if _is_json(m)), None)
            if media is not None:
                schema = (content[media] or {}).get("schema")
                return _Ref("rt.JSON", "{}") if schema is None else self.ref(schema, f"{context}Result", output=True)
            if content:
                other = other or ", ".join(content)
            else:
                empty = empty or code
        if empty is not None:
            return _Ref("bool", "rt.done({})")
        if other is not None:
            self.warn(f"{where}: a {other} answer is not supported; skipped")
            return None
        self.warn(f"{where}: no success answer is described: served as JSON")
        return _Ref("rt.JSON", "{}")

    def _scalar_alternatives(self, schema: Any) -> bool:
        """A ``oneOf``/``anyOf`` whose members are all strings, numbers or booleans."""
        resolved, _ = self._resolve(schema)
        for combinator in ("oneOf", "anyOf"):
            options = resolved.get(combinator)
            if isinstance(options, list) and options:
                kinds = [self._nullable(self._resolve(o)[0])[0] for o in options]
                scalars = [k for k in kinds if k != "null"]
                return len(scalars) > 1 and all(k in ("string", "integer", "number", "boolean") for k in scalars)
        return False


_HEADER = '''"""GraphQL fields of the upstream {upstream!r}, from its OpenAPI document: generated by bff, yours
to edit (`bff sources generate`). Every call goes through the upstream client with the session's token
for this upstream, the request deadline and the breaker."""

from __future__ import annotations

import datetime
import enum
from typing import Annotated, Any

import strawberry
from bff.sources import runtime as rt'''


def _signature(parts: list[str], indent: str = "    ") -> str:
    """Parameters on one line, or one a line when that line would be long."""
    line = ", ".join(parts)
    if len(line) <= 60:
        return line
    return "".join(f"\n{indent}    {part}," for part in parts) + f"\n{indent}"


def _description(text: Any) -> str:
    return f", description={text.strip()!r}" if isinstance(text, str) and text.strip() else ""


def _annotation(ref: _Ref, *, nullable: bool) -> str:
    return f"{ref.annotation} | None" if nullable else ref.annotation


def _convert(ref: _Ref, value: str) -> str:
    return ref.convert.format(value)


def _is_json(media: str) -> bool:
    base = media.split(";")[0].strip().lower()
    return base == "application/json" or base.endswith("+json") or base == "*/*"


def _derived_id(method: str, path: str) -> str:
    """A name for an operation without an ``operationId``: ``GET /users/{id}`` -> ``get_users_by_id``."""
    words = [method]
    for segment in path.strip("/").split("/"):
        match = re.fullmatch(r"\{(.+)\}", segment)
        words.append(f"by_{match.group(1)}" if match else segment)
    return graphql_name("_".join(w for w in words if w))


@dataclass(frozen=True)
class OpenAPISource:
    """An OpenAPI 3.0/3.1 document of the upstream ``name`` (see `openapi`)."""

    name: str
    spec: str | Mapping[str, Any]
    prefix: str = ""
    include: tuple[str, ...] = ()
    exclude: tuple[str, ...] = ()
    names: Mapping[str, str] = field(default_factory=dict)
    authorize: Mapping[str, Any] = field(default_factory=dict)

    def generate(self, taken_types: Sequence[str] = (), *, links: Sequence[LinkPlan] = ()) -> Generated:
        try:
            document = read_document(self.spec)
            return OpenAPIGenerator(
                self.name,
                document,
                prefix=self.prefix,
                include=self.include,
                exclude=self.exclude,
                names=self.names,
                taken_types=taken_types,
                links=links,
                authorize=self.authorize,
            ).generate()
        except SourceError as exc:
            raise SourceError(f"source {self.name!r}: {exc}") from None
        except ValueError as exc:
            raise SourceError(str(exc)) from None

    def mount_all(self, sources: Sequence[Any], taken_types: Sequence[str] = ()) -> list[Mounted]:
        from bff.sources.assemble import mount_all

        return mount_all(sources, taken_types)


def _article(combinator: str) -> str:
    """``an anyOf``, ``a oneOf`` (said "one of")."""
    return "an" if combinator in ("anyOf", "allOf") else "a"
