"""`bff demo --schema`: a team's schema behind the dev IdP, with its own upstreams beside the demo's."""

from __future__ import annotations

import os
import subprocess
import sys

import httpx
import pytest

from bff import SchemaError
from bff.demo.stack import build_demo_app
from bff.testing import free_port, serve
from tests.demo.test_demo import sign_in
from tests.support.servers import first_answer


async def test_demo_serves_a_named_schema_with_extra_upstreams() -> None:
    port = free_port()
    app = build_demo_app(
        f"http://127.0.0.1:{port}",
        schema="tests.api.user_schema:schema",
        upstreams={"billing": {"url": "http://127.0.0.1:1/billing"}},
    )
    async with serve(app, port) as url, httpx.AsyncClient(base_url=url) as browser:
        resources_settings = app.state.resources.settings
        await sign_in(browser, "bob")
        body = (await browser.post("/graphql", json={"query": "{ hello who }"})).json()
        demo_field = (await browser.post("/graphql", json={"query": "{ viewer { id } }"})).json()
    assert body == {"data": {"hello": "hello from a team's own schema", "who": "bob"}}
    assert demo_field["errors"][0]["extensions"]["code"] == "GRAPHQL_VALIDATION_FAILED"
    assert set(resources_settings.upstreams) == {"accounts", "catalog", "billing"}


def test_demo_refuses_a_bad_reference_in_one_line() -> None:
    with pytest.raises(SchemaError):
        build_demo_app("http://127.0.0.1:1", schema="tests.api.user_schema:Query")
    env = {k: v for k, v in os.environ.items() if not k.startswith("BFF_")}
    result = subprocess.run(
        [sys.executable, "-m", "bff", "demo", "--port", str(free_port()), "--schema", "tests.api.user_schema:nope"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 2
    assert result.stderr.strip() == (
        "bff: schema reference 'tests.api.user_schema:nope': tests.api.user_schema has no attribute 'nope'"
    )


def test_bff_demo_schema_from_the_environment() -> None:
    """BFF_SCHEMA and BFF_UPSTREAMS__* reach `bff demo` as they reach `bff serve`."""
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("BFF_")}
    env["BFF_SCHEMA"] = "tests.api.user_schema:schema"
    proc = subprocess.Popen(
        [sys.executable, "-m", "bff", "demo", "--port", str(port)],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        url = f"http://127.0.0.1:{port}/graphql"
        answer = first_answer(proc, lambda: httpx.post(url, json={"query": "{ hello }"}, timeout=2))
        assert answer.json() == {"data": {"hello": "hello from a team's own schema"}}
    finally:
        proc.terminate()
        proc.communicate(timeout=10)  # waits and closes the pipe
