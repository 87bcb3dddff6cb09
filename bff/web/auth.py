"""``/auth/*``: login (code + PKCE), callback, logout, session info and back-channel logout."""

from __future__ import annotations

import hashlib
import html
import logging
import secrets
import time
from collections.abc import Sequence
from typing import Annotated, Any
from urllib.parse import urlencode

from fastapi import APIRouter, Form, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, JSONResponse, RedirectResponse, Response

from bff.auth.dpop import DPoPKey
from bff.auth.oidc import OIDCClient, s256_challenge
from bff.auth.step_up import SignInOptions, kept_claims, safe_return_to, unmet
from bff.errors import AuthProviderUnavailable, ClientRejected, InvalidGrant, LoginError, StoreUnavailable
from bff.resources import Credentials, Resources
from bff.sessions.models import Session
from bff.web.native import handoff, native_login
from bff.web.responses import NO_STORE, error_response, iso_utc
from bff.web.sessions_api import client_label
from bff.web.transactions import LoginTransactions, Transaction

log = logging.getLogger("bff.auth")

router = APIRouter(prefix="/auth", tags=["auth"])


def _resources(request: Request) -> Resources:
    resources: Resources = request.state.resources
    return resources


def _oidc(resources: Resources) -> OIDCClient:
    if resources.oidc is None:
        raise AuthProviderUnavailable("Sign-in is not configured (BFF_OIDC_ISSUER, BFF_OIDC_CLIENT_ID)")
    return resources.oidc


def _credentials(request: Request, resources: Resources) -> Credentials:
    return resources.session_credentials(request.headers.get("authorization"), request.cookies)


def _note_session(request: Request, resources: Resources, session: Session) -> None:
    """For the access log: the subject and a hash of the session id, never the id."""
    request.state.user_sub = session.sub
    request.state.session_hash = resources.crypto.fingerprint(session.id)


def _digest(value: str) -> str:
    return hashlib.sha256(value.encode()).hexdigest()


def _transactions(resources: Resources) -> LoginTransactions:
    return LoginTransactions(resources.crypto, resources.login_cookie, timeout=resources.login.timeout_seconds)


@router.get("/login", summary="Start the OIDC sign-in (302 to the identity provider)")
async def login(
    request: Request,
    return_to: str | None = None,  # anything unusable (too long included) falls back to "/"
    client: Annotated[str | None, Query(max_length=16)] = None,
    redirect_uri: Annotated[str | None, Query(max_length=2048)] = None,
    code_challenge: Annotated[str | None, Query(max_length=128)] = None,
    code_challenge_method: Annotated[str | None, Query(max_length=16)] = None,
    state: Annotated[str | None, Query(max_length=512)] = None,
    prompt: Annotated[str | None, Query(max_length=128)] = None,
    acr_values: Annotated[str | None, Query(max_length=2048)] = None,
    max_age: Annotated[str | None, Query(max_length=64)] = None,
    login_hint: Annotated[str | None, Query(max_length=2048)] = None,
) -> Response:
    """Browsers: ``return_to``. Native apps: ``client=native``, an allow-listed ``redirect_uri``,
    their S256 ``code_challenge`` and an optional ``state`` echoed back with the handoff code.
    Both: ``prompt``, ``acr_values``, ``max_age`` and ``login_hint`` are passed on to the IdP
    (validated: `bff.auth.step_up.SignInOptions`); ``acr_values`` and ``max_age`` are checked
    against the ID token at the callback (a step-up).

    Nothing is stored: the transaction travels in its own encrypted cookie (`LoginTransactions`)."""
    resources = _resources(request)
    oidc = _oidc(resources)
    try:
        options = SignInOptions.parse(prompt=prompt, acr_values=acr_values, max_age=max_age, login_hint=login_hint)
    except LoginError as exc:
        return error_response(400, "invalid_request", exc.message)
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
    transaction = Transaction(
        state=secrets.token_urlsafe(32),  # ours, for the IdP; the app's own state travels in `native`
        verifier=secrets.token_urlsafe(48),
        nonce=secrets.token_urlsafe(32),
        return_to=safe_return_to(return_to, resources.login.return_origins),
        created_at=time.time(),
        native=native,
        acr_values=options.acr_values,
        max_age=options.max_age,
    )
    try:
        cookies = _transactions(resources).begin(transaction, request.cookies)
    except LoginError as exc:
        return error_response(400, "invalid_request", exc.message)
    url = await oidc.authorization_url(
        redirect_uri=resources.login.redirect_uri,
        state=transaction.state,
        nonce=transaction.nonce,
        code_challenge=s256_challenge(transaction.verifier),
        prompt=options.prompt,
        acr_values=options.acr_values,
        max_age=options.max_age,
        login_hint=options.login_hint,
    )
    response = RedirectResponse(url, status_code=302, headers=NO_STORE)
    for cookie in cookies:
        response.headers.append("set-cookie", cookie)
    return response


