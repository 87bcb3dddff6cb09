"""Documents built to be expensive before execution, each as large as the token limit allows.

Each family grows with ``n``; `largest` finds the biggest ``n`` whose document stays within the token
limit, so a test (and scripts/bench_documents.py) sends the worst member of the family the server
would still parse. The families: chains and diamonds of fragments (2- and 3-way, on the root and on
nested types), repeated fields, many aliases, deep nesting, and conflicting fields.
"""

from __future__ import annotations

from collections.abc import Callable

from graphql.language import Lexer, Source, TokenKind

Family = Callable[[int], str]


def token_count(document: str) -> int:
    lexer = Lexer(Source(document))
    count = 0
    while lexer.advance().kind is not TokenKind.EOF:
        count += 1
    return count


def chain(ways: int, on: str = "Query") -> Family:
    """F0 spreads F1 ``ways`` times, F1 spreads F2 ``ways`` times...: ways**n paths."""

    def build(n: int) -> str:
        spreads = "{ viewer { ...F0 } }" if on == "User" else "{ ...F0 }"
        parts = [f"query Chain {spreads}"]
        for i in range(n):
            parts.append(f"fragment F{i} on {on} {{ " + f"...F{i + 1} " * ways + "}")
        parts.append(f"fragment F{n} on {on} {{ __typename }}")
        return "\n".join(parts)

    return build


def diamond(ways: int, on: str = "Query") -> Family:
    """F_i spreads A_i, B_i (, C_i), each of which spreads F_{i+1}: a chain of diamonds."""
    names = "ABC"[:ways]

    def build(n: int) -> str:
        spreads = "{ viewer { ...F0 } }" if on == "User" else "{ ...F0 }"
        parts = [f"query Diamond {spreads}"]
        for i in range(n):
            parts.append(f"fragment F{i} on {on} {{ " + " ".join(f"...{x}{i}" for x in names) + " }")
            parts.extend(f"fragment {x}{i} on {on} {{ ...F{i + 1} }}" for x in names)
        parts.append(f"fragment F{n} on {on} {{ __typename }}")
        return "\n".join(parts)

    return build


def nested_chain(n: int) -> str:
    """Fragments that spread the next one twice one level down (``orders { ...F }``): the depth grows too."""
    parts = ["query Nested { viewer { ...U0 } }"]
    for i in range(n):
        parts.append(f"fragment U{i} on User {{ id orders {{ id }} ...U{i + 1} ...U{i + 1} }}")
    parts.append(f"fragment U{n} on User {{ id }}")
    return "\n".join(parts)


def repeated_fields(n: int) -> str:
    return "{ " + "__typename " * n + "}"


def repeated_subselections(n: int) -> str:
    return "{ " + "viewer { id name } " * n + "}"


def conflicting_fields(n: int) -> str:
    """Same response name, different arguments: every pair conflicts."""
    return "{ " + " ".join(f'searchProducts(query: "{i}") {{ id }}' for i in range(n)) + " }"


def conflicting_aliases(n: int) -> str:
    fields = ("x: viewer { id }", 'x: searchProducts(query: "a") { id }')
    return "{ " + " ".join(fields[i % 2] for i in range(n)) + " }"


def many_aliases(n: int) -> str:
    return "{ " + " ".join(f"a{i}: __typename" for i in range(n)) + " }"


def repeated_spreads(n: int) -> str:
    return "query Spreads { " + "...F " * n + "} fragment F on Query { __typename viewer { id } }"


def many_fragments(n: int) -> str:
    spreads = " ".join(f"...F{i}" for i in range(n))
    fragments = " ".join(f"fragment F{i} on Query {{ viewer {{ id }} }}" for i in range(n))
    return f"query Many {{ {spreads} }} {fragments}"


def deep_nesting(n: int) -> str:
    return "{ " + "viewer { " * n + "id" + " }" * n + " }"


def deep_valid(n: int) -> str:
    """Valid nesting as deep as the schema allows, repeated."""
    one = "viewer { orders(first: 1) { items { product { id } } } }"
    return "{ " + " ".join(f"a{i}: {one}" for i in range(n)) + " }"


def fragment_cycle(n: int) -> str:
    parts = ["query Cycle { ...F0 }"]
    parts.extend(f"fragment F{i} on Query {{ ...F{(i + 1) % n} ...F{(i + 1) % n} }}" for i in range(n))
    return "\n".join(parts)


def many_variables(n: int) -> str:
    declared = ", ".join(f"$v{i}: Int = {i}" for i in range(n))
    used = " ".join(f'a{i}: searchProducts(query: "q", first: $v{i}) {{ id }}' for i in range(n))
    return f"query Vars({declared}) {{ {used} }}"


def many_directives(n: int) -> str:
    return "{ __typename " + "@include(if: true) " * n + "}"


FAMILIES: dict[str, Family] = {
    "chain-2-root": chain(2),
    "chain-3-root": chain(3),
    "chain-2-user": chain(2, "User"),
    "diamond-2-root": diamond(2),
    "diamond-3-root": diamond(3),
    "diamond-2-user": diamond(2, "User"),
    "nested-chain": nested_chain,
    "fragment-cycle": fragment_cycle,
    "repeated-fields": repeated_fields,
    "repeated-subselections": repeated_subselections,
    "conflicting-fields": conflicting_fields,
    "conflicting-aliases": conflicting_aliases,
    "many-aliases": many_aliases,
    "repeated-spreads": repeated_spreads,
    "many-fragments": many_fragments,
    "deep-nesting": deep_nesting,
    "deep-valid": deep_valid,
    "many-variables": many_variables,
    "many-directives": many_directives,
}


def fits(document: str, max_tokens: int) -> bool:
    """Whether ``document`` stays under the token limit, with room for a comment or a short suffix
    that a caller adds to make each copy distinct (the parser counts a token or two more)."""
    return token_count(document) + 2 <= max_tokens


def largest(family: Family, max_tokens: int) -> str:
    """The family's biggest member within ``max_tokens`` tokens (binary search on ``n``)."""
    low, high = 1, 2
    while fits(family(high), max_tokens):
        low, high = high, high * 2
    while high - low > 1:
        middle = (low + high) // 2
        if fits(family(middle), max_tokens):
            low = middle
        else:
            high = middle
    return family(low)
