"""Property-based fuzzing with hypothesis-graphql over the exported schema: 2 x 1,000 generated
queries, anonymous and signed in, against the running server and the demo upstreams."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis_graphql import queries

from bff.app import create_app
from bff.demo.upstreams import accounts_app, catalog_app
from tests.conftest import make_settings
from tests.support.servers import ThreadedApps
from tests.support.sessions import store_session
from tests.support.tokens import TestIssuer

SCHEMA = (Path(__file__).resolve().parents[2] / "schema" / "schema.graphql").read_text()
EXAMPLES = 1000


@pytest.fixture(scope="module")
def running() -> Iterator[tuple[ThreadedApps, str]]:
    issuer = TestIssuer()
    accounts, catalog = accounts_app(issuer.validator()), catalog_app(issuer.validator())
    apps = ThreadedApps(accounts, catalog)
    apps.start()
    try:
        accounts_url, catalog_url = apps.urls
        bff_settings = make_settings(
            upstreams={"accounts": {"url": accounts_url}, "catalog": {"url": f"{catalog_url}/graphql"}}
        )
        bff = create_app(bff_settings)
        bff_apps = ThreadedApps(bff)
        bff_apps.start()
        try:
            resources = bff.state.resources
            cookie = bff_apps.call(store_session(resources, issuer.token("alice")))
            yield bff_apps, cookie
        finally:
            bff_apps.stop()
    finally:
        apps.stop()


def _check(response: httpx.Response) -> None:
    assert response.status_code < 500, response.text
    body: dict[str, Any] = response.json()
    assert "data" in body or "errors" in body
    for error in body.get("errors", []):
        assert error.get("extensions", {}).get("code"), error
        assert "Traceback" not in error["message"]


@pytest.mark.parametrize("signed_in", [False, True], ids=["anonymous", "signed-in"])
def test_generated_queries_never_fail_the_server(running: tuple[ThreadedApps, str], signed_in: bool) -> None:
    apps, cookie = running
    headers = {"Cookie": f"bff_session={cookie}"} if signed_in else {}
    with httpx.Client(base_url=apps.urls[0], headers=headers, timeout=30) as client:

        @settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=list(HealthCheck), derandomize=True)
        @given(queries(SCHEMA))
        def run(query: str) -> None:
            _check(client.post("/graphql", json={"query": query}))

        run()
