"""``/auth/*``: login (code + PKCE), callback, logout, session info and back-channel logout."""

from __future__ import annotations

import hashlib
import hmac
import logging
import secrets
import time
from collections.abc import Sequence
from typing import Annotated, Any
from urllib.parse import unquote, urlsplit

from fastapi import APIRouter, Form, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, RedirectResponse, Response

from bff.auth.oidc import OIDCClient, s256_challenge
from bff.errors import AuthProviderUnavailable, InvalidGrant, LoginError, StoreUnavailable
from bff.resources import Resources
from bff.sessions.models import Session
from bff.web.native import handoff, native_login
from bff.web.responses import NO_STORE, error_response, iso_utc

log = logging.getLogger("bff.auth")

router = APIRouter(prefix="/auth", tags=["auth"])


def _resources(request: Request) -> Resources:
    resources: Resources = request.state.resources
    return resources


def _oidc(resources: Resources) -> OIDCClient:
    if resources.oidc is None:
        raise AuthProviderUnavailable("Sign-in is not configured (BFF_OIDC_ISSUER, BFF_OIDC_CLIENT_ID)")
    return resources.oidc


def _credentials(request: Request, resources: Resources) -> tuple[str | None, bool]:
    return resources.session_credentials(request.headers.get("authorization"), request.cookies)


def _note_session(request: Request, resources: Resources, session: Session) -> None:
    """For the access log: the subject and a hash of the session id, never the id."""
    request.state.user_sub = session.sub
    request.state.session_hash = resources.crypto.fingerprint(session.id)


def _digest(value: str) -> str:
    return hashlib.sha256(value.encode()).hexdigest()


def safe_return_to(value: str | None) -> str:
    """Only a same-origin relative path; anything else (schemes, ``//host``, backslashes,
    control characters, encoded tricks) falls back to ``/``."""
    if not value or len(value) > 2048:
        return "/"
    decoded = unquote(value)
    if not value.startswith("/") or value.startswith("//") or decoded.startswith("//"):
        return "/"
    if "\\" in decoded or any(ord(ch) < 0x20 or ord(ch) == 0x7F for ch in decoded):
        return "/"
    parts = urlsplit(value)
    if parts.scheme or parts.netloc:
        return "/"
    return value


@router.get("/login", summary="Start the OIDC sign-in (302 to the identity provider)")
async def login(
    request: Request,
    return_to: str | None = None,  # anything unusable (too long included) falls back to "/"
    client: Annotated[str | None, Query(max_length=16)] = None,
    redirect_uri: Annotated[str | None, Query(max_length=2048)] = None,
    code_challenge: Annotated[str | None, Query(max_length=128)] = None,
    code_challenge_method: Annotated[str | None, Query(max_length=16)] = None,
    state: Annotated[str | None, Query(max_length=512)] = None,
) -> Response:
    """Browsers: ``return_to``. Native apps: ``client=native``, an allow-listed ``redirect_uri``,
    their S256 ``code_challenge`` and an optional ``state`` echoed back with the handoff code."""
    resources = _resources(request)
    oidc = _oidc(resources)
    native: dict[str, str] | None = None
    if client == "native":
        try:
            native = native_login(resources, redirect_uri, code_challenge, code_challenge_method)
        except LoginError as exc:
            return error_response(400, "invalid_request", exc.message)
        if state:
            native["app_state"] = state
    elif client not in (None, "", "browser"):
        return error_response(400, "invalid_request", "client must be 'browser' or 'native'")
    state = secrets.token_urlsafe(32)  # ours, for the IdP; the app's own state travels in `native`
    nonce = secrets.token_urlsafe(32)
    verifier = secrets.token_urlsafe(48)
    binding = secrets.token_urlsafe(32)
    settings = resources.settings
    url = await oidc.authorization_url(
        redirect_uri=settings.redirect_uri,
        state=state,
        nonce=nonce,
        code_challenge=s256_challenge(verifier),
    )
    await resources.store.put_once(
        "login",
        state,
        {
            "verifier": verifier,
            "nonce": nonce,
            "return_to": safe_return_to(return_to),
            "binding": _digest(binding),
            "created_at": time.time(),
            "native": native,
        },
        ttl=settings.login_timeout_seconds,
    )
    response = RedirectResponse(url, status_code=302, headers=NO_STORE)
    response.headers.append("set-cookie", resources.login_cookie.set(binding))
    return response


