"""OpenTelemetry: spans per request, refresh and upstream call; traceparent reaches the upstream."""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest
import respx
from opentelemetry import trace
from opentelemetry.instrumentation.httpx import HTTPXClientInstrumentor
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from bff.app import create_app
from tests.conftest import Upstreams, make_settings
from tests.support.servers import serve
from tests.support.sessions import store_session
from tests.support.tokens import TestIssuer

ISSUER = "https://idp.test"


@pytest.fixture
def exporter() -> Iterator[InMemorySpanExporter]:
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    trace._TRACER_PROVIDER_SET_ONCE._done = False  # tests only: allow setting the global provider
    trace.set_tracer_provider(provider)
    try:
        yield exporter
    finally:
        HTTPXClientInstrumentor().uninstrument()


async def test_spans_and_traceparent(exporter: InMemorySpanExporter, upstreams: Upstreams, issuer: TestIssuer) -> None:
    settings = make_settings(
        upstreams=upstreams.settings(),
        otel_enabled=True,
        oidc_issuer=ISSUER,
        oidc_client_id="bff",
        oidc_client_secret="s",
    )
    app = create_app(settings)
    with respx.mock(assert_all_called=False) as idp:
        idp.route(host="127.0.0.1").pass_through()
        idp.get(f"{ISSUER}/.well-known/openid-configuration").respond(
            json={
                "issuer": ISSUER,
                "authorization_endpoint": f"{ISSUER}/a",
                "token_endpoint": f"{ISSUER}/token",
                "jwks_uri": f"{ISSUER}/jwks",
            }
        )
        idp.post(f"{ISSUER}/token").respond(
            json={"access_token": issuer.token("alice"), "refresh_token": "r2", "expires_in": 3600}
        )
        async with serve(app) as url:
            # due for refresh: 5 s left of an hour
            cookie = await store_session(app.state.resources, "old", ttl=5, lifetime=3600, refresh_token="r1")
            async with httpx.AsyncClient(base_url=url, headers={"Cookie": f"bff_session={cookie}"}) as client:
                body = (await client.post("/graphql", json={"query": "{ viewer { id } }"})).json()
    assert body == {"data": {"viewer": {"id": "alice"}}}
    names = [s.name for s in exporter.get_finished_spans()]
    assert "bff.token_refresh" in names
    assert any(n.startswith("POST /graphql") for n in names), names
    assert any(n == "GET" or n.startswith("GET") for n in names), names  # the upstream call
    (traceparent,) = upstreams.accounts.state.stats.traceparents
    trace_id = traceparent.split("-")[1]
    server_span = next(s for s in exporter.get_finished_spans() if s.name.startswith("POST /graphql"))
    assert f"{server_span.context.trace_id:032x}" == trace_id
