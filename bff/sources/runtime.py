"""What generated source modules call at run time (`bff sources generate` writes modules that import
this one, and the declarative mount runs the very same code): the upstream call with the session's
token, and the tolerant conversions of an upstream's JSON into the generated Strawberry types.

The conversions are tolerant on purpose: a value of the wrong shape becomes None, so GraphQL's own
null handling reports it at that field (an error there if the field is non-null) instead of failing
the whole answer of the operation."""

from __future__ import annotations

import datetime as _dt
import enum
from collections.abc import Awaitable, Callable, Mapping
from typing import Any, NewType, TypeVar
from urllib.parse import quote, urlencode

import orjson
import strawberry
from strawberry.dataloader import DataLoader
from strawberry.types.base import has_object_definition
from strawberry.types.unset import UNSET

E = TypeVar("E", bound=enum.Enum)

#: integers past GraphQL's 32-bit Int (OpenAPI ``format: int64``), passed as JSON numbers
BigInt = NewType("BigInt", int)

#: the scalars generated modules use, as a schema's ``scalar_overrides`` (Strawberry's scalar_map):
#: `build_schema` adds them for every mounted source
SCALARS: dict[object, Any] = {
    BigInt: strawberry.scalar(
        name="BigInt",
        description="An integer of up to 64 bits (OpenAPI int64), as a JSON number",
        serialize=int,
        parse_value=int,
    )
}

JSON = strawberry.scalars.JSON


class Timestamp(str):
    """An upstream's ISO 8601 date or date-time, checked and then served exactly as the upstream
    wrote it: Strawberry's ``DateTime``/``Date`` scalars serialize with ``isoformat()``, which here
    returns the original text (a parsed `datetime` would print ``+00:00`` where the upstream sent
    ``Z``, and drop or add precision)."""

    __slots__ = ()

    def isoformat(self) -> str:
        return str(self)


def date_time(value: Any) -> Any:
    """An upstream's ``format: date-time`` string as a `Timestamp`; None when it is not one."""
    if isinstance(value, str):
        try:
            _dt.datetime.fromisoformat(value)
        except ValueError:
            return None
        return Timestamp(value)
    return None


def date(value: Any) -> Any:
    """An upstream's ``format: date`` string as a `Timestamp`; None when it is not one."""
    if isinstance(value, str):
        try:
            _dt.date.fromisoformat(value)
        except ValueError:
            return None
        return Timestamp(value)
    return None


def enum_member(kind: type[E], value: Any) -> E | None:
    """The member of ``kind`` whose value the upstream sent; None for a value the document does not
    list (GraphQL then reports it at the field when the field is non-null)."""
    try:
        return kind(value)
    except ValueError:
        return None


def objects(convert: Callable[[Any], Any], value: Any) -> Any:
    """A JSON array converted item by item; None when the upstream sent no array."""
    if not isinstance(value, list):
        return None
    return [convert(item) for item in value]


def scalars(value: Any) -> Any:
    return value if isinstance(value, list) else None


def to_json(value: Any) -> Any:
    """A GraphQL input (a generated ``@strawberry.input`` instance, an enum member, a list) as the
    JSON the upstream expects: the document's own property names, unset fields left out."""
    if value is None or isinstance(value, (str, int, float, bool)):
        return value
    if isinstance(value, enum.Enum):
        return value.value
    if isinstance(value, (list, tuple)):
        return [to_json(item) for item in value]
    if isinstance(value, (_dt.datetime, _dt.date)):
        return value.isoformat()
    if has_object_definition(value):
        out: dict[str, Any] = {}
        for field in value.__strawberry_definition__.fields:
            item = getattr(value, field.python_name, UNSET)
            if item is not UNSET:
                metadata: Mapping[str, Any] = field.metadata or {}
                name = metadata.get("json") or field.graphql_name or field.python_name
                out[name] = to_json(item)
        return out
    return value


def _scalar_text(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (dict, list)):
        return orjson.dumps(value).decode()
    return str(value)


def _simple(value: Any, style: str | None = None) -> str:
    """A path or header parameter in OpenAPI's ``simple`` style (a list ``a,b``, an object
    ``k,v,k2,v2``), or its JSON text for a parameter described by ``content``."""
    value = to_json(value)
    if style == "json":
        return orjson.dumps(value).decode()
    if isinstance(value, list):
        return ",".join(_scalar_text(v) for v in value if v is not None)
    if isinstance(value, dict):
        return ",".join(f"{k},{_scalar_text(v)}" for k, v in value.items() if v is not None)
    return _scalar_text(value)