@router.get("/callback", summary="The identity provider's redirect back; creates the session")
async def callback(
    request: Request,
    code: Annotated[str | None, Query(max_length=4096)] = None,
    state: Annotated[str | None, Query(max_length=512)] = None,
    error: Annotated[str | None, Query(max_length=256)] = None,
    iss: Annotated[str | None, Query(max_length=2048)] = None,
) -> Response:
    """The binding (this browser holds the transaction's cookie) is checked first; a state this
    browser did not start is refused without touching anything. Only then is the state consumed
    (once, across replicas), and from there on every outcome clears that transaction's cookie."""
    resources = _resources(request)
    oidc = _oidc(resources)
    transactions = _transactions(resources)
    transaction = transactions.find(state, request.cookies) if state else None
    if transaction is None or state is None:
        return _login_failed(
            request,
            resources,
            "This sign-in was not started in this browser, or it has expired or already completed",
        )
    if transactions.expired(transaction):
        return _login_failed(request, resources, "This sign-in took too long and has expired", transaction)
    fresh = await resources.store.remember_once("login-state", _digest(state), ttl=transactions.remaining(transaction))
    if not fresh:
        return _login_failed(request, resources, "This sign-in has already been completed", transaction)
    if iss is not None and iss.rstrip("/") != oidc.issuer:
        # RFC 9207: an authorization response from another issuer (mix-up attack)
        return _login_failed(request, resources, "The authorization response came from another issuer", transaction)
    if error:
        safe = "".join(ch for ch in error if ch.isalnum() or ch in "_-")[:64]
        return _login_failed(request, resources, f"The identity provider refused the sign-in ({safe})", transaction)
    if not code:
        return _login_failed(request, resources, "The identity provider sent no authorization code", transaction)
    login = resources.login
    # DPoP: the session's own key pair, made before the code is exchanged so the tokens are bound to it
    dpop = DPoPKey.generate() if login.dpop else None
    try:
        tokens = await oidc.exchange_code(
            code=code, code_verifier=transaction.verifier, redirect_uri=login.redirect_uri, dpop=dpop
        )
        if not tokens.id_token:
            raise LoginError("The identity provider sent no ID token")
        claims = await oidc.validate_id_token(tokens.id_token, nonce=transaction.nonce)
        # a step-up: the IdP may answer a weaker sign-in than asked (acr_values are voluntary in OIDC);
        # refused before anything changes, so the session the browser already has goes on as it was
        weaker = unmet(
            claims, acr_values=transaction.acr_values, max_age=transaction.max_age, requested_at=transaction.created_at
        )
        if weaker is not None:
            raise LoginError(weaker)
        bound = dpop if tokens.token_type.lower() == "dpop" else None
        profile = await oidc.userinfo(tokens.access_token, sub=str(claims["sub"]), dpop=bound)
    except InvalidGrant:
        message = "The authorization code was refused (expired or already used)"
        return _login_failed(request, resources, message, transaction)
    except ClientRejected:
        # a configuration error, not an outage: say what to fix (the log names the settings)
        message = "The identity provider refused this server's client credentials; an administrator must fix them"
        return _login_failed(request, resources, message, transaction)
    except LoginError as exc:
        return _login_failed(request, resources, exc.message, transaction)
    now = resources.store.now()  # created and last seen by the store's clock, as its expiry is judged
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
        dpop_key=dpop.to_jwk() if dpop is not None else None,
        client=client_label(request.headers.get("user-agent")),  # for GET /auth/sessions; never the raw UA
    )
    session.claims.update(kept_claims(claims))  # acr, amr, auth_time: `bff.User.acr` and kin
    resources.metrics.logins.labels("success").inc()
    if transaction.native:
        session.kind = "native"
        response = await handoff(resources, session, transaction.native)
    else:
        await resources.store.create(session)
        await _end_replaced(request, resources, session)
        _note_session(request, resources, session)
        log.info("signed in", extra={"sub": session.sub, "session": resources.crypto.fingerprint(session.id)})
        response = RedirectResponse(transaction.return_to or "/", status_code=302, headers=NO_STORE)
        response.headers.append("set-cookie", resources.session_cookie.set(resources.crypto.sign(session.id)))
    response.headers.append("set-cookie", transactions.clear(transaction.state))
    return response


