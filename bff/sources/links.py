"""Links between sources: a field on one source's type resolved by another source's operation, with
keys taken from the parent, batched per request::

    link("OrderItem.product", "catalog.productsByIds", ids="[$.productId]", key="id")

``$.name`` is a property of the parent object (as the upstream sent it); ``[$.name]`` gathers that
property of every parent in the request into one list argument, so one upstream call serves a
whole list, and each parent gets the answer item whose ``key`` equals its value. Anything else is a
literal argument. In a file (TOML or YAML, ``BFF_SOURCE_LINKS``)::

    [[links]]
    on = "OrderItem.product"
    to = "catalog.productsByIds"
    arguments = { ids = "[$.productId]" }
    key = "id"
"""

from __future__ import annotations

import re
import tomllib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bff.sources.mount import SourceError, parse_document

_PARENT = re.compile(r"\$\.([_A-Za-z0-9-]+)")
_BATCHED = re.compile(r"\[\s*\$\.([_A-Za-z0-9-]+)\s*\]")


@dataclass(frozen=True)
class RemoteOperation:
    """A Query field of a remote GraphQL source, as a link target: the service's own field name,
    its arguments, the Python annotation of its value (nullable) and, for a list, of one item."""

    field: str
    arguments: frozenset[str]
    annotation: str
    item: str | None


@dataclass(frozen=True)
class Link:
    """``on`` (``Type.field``, the new field) is resolved by ``to`` (``source.field``, a root field
    that source mounts) with ``arguments``; ``key`` matches a batched answer's items to parents."""

    on: str
    to: str
    arguments: Mapping[str, Any] = field(default_factory=dict)
    key: str = "id"
    description: str | None = None

    name = "links"  # the source protocol's name: links are passed among the sources

    @property
    def parent_type(self) -> str:
        return self.on.partition(".")[0]

    @property
    def field_name(self) -> str:
        return self.on.partition(".")[2]

    @property
    def source(self) -> str:
        return self.to.partition(".")[0]

    @property
    def operation(self) -> str:
        return self.to.partition(".")[2]

    def batched_argument(self) -> tuple[str, str] | None:
        """(argument, parent property) of the one ``[$.x]`` argument, if any."""
        found = [
            (arg, m.group(1))
            for arg, v in self.arguments.items()
            if isinstance(v, str) and (m := _BATCHED.fullmatch(v))
        ]
        if len(found) > 1:
            raise SourceError(f"link {self.on}: only one argument may gather keys ([$.x]), not {len(found)}")
        return found[0] if found else None

    def parent_properties(self) -> dict[str, str]:
        """Arguments taken from one parent's property (``$.x``): argument -> property."""
        return {
            arg: m.group(1) for arg, v in self.arguments.items() if isinstance(v, str) and (m := _PARENT.fullmatch(v))
        }

    def literals(self) -> dict[str, Any]:
        return {
            arg: v
            for arg, v in self.arguments.items()
            if not (isinstance(v, str) and (_PARENT.fullmatch(v) or _BATCHED.fullmatch(v)))
        }

    def mount_all(self, sources: Sequence[Any], taken_types: Sequence[str] = ()) -> list[Any]:
        from bff.sources.assemble import mount_all

        return list(mount_all(sources, taken_types))

    def check(self) -> None:
        if not re.fullmatch(r"[_A-Za-z][_0-9A-Za-z]*\.[_A-Za-z][_0-9A-Za-z]*", self.on):
            raise SourceError(f"link {self.on!r}: 'on' must be Type.field")
        if not re.fullmatch(r"[^.]+\.[_A-Za-z][_0-9A-Za-z]*", self.to):
            raise SourceError(f"link {self.on}: 'to' must be source.field, not {self.to!r}")
        self.batched_argument()


def link(on: str, to: str, *, key: str = "id", description: str | None = None, **arguments: Any) -> Link:
    """A link (see the module): ``link("OrderItem.product", "catalog.productsByIds", ids="[$.productId]")``."""
    made = Link(on, to, dict(arguments), key, description)
    made.check()
    return made


def read_links(path: str) -> list[Link]:
    """The ``[[links]]`` of a TOML file, or the ``links:`` list of a YAML/JSON one."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as exc:
        raise SourceError(f"cannot read the links file {path}: {exc.strerror or exc}") from None
    if path.endswith(".toml"):
        try:
            document: dict[str, Any] = tomllib.loads(text)
        except tomllib.TOMLDecodeError as exc:
            raise SourceError(f"the links file {path} is not TOML: {exc}") from None
    else:
        document = parse_document(text, f"the links file {path}")
    entries = document.get("links")
    if not isinstance(entries, list):
        raise SourceError(f"the links file {path} has no list of links")
    found = []
    for entry in entries:
        if isinstance(entry, dict) and True in entry and "on" not in entry:
            entry["on"] = entry.pop(True)  # YAML 1.1 reads an unquoted `on:` key as true
        if not isinstance(entry, dict) or not {"on", "to"} <= entry.keys():
            raise SourceError(f"the links file {path}: each link needs 'on' and 'to'")
        arguments = entry.get("arguments") or {}
        if not isinstance(arguments, dict):
            raise SourceError(f"the links file {path}: link {entry['on']}: 'arguments' must be a table")
        found.append(
            link(
                str(entry["on"]),
                str(entry["to"]),
                key=str(entry.get("key", "id")),
                description=entry.get("description"),
                **arguments,
            )
        )
    return found