def path_of(template: str, values: Mapping[str, Any], styles: Mapping[str, str] | None = None) -> str:
    """``/pets/{petId}`` with each parameter's value percent-encoded (a ``/`` in a value stays
    inside its segment)."""
    for name, value in values.items():
        style = (styles or {}).get(name)
        template = template.replace("{" + name + "}", quote(_simple(value, style), safe=""))
    return template


_SEPARATORS = {"spaceDelimited": " ", "pipeDelimited": "|"}


def query_of(values: Mapping[str, Any], styles: Mapping[str, str] | None = None) -> str:
    """The query string of ``values``: OpenAPI's default style (form, exploded: a list repeats its
    name, an object's properties are parameters of their own) unless ``styles`` names another
    (``form,false`` a list ``a,b``; ``deepObject`` ``f[k]=v``; ``spaceDelimited``, ``pipeDelimited``;
    ``json`` the value's JSON text). None and unset values are left out."""
    pairs: list[tuple[str, str]] = []
    for name, raw in values.items():
        if raw is None or raw is UNSET:
            continue
        style, _, unexploded = (styles or {}).get(name, "form").partition(",")
        value = to_json(raw)
        if style == "json":
            pairs.append((name, orjson.dumps(value).decode()))
        elif isinstance(value, list):
            items = [_scalar_text(v) for v in value if v is not None]
            if style == "form" and not unexploded:
                pairs.extend((name, item) for item in items)
            else:
                pairs.append((name, _SEPARATORS.get(style, ",").join(items)))
        elif isinstance(value, dict):
            present = [(k, _scalar_text(v)) for k, v in value.items() if v is not None]
            if style == "deepObject":
                pairs.extend((f"{name}[{k}]", v) for k, v in present)
            elif not unexploded:
                pairs.extend(present)
            else:
                pairs.append((name, ",".join(f"{k},{v}" for k, v in present)))
        else:
            pairs.append((name, _scalar_text(value)))
    return urlencode(pairs)


async def call(
    info: Any,
    upstream: str,
    method: str,
    path: str,
    *,
    path_params: Mapping[str, Any] | None = None,
    query: Mapping[str, Any] | None = None,
    headers: Mapping[str, Any] | None = None,
    styles: Mapping[str, str] | None = None,
    body: Any = UNSET,
) -> Any:
    """One operation of a REST upstream through its `RestClient` (the session's token for that
    upstream, the deadline, the breaker; identical GETs of one request sent once; only GETs are
    retried on a connect failure). The decoded JSON answer, or None for an empty one (204)."""
    url = path_of(path, path_params, styles) if path_params else path
    if query:
        encoded = query_of(query, styles)
        if encoded:
            url = f"{url}?{encoded}"
    sent_headers = (
        {k: _simple(v, (styles or {}).get(k)) for k, v in headers.items() if v is not None and v is not UNSET}
        if headers
        else None
    )
    client = info.context.rest(upstream)
    return await client.call_json(
        method, url, body=None if body is UNSET else to_json(body), has_body=body is not UNSET, headers=sent_headers
    )


def done(value: Any) -> bool:
    """An operation that answers no content (204): true once it succeeded."""
    return True


def choose(data: Mapping[str, Any], options: tuple[tuple[tuple[str, ...], tuple[str, ...]], ...]) -> int | None:
    """Which member of a ``oneOf``/``anyOf`` without a usable discriminator ``data`` is: the one whose
    required properties are all present and that shares the most properties with it (the first of
    equals). None when none has its required properties."""
    best, best_score = None, -1
    for index, (required, properties) in enumerate(options):
        if any(name not in data for name in required):
            continue
        score = sum(1 for name in properties if name in data)
        if score > best_score:
            best, best_score = index, score
    return best


async def batched(
    info: Any,
    link: str,
    key: Any,
    fetch: Callable[[list[Any]], Awaitable[Any]],
    key_property: str,
    convert: Callable[[Any], Any],
) -> Any:
    """A link's answer for one parent: the keys of every parent of this request that asks in the
    same tick go to the upstream in one call (a per-request DataLoader), and each parent gets the
    item whose ``key_property`` equals its key (None when the upstream left it out)."""
    if key is None:
        return None

    def loader(_context: Any) -> DataLoader[Any, Any]:
        async def load(keys: list[Any]) -> list[Any]:
            answer = await fetch(list(keys))
            index: dict[str, Any] = {}
            for item in answer if isinstance(answer, list) else ():
                if isinstance(item, dict) and item.get(key_property) is not None:
                    index.setdefault(str(item[key_property]), item)
            return [convert(index.get(str(k))) for k in keys]

        return DataLoader(load_fn=load)

    return await info.context.loader(f"bff.sources.link:{link}", loader).load(key)
