"""A team's own schema, named by reference, keeps every safeguard however it is served: `bff serve
--schema`, ``uvicorn --factory bff.app:app_from_env`` with BFF_SCHEMA, or `create_app` in-process."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import strawberry

from bff import SchemaError, build_schema, create_app
from bff.testing import free_port, running_bff
from tests.api import user_schema
from tests.conftest import make_settings

ROOT = Path(__file__).resolve().parents[2]
REFERENCE = "tests.api.user_schema:schema"
DEEP = "{ tree { branch { branch { branch { leaf { name } } } } } }"
PRODUCTION = {
    "BFF_ENV": "production",
    "BFF_SESSION_SECRET": "test-secret-0123456789abcdef",
    "BFF_COOKIE_SECURE": "false",
    "BFF_MAX_DEPTH": "3",
}


def _env(**extra: str) -> dict[str, str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("BFF_")}
    return {**clean, **extra}


async def assert_production_safeguards(url: str) -> None:
    """Introspection, field suggestions and GraphiQL off; the depth limit (3) on; the schema is
    the team's own (no demo field)."""
    async with httpx.AsyncClient(base_url=url, timeout=10) as client:
        own = (await client.post("/graphql", json={"query": "{ hello }"})).json()
        assert own == {"data": {"hello": "hello from a team's own schema"}}

        introspection = (await client.post("/graphql", json={"query": "{ __schema { types { name } } }"})).json()
        assert "data" not in introspection or introspection["data"] is None
        assert "introspection" in introspection["errors"][0]["message"].lower()

        typo = (await client.post("/graphql", json={"query": "{ helo }"})).json()
        assert "Cannot query field 'helo'" in typo["errors"][0]["message"]
        assert "Did you mean" not in json.dumps(typo)

        demo = (await client.post("/graphql", json={"query": "{ viewer { id } }"})).json()
        assert demo["errors"][0]["extensions"]["code"] == "GRAPHQL_VALIDATION_FAILED"

        page = await client.get("/graphql", headers={"Accept": "text/html"})
        assert "<html" not in page.text.lower()
        assert page.headers["content-type"].startswith("application/json")
        assets = await client.get("/_bff/graphiql/graphiql.js")
        assert assets.status_code == 404

        deep = (await client.post("/graphql", json={"query": DEEP})).json()
        assert deep["errors"][0]["extensions"]["code"] == "QUERY_TOO_COMPLEX"
        shallow = (await client.post("/graphql", json={"query": "{ tree { leaf { name } } }"})).json()
        assert shallow == {"data": {"tree": {"leaf": {"name": "leaf"}}}}


async def assert_development_defaults(url: str) -> None:
    """The same schema in development: what production switches off is on (the checks above can fail)."""
    async with httpx.AsyncClient(base_url=url, timeout=10) as client:
        introspection = (await client.post("/graphql", json={"query": "{ __schema { queryType { name } } }"})).json()
        assert introspection == {"data": {"__schema": {"queryType": {"name": "Query"}}}}
        typo = (await client.post("/graphql", json={"query": "{ helo }"})).json()
        assert "Did you mean 'hello'?" in typo["errors"][0]["message"]
        page = await client.get("/graphql", headers={"Accept": "text/html"})
        assert "<html" in page.text.lower()


