"""The constructs of the GraphQL Mesh comparison (``bench/mesh/constructs.yaml``, BENCHMARKS.md's
"Declarative sources vs GraphQL Mesh"), bff's side only: every construct, cut into a document of its
own as ``scripts/bench_sources.py --mapping`` does, mounts without a crash, and what it refuses is
named, one line each. Mesh's side needs Node and ``npm ci`` in bench/mesh and is not run here."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

import pytest

ROOT = Path(__file__).resolve().parents[2]


def _script() -> ModuleType:
    spec = importlib.util.spec_from_file_location("bench_sources", ROOT / "scripts" / "bench_sources.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules.setdefault("bench_sources", module)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def rows(tmp_path_factory: pytest.TempPathFactory) -> dict[str, tuple[list[str], list[str]]]:
    """construct -> (bff's SDL excerpt, bff's warnings), for every row of the mapping table."""
    script = _script()
    paths = script.mini_documents(tmp_path_factory.mktemp("constructs"))
    found = {}
    for (label, _, _), path in zip(script.ROWS, paths, strict=False):
        sdl, warnings, error = script.bff_side(path)
        assert error is None, f"{label}: {error}"
        found[label] = (script.excerpt(sdl), warnings)
    return found


def test_every_construct_mounts_or_is_named(rows: dict[str, tuple[list[str], list[str]]]) -> None:
    def warned(label: str, text: str) -> bool:
        return any(text in line for line in rows[label][1])

    assert warned("multipart body", "multipart/form-data request body is not supported")
    assert warned("external `$ref` (a file beside the document)", "external $ref")
    assert warned("callbacks", "callbacks are not supported")
    assert warned("path, query (array), header, cookie parameters", "cookie parameter 'session'")
    for label, (excerpt, _) in rows.items():
        if label != "multipart body":
            assert any(line.startswith(("Query.", "Mutation.")) for line in excerpt), label


def test_mapping_excerpts(rows: dict[str, tuple[list[str], list[str]]]) -> None:
    excerpt = {label: "\n".join(lines) for label, (lines, _) in rows.items()}
    assert "union DiscriminatedOneOfResultItem = Dog | Cat" in excerpt["discriminated `oneOf`"]
    assert "union AnyOfResultContact = Email | Phone" in excerpt["`anyOf` (of objects; of scalars)"]
    assert "big: BigInt" in excerpt["`int64` (int32, number)"]
    assert "type Account { id: String!, login: String! }" in excerpt["`readOnly` / `writeOnly`"]
    assert "input AccountInput { login: String!, password: String }" in excerpt["`readOnly` / `writeOnly`"]
    assert "Mutation.noContent(id: String!): Boolean" in excerpt["204 No Content"]
    nullable30 = excerpt["nullable, 3.0 `nullable: true` (required properties)"]
    assert "{ tag: String, count: Int, owner: Photo }" in nullable30


def test_a_one_of_with_null_is_nullable(rows: dict[str, tuple[list[str], list[str]]]) -> None:
    """A required property ``oneOf: [{$ref}, {type: 'null'}]`` may be null (Mesh gets this one right
    and the 3.1 type arrays wrong; the first cut of bff typed it ``Photo!``)."""
    excerpt = "\n".join(rows["nullable, 3.1 type arrays, `oneOf` with `null` (required properties)"][0])
    assert "{ tag: String, count: Int, owner: Photo, mixed: JSON }" in excerpt
