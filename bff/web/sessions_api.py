"""``/auth/sessions``: the signed-in user's own sessions, listed, and ended one by one or all but this one.

No answer ever holds a session id. Each listed session comes with a *handle*: its store name (the
SHA-256 `SessionCrypto.tag` of its id, never the id) and an expiry, sealed with AES-GCM under the
session secret (`SessionCrypto.encrypt`: a key id, a fresh nonce each time) and bound, as associated
data, to the session that asked for the list. So a handle

- reveals nothing, not even which session it names, and every listing hands out new ones;
- opens only in requests of the session it was listed for (another session, of this user or of
  someone else, gets 400), and only for `HANDLE_SECONDS`;
- names nothing outside the asking user's own sessions: a target not among them is refused with
  the same 400 as a forged handle.

Ending a session goes through `SessionStore.delete`, like logout: its streams end on every replica,
and its refresh token is then revoked at the IdP (RFC 7009, best effort: an IdP that fails keeps no
session alive). The CSRF and Origin rule of ``/auth/logout`` holds here too (`_refusal`); native apps
use both routes with ``Authorization: Session <handle>``.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import json
import logging
import re
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, Response
from starlette.types import Receive, Scope, Send

from bff.errors import BFFError
from bff.resources import Credentials, Resources
from bff.sessions.crypto import DecryptError, SessionCrypto
from bff.sessions.models import MAX_CLIENT_LABEL, Session
from bff.web.middleware import CSRFMiddleware
from bff.web.responses import NO_STORE, error_response

log = logging.getLogger("bff.auth")

PREFIX = "/auth/sessions"
router = APIRouter(prefix=PREFIX, tags=["auth"])

#: how long a listed handle can be used to end its session
HANDLE_SECONDS = 300
#: the label of every native app's session (the system browser's User-Agent is not the app's)
NATIVE_CLIENT = "native app"
UNKNOWN_CLIENT = "Unknown browser"

_HANDLE_CHARS = re.compile(r"^[A-Za-z0-9_-]{20,200}$")
_TAG_BYTES = 16  # `SessionCrypto.tag`: 32 hex digits
_HOW = 'send JSON {"session": "<handle from GET /auth/sessions>"} or {"others": true}'
_BAD_HANDLE = "unknown or expired session handle: list the sessions again (GET /auth/sessions)"


# the client label -------------------------------------------------------------------------------
#: (User-Agent token, browser): the first match wins, so the browsers that also claim to be Chrome,
#: Safari or Mozilla come before them
_BROWSERS = (
    ("Edg/", "Edge"),
    ("EdgA/", "Edge"),
    ("EdgiOS/", "Edge"),
    ("Edge/", "Edge"),
    ("OPR/", "Opera"),
    ("OPiOS/", "Opera"),
    ("Opera", "Opera"),
    ("SamsungBrowser/", "Samsung Internet"),
    ("YaBrowser/", "Yandex Browser"),
    ("Vivaldi/", "Vivaldi"),
    ("Firefox/", "Firefox"),
    ("FxiOS/", "Firefox"),
    ("CriOS/", "Chrome"),
    ("Chromium/", "Chromium"),
    ("Chrome/", "Chrome"),
    ("Safari/", "Safari"),
    ("Trident/", "Internet Explorer"),
    ("MSIE ", "Internet Explorer"),
)
#: (User-Agent token, operating system); iOS and Android before the systems they also name
_SYSTEMS = (
    ("Windows Phone", "Windows Phone"),
    ("Windows", "Windows"),
    ("iPhone", "iOS"),
    ("iPad", "iPadOS"),
    ("iPod", "iOS"),
    ("Android", "Android"),
    ("CrOS", "ChromeOS"),
    ("Macintosh", "macOS"),
    ("Mac OS X", "macOS"),
    ("Linux", "Linux"),
    ("FreeBSD", "FreeBSD"),
)


def client_label(user_agent: str | None) -> str:
    """A short label of the client a User-Agent names ("Firefox on Linux", "Safari on iOS"), from a
    fixed vocabulary: the raw header is never kept (it can be long, identifying or hostile)."""
    ua = (user_agent or "")[:512]
    browser = next((name for token, name in _BROWSERS if token in ua), None)
    system = next((name for token, name in _SYSTEMS if token in ua), None)
    if browser is None:
        return f"{UNKNOWN_CLIENT} on {system}" if system else UNKNOWN_CLIENT
    return (f"{browser} on {system}" if system else browser)[:MAX_CLIENT_LABEL]


def _label(session: Session) -> str:
    if session.client:
        return session.client
    return NATIVE_CLIENT if session.kind == "native" else UNKNOWN_CLIENT


# handles ----------------------------------------------------------------------------------------
def _bound_to(crypto: SessionCrypto, current_id: str) -> bytes:
    """A handle's associated data: the session it was listed for, apart from every other sealed value."""
    return f"bff session handle v1\x00{crypto.tag(current_id)}".encode()