async def _end_replaced(request: Request, resources: Resources, session: Session) -> None:
    """A sign-in in a browser that already holds a session of the same subject (a step-up, a
    re-authentication) continues it: the new session (new id, against fixation) replaces the old
    one, whose record ends here, and the new cookie, set under the same name, replaces the old
    cookie, so the browser never holds two. Another subject's session is left to expire, as before.

    The old refresh token is not revoked: the new sign-in may share the IdP's grant with it
    (oidc-provider revokes the whole grant with any of its refresh tokens), which would end the
    new session's tokens too."""
    credentials = resources.session_credentials(None, request.cookies)
    old_id = credentials.session_id
    if not old_id or not credentials.from_cookie or old_id == session.id:
        return
    try:
        old = await resources.store.get(old_id, touch=False)
        if old is None or old.sub != session.sub or old.kind != "browser":
            return
        await resources.store.delete(old_id, session=old)
    except StoreUnavailable:
        # the new session is stored and its cookie replaces the old one: only a copy of the old
        # cookie could still use the old record, until its idle timeout
        log.warning("signed in again, but the replaced session could not be ended (store unavailable)")
        return
    log.info(
        "replaced the session of the same subject",
        extra={"sub": session.sub, "session": resources.crypto.fingerprint(old_id)},
    )


