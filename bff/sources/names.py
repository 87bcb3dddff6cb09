"""Names and code text shared by the source generators: GraphQL names from whatever a document
calls things, Python identifiers for them, and unique names within one generated module."""

from __future__ import annotations

import keyword
import re

_NAME = re.compile(r"[_A-Za-z][_0-9A-Za-z]*")
_INVALID = re.compile(r"[^_0-9A-Za-z]+")
#: names GraphQL or every schema already has: a source's type of the same name is renamed
BUILTIN_TYPES = frozenset(
    {
        "String",
        "Int",
        "Float",
        "Boolean",
        "ID",
        "DateTime",
        "Date",
        "JSON",
        "BigInt",
        "Query",
        "Mutation",
        "Subscription",
    }
)


def is_graphql_name(text: str) -> bool:
    return bool(_NAME.fullmatch(text)) and not text.startswith("__")


def graphql_name(text: str, fallback: str = "field") -> str:
    """``text`` as written when it is a valid GraphQL name, else with each run of other characters
    made one ``_`` (``get-user`` -> ``get_user``; a leading digit gets a ``_``)."""
    if is_graphql_name(text):
        return text
    name = _INVALID.sub("_", text).strip("_") or fallback
    if name[0].isdigit():
        name = f"_{name}"
    return name.lstrip("_") if name.startswith("__") else name


def type_name(text: str) -> str:
    """A GraphQL type name (first letter upper case, builtin names avoided)."""
    name = graphql_name(text, "Type")
    name = name[0].upper() + name[1:]
    return f"{name}_" if name in BUILTIN_TYPES or keyword.iskeyword(name) else name


def pascal(*parts: str) -> str:
    """``("pet", "owner_info")`` -> ``PetOwnerInfo``: names for inline schemas from where they are."""
    words = [w for part in parts for w in _INVALID.sub(" ", part.replace("_", " ")).split()]
    return "".join(w[0].upper() + w[1:] for w in words) or "Type"


def snake(text: str) -> str:
    """A Python identifier for a GraphQL name (``petId`` -> ``pet_id``), never a keyword."""
    text = re.sub(r"(?<=[a-z0-9])([A-Z])", r"_\1", graphql_name(text)).lower()
    text = _INVALID.sub("_", text)
    if not text or text[0].isdigit():
        text = f"_{text}"
    if keyword.iskeyword(text) or keyword.issoftkeyword(text) or text in ("self", "info", "data", "rt"):
        text = f"{text}_"
    return text


class Unique:
    """Hands out names not handed out before in one scope (``name``, ``name_2``, ...)."""

    def __init__(self, taken: frozenset[str] | set[str] = frozenset()) -> None:
        self._taken = set(taken)

    def __call__(self, name: str, sep: str = "_") -> str:
        candidate, n = name, 1
        while candidate in self._taken:
            n += 1
            candidate = f"{name}{sep}{n}"
        self._taken.add(candidate)
        return candidate

    def __contains__(self, name: str) -> bool:
        return name in self._taken
