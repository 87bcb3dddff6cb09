"""GraphiQL with sign-in, in a real browser: Playwright driving Debian's chromium (no download)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from bff.demo.stack import build_demo_app
from tests.support.browser import CHROMIUM_FLAGS, chromium_path
from tests.support.servers import free_port, serve

ARTIFACTS = Path(__file__).resolve().parents[2] / "test-artifacts"


@pytest.fixture
async def browser_page() -> AsyncIterator[Any]:
    executable = chromium_path()
    from playwright.async_api import async_playwright

    async with async_playwright() as playwright:
        browser = await playwright.chromium.launch(executable_path=executable, headless=True, args=CHROMIUM_FLAGS)
        try:
            page = await browser.new_page(viewport={"width": 1280, "height": 800})
            yield page
        finally:
            await browser.close()


async def _result_text(page: Any) -> str:
    text: str = await page.locator(".graphiql-response").inner_text()
    return text


async def test_graphiql_sign_in_query_sign_out(browser_page: Any) -> None:
    page = browser_page
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    async with serve(build_demo_app(base, access_ttl=300), port):
        await page.goto(f"{base}/graphql")
        user = page.get_by_test_id("user")
        await user.filter(has_text="Not signed in").wait_for()
        await page.locator("#bff-signin").click()

        await page.get_by_role("button", name="Alice Example").click()
        await page.wait_for_url(f"{base}/graphql")
        await user.filter(has_text="Signed in as Alice Example").wait_for()
        # the viewer query is prefilled; run it
        await page.locator(".graphiql-execute-button").click()
        await page.wait_for_function(
            "document.querySelector('.graphiql-response')?.innerText.includes('o-alice-1')", timeout=15000
        )
        result = await _result_text(page)
        assert '"name": "Alice Example"' in result
        assert "totalCents" in result
        ARTIFACTS.mkdir(exist_ok=True)
        await page.screenshot(path=str(ARTIFACTS / "graphiql-signed-in.png"))
        # the browser never holds a token: only the HttpOnly session cookie
        assert await page.evaluate("document.cookie") == ""
        cookies = {c["name"]: c for c in await page.context.cookies()}
        assert cookies["bff_session"]["httpOnly"] is True

        # sign-out ends the IdP session too (its end-session URL, back to the demo's home page) and
        # leaves nothing of Alice's answer behind
        await page.locator("#bff-signout").click()
        await page.wait_for_url(f"{base}/")
        await page.goto(f"{base}/graphql")
        await user.filter(has_text="Not signed in").wait_for()
        assert "o-alice-1" not in await _result_text(page)
        await page.locator(".graphiql-execute-button").click()
        await page.wait_for_function(
            "document.querySelector('.graphiql-response')?.innerText.includes('UNAUTHENTICATED')", timeout=15000
        )
        await page.screenshot(path=str(ARTIFACTS / "graphiql-signed-out.png"))


SUBSCRIPTION = """subscription Status {
  orderStatusChanged(orderId: "o-alice-1") { orderId status }
}
"""


async def test_graphiql_runs_the_demo_subscription_over_sse(browser_page: Any) -> None:
    page = browser_page
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    app = build_demo_app(base, access_ttl=300)
    async with serve(app, port):
        await page.goto(f"{base}/auth/login?return_to=/graphql")
        await page.get_by_role("button", name="Alice Example").click()
        await page.wait_for_url(f"{base}/graphql")
        await page.get_by_test_id("user").filter(has_text="Signed in as Alice Example").wait_for()
        editor = page.locator(".graphiql-query-editor .CodeMirror")
        await editor.filter(has_text="query Viewer").wait_for()  # GraphiQL has restored its tab
        await editor.evaluate("(node, text) => node.CodeMirror.setValue(text)", SUBSCRIPTION)
        # GraphiQL takes an edit in after a debounce (its operation name too): wait until it saved it
        await page.wait_for_function(
            "JSON.parse(localStorage.getItem('graphiql:tabState') || '{}').tabs?.[0]?.operationName === 'Status'"
        )
        await page.locator(".graphiql-execute-button").click()
        # the demo order advances every 5 s: its first status, then the next one, in the same run
        for status in ("PLACED", "PACKED"):
            await page.wait_for_function(
                f"document.querySelector('.graphiql-response')?.innerText.includes('\"{status}\"')", timeout=15000
            )
        assert "o-alice-1" in await _result_text(page)
        ARTIFACTS.mkdir(exist_ok=True)
        await page.screenshot(path=str(ARTIFACTS / "graphiql-subscription.png"))
        streams = app.state.resources.streams
        assert len(streams) == 1  # one SSE stream, open on the BFF
        # the execute button is a stop button while the subscription runs: the stream ends
        await page.locator(".graphiql-execute-button").click()
        for _ in range(100):
            if len(streams) == 0:
                break
            await page.wait_for_timeout(50)
        assert len(streams) == 0
