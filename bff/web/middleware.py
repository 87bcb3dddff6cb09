"""Pure ASGI middleware: request ids, access log, security and cache headers, the contract's CSRF /
Origin rule, the one request-body limit, and the last-resort guard that turns any unhandled
exception into a JSON answer."""

from __future__ import annotations

import contextlib
import json
import logging
import os
import re
import time
import uuid
from collections.abc import Awaitable, Callable, Iterable
from typing import Any

from starlette.datastructures import Headers
from starlette.middleware.cors import CORSMiddleware
from starlette.requests import Request
from starlette.responses import Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from bff.errors import error_entry
from bff.metrics import Metrics, loggable_name

access_log = logging.getLogger("bff.access")
error_log = logging.getLogger("bff.errors")
origin_log = logging.getLogger("bff.origins")

#: methods that may become a metric label; anything else a client invents is "OTHER"
_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})
_MAX_LOGGED_PATH = 256

_REQUEST_ID = re.compile(r"^[A-Za-z0-9._-]{1,64}$")


def _under(path: str, prefixes: tuple[str, ...]) -> bool:
    """Whether ``path`` is one of ``prefixes`` or below one of them."""
    return any(path == p or path.startswith(p + "/") for p in prefixes)


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


def request_id_for(incoming: str) -> str:
    """A sane incoming X-Request-ID, or a new one."""
    return incoming if _REQUEST_ID.match(incoming) else os.urandom(16).hex()  # uuid4().hex's form, cheaper