def seal_handle(crypto: SessionCrypto, current_id: str, target_id: str, expires_at: float) -> str:
    """A handle of ``target_id`` for requests of ``current_id`` until ``expires_at`` (store clock)."""
    plain = int(expires_at).to_bytes(8, "big") + bytes.fromhex(crypto.tag(target_id))
    sealed = crypto.encrypt(plain, _bound_to(crypto, current_id))
    return base64.urlsafe_b64encode(sealed).rstrip(b"=").decode()


def open_handle(crypto: SessionCrypto, current_id: str, handle: str, now: float) -> str | None:
    """The store name (`SessionCrypto.tag`) of the session ``handle`` names, if it was listed for
    ``current_id`` and has not expired; None for anything else (forged, foreign, expired)."""
    if not _HANDLE_CHARS.match(handle):
        return None
    try:
        sealed = base64.urlsafe_b64decode(handle + "=" * (-len(handle) % 4))
        plain = crypto.decrypt(sealed, _bound_to(crypto, current_id))
    except (binascii.Error, ValueError, DecryptError):
        return None
    if len(plain) != 8 + _TAG_BYTES or int.from_bytes(plain[:8], "big") < now:
        return None
    return plain[8:].hex()


# the CSRF / Origin rule ---------------------------------------------------------------------------
async def _unused(scope: Scope, receive: Receive, send: Send) -> None:  # pragma: no cover - never called
    raise RuntimeError("the sessions routes use CSRFMiddleware's rule, not the middleware")


def _rule(request: Request, resources: Resources) -> CSRFMiddleware:
    """The app's own CSRF / Origin rule (the one ``/graphql`` and ``/auth/logout`` pass through), with
    its cookie name and allowed origins: the same decision, made by the route."""
    app = request.app
    rule: CSRFMiddleware | None = getattr(app.state, "sessions_csrf_rule", None)
    if rule is None:
        options: dict[str, Any] = next(
            (dict(m.kwargs) for m in getattr(app, "user_middleware", ()) if m.cls is CSRFMiddleware),
            {"cookie_name": resources.session_cookie.name, "allowed_origins": [resources.login.public_origin]},
        )
        options["paths"] = (PREFIX,)
        rule = CSRFMiddleware(_unused, **options)
        app.state.sessions_csrf_rule = rule
    return rule


def _refusal(request: Request, resources: Resources) -> Response | None:
    """403 for a foreign Origin; for the POST also a cookie request that is neither JSON nor X-CSRF."""
    scope = request.scope
    if request.method in ("GET", "HEAD"):
        scope = {**scope, "query_string": b""}  # a GET only answers, so only the Origin half applies
    reason = _rule(request, resources).refusal(scope)
    return None if reason is None else error_response(403, "forbidden", reason)


# the routes ---------------------------------------------------------------------------------------
def _resources(request: Request) -> Resources:
    resources: Resources = request.state.resources
    return resources


