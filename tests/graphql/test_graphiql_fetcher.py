"""GraphiQL's fetcher copes with an answer that is not JSON (a proxy's 502 page, a plain-text 500):
it shows the status and the text instead of "Unexpected token ... is not valid JSON"."""

from __future__ import annotations

from typing import Any

from bff.app import create_app
from tests.conftest import Upstreams, make_settings
from tests.support.browser import CHROMIUM_FLAGS, chromium_path
from tests.support.servers import serve


async def test_graphiql_shows_status_and_text_of_a_non_json_answer(upstreams: Upstreams) -> None:
    executable = chromium_path()
    from playwright.async_api import async_playwright

    app = create_app(make_settings(upstreams=upstreams.settings()))
    async with serve(app) as url, async_playwright() as playwright:
        browser = await playwright.chromium.launch(executable_path=executable, headless=True, args=CHROMIUM_FLAGS)
        try:
            page = await browser.new_page()

            async def bad_gateway(route: Any) -> None:
                if route.request.method == "POST":
                    await route.fulfill(status=502, content_type="text/plain", body="Bad gateway from the proxy")
                else:
                    await route.continue_()

            await page.route("**/graphql", bad_gateway)
            await page.goto(f"{url}/graphql")
            await page.locator(".graphiql-execute-button").click()
            await page.wait_for_function(
                "document.querySelector('.graphiql-response')?.innerText.includes('502')", timeout=15000
            )
            shown: str = await page.locator(".graphiql-response").inner_text()
        finally:
            await browser.close()
    assert "HTTP 502" in shown
    assert "Bad gateway from the proxy" in shown
    assert "not valid JSON" not in shown