class RequestIdMiddleware:
    """Takes a sane incoming X-Request-ID or makes one; echoes it on the response."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        request_id = request_id_for(Headers(scope=scope).get("x-request-id", ""))
        scope.setdefault("state", {})["request_id"] = request_id

        async def send_with_id(message: Message) -> None:
            if message["type"] == "http.response.start":
                message.setdefault("headers", [])
                message["headers"] = [*message["headers"], (b"x-request-id", request_id.encode())]
            await send(message)

        await self.app(scope, receive, send_with_id)


class AccessLogMiddleware:
    """One JSON line and one metric sample per HTTP request: method, path (never the query string,
    which may carry an authorization code), route, status, latency, request id, GraphQL operation,
    user ``sub`` and a hash of the session id."""

    def __init__(self, app: ASGIApp, *, metrics: Metrics | None = None) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 500

        async def send_status(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_status)
        finally:
            log_access(scope, status, started, self.metrics)


def log_access(scope: Scope, status: int, started: float, metrics: Metrics | None = None) -> None:
    """The access line and the request metric of one HTTP request (started at ``started``,
    `time.perf_counter`)."""
    elapsed = time.perf_counter() - started
    state = scope.get("state", {})
    route = getattr(scope.get("route"), "path", None) or "unmatched"
    metrics = metrics or getattr(state.get("resources"), "metrics", None)
    method = scope["method"] if scope["method"] in _METHODS else "OTHER"
    if metrics is not None:
        metrics.child(metrics.http_requests, method, route, str(status)).observe(elapsed)
    if not access_log.isEnabledFor(logging.INFO):
        return  # the dict below is not built for nothing
    path: str = scope["path"]
    access_log.info(
        "request",
        extra={
            "method": method,
            "path": path if len(path) <= _MAX_LOGGED_PATH else path[:_MAX_LOGGED_PATH] + "…",
            "route": route,
            "status": status,
            "duration_ms": round(elapsed * 1000, 2),
            "request_id": state.get("request_id"),
            "operation": loggable_name(state.get("graphql_operation")),
            "sub": state.get("user_sub"),
            "session": state.get("session_hash"),
        },
    )


class SecurityHeadersMiddleware:
    """Production headers: HSTS, nosniff, no framing, no referrer."""

    HEADERS = (
        (b"strict-transport-security", b"max-age=63072000; includeSubDomains"),
        (b"x-content-type-options", b"nosniff"),
        (b"content-security-policy", b"frame-ancestors 'none'"),
        (b"x-frame-options", b"DENY"),
        (b"referrer-policy", b"no-referrer"),
    )

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                message["headers"] = [*message.get("headers", []), *self.HEADERS]
            await send(message)

        await self.app(scope, receive, send_with_headers)


class NoStoreMiddleware:
    """``Cache-Control: no-store`` on every response under ``paths`` that does not set its own
    (refusals by other middleware and CORS preflights included): GraphQL answers are personal."""

    def __init__(self, app: ASGIApp, *, paths: Iterable[str] = ("/graphql",)) -> None:
        self.app = app
        self.paths = tuple(paths)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        path = scope.get("path", "")
        if scope["type"] != "http" or not _under(path, self.paths):
            await self.app(scope, receive, send)
            return

        async def send_no_store(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = [(k, v) for k, v in message.get("headers", []) if k.lower() != b"cache-control"]
                message["headers"] = [*headers, (b"cache-control", b"no-store")]
            await send(message)

        await self.app(scope, receive, send_no_store)


class LastResortMiddleware:
    """The outermost guard: an exception nothing else handled becomes a JSON 500 with the request
    id and the security headers, and one error line in the log (never a trace to the client).
    Once the response has started there is nothing left to answer: the server closes it."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = False

        async def send_tracking(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await self.app(scope, receive, send_tracking)
        except Exception as exc:
            if started:
                raise
            await send_internal_error(scope, send, exc)


async def send_internal_error(scope: Scope, send: Send, exc: Exception) -> None:
    """The answer to an exception nothing handled (before the response started): a JSON 500 with
    the request id and the security headers, and one error line in the log."""
    state = scope.setdefault("state", {})
    request_id = state.get("request_id") or uuid.uuid4().hex
    error_log.error(
        "unhandled exception",
        exc_info=exc,
        extra={"request_id": request_id, "method": scope.get("method"), "path": scope.get("path")},
    )
    body = {"errors": [error_entry("Internal server error", "INTERNAL_SERVER_ERROR", requestId=request_id)]}
    payload = json.dumps(body).encode()
    headers = [
        (b"content-type", b"application/json"),
        (b"content-length", str(len(payload)).encode()),
        (b"cache-control", b"no-store"),
        (b"x-request-id", request_id.encode()),
        *SecurityHeadersMiddleware.HEADERS,
    ]
    await send({"type": "http.response.start", "status": 500, "headers": headers})
    await send({"type": "http.response.body", "body": payload})


class BodyTooLarge(Exception):
    """Raised into the application by `BodyLimitMiddleware`'s ``receive`` once the limit is passed."""


class BodyLimitMiddleware:
    """One request-body limit for every route (issue 24): any body larger than ``max_bytes`` is a
    413, whatever route, method or parser would have read it (``/auth/native/token`` read any body
    whole before).

    A ``Content-Length`` over the limit is refused before the application runs and before a byte of
    the body is read (a client that sent ``Expect: 100-continue`` sends none). A body without one
    (chunked) is counted as it is read: past the limit ``receive`` raises `BodyTooLarge` into the
    application, and whatever it answers then (a parser's 400, nothing) is replaced by the 413. The
    answer closes the connection (the rest of the body is never read). ``/graphql`` answers in
    GraphQL's shape, the other routes in the ``/auth`` one."""

    def __init__(self, app: ASGIApp, *, max_bytes: int, graphql_paths: Iterable[str] = ("/graphql",)) -> None:
        self.app = app
        self.max_bytes = max_bytes
        self.graphql_paths = tuple(graphql_paths)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = Headers(scope=scope).get("content-length", "")
        if declared.isdigit() and int(declared) > self.max_bytes:
            await self._refuse(scope, send)
            return
        received = 0
        over = False
        started = False

        async def counted() -> Message:
            nonlocal received, over
            if over:
                raise BodyTooLarge()
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_bytes:
                    over = True
                    raise BodyTooLarge()
            return message

        async def unless_refused(message: Message) -> None:
            nonlocal started
            if over and not started:
                return  # the application's answer to a body it could not read: the 413 replaces it
            started = started or message["type"] == "http.response.start"
            await send(message)

        with contextlib.suppress(BodyTooLarge):  # the application did not catch it: the 413 follows
            await self.app(scope, counted, unless_refused)
        if over and not started:
            await self._refuse(scope, send)

    async def _refuse(self, scope: Scope, send: Send) -> None:
        message = f"the request body exceeds {self.max_bytes} bytes"
        path = scope.get("path", "")
        body: dict[str, object]
        if _under(path, self.graphql_paths):
            body = {"errors": [error_entry(message, "PAYLOAD_TOO_LARGE")]}
        else:
            body = {"error": "payload_too_large", "message": message}
        payload = json.dumps(body).encode()
        await send(
            {
                "type": "http.response.start",
                "status": 413,
                "headers": [
                    (b"content-type", b"application/json"),
                    (b"content-length", str(len(payload)).encode()),
                    (b"cache-control", b"no-store"),
                    (b"connection", b"close"),  # the rest of the body is not read
                ],
            }
        )
        await send({"type": "http.response.body", "body": payload})


class RefusedOrigins:
    """Logs each browser origin the CORS / Origin rule refuses, once, at INFO, with the setting that
    would allow it: an SPA whose dev server moved to another port otherwise only sees "Failed to
    fetch". Remembers at most ``limit`` origins (the header is the client's to invent): past that,
    one line says that further refusals go unlogged."""

    def __init__(self, own_origin: str, limit: int = 256) -> None:
        self.own_origin = own_origin
        self.limit = limit
        self._seen: set[str] = set()
        self._full = False

    def note(self, origin: str) -> None:
        shown = "".join(ch for ch in origin[:200] if ch.isprintable() and ch != " ")
        if shown in self._seen:
            return
        if len(self._seen) >= self.limit:
            if not self._full:
                self._full = True
                origin_log.info("%d origins refused so far: further refused origins are not logged", self.limit)
            return
        self._seen.add(shown)
        origin_log.info(
            "origin %s refused: not in BFF_CORS_ORIGINS (nor BFF_PUBLIC_URL's origin %s); add it there to allow it",
            shown or "(empty)",
            self.own_origin,
        )


class OriginLoggingCORSMiddleware(CORSMiddleware):
    """Starlette's CORS middleware, which also notes every origin it does not allow (preflights it
    answers 400, and simple requests whose answer it leaves unreadable) in `RefusedOrigins`."""

    def __init__(self, app: ASGIApp, /, *, refused: RefusedOrigins, **options: Any) -> None:
        super().__init__(app, **options)
        self.refused = refused

    def is_allowed_origin(self, origin: str) -> bool:
        allowed = super().is_allowed_origin(origin)
        if not allowed:
            self.refused.note(origin)
        return allowed


class CSRFMiddleware:
    """On protected paths: a request carrying the session cookie must be a JSON POST or carry a
    non-empty X-CSRF header (forms and simple requests cannot do either cross-site); a present
    Origin must be ours or allow-listed. Requests authenticated by ``Authorization: Session``
    carry no ambient credential and skip the CSRF half.

    A WebSocket upgrade is not bound by the same-origin policy, so a foreign page could open one
    with the user's cookie (cross-site WebSocket hijacking): its Origin, when present, must be
    allowed, and one that carries the session cookie must carry an Origin (browsers always send
    one). It is refused before the upgrade with 403."""

    def __init__(
        self,
        app: ASGIApp,
        *,
        cookie_name: str,
        allowed_origins: Iterable[str],
        paths: Iterable[str] = ("/graphql", "/auth/logout"),
        refused: RefusedOrigins | None = None,
    ) -> None:
        self.app = app
        self.cookie_name = cookie_name
        self.allowed_origins = {origin.rstrip("/") for origin in allowed_origins}
        self.paths = tuple(paths)
        self.refused = refused

    def _protected(self, path: str) -> bool:
        return _under(path, self.paths)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] not in ("http", "websocket") or not self._protected(scope["path"]):
            await self.app(scope, receive, send)
            return
        reason = self.refusal(scope)
        if reason is None:
            await self.app(scope, receive, send)
        elif scope["type"] == "http":
            await send_json(send, 403, {"errors": [error_entry(reason, "FORBIDDEN")]})
        else:
            await self._refuse_upgrade(scope, receive, send, reason)

    def refusal(self, scope: Scope) -> str | None:
        headers = Headers(scope=scope)
        origin = headers.get("origin")
        if origin is not None and origin.rstrip("/") not in self.allowed_origins:
            if self.refused is not None:
                self.refused.note(origin)
            return "Cross-origin request refused"
        if headers.get("authorization", "").lower().startswith("session "):
            return None
        if not self._has_session_cookie(headers.get("cookie", "")):
            return None
        if scope["type"] == "websocket":
            return None if origin is not None else "A WebSocket with the session cookie must send an Origin header"
        method = scope["method"]
        if method in ("GET", "HEAD") and not scope.get("query_string"):
            return None  # the GraphiQL page itself: no data, no side effect
        content_type = headers.get("content-type", "").split(";")[0].strip().lower()
        if method == "POST" and content_type == "application/json":
            return None
        if headers.get("x-csrf", "").strip():
            return None
        return "CSRF check failed: send JSON with POST, or an X-CSRF header"

    @staticmethod
    async def _refuse_upgrade(scope: Scope, receive: Receive, send: Send, reason: str) -> None:
        """403 before the handshake, by closing before accepting (servers answer that 403). Not
        the ASGI denial-response extension with a JSON body: a browser's WebSocket shows nothing
        of a refused handshake anyway, and uvicorn logs every such answer as an ERROR ("returned
        without completing handshake")."""
        await receive()  # websocket.connect
        await send({"type": "websocket.close", "code": 1008, "reason": reason})

    def _has_session_cookie(self, cookie_header: str) -> bool:
        prefix = self.cookie_name + "="
        return any(part.strip().startswith(prefix) for part in cookie_header.split(";"))