async def _signed_in(request: Request) -> tuple[Resources, Session, Credentials] | Response:
    """The request's live session, once the CSRF/Origin rule let it through; else the answer: that
    rule's 403, or a 401 (clearing a cookie that names no session)."""
    resources = _resources(request)
    refused = _refusal(request, resources)
    if refused is not None:
        return refused
    credentials = resources.session_credentials(request.headers.get("authorization"), request.cookies)
    session_id = credentials.session_id
    session = await resources.store.get(session_id, touch=False) if session_id else None
    if session is not None:
        request.state.user_sub = session.sub  # for the access log: never the id, only its hash
        request.state.session_hash = resources.crypto.fingerprint(session.id)
        return resources, session, credentials
    response = error_response(401, "unauthenticated", "sign in first: no live session in this request")
    if credentials.presented and credentials.from_cookie:
        response.headers.append("set-cookie", resources.session_cookie.clear())
    return response


async def _own_sessions(resources: Resources, current: Session) -> list[Session]:
    sessions = await resources.store.sessions_of(current.sub)
    if not any(s.id == current.id for s in sessions):
        sessions.append(current)  # not (yet) nameable through the index: it is still this user's
    return sessions


@router.get("", summary="The signed-in user's sessions (never an id: opaque, short-lived handles)")
async def list_sessions(request: Request) -> Response:
    signed_in = await _signed_in(request)
    if isinstance(signed_in, Response):
        return signed_in
    resources, current, _ = signed_in
    sessions = await _own_sessions(resources, current)
    sessions.sort(key=lambda s: (s.last_seen, s.created_at), reverse=True)
    crypto, until = resources.crypto, resources.store.now() + HANDLE_SECONDS
    listed = [
        {
            "session": seal_handle(crypto, current.id, s.id, until),
            "createdAt": int(s.created_at),
            "lastActiveAt": int(s.last_seen),
            "client": _label(s),
            "kind": s.kind,
            "current": s.id == current.id,
        }
        for s in sessions
    ]
    return JSONResponse({"sessions": listed}, headers=NO_STORE)


def _request_body(raw: bytes) -> tuple[str | None, bool] | None:
    """(handle, others) from a revoke request's JSON body; None for anything else."""
    try:
        body = json.loads(raw)
    except (ValueError, RecursionError):
        return None
    if not isinstance(body, dict) or len(body) != 1:
        return None
    handle, others = body.get("session"), body.get("others")
    if isinstance(handle, str) and len(handle) <= 512:
        return handle, False
    if others is True:
        return None, True
    return None


@router.post("/revoke", summary="End one of the user's sessions, or all but the current one")
async def revoke_sessions(request: Request) -> Response:
    signed_in = await _signed_in(request)
    if isinstance(signed_in, Response):
        return signed_in
    resources, current, credentials = signed_in
    asked = _request_body(await request.body())
    if asked is None:
        return error_response(400, "invalid_request", _HOW)
    handle, others = asked
    store, crypto = resources.store, resources.crypto
    if others:
        targets = [s for s in await _own_sessions(resources, current) if s.id != current.id]
    else:
        assert handle is not None
        tag = open_handle(crypto, current.id, handle, store.now())
        if tag is None:
            return error_response(400, "invalid_request", _BAD_HANDLE)
        targets = [s for s in await _own_sessions(resources, current) if crypto.tag(s.id) == tag]
        if not targets:
            return error_response(400, "invalid_request", _BAD_HANDLE)
    for session in targets:
        # ended first, on every replica (its streams too); the IdP's revocation is best effort after it
        await store.delete(session.id, session=session)
    await asyncio.gather(*(_revoke_refresh_token(resources, s) for s in targets))
    log.info(
        "sessions revoked by their user",
        extra={"sub": current.sub, "revoked": len(targets), "sessions": [crypto.fingerprint(s.id) for s in targets]},
    )
    response = JSONResponse({"revoked": len(targets)}, headers=NO_STORE)
    if credentials.from_cookie and any(s.id == current.id for s in targets):
        response.headers.append("set-cookie", resources.session_cookie.clear())
    return response


async def _revoke_refresh_token(resources: Resources, session: Session) -> None:
    """RFC 7009 at the IdP, as logout does; never raises (the session has already ended)."""
    oidc, token = resources.oidc, session.tokens.refresh_token
    if oidc is None or not token:
        return
    try:
        await oidc.revoke(token, hint="refresh_token")
    except BFFError as exc:
        log.warning("revoking an ended session's refresh token failed: %s", type(exc).__name__)
