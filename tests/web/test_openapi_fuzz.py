"""schemathesis over the FastAPI OpenAPI of the /auth/* routes (and health): never a 5xx."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import schemathesis
from hypothesis import HealthCheck, settings

from bff.app import create_app
from tests.conftest import make_settings
from tests.support.servers import ThreadedApps

# The document is static: it does not need the app to run, nor an IdP to reach.
SETTINGS = make_settings(
    oidc_issuer="http://127.0.0.1:9/idp",
    oidc_client_id="bff",
    oidc_client_secret="s",
    native_redirect_uris=["com.example.app:/cb"],
)
schema = schemathesis.openapi.from_dict(create_app(SETTINGS).openapi())


@pytest.fixture(scope="module")
def server() -> Iterator[str]:
    # The IdP is unreachable on purpose: every route must still answer 4xx/503, never 500.
    apps = ThreadedApps(create_app(SETTINGS))
    apps.start()
    try:
        yield apps.urls[0]
    finally:
        apps.stop()


@schema.parametrize()
@settings(max_examples=60, deadline=None, suppress_health_check=list(HealthCheck), derandomize=True)
def test_no_server_errors(case: schemathesis.Case, server: str) -> None:
    response = case.call(base_url=server, timeout=15)
    assert response.status_code < 500 or response.status_code == 503, (case.path, response.status_code, response.text)
    if response.status_code == 503:  # the unreachable IdP, said clearly
        body = response.json()
        assert body.get("error") == "provider_unavailable" or body.get("reasons"), body