_REFUSED_PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width">
<title>Sign-in failed</title></head>
<body style="font-family: system-ui, sans-serif; max-width: 36rem; margin: 4rem auto; padding: 0 1rem">
<h1>Sign-in failed</h1>
<p>{message}.</p>
<p>{action}</p>
</body></html>
"""
_PAGE_HEADERS = {
    **NO_STORE,
    "Content-Security-Policy": "default-src 'none'; style-src 'unsafe-inline'; frame-ancestors 'none'",
    "Referrer-Policy": "no-referrer",
}


def _wants_html(request: Request) -> bool:
    accept = request.headers.get("accept", "").lower()
    return "text/html" in accept or "application/xhtml+xml" in accept


def _login_failed(
    request: Request, resources: Resources, message: str, transaction: Transaction | None = None
) -> Response:
    """400; clears the cookie of ``transaction`` when it belongs to this browser, and nothing else.
    Browsers get a small page that says what happened and links to sign in again; API clients JSON."""
    resources.metrics.logins.labels("failure").inc()
    log.info("sign-in refused: %s", message)
    response: Response
    if _wants_html(request):
        if transaction is not None and transaction.native:
            action = "Go back to the app and sign in again."
        else:
            return_to = transaction.return_to if transaction is not None else "/"
            asked = {"return_to": return_to}
            if transaction is not None and transaction.acr_values:  # a step-up: try the same again
                asked["acr_values"] = transaction.acr_values
            if transaction is not None and transaction.max_age is not None:
                asked["max_age"] = str(transaction.max_age)
            again = "/auth/login?" + urlencode(asked)
            action = f'<a href="{html.escape(again)}">Sign in again</a>'
        page = _REFUSED_PAGE.format(message=html.escape(message.rstrip(".")), action=action)
        response = HTMLResponse(page, status_code=400, headers=_PAGE_HEADERS)
    else:
        response = error_response(400, "login_failed", message)
    if transaction is not None:
        response.headers.append("set-cookie", _transactions(resources).clear(transaction.state))
    return response


@router.post("/logout", summary="End the session, revoke its refresh token, clear the cookie")
async def logout(request: Request) -> Response:
    resources = _resources(request)
    credentials = _credentials(request, resources)
    session_id, from_cookie = credentials.session_id, credentials.from_cookie
    end_session_url: str | None = None
    session = await resources.store.get(session_id) if session_id else None
    if session is not None and session_id is not None:
        _note_session(request, resources, session)
        await resources.store.delete(session_id, session=session)
        oidc = resources.oidc
        if oidc is not None:
            if session.tokens.refresh_token:
                await oidc.revoke(session.tokens.refresh_token, hint="refresh_token")
            end_session_url = await oidc.end_session_url(
                post_logout_redirect_uri=resources.login.post_logout_redirect_uri
            )
        log.info("signed out", extra={"sub": session.sub})
    response = JSONResponse({"loggedOut": session is not None, "endSessionUrl": end_session_url}, headers=NO_STORE)
    if from_cookie:
        response.headers.append("set-cookie", resources.session_cookie.clear())
    return response


@router.get("/session", summary="Who is signed in (never a token)")
async def session_info(
    request: Request,
    slide: bool | None = None,  # accepted for Duende-style clients; never slides
) -> Response:
    """``expiresAt`` is the earlier of ``idleExpiresAt`` (the idle timeout counted from the last use)
    and ``absoluteExpiresAt`` (the session's hard end), so a page can warn before sign-out.

    A look, not a use, whatever ``slide`` says (Duende's ``slide=false`` is always in force): a
    page that polls this must not keep an idle session alive."""
    resources = _resources(request)
    credentials = _credentials(request, resources)
    session_id, from_cookie = credentials.session_id, credentials.from_cookie
    session = await resources.store.get(session_id, touch=False) if session_id else None
    body: dict[str, Any] = {
        "authenticated": False,
        "user": None,
        "expiresAt": None,
        "idleExpiresAt": None,
        "absoluteExpiresAt": None,
    }
    if session is not None:
        idle, absolute = resources.store.expires_at(session)
        body = {
            "authenticated": True,
            "user": session.user,
            "expiresAt": iso_utc(min(idle, absolute)),
            "idleExpiresAt": iso_utc(idle),
            "absoluteExpiresAt": iso_utc(absolute),
        }
    origin = request.headers.get("origin")
    if session is None and origin and origin != resources.login.public_origin:
        # an SPA on another origin that gets no session: say why when the cookie cannot reach us
        problems = resources.login.cookie_problems(origin)
        if problems:
            body["diagnostics"] = problems
    response = JSONResponse(body, headers=NO_STORE)
    if session is None and credentials.presented and from_cookie:
        # a cookie that names no live session (garbage, forged, retired key, ended): clear it
        response.headers.append("set-cookie", resources.session_cookie.clear())
    return response


@router.post("/backchannel-logout", summary="OIDC Back-Channel Logout 1.0")
async def backchannel_logout(request: Request, logout_token: Annotated[str, Form(max_length=16384)]) -> Response:
    resources = _resources(request)
    oidc = _oidc(resources)
    try:
        token = await oidc.verify_logout_token(logout_token)
    except LoginError as exc:
        log.info("back-channel logout refused: %s", exc.message)
        return error_response(400, "invalid_request", exc.message)
    store = resources.store
    # Each token acts once, on every replica: a replay (even after new sign-ins) ends nothing. The
    # sessions end BEFORE the token is recorded as used: a store fault between the two answers 503
    # and the IdP's retry ends them again (it is idempotent), instead of being refused as a replay
    # while the user stays signed in.
    if await store.seen_once("logout-jti", token.replay_key):
        log.info("back-channel logout refused: replayed logout token")
        return error_response(400, "invalid_request", "this logout token was already used")
    ended = await store.delete_where(sid=token.sid) if token.sid else await store.delete_where(sub=token.sub)
    await store.remember_once("logout-jti", token.replay_key, ttl=token.remember_seconds)
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
