"""Pure ASGI middleware: request ids and the contract's CSRF / Origin rule."""

from __future__ import annotations

import json
import re
import uuid
from collections.abc import Iterable

from starlette.datastructures import Headers
from starlette.types import ASGIApp, Message, Receive, Scope, Send

_REQUEST_ID = re.compile(r"^[A-Za-z0-9._-]{1,64}$")


async def send_json(send: Send, status: int, body: dict[str, object]) -> None:
    payload = json.dumps(body).encode()
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(payload)).encode()),
                (b"cache-control", b"no-store"),
            ],
        }
    )
    await send({"type": "http.response.body", "body": payload})


class RequestIdMiddleware:
    """Takes a sane incoming X-Request-ID or makes one; echoes it on the response."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        incoming = Headers(scope=scope).get("x-request-id", "")
        request_id = incoming if _REQUEST_ID.match(incoming) else uuid.uuid4().hex
        scope.setdefault("state", {})["request_id"] = request_id

        async def send_with_id(message: Message) -> None:
            if message["type"] == "http.response.start":
                message.setdefault("headers", [])
                message["headers"] = [*message["headers"], (b"x-request-id", request_id.encode())]
            await send(message)

        await self.app(scope, receive, send_with_id)


class CSRFMiddleware:
    """On protected paths: a request carrying the session cookie must be a JSON POST or carry a
    non-empty X-CSRF header (forms and simple requests cannot do either cross-site); a present
    Origin must be ours or allow-listed. Requests authenticated by ``Authorization: Session``
    carry no ambient credential and skip the CSRF half."""

    def __init__(
        self,
        app: ASGIApp,
        *,
        cookie_name: str,
        allowed_origins: Iterable[str],
        paths: Iterable[str] = ("/graphql", "/auth/logout"),
    ) -> None:
        self.app = app
        self.cookie_name = cookie_name
        self.allowed_origins = {origin.rstrip("/") for origin in allowed_origins}
        self.paths = tuple(paths)

    def _protected(self, path: str) -> bool:
        return any(path == p or path.startswith(p + "/") for p in self.paths)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not self._protected(scope["path"]):
            await self.app(scope, receive, send)
            return
        reason = self.refusal(scope)
        if reason is not None:
            await send_json(send, 403, {"errors": [{"message": reason, "extensions": {"code": "FORBIDDEN"}}]})
            return
        await self.app(scope, receive, send)

    def refusal(self, scope: Scope) -> str | None:
        headers = Headers(scope=scope)
        origin = headers.get("origin")
        if origin is not None and origin.rstrip("/") not in self.allowed_origins:
            return "Cross-origin request refused"
        if headers.get("authorization", "").lower().startswith("session "):
            return None
        if not self._has_session_cookie(headers.get("cookie", "")):
            return None
        method = scope["method"]
        if method in ("GET", "HEAD") and not scope.get("query_string"):
            return None  # the GraphiQL page itself: no data, no side effect
        content_type = headers.get("content-type", "").split(";")[0].strip().lower()
        if method == "POST" and content_type == "application/json":
            return None
        if headers.get("x-csrf", "").strip():
            return None
        return "CSRF check failed: send JSON with POST, or an X-CSRF header"

    def _has_session_cookie(self, cookie_header: str) -> bool:
        prefix = self.cookie_name + "="
        return any(part.strip().startswith(prefix) for part in cookie_header.split(";"))
