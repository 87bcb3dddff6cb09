"""`selects`: whether the field being resolved selects a given path below it, so that a resolver
can fetch in one call what its children will need (and leave their resolvers synchronous).

Memoized per field (its merged document nodes, held weakly: a memo entry never keeps a document
alive): a cached, validated document keeps its nodes, so after the first request the answer is
one dict lookup. A pure function's cache, bounded, not app state."""

from __future__ import annotations

import weakref
from collections.abc import Iterable
from typing import Any

from graphql import FieldNode, FragmentDefinitionNode, FragmentSpreadNode, InlineFragmentNode, SelectionSetNode

from bff.graphql._strawberry import raw_info

_MEMO: dict[tuple[tuple[int, ...], str], tuple[tuple[weakref.ref[FieldNode], ...], bool]] = {}
_MEMO_SIZE = 4096


def selects(info: Any, path: str) -> bool:
    """Whether the current field's selection includes ``path``: field names below it separated by
    dots (``"items.product"``), looked up through fragments and aliases. A field under ``@skip`` or
    ``@include`` counts as selected (deciding would take the request's variables), so a prefetch
    guarded by this may fetch a little more than needed, never less. ``info`` is Strawberry's
    ``Info`` or graphql-core's ``GraphQLResolveInfo``."""
    raw = raw_info(info)
    nodes: list[FieldNode] = raw.field_nodes
    key = (tuple(map(id, nodes)), path)
    hit = _MEMO.get(key)
    # the same merged nodes, still alive (an id of a collected node may have been reused)
    if hit is not None and all(ref() is node for ref, node in zip(hit[0], nodes, strict=True)):
        return hit[1]
    names = path.split(".")
    result = any(_selects(node.selection_set, names, raw.fragments, set()) for node in nodes)
    if len(_MEMO) >= _MEMO_SIZE:
        _MEMO.clear()
    _MEMO[key] = (tuple(weakref.ref(node) for node in nodes), result)
    return result


def _selects(
    selection_set: SelectionSetNode | None,
    names: list[str],
    fragments: dict[str, FragmentDefinitionNode],
    seen: set[str],
) -> bool:
    if selection_set is None:
        return False
    for field in _fields(selection_set, fragments, seen):
        if field.name.value == names[0] and (
            len(names) == 1 or _selects(field.selection_set, names[1:], fragments, seen)
        ):
            return True
    return False


def _fields(
    selection_set: SelectionSetNode, fragments: dict[str, FragmentDefinitionNode], seen: set[str]
) -> Iterable[FieldNode]:
    for selection in selection_set.selections:
        if isinstance(selection, FieldNode):
            yield selection
        elif isinstance(selection, InlineFragmentNode):
            yield from _fields(selection.selection_set, fragments, seen)
        elif isinstance(selection, FragmentSpreadNode):
            name = selection.name.value
            fragment = fragments.get(name)
            if fragment is not None and name not in seen:  # a validated document has no cycle
                yield from _fields(fragment.selection_set, fragments, seen | {name})
