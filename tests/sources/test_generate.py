"""`bff sources generate`: the declarative mount's code written as a package a team takes over. It
passes `ruff` and `mypy --strict` (with Strawberry's mypy plugin, as a Strawberry project runs it),
and serves the same answers with the same upstream calls as the declarative mount."""

from __future__ import annotations

import importlib
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

from bff import build_schema
from bff.app import create_app
from bff.sources import openapi, read_links
from tests.conftest import Bff, make_settings
from tests.sources.services import ORDERS_SPEC, Calls, orders_app, pets_app
from tests.support.servers import serve
from tests.support.tokens import TestIssuer
from tests.support.typecheck import mypy_cache_dir

ROOT = Path(__file__).resolve().parents[2]
PETS_SPEC = str(ROOT / "tests" / "sources" / "specs" / "pets.yaml")
LINKS = """
[[links]]
on = "OrderItem.pet"
to = "pets.petsByIds"
key = "id"
arguments = { ids = "[$.petId]" }

[[links]]
on = "Order.firstPet"
to = "pets.get_pet"
arguments = { petId = "$.firstPetId" }
"""
QUERY = (
    "{ orders { id firstPet { name createdAt } items { quantity pet { id name status owner { first_name } } } } "
    'listPets(status: available) { id tag photos { url } } ownerAnimals(ownerId: "a") { ... on Dog { barks } } }'
)


def _generate(tmp_path: Path) -> Path:
    (tmp_path / "orders.json").write_text(json.dumps(ORDERS_SPEC))
    (tmp_path / "links.toml").write_text(LINKS)
    env = {
        **os.environ,
        "BFF_UPSTREAMS__PETS__URL": "http://127.0.0.1:9",
        "BFF_UPSTREAMS__PETS__OPENAPI": PETS_SPEC,
        "BFF_UPSTREAMS__ORDERS__URL": "http://127.0.0.1:9",
        "BFF_UPSTREAMS__ORDERS__OPENAPI": str(tmp_path / "orders.json"),
        "BFF_SOURCE_LINKS": str(tmp_path / "links.toml"),
    }
    done = subprocess.run(
        [sys.executable, "-m", "bff", "sources", "generate", "--output", "team_sources"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    assert "BFF_SCHEMA=team_sources:schema" in done.stderr
    package = tmp_path / "team_sources"
    assert sorted(p.name for p in package.iterdir()) == ["__init__.py", "orders.py", "pets.py"]
    return package


def test_the_generated_package_passes_ruff_and_mypy_strict(tmp_path: Path) -> None:
    _generate(tmp_path)
    # from the team's directory: there bff is a third-party package, as in a team's project
    ruff = subprocess.run(
        ["ruff", "check", "--isolated", "team_sources"], cwd=tmp_path, capture_output=True, text=True, timeout=60
    )
    assert ruff.returncode == 0, ruff.stdout
    (tmp_path / "mypy.ini").write_text("[mypy]\nstrict = True\nplugins = strawberry.ext.mypy_plugin\n")
    mypy = subprocess.run(
        [
            sys.executable,
            "-m",
            "mypy",
            "--config-file",
            "mypy.ini",
            "--cache-dir",
            str(mypy_cache_dir("generated-package")),  # kept between runs: only what changed is checked again
            "team_sources",
        ],
        cwd=tmp_path,
        env={**os.environ, "MYPYPATH": str(ROOT)},  # bff from this checkout (an editable install hides it from mypy)
        capture_output=True,
        text=True,
        timeout=240,
    )
    assert [line for line in mypy.stdout.splitlines() if line.startswith("team_sources")] == [], mypy.stdout


async def test_the_generated_package_answers_like_the_mount(tmp_path: Path, issuer: TestIssuer) -> None:
    package = _generate(tmp_path)
    sys.path.insert(0, str(package.parent))
    try:
        await _compare(importlib.import_module("team_sources").schema, tmp_path, issuer)
    finally:
        sys.path.remove(str(package.parent))
        for name in [n for n in sys.modules if n == "team_sources" or n.startswith("team_sources.")]:
            del sys.modules[name]


async def _compare(generated: Any, tmp_path: Path, issuer: TestIssuer) -> None:
    mounted = build_schema(
        sources=[openapi("orders", ORDERS_SPEC), openapi("pets", PETS_SPEC), *read_links(str(tmp_path / "links.toml"))]
    )
    assert generated.as_str() == mounted.as_str()
    answers: list[Any] = []
    for schema in (mounted, generated):
        pet_calls, order_calls = Calls(), Calls()
        async with serve(pets_app(pet_calls)) as pets_url, serve(orders_app(order_calls)) as orders_url:
            settings = make_settings(upstreams={"pets": {"url": pets_url}, "orders": {"url": orders_url}})
            app = create_app(settings, schema=schema)
            async with serve(app) as url:
                bff = Bff(app, url, settings)
                cookie = await bff.session_for(issuer.token("alice"))
                async with bff.client(cookie) as client:
                    body = (await client.post("/graphql", json={"query": QUERY})).json()
        answers.append((body, sorted(p for _, p, _, _ in pet_calls.seen), order_calls.count()))
    assert "errors" not in answers[0][0], answers[0][0]
    assert answers[0] == answers[1]
