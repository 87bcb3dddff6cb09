"""The README's subscription client set-up, proven with the real JavaScript clients: the browser
snippets in examples/spa/clients/ (graphql-sse, graphql-ws, Apollo Client's multipart HTTP
subscriptions), run in Node by clients/run.mjs with the session cookie (and, for the WebSocket,
the Origin) a browser would send, against a real BFF signed in at the real oidc-provider and the
demo upstreams. Each snippet sees two successive statuses of one order; without the session it
gets UNAUTHENTICATED; a WebSocket upgrade from a foreign Origin is refused."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest

from bff.demo import data
from bff.demo.upstreams import ORDER_STATUSES
from tests.conftest import Bff
from tests.e2e.conftest import Stack
from tests.support.browser import signed_in_cookie
from tests.support.servers import missing_component, require_binary
from tests.support.spa import SPA_DIR, clean_env, require_spa_packages

CLIENTS = ["sse-subscription", "ws-subscription", "apollo-subscription"]
#: alice's demo orders, as GET /users/alice/orders lists them: one per client, so that each
#: starts with an order no stream has looked at yet
ORDERS = dict(zip(CLIENTS, [order["id"] for order in data.orders("alice", 10)], strict=False))


@pytest.fixture
def node() -> str:
    require_spa_packages()
    for package in ("graphql-sse", "graphql-ws", "ws", "@apollo/client"):
        if not (SPA_DIR / "node_modules" / package / "package.json").exists():
            missing_component(f"{package} is not installed in examples/spa: run 'npm ci' there")
    return require_binary("node", "install Node.js 20+")


async def run_snippet(node: str, name: str, bff: Bff, cookie: str | None, **env: str) -> dict[str, Any]:
    """clients/<name>.mjs's subscription() in Node, as clients/run.mjs prints it: {"events": [...],
    "error"?: ..., "http"?: [each fetch], "refused"?: [WebSocket handshake errors]}."""
    environment = clean_env(
        BFF_URL=bff.url,
        BFF_COOKIE=f"{bff.settings.cookie_name}={cookie}" if cookie else "",
        BFF_ORDER_ID=ORDERS[name],
        **env,
    )
    proc = await asyncio.create_subprocess_exec(
        node,
        "clients/run.mjs",
        name,
        cwd=SPA_DIR,
        env=environment,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        out, err = await asyncio.wait_for(proc.communicate(), timeout=20)
    except TimeoutError:
        proc.kill()
        await proc.wait()
        raise AssertionError(f"{name} did not finish within 20 s") from None
    assert proc.returncode == 0, err.decode()
    lines = out.decode().strip().splitlines()
    assert lines, err.decode()
    result: dict[str, Any] = json.loads(lines[-1])
    return result


async def advance_once_streamed(stack: Stack, order_id: str) -> str:
    """Once the demo accounts service has sent ``order_id``'s first status over its event stream
    (the BFF opened it for a client's subscription), move the order on by one status."""
    accounts = stack.upstreams.accounts.state
    while order_id not in accounts.history:  # noqa: ASYNC110 (the demo service announces nothing: look)
        await asyncio.sleep(0.02)
    await asyncio.sleep(0.3)
    status = ORDER_STATUSES[ORDER_STATUSES.index(accounts.history[order_id][-1]) + 1]
    accounts.statuses[order_id] = status
    return status


def codes(event: dict[str, Any]) -> list[str | None]:
    return [(e.get("extensions") or {}).get("code") for e in event.get("errors") or []]


async def receives_two_successive_statuses(stack: Stack, node: str, name: str, bff: Bff, cookie: str) -> dict[str, Any]:
    order_id = ORDERS[name]
    stack.upstreams.accounts.state.statuses[order_id] = "PLACED"
    advance = asyncio.create_task(advance_once_streamed(stack, order_id))
    try:
        result = await run_snippet(node, name, bff, cookie)
    finally:
        advance.cancel()
    assert "error" not in result, result
    assert not any(event.get("errors") for event in result["events"]), result
    statuses = [event["data"]["orderStatusChanged"] for event in result["events"]]
    assert [(s["orderId"], s["status"]) for s in statuses] == [(order_id, "PLACED"), (order_id, "PACKED")], result
    return result


async def test_graphql_sse_client(stack: Stack, node: str) -> None:
    """graphql-sse (distinct connections, credentials: "include"): its JSON POST passes the CSRF rule
    with the cookie alone; without the session the stream's one event is UNAUTHENTICATED."""
    async with stack.start_bff() as bff:
        cookie = await signed_in_cookie(bff)
        result = await receives_two_successive_statuses(stack, node, "sse-subscription", bff, cookie)
        assert result["http"] == [
            {
                "method": "POST",
                "accept": "text/event-stream",
                "contentType": "application/json; charset=utf-8",
                "status": 200,
                "answer": "text/event-stream; charset=utf-8",
            }
        ], result

        anonymous = await run_snippet(node, "sse-subscription", bff, None, BFF_RETRY_ATTEMPTS="0")
        assert "error" not in anonymous, anonymous
        assert [codes(event) for event in anonymous["events"]] == [["UNAUTHENTICATED"]], anonymous


async def test_graphql_ws_client(stack: Stack, node: str) -> None:
    """graphql-ws with the browser's cookie and Origin on the upgrade; without the session the
    operation is UNAUTHENTICATED; the upgrade from a foreign Origin is refused with 403 before the
    handshake (with the session cookie: cross-site WebSocket hijacking)."""
    async with stack.start_bff() as bff:
        cookie = await signed_in_cookie(bff)
        result = await receives_two_successive_statuses(stack, node, "ws-subscription", bff, cookie)
        assert "http" not in result and "refused" not in result, result

        anonymous = await run_snippet(node, "ws-subscription", bff, None, BFF_RETRY_ATTEMPTS="0")
        assert "error" not in anonymous, anonymous
        assert [codes(event) for event in anonymous["events"]] == [["UNAUTHENTICATED"]], anonymous

        foreign = await run_snippet(
            node, "ws-subscription", bff, cookie, BFF_ORIGIN="http://evil.example", BFF_RETRY_ATTEMPTS="0"
        )
        assert foreign["events"] == [], foreign
        # graphql-ws rejects with the socket's error event (a browser's says nothing more)
        assert foreign["error"] == {"message": "Unexpected server response: 403"}, foreign
        assert foreign["refused"] == ["Unexpected server response: 403"], foreign


async def test_apollo_client_multipart_subscription(stack: Stack, node: str) -> None:
    """Apollo Client 4's HttpLink: a subscription is a POST asking for multipart/mixed
    (subscriptionSpec=1.0); without the session it is UNAUTHENTICATED."""
    async with stack.start_bff() as bff:
        cookie = await signed_in_cookie(bff)
        result = await receives_two_successive_statuses(stack, node, "apollo-subscription", bff, cookie)
        (exchange,) = result["http"]
        assert exchange["method"] == "POST" and exchange["status"] == 200, result
        assert exchange["accept"].startswith("multipart/mixed;") and "subscriptionSpec=1.0" in exchange["accept"], (
            result
        )
        assert exchange["answer"].startswith("multipart/mixed"), result

        anonymous = await run_snippet(node, "apollo-subscription", bff, None)
        assert "error" not in anonymous, anonymous
        assert [codes(event) for event in anonymous["events"]] == [["UNAUTHENTICATED"]], anonymous