class GraphQLEntry:
    """``POST /graphql`` in one pass: what the middleware stack does to it (request id, the
    CSRF/Origin rule, the body limit, CORS, ``no-store``, the security headers, the access log and
    metric, the last-resort guard), done once in one function with one header merge, instead of
    nine ASGI layers each wrapping ``send`` (issue 26: ~12 % of a worker's CPU on the viewer query).

    It takes only requests whose every check passes, that is, a POST with a ``Content-Length`` within
    the limit (a longer body never reaches the application: the server stops at the declared
    length), an Origin that is absent or allowed and that the CSRF rule lets through. Anything
    else, and every refusal, goes through the stack as before, so each refusal has one
    implementation. The same functions (`request_id_for`, `log_access`, `send_internal_error`,
    `CSRFMiddleware.refusal`) serve both paths."""

    def __init__(
        self,
        handler: Callable[[Request], Awaitable[Response]],
        *,
        route: Any,
        csrf: CSRFMiddleware,
        cors_origins: Iterable[str],
        max_bytes: int,
        security_headers: bool,
    ) -> None:
        self.handler = handler
        self.route = route
        self.csrf = csrf
        self.cors_origins = frozenset(cors_origins)
        self.max_bytes = max_bytes
        self.extra_headers: list[tuple[bytes, bytes]] = [(b"cache-control", b"no-store")]
        if security_headers:
            self.extra_headers.extend(SecurityHeadersMiddleware.HEADERS)

    def takes(self, scope: Scope) -> bool:
        """Whether this request passes every check of the stack (else the stack answers it)."""
        if scope["method"] != "POST" or scope["path"] != "/graphql":
            return False
        origin: bytes | None = None
        declared = b""
        for name, value in scope["headers"]:
            if name == b"content-length":
                declared = value
            elif name == b"origin":
                origin = value
            elif name == b"transfer-encoding":
                return False  # counted as it is read: the stack's BodyLimitMiddleware
        if not declared.isdigit() or int(declared) > self.max_bytes:
            return False
        if origin is not None and origin.decode("latin-1") not in self.cors_origins:
            return False
        return self.csrf.refusal(scope) is None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        started_at = time.perf_counter()
        state = scope.setdefault("state", {})
        request_id = ""
        origin = b""
        for name, value in scope["headers"]:
            if name == b"x-request-id":
                request_id = value.decode("latin-1")
            elif name == b"origin":
                origin = value
        request_id = request_id_for(request_id)
        state["request_id"] = request_id
        scope["route"] = self.route
        added = [*self.extra_headers, (b"x-request-id", request_id.encode())]
        if origin:  # an allowed origin (`takes`): CORS mirrors it, as Starlette's middleware does
            added += [(b"access-control-allow-credentials", b"true"), (b"access-control-allow-origin", origin)]
        status = 500
        started = False

        async def send_merged(message: Message) -> None:
            nonlocal status, started
            if message["type"] == "http.response.start":
                status = message["status"]
                started = True
                message["headers"] = _merged(message.get("headers", []), added)
            await send(message)

        try:
            response = await self.handler(Request(scope, receive))
            if type(response) is Response and response.background is None:
                # the common case without Response.__call__ and its wrapper: the two messages
                await send_merged(
                    {"type": "http.response.start", "status": response.status_code, "headers": response.raw_headers}
                )
                await send({"type": "http.response.body", "body": response.body})
            else:  # a stream (SSE, multipart) or anything with a background task
                await response(scope, receive, send_merged)
        except Exception as exc:
            if started:
                raise
            await send_internal_error(scope, send, exc)
        finally:
            log_access(scope, status, started_at)


def _merged(headers: list[tuple[bytes, bytes]], added: list[tuple[bytes, bytes]]) -> list[tuple[bytes, bytes]]:
    """The answer's headers with ``added``: its own Cache-Control replaced by ``no-store``, and
    ``Origin`` joined to its own Vary (Starlette's CORS middleware adds it to every answer, since the
    answer depends on the Origin whether one was sent or not)."""
    merged = [(k, v) for k, v in headers if k.lower() not in (b"cache-control", b"vary")]
    vary = [v for k, v in headers if k.lower() == b"vary"]
    merged.append((b"vary", b", ".join([*vary, b"Origin"])))
    merged.extend(added)
    return merged
