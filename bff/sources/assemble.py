"""Mounting several sources and the links between them, in two passes: every source is generated
once to learn its types and operations, then the sources that own a linked type are generated again
with their link fields (the same names come out: generation is deterministic), and every module is
executed under a name fixed beforehand, so a link refers to another source's module lazily (no
import cycle when two sources link to each other)."""

from __future__ import annotations

import itertools
from collections import Counter
from collections.abc import Sequence
from typing import Any

from bff.sources.links import Link
from bff.sources.mount import Mounted, SourceError, execute, log
from bff.sources.openapi import LinkPlan, OpenAPISource
from bff.sources.runtime import SCALARS

_MODULES = itertools.count(1)
PACKAGE = "bff_sources_generated"


def module_names(sources: Sequence[Any], package: str = PACKAGE, *, numbered: bool = True) -> dict[str, str]:
    names: dict[str, str] = {}
    for source in sources:
        stem = "".join(c if c.isalnum() else "_" for c in source.name).strip("_") or "source"
        names[source.name] = f"{package}.m{next(_MODULES)}_{stem}" if numbered else f"{package}.{stem}"
    return names


def generate_all(
    sources: Sequence[Any], taken_types: Sequence[str], modules: dict[str, str]
) -> tuple[list[Any], dict[str, Any]]:
    """(the real sources, their generated modules by name) with the links of ``sources`` applied."""
    links = [s for s in sources if isinstance(s, Link)]
    # OpenAPI sources first: the scalars they use (DateTime, Date, BigInt) are then taken, and a
    # remote GraphQL service's own scalar of that name is renamed rather than registered twice
    real = sorted((s for s in sources if not isinstance(s, Link)), key=lambda s: not isinstance(s, OpenAPISource))
    twice = [name for name, n in Counter(s.name for s in real).items() if n > 1]
    if twice:
        raise SourceError(f"the upstream {twice[0]!r} is given as a source twice")
    taken = list(taken_types)
    before: dict[str, list[str]] = {}
    first: dict[str, Any] = {}
    for source in real:
        before[source.name] = list(taken)
        first[source.name] = source.generate(taken)
        taken.extend(first[source.name].types)
    owners = {name: source for source, generated in first.items() for name in generated.types}
    plans: dict[str, list[LinkPlan]] = {}
    for link in links:
        parent = owners.get(link.parent_type)
        if parent is None:
            raise SourceError(f"link {link.on}: no source has a type {link.parent_type!r}")
        target = next((s for s in real if s.name == link.source), None)
        if target is None:
            raise SourceError(f"link {link.on}: there is no source {link.source!r}")
        operations = getattr(first[link.source], "operations", {}) or {}
        prefix = getattr(target, "prefix", "")
        name = link.operation if link.operation in operations else prefix + link.operation
        if name not in operations:
            known = ", ".join(sorted(operations)) or "none that links can use"
            raise SourceError(f"link {link.on}: source {link.source!r} has no query field {link.operation!r} ({known})")
        module = None if parent == link.source else modules[link.source]
        plan = LinkPlan(link, module, name, operations[name], frozenset(first[link.source].types))
        plans.setdefault(parent, []).append(plan)
    final = dict(first)
    for source in real:
        if source.name in plans:
            final[source.name] = source.generate(before[source.name], links=plans[source.name])
    return real, final


def mount_all(sources: Sequence[Any], taken_types: Sequence[str] = ()) -> list[Mounted]:
    modules = module_names([s for s in sources if not isinstance(s, Link)])
    real, generated = generate_all(sources, taken_types, modules)
    mounted = []
    for source in real:
        code = generated[source.name]
        for line in code.warnings:
            log.warning("%s", line)
        module = execute(code.code, modules[source.name])
        mounted.append(
            Mounted(
                name=source.name,
                query=getattr(module, "Query", None),
                mutation=getattr(module, "Mutation", None),
                warnings=list(code.warnings),
                code=code.code,
                types=list(code.types),
                scalars={**SCALARS, **getattr(module, "SCALARS", {})},
                classes=list(getattr(module, "TYPES", ())),
            )
        )
    return mounted