@pytest.fixture
def served(request: pytest.FixtureRequest) -> Iterator[tuple[str, subprocess.Popen[str]]]:
    """The user schema in production, served by the command of the test's parameter."""
    port = free_port()
    how = request.param
    env = _env(**PRODUCTION, BFF_PUBLIC_URL=f"http://127.0.0.1:{port}")
    if how == "cli":
        command = [sys.executable, "-m", "bff", "serve", "--port", str(port), "--schema", REFERENCE]
    else:  # the documented uvicorn line, without --no-access-log: uvicorn's access log stays silent anyway
        env["BFF_SCHEMA"] = REFERENCE
        command = [sys.executable, "-m", "uvicorn", "--factory", "bff.app:app_from_env", "--port", str(port)]
    proc = subprocess.Popen(command, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                if httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if proc.poll() is not None or time.monotonic() > deadline:
                raise AssertionError(f"{how} did not start: {proc.communicate(timeout=5)[0]}")
            time.sleep(0.1)
        yield f"http://127.0.0.1:{port}", proc
    finally:
        if proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(5)


@pytest.mark.parametrize("served", ["cli", "uvicorn-factory"], indirect=True)
async def test_user_schema_in_production_keeps_every_safeguard(served: tuple[str, subprocess.Popen[str]]) -> None:
    url, proc = served
    await assert_production_safeguards(url)
    async with httpx.AsyncClient(base_url=url) as client:
        await client.get("/auth/callback", params={"code": "SECRETCODE123", "state": "STATE456"})
    proc.terminate()
    output = proc.communicate(timeout=15)[0]
    lines = [line for line in output.splitlines() if line.strip()]
    records = [json.loads(line) for line in lines]  # every line is JSON, uvicorn's own included
    assert "SECRETCODE123" not in output and "STATE456" not in output
    access = [r for r in records if r.get("logger") == "bff.access"]
    assert any(r.get("path") == "/auth/callback" for r in access), access
    assert not any(r.get("logger") == "uvicorn.access" for r in records)
    assert any("Uvicorn running" in r.get("event", "") or "Started server" in r.get("event", "") for r in records)


async def test_user_schema_in_production_in_process() -> None:
    async with running_bff(REFERENCE, env="production", settings={"max_depth": 3}) as bff:
        await assert_production_safeguards(bff.url)


async def test_user_schema_in_development() -> None:
    async with running_bff(REFERENCE) as bff:
        await assert_development_defaults(bff.url)


async def test_a_schema_built_for_development_is_served_with_the_apps_settings() -> None:
    """The module built its schema with development limits; production settings still win."""
    loose = build_schema(user_schema.Query, production=False)
    async with running_bff(loose, env="production", settings={"max_depth": 3}) as bff:
        await assert_production_safeguards(bff.url)


def test_schemas_bff_did_not_build_are_refused() -> None:
    settings = make_settings()
    with pytest.raises(SchemaError, match=r"build it with bff\.build_schema"):
        create_app(settings, schema=user_schema.plain)
    with pytest.raises(SchemaError, match=r"build it with bff\.build_schema"):
        create_app(settings, schema=user_schema.Query)
    assert isinstance(user_schema.plain, strawberry.Schema)


@pytest.mark.parametrize(
    ("reference", "message"),
    [
        ("nope.module:schema", "no module named 'nope'"),
        ("tests.api.user_schema", "must look like package.module:attribute"),
        ("tests.api.user_schema:missing", "has no attribute 'missing'"),
        ("tests.api.user_schema:Query", "names the class Query, not a schema: build it with bff.build_schema"),
        ("tests.api.user_schema:plain", "strawberry.Schema built without bff.build_schema"),
    ],
)
def test_a_bad_reference_is_one_line(reference: str, message: str) -> None:
    for command in (["serve", "--port", "1", "--schema", reference], ["export-schema", "--schema", reference]):
        result = subprocess.run(
            [sys.executable, "-m", "bff", *command], cwd=ROOT, env=_env(), capture_output=True, text=True, timeout=60
        )
        assert result.returncode == 2
        assert message in result.stderr
        assert result.stderr.strip().count("\n") == 0, result.stderr
        assert "Traceback" not in result.stderr


def test_a_bad_reference_under_the_uvicorn_factory_is_one_line() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "uvicorn", "--factory", "bff.app:app_from_env", "--port", str(free_port())],
        cwd=ROOT,
        env=_env(BFF_SCHEMA="tests.api.user_schema:Query"),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode != 0
    assert "bff: schema reference 'tests.api.user_schema:Query' names the class Query" in result.stderr
    assert "Traceback" not in result.stderr + result.stdout


def test_export_schema_of_a_reference(tmp_path: Path) -> None:
    def run(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "bff", "export-schema", "--schema", REFERENCE, *args],
            cwd=ROOT,
            env=_env(),
            capture_output=True,
            text=True,
            timeout=60,
        )

    printed = run().stdout
    assert "hello: String!" in printed and "echo(text: String!): String!" in printed
    assert "viewer" not in printed
    target = tmp_path / "schema.graphql"
    assert run("--output", str(target)).returncode == 0
    assert target.read_text() == printed
    assert run("--check", "--output", str(target)).returncode == 0
    target.write_text(printed.replace("hello", "hullo"))
    stale = run("--check", "--output", str(target))
    assert stale.returncode == 1
    assert f"--schema {REFERENCE} --output" in stale.stderr