@router.get("/callback", summary="The identity provider's redirect back; creates the session")
async def callback(
    request: Request,
    code: Annotated[str | None, Query(max_length=4096)] = None,
    state: Annotated[str | None, Query(max_length=512)] = None,
    error: Annotated[str | None, Query(max_length=256)] = None,
    iss: Annotated[str | None, Query(max_length=2048)] = None,
) -> Response:
    resources = _resources(request)
    oidc = _oidc(resources)
    login_cookie = resources.login_cookie
    pending = await resources.store.take_once("login", state) if state else None
    if pending is None:
        return _login_failed(resources, "Unknown, expired or already used sign-in state; start again")
    binding = request.cookies.get(login_cookie.name, "")
    if not binding or not hmac.compare_digest(_digest(binding), str(pending.get("binding"))):
        return _login_failed(resources, "This sign-in was started in another browser; start again")
    if iss is not None and iss.rstrip("/") != oidc.issuer:
        # RFC 9207: an authorization response from another issuer (mix-up attack)
        return _login_failed(resources, "The authorization response came from another issuer")
    if error:
        safe = "".join(ch for ch in error if ch.isalnum() or ch in "_-")[:64]
        return _login_failed(resources, f"The identity provider refused the sign-in ({safe})")
    if not code:
        return _login_failed(resources, "The identity provider sent no authorization code")
    settings = resources.settings
    try:
        tokens = await oidc.exchange_code(
            code=code, code_verifier=str(pending["verifier"]), redirect_uri=settings.redirect_uri
        )
        if not tokens.id_token:
            raise LoginError("The identity provider sent no ID token")
        claims = await oidc.validate_id_token(tokens.id_token, nonce=str(pending["nonce"]))
        profile = await oidc.userinfo(tokens.access_token, sub=str(claims["sub"]))
    except InvalidGrant:
        return _login_failed(resources, "The authorization code was refused (expired or already used)")
    except LoginError as exc:
        return _login_failed(resources, exc.message)
    now = time.time()
    session = Session(
        id=Session.new_id(),  # always a fresh id: no session fixation
        sub=str(claims["sub"]),
        sid=str(claims["sid"]) if claims.get("sid") else None,
        claims={
            k: v for k in ("name", "email", "preferred_username") if (v := profile.get(k, claims.get(k))) is not None
        },
        tokens=tokens,
        created_at=now,
        last_seen=now,
    )
    native = pending.get("native")
    if native:
        session.kind = "native"
        resources.metrics.logins.labels("success").inc()
        return await handoff(resources, session, native, native.get("app_state"))
    await resources.store.create(session)
    _note_session(request, resources, session)
    resources.metrics.logins.labels("success").inc()
    log.info("signed in", extra={"sub": session.sub, "session": resources.crypto.fingerprint(session.id)})
    response = RedirectResponse(str(pending.get("return_to") or "/"), status_code=302, headers=NO_STORE)
    response.headers.append("set-cookie", resources.session_cookie.set(resources.crypto.sign(session.id)))
    response.headers.append("set-cookie", login_cookie.clear())
    return response


def _login_failed(resources: Resources, message: str) -> Response:
    resources.metrics.logins.labels("failure").inc()
    log.info("sign-in refused: %s", message)
    response = error_response(400, "login_failed", message)
    response.headers.append("set-cookie", resources.login_cookie.clear())
    return response


@router.post("/logout", summary="End the session, revoke its refresh token, clear the cookie")
async def logout(request: Request) -> Response:
    resources = _resources(request)
    session_id, from_cookie = resources.session_credentials(request.headers.get("authorization"), request.cookies)
    end_session_url: str | None = None
    session = await resources.store.get(session_id) if session_id else None
    if session is not None and session_id is not None:
        _note_session(request, resources, session)
        await resources.store.delete(session_id)
        oidc = resources.oidc
        if oidc is not None:
            if session.tokens.refresh_token:
                await oidc.revoke(session.tokens.refresh_token, hint="refresh_token")
            end_session_url = await oidc.end_session_url(
                post_logout_redirect_uri=resources.settings.oidc_post_logout_redirect_uri
            )
        log.info("signed out", extra={"sub": session.sub})
    response = JSONResponse({"loggedOut": session is not None, "endSessionUrl": end_session_url}, headers=NO_STORE)
    if from_cookie:
        response.headers.append("set-cookie", resources.session_cookie.clear())
    return response


def _expires_at(resources: Resources, session: Session) -> str:
    settings = resources.settings
    expiry = min(
        session.last_seen + settings.session_idle_timeout_seconds,
        session.created_at + settings.session_absolute_timeout_seconds,
    )
    return iso_utc(expiry)


@router.get("/session", summary="Who is signed in (never a token)")
async def session_info(request: Request) -> Response:
    resources = _resources(request)
    session_id, _ = _credentials(request, resources)
    session = await resources.store.get(session_id) if session_id else None
    body: dict[str, Any] = {"authenticated": False, "user": None, "expiresAt": None}
    if session is not None:
        body = {
            "authenticated": True,
            "user": session.user,
            "expiresAt": _expires_at(resources, session),
        }
    return JSONResponse(body, headers=NO_STORE)


@router.post("/backchannel-logout", summary="OIDC Back-Channel Logout 1.0")
async def backchannel_logout(request: Request, logout_token: Annotated[str, Form(max_length=16384)]) -> Response:
    resources = _resources(request)
    oidc = _oidc(resources)
    try:
        claims = await oidc.verify_logout_token(logout_token)
    except LoginError as exc:
        return error_response(400, "invalid_request", exc.message)
    store = resources.store
    sid, sub = claims.get("sid"), claims.get("sub")
    ended = await store.delete_where(sid=str(sid)) if sid else await store.delete_where(sub=str(sub))
    log.info("back-channel logout ended %d session(s)", ended)
    return Response(status_code=200, headers=NO_STORE)


def install_error_handlers(app: Any) -> None:
    """IdP and store outages on /auth/* are 503 JSON answers, never 500s."""

    async def provider_down(request: Request, exc: Exception) -> Response:
        return error_response(503, "provider_unavailable", str(exc))

    async def store_down(request: Request, exc: Exception) -> Response:
        return error_response(503, "store_unavailable", str(exc))

    async def invalid_request(request: Request, exc: Exception) -> Response:
        # FastAPI answers 422 with its own shape; ours is a 400 with a clear message.
        errors: Sequence[Any] = exc.errors() if isinstance(exc, RequestValidationError) else []
        where = ", ".join(".".join(str(p) for p in e.get("loc", ())[1:]) for e in errors) or "request"
        return error_response(400, "invalid_request", f"invalid or missing parameter: {where}")

    app.add_exception_handler(AuthProviderUnavailable, provider_down)
    app.add_exception_handler(StoreUnavailable, store_down)
    app.add_exception_handler(RequestValidationError, invalid_request)
