"""Issue 12, parts 4 and 8, and the last-resort guard of part 3: client-chosen names grow nothing
without bound, /graphql answers are never cached, no redirect is built from Host, and an unhandled
exception is still a JSON answer."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import httpx
import pytest

from bff.app import create_app
from bff.metrics import OperationLabels
from tests.conftest import Bff, Upstreams, make_settings
from tests.support.servers import serve
from tests.support.tokens import TestIssuer

# -- part 4 ------------------------------------------------------------------------------------------


def test_operation_labels_are_bounded_and_cannot_be_crowded_out() -> None:
    labels = OperationLabels(pinned=["Checkout", "not a name"], capacity=3)
    assert labels.label(None) == "anonymous"
    assert labels.label("Checkout") == "Checkout"  # pinned: always
    assert labels.label("Viewer") == "other"  # anonymous clients never admit a name
    assert labels.label("Viewer", admit=True) == "Viewer"
    assert labels.label("Viewer") == "Viewer"  # once admitted, for everyone
    assert labels.label("x" * 65, admit=True) == "other"
    assert labels.label("bad-name", admit=True) == "other"
    assert labels.label("A", admit=True) == "A"
    assert labels.label("B", admit=True) == "B"
    assert labels.label("C", admit=True) == "other"  # full: new names are "other", nothing is evicted
    assert labels.label("Viewer") == "Viewer"
    assert labels.label("not a name") == "other"


async def test_a_flood_of_names_does_not_grow_metrics_or_logs(
    bff: Bff, issuer: TestIssuer, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="bff.access")
    cookie = await bff.session_for(issuer.token("alice"))
    async with bff.client() as anonymous, bff.client(cookie) as alice:
        before = len((await anonymous.get("/metrics")).text)
        await alice.post("/graphql", json={"query": "query RealOne { viewer { id } }"})
        for i in range(30):
            name = f"Flood{i}" + "x" * 200_000
            await anonymous.post("/graphql", json={"query": f"query {name} {{ __typename }}"})
            await anonymous.post("/graphql", json={"query": "{ __typename }", "operationName": f"N{i}"})
            await anonymous.post("/graphql", json={"query": f"query Short{i} {{ __typename }}"})
        after = (await anonymous.get("/metrics")).text
    assert len(after) - before < 20_000, len(after) - before
    assert 'operation="RealOne"' in after
    assert "Flood" not in after and 'operation="Short' not in after and 'operation="N1"' not in after
    assert 'operation="other"' in after
    lines = [r for r in caplog.records if r.name == "bff.access"]
    assert lines
    assert max(len(str(getattr(r, "operation", "") or "")) for r in lines) <= 65
    assert max(len(str(getattr(r, "path", ""))) for r in lines) <= 257


async def test_invented_http_methods_are_one_label(bff: Bff) -> None:
    async with bff.client() as client:
        for method in ("PROPFIND", "MKCOL", "PURGE", "SEARCH"):
            await client.request(method, "/graphql")
        text = (await client.get("/metrics")).text
    assert "PROPFIND" not in text and "PURGE" not in text
    assert 'method="OTHER"' in text


async def test_trusted_document_names_are_labels_for_anyone(upstreams: Upstreams, tmp_path: Path) -> None:
    manifest = tmp_path / "manifest.json"
    document = "query Trusted { __typename }"
    import hashlib

    manifest.write_text(json.dumps({hashlib.sha256(document.encode()).hexdigest(): document}))
    app = create_app(make_settings(upstreams=upstreams.settings(), trusted_documents=str(manifest)))
    async with serve(app) as url, httpx.AsyncClient(base_url=url) as client:
        response = await client.post("/graphql", json={"query": document})
        assert response.status_code == 200
        text = (await client.get("/metrics")).text
    assert 'operation="Trusted"' in text


# -- part 8 ------------------------------------------------------------------------------------------


async def test_every_graphql_answer_is_no_store(bff: Bff, issuer: TestIssuer) -> None:
    cookie = await bff.session_for(issuer.token("alice"))
    async with bff.client(cookie) as client:
        answers = [
            await client.get("/graphql", params={"query": "{ viewer { id } }"}, headers={"x-csrf": "1"}),
            await client.post("/graphql", json={"query": "{ viewer { id } }"}),
            await client.post("/graphql", json={"query": "{ nope }"}),
            await client.post("/graphql", json={"query": "{ __typename }", "operationName": "X"}),
            await client.get("/graphql", params={"query": "{ __typename }"}),  # CSRF refusal (403)
            await client.put("/graphql", json={}),
            await client.get("/graphql", headers={"accept": "text/html"}),
            await client.options(
                "/graphql",
                headers={"origin": "http://127.0.0.1:8000", "access-control-request-method": "POST"},
            ),
        ]
    assert [a.status_code for a in answers][:5] == [200, 200, 200, 400, 403]
    for answer in answers:
        assert answer.headers["cache-control"] == "no-store", (answer.request.method, answer.status_code)


@pytest.mark.parametrize("path", ["/auth/login/?return_to=/x", "/graphql/", "/healthz/", "/nowhere", "/auth/"])
async def test_no_redirect_from_host_and_unknown_paths_are_json_404(bff: Bff, path: str) -> None:
    async with bff.client() as client:
        response = await client.get(path, headers={"host": "evil.example"})
    assert response.status_code == 404
    assert "location" not in response.headers
    assert response.headers["content-type"].startswith("application/json")
    assert response.json()["error"] == "not_found"


# -- part 3: the last-resort guard -----------------------------------------------------------------------


async def test_an_unhandled_exception_is_a_json_500_with_request_id(
    upstreams: Upstreams, caplog: pytest.LogCaptureFixture
) -> None:
    app = create_app(make_settings(upstreams=upstreams.settings(), env="production"))

    async def boom() -> None:
        raise RuntimeError("secret detail")

    app.add_api_route("/boom", boom)
    async with serve(app) as url, httpx.AsyncClient(base_url=url) as client:
        response = await client.get("/boom", headers={"x-request-id": "req-123"})
    assert response.status_code == 500
    body = response.json()
    assert body["errors"][0]["extensions"] == {"code": "INTERNAL_SERVER_ERROR", "requestId": "req-123"}
    assert "secret detail" not in response.text
    assert response.headers["x-request-id"] == "req-123"
    assert response.headers["x-content-type-options"] == "nosniff"
    assert response.headers["cache-control"] == "no-store"
    errors = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert len(errors) == 1, [r.getMessage() for r in errors]
    assert getattr(errors[0], "request_id", None) == "req-123"
