"""The example SPA (examples/spa) in Debian's chromium, in both supported dev set-ups, against a real
`bff demo` with a short access-token lifetime and the SPA's persisted-documents manifest:
sign in at the demo IdP, see the user, run the viewer query (urql, persisted hash), watch a refresh
happen, sign out. Screenshots go to test-artifacts/spa/ (not committed)."""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import time
from collections.abc import Iterator
from typing import Any

import pytest

from tests.support.browser import CHROMIUM_FLAGS, chromium_path
from tests.support.servers import free_port, require_binary, running
from tests.support.spa import (
    ARTIFACTS,
    MANIFEST,
    SPA_DIR,
    bff_demo,
    refresh_counts,
    require_spa_packages,
    vite,
)

ACCESS_TTL = 4  # seconds: the demo IdP's access tokens; the test waits past it (each journey waits once)


@pytest.fixture
def npx() -> str:
    return require_spa_packages()


@pytest.fixture
def browser() -> Iterator[Any]:
    executable = chromium_path()
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=executable, headless=True, args=CHROMIUM_FLAGS)
        try:
            yield chromium
        finally:
            chromium.close()


def viewer_hash() -> str:
    manifest: dict[str, str] = json.loads(MANIFEST.read_text())
    (digest,) = [k for k, v in manifest.items() if v.startswith("query Viewer ")]
    return digest


@contextlib.contextmanager
def diagnostics(*servers: Any) -> Iterator[None]:
    """On failure, show what the servers logged."""
    try:
        yield
    except BaseException:
        for server in servers:
            print(f"----- {server.name} -----\n{server.output()[-6000:]}")
        raise


FETCH = """async ([url, body, headers]) => {
  const response = await fetch(url, {
    method: body === null ? "GET" : "POST",
    credentials: "include",
    headers: body === null ? headers : {"Content-Type": "application/json", ...headers},
    body: body === null ? undefined : JSON.stringify(body),
  });
  return {status: response.status, body: await response.json()};
}"""


def journey(page: Any, spa: str, bff: str, graphql: str, mode: str) -> None:
    """The user's path through the SPA; ``graphql`` is the URL the page calls."""
    user = page.get_by_test_id("user")
    errors = page.get_by_test_id("errors")
    page.goto(f"{spa}/")
    user.filter(has_text="Not signed in").wait_for()
    page.locator("#run-viewer").click()
    errors.filter(has_text="UNAUTHENTICATED").wait_for()

    # sign in at the demo IdP; the BFF sends the browser back to the SPA
    page.locator("#sign-in").click()
    page.get_by_role("button", name="Alice Example").click()
    page.wait_for_url(f"{spa}/")
    user.filter(has_text="Signed in as Alice Example (alice@example.com)").wait_for()

    # the viewer query through urql: a POST with the client preset's hash and no query text
    with page.expect_request(lambda r: r.url == graphql and r.method == "POST") as sent:
        page.locator("#run-viewer").click()
    body = json.loads(sent.value.post_data)
    assert body["extensions"]["persistedQuery"]["sha256Hash"] == viewer_hash()
    assert "query" not in body
    page.get_by_test_id("viewer-name").filter(has_text="Alice Example <alice@example.com>").wait_for()
    assert page.get_by_test_id("order").count() >= 1
    assert errors.inner_text() == ""
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / f"{mode}-signed-in.png"), full_page=True)

    # no token in the page: the session cookie is HttpOnly
    assert page.evaluate("document.cookie") == ""
    cookies = {c["name"]: c for c in page.context.cookies()}
    assert cookies["bff_session"]["httpOnly"] is True
    assert cookies["bff_session"]["sameSite"] == "Strict"

    # the README's fetch snippets, from this page: documentId (with the sha256: prefix) runs ...
    answer = page.evaluate(FETCH, [graphql, {"documentId": f"sha256:{viewer_hash()}"}, {}])
    assert answer["status"] == 200, answer
    assert answer["body"]["data"]["viewer"]["name"] == "Alice Example"
    # ... a document that is not in the manifest does not (BFF_TRUSTED_DOCUMENTS is in force) ...
    answer = page.evaluate(FETCH, [graphql, {"query": "{ viewer { id } }"}, {}])
    assert answer["body"]["errors"][0]["extensions"]["code"] == "PERSISTED_QUERY_NOT_ALLOWED", answer
    # ... and a GET (urql's default for queries) needs the X-CSRF header
    url = f"{graphql}?documentId={viewer_hash()}"
    assert page.evaluate(FETCH, [url, None, {}])["status"] == 403
    answer = page.evaluate(FETCH, [url, None, {"X-CSRF": "1"}])
    assert answer["body"]["data"]["viewer"]["id"] == "alice", answer

    # let the access token expire: the next query is still Alice's, after a server-side refresh
    before = refresh_counts(bff).get("success", 0.0)
    time.sleep(ACCESS_TTL + 1.5)
    status = page.get_by_test_id("status")
    count = int(status.get_attribute("data-count") or "0")
    page.locator("#run-viewer").click()
    status.filter(has_text=f"Query #{count + 1} answered").wait_for()
    assert page.get_by_test_id("viewer-name").inner_text().startswith("Alice Example")
    assert errors.inner_text() == ""
    assert refresh_counts(bff).get("success", 0.0) > before
    page.reload()
    user.filter(has_text="Signed in as Alice Example").wait_for()
    page.screenshot(path=str(ARTIFACTS / f"{mode}-after-refresh.png"), full_page=True)

    # sign out: the session is gone for the SPA and for the BFF
    page.locator("#sign-out").click()
    user.filter(has_text="Not signed in").wait_for()
    page.locator("#run-viewer").click()
    errors.filter(has_text="UNAUTHENTICATED").wait_for()
    assert "bff_session" not in {c["name"] for c in page.context.cookies()}


