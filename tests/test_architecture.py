"""The house stands: imports only look down, and the committed schema is what the code exports."""

from __future__ import annotations

import ast
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "bff"

#: every top-level module and package of bff, by layer: imports only look down (a module missing here
#: fails `test_every_module_is_on_the_map`)
LAYER = {
    "errors": 0,
    "settings": 0,
    "logs": 0,
    "telemetry": 0,
    "metrics": 0,
    "tasks": 0,
    "timers": 0,
    "runtime": 0,
    "sessions": 1,
    "upstream": 1,
    "auth": 1,
    "resources": 2,
    "admission": 2,
    "graphql": 3,
    "web": 3,
    "sources": 3,
    "app": 4,
    "cli": 4,
    "serving": 4,
    "protocols": 4,
    "testing": 4,
}
#: may import bff.demo: the CLI and the test utilities wire the dev IdP in
DEMO_USERS = {"cli", "testing"}
FORBIDDEN_PAIRS = {("graphql", "web"), ("web", "graphql"), ("graphql", "sources"), ("sources", "web")}
#: inside bff.graphql: documents <- execution <- transport, each importing only from below; the
#: modules beside them (the error tree, `selects`, the context, `build_schema`) sit where they import
GRAPHQL_LAYER = {
    "_strawberry": 0,
    "errors": 0,
    "selection": 0,
    "context": 0,
    "documents": 1,
    "authorization": 1,
    "execution": 2,
    "schema": 2,
    "transport": 3,
}
#: graphql-transport-ws builds on the request and stream modules, never on the HTTP handler
GRAPHQL_FORBIDDEN = {("transport.websocket", "transport.http")}
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


def _imported_names(path: Path) -> Iterator[tuple[str, str | None]]:
    """(module, name) of each import; name None for ``import module``."""
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            yield from ((alias.name, None) for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            yield from ((node.module, alias.name) for alias in node.names)


def test_every_module_is_on_the_map() -> None:
    """A new module must be placed in a layer (here or in ``GRAPHQL_LAYER``), not slip past the rules."""
    missing = []
    for path in PACKAGE.rglob("*.py"):
        parts = path.relative_to(PACKAGE).with_suffix("").parts
        if parts[0] in ("__init__", "__main__", "demo"):
            continue
        in_graphql = parts[0] == "graphql" and parts[1:] != ("__init__",)
        if parts[0] not in LAYER or (in_graphql and parts[1] not in GRAPHQL_LAYER):
            missing.append(str(path.relative_to(ROOT)))
    assert missing == []


def test_graphql_documents_execution_transport_look_down() -> None:
    problems = []
    graphql = PACKAGE / "graphql"
    for path in graphql.rglob("*.py"):
        parts = path.relative_to(graphql).with_suffix("").parts
        if parts == ("__init__",):
            continue
        mine = parts[0]
        here = ".".join(p for p in parts if p != "__init__")
        for name in _imports(path):
            if not name.startswith("bff.graphql."):
                continue
            target = name.removeprefix("bff.graphql.")
            theirs = target.split(".")[0]
            if theirs != mine and GRAPHQL_LAYER.get(theirs, 99) > GRAPHQL_LAYER[mine]:
                problems.append(f"bff.graphql.{here} ({mine}, L{GRAPHQL_LAYER[mine]}) imports {name}")
            if any(here == a and (target == b or target.startswith(b + ".")) for a, b in GRAPHQL_FORBIDDEN):
                problems.append(f"bff.graphql.{here} imports {name}")
    assert problems == []


def test_below_resources_settings_travel_as_slices() -> None:
    """The GraphQL and web layers read the slices `bff.resources` builds once (`StreamPolicy`,
    `RequestPolicy`, `LoginConfig`...), never ``resources.settings.X`` at request time."""
    problems = []
    for layer in ("graphql", "web"):
        for path in (PACKAGE / layer).rglob("*.py"):
            for node in ast.walk(ast.parse(path.read_text())):
                if isinstance(node, ast.Attribute) and node.attr == "settings":
                    problems.append(f"{path.relative_to(ROOT)}:{node.lineno}")
    assert problems == []


@pytest.mark.parametrize(
    ("code", "own"),
    [(PACKAGE / "demo" / "api", "bff.demo.api"), (ROOT / "examples" / "team", "team_")],
    ids=["demo-api", "examples-team"],
)
def test_team_code_uses_only_the_public_surface(code: Path, own: str) -> None:
    """The demo API and the example team project are written as a team's would be: names from
    `bff` itself (its ``__all__``), `bff.testing` and `bff.sources`, never the package's internals."""
    import bff
    import bff.sources

    problems = []
    files = [path for path in code.rglob("*.py") if "node_modules" not in path.parts]
    assert files
    for path in files:
        for module, name in _imported_names(path):
            if module.startswith(own) or not (module == "bff" or module.startswith("bff.")):
                continue
            if module == "bff.testing" or (module == "bff" and name in bff.__all__):
                continue
            if module == "bff.sources" and name in bff.sources.__all__:
                continue  # the declarative sources are public (`bff.sources`)
            problems.append(f"{path.relative_to(ROOT)}: {module}{'.' + name if name else ''}")
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
