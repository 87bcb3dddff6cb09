"""The house stands: imports only look down, and the committed schema is what the code exports."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "bff"

LAYER = {
    "errors": 0,
    "settings": 0,
    "metrics": 0,
    "tasks": 0,
    "runtime": 0,
    "sessions": 1,
    "upstream": 1,
    "auth": 1,
    "resources": 2,
    "admission": 2,
    "graphql": 3,
    "web": 3,
    "app": 4,
    "cli": 4,
    "serving": 4,
    "protocols": 4,
    "testing": 4,
}
#: may import bff.demo: the CLI and the test utilities wire the dev IdP in
DEMO_USERS = {"cli", "testing"}
FORBIDDEN_PAIRS = {("graphql", "web"), ("web", "graphql")}
FRAMEWORKS = {"fastapi": 3, "strawberry": 3, "starlette": 3}


def _imports(path: Path) -> set[str]:
    tree = ast.parse(path.read_text())
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
    return names


def test_imports_only_look_down() -> None:
    problems = []
    for path in PACKAGE.rglob("*.py"):
        parts = path.relative_to(PACKAGE).with_suffix("").parts
        top = parts[0]
        if top in ("__init__", "__main__", "demo"):
            continue  # demo is apart: it may reuse any layer and authlib's server side
        for name in _imports(path):
            root, _, rest = name.partition(".")
            if root == "bff":
                target = rest.split(".")[0]
                if target == "demo" and top not in DEMO_USERS:
                    problems.append(f"{path}: only {sorted(DEMO_USERS)} may import bff.demo")
                elif (
                    target in LAYER
                    and top in LAYER
                    and target != top
                    and (LAYER[target] > LAYER[top] or (top, target) in FORBIDDEN_PAIRS)
                ):
                    problems.append(f"{path}: {top} (L{LAYER[top]}) imports {name}")
            elif root in FRAMEWORKS and top in LAYER and LAYER[top] < FRAMEWORKS[root]:
                problems.append(f"{path}: {top} imports the framework {root}")
            elif root == "authlib" and path.name != "oidc.py":
                problems.append(f"{path}: authlib belongs behind auth/oidc.py")
    assert problems == []


def test_the_demo_api_uses_only_the_public_surface() -> None:
    """The demo API is written as a team's would be: from `bff` itself, never its internals."""
    problems = []
    for path in (PACKAGE / "demo" / "api").rglob("*.py"):
        for name in _imports(path):
            if name.startswith("bff.") and not name.startswith("bff.demo.api"):
                problems.append(f"{path.name}: {name}")
    assert problems == []


def test_public_names_resolve() -> None:
    import bff

    for name in bff.__all__:
        assert getattr(bff, name) is not None, name
    with pytest.raises(AttributeError):
        _ = bff.nothing_here  # type: ignore[attr-defined]


def test_exported_schema_is_current() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "bff", "export-schema", "--check"], cwd=ROOT, capture_output=True, text=True
    )
    assert result.returncode == 0, result.stdout + result.stderr
    printed = subprocess.run(
        [sys.executable, "-m", "bff", "export-schema"], cwd=ROOT, capture_output=True, text=True, check=True
    ).stdout
    assert printed == (ROOT / "schema" / "schema.graphql").read_text()