CLIENTS = ["fetch", "urql", "apollo", "graphql-request", "apq"]


def run_client(node: str, name: str, bff: str, cookie: str) -> dict[str, Any]:
    """examples/spa/clients/<name>.mjs's viewer() in Node, with the browser's session cookie."""
    env = {**os.environ, "BFF_URL": bff, "BFF_COOKIE": cookie}
    done = subprocess.run(
        [node, "clients/run.mjs", name], cwd=SPA_DIR, env=env, capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    result: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


def test_client_snippets(npx: str, browser: Any) -> None:
    """The README's client snippets (fetch, urql, Apollo Client, graphql-request, APQ) against a
    `bff demo` without a manifest: each sees the signed-in user, and nobody once signed out."""
    node = require_binary("node", "install Node.js 20+")
    port = free_port()
    bff = f"http://127.0.0.1:{port}"
    demo = bff_demo(port, access_ttl=300)
    with running(demo), diagnostics(demo):
        page = browser.new_page()
        page.goto(f"{bff}/auth/login?return_to=/auth/session")
        page.get_by_role("button", name="Alice Example").click()
        page.wait_for_url(f"{bff}/auth/session")
        (session,) = [c for c in page.context.cookies() if c["name"] == "bff_session"]
        cookie = f"bff_session={session['value']}"
        for name in CLIENTS:
            result = run_client(node, name, bff, cookie)
            viewer = {k: result["data"]["viewer"][k] for k in ("id", "name", "email")}
            assert viewer == {"id": "alice", "name": "Alice Example", "email": "alice@example.com"}, (name, result)
            assert not result.get("errors"), (name, result)
        page.evaluate("fetch('/auth/logout', {method: 'POST', headers: {'X-CSRF': '1'}})")
        for name in CLIENTS:
            result = run_client(node, name, bff, cookie)
            assert not (result.get("data") or {}).get("viewer"), (name, result)
            codes = [e.get("extensions", {}).get("code") for e in result.get("errors") or [] if isinstance(e, dict)]
            assert codes == ["UNAUTHENTICATED"], (name, result)


def test_generated_files_are_current_and_typecheck(npx: str, tmp_path: Any) -> None:
    """src/gql/ (types and the manifest) is what codegen makes from schema/schema.graphql today,
    and the SPA type-checks against it."""
    out = tmp_path / "gql"
    subprocess.run(
        [npx, "--no-install", "graphql-codegen", "--config", "codegen.ts"],
        cwd=SPA_DIR,
        env={**os.environ, "CODEGEN_OUT": f"{out}/"},
        check=True,
        capture_output=True,
        timeout=120,
    )
    for name in ("graphql.ts", "gql.ts", "index.ts", "persisted-documents.json"):
        assert (out / name).read_text() == (SPA_DIR / "src" / "gql" / name).read_text(), (
            f"examples/spa/src/gql/{name} is stale: run 'npm run codegen' in examples/spa"
        )
    typecheck = subprocess.run(
        [npx, "--no-install", "tsc", "--noEmit", "-p", "."], cwd=SPA_DIR, capture_output=True, text=True, timeout=120
    )
    assert typecheck.returncode == 0, typecheck.stdout + typecheck.stderr


def test_spa_behind_the_vite_proxy(npx: str, browser: Any) -> None:
    """Set-up 1: Vite forwards /graphql, /auth and /idp to the BFF; the browser only sees Vite's
    origin, so the Strict cookie works and the BFF needs no setting for the SPA."""
    bff_port, spa_port = free_port(), free_port()
    bff, spa = f"http://127.0.0.1:{bff_port}", f"http://127.0.0.1:{spa_port}"
    demo = bff_demo(bff_port, access_ttl=ACCESS_TTL, trusted_documents=str(MANIFEST))
    dev = vite(npx, spa_port, BFF_URL=bff)
    with running(demo), running(dev), diagnostics(demo, dev):
        page = browser.new_page(viewport={"width": 1000, "height": 700})
        visited: list[str] = []
        page.on("request", lambda r: visited.append(r.url))
        journey(page, spa, bff, f"{spa}/graphql", "proxy")
        assert visited and not [url for url in visited if url.startswith(bff)]


def test_spa_on_its_own_origin(npx: str, browser: Any) -> None:
    """Set-up 2: the SPA on its own origin, the BFF allowing it (CORS with credentials and an
    absolute return_to): same host name, so the Strict cookie is sent with credentials: 'include'."""
    bff_port, spa_port = free_port(), free_port()
    bff, spa = f"http://127.0.0.1:{bff_port}", f"http://127.0.0.1:{spa_port}"
    demo = bff_demo(
        bff_port,
        access_ttl=ACCESS_TTL,
        trusted_documents=str(MANIFEST),
        cors_origins=spa,
        login_return_origins=spa,
    )
    dev = vite(npx, spa_port, VITE_BFF_ORIGIN=bff)
    with running(demo), running(dev), diagnostics(demo, dev):
        page = browser.new_page(viewport={"width": 1000, "height": 700})
        journey(page, spa, bff, f"{bff}/graphql", "own-origin")
