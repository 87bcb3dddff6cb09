"""Native and mobile apps: the browser's server-side session behind an opaque session handle.

The app opens ``/auth/login?client=native&redirect_uri=<allow-listed app URI>&code_challenge=<S256>``
in a system browser; after the IdP's callback the BFF redirects to the app URI with a one-time
handoff code (60 s at most, bound to the app's challenge); ``POST /auth/native/token`` with the code
and the app's verifier creates the session and answers its handle. The app then sends
``Authorization: Session <handle>``. No OAuth token ever reaches the app.
"""

from __future__ import annotations

import re
import secrets
from urllib.parse import urlencode

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, RedirectResponse, Response

from bff.auth.oidc import s256_challenge
from bff.errors import LoginError
from bff.resources import Resources
from bff.sessions.models import Session
from bff.web.responses import NO_STORE, iso_utc
from bff.web.sessions_api import NATIVE_CLIENT

router = APIRouter(prefix="/auth/native", tags=["auth"])

HANDOFF_SECONDS = 60
_S256 = re.compile(r"^[A-Za-z0-9_-]{43}$")
_VERIFIER = re.compile(r"^[A-Za-z0-9._~-]{43,128}$")


def native_login(
    resources: Resources, redirect_uri: str | None, code_challenge: str | None, method: str | None
) -> dict[str, str]:
    """What a native login keeps in its pending state; `LoginError` (400) when anything is off."""
    if not redirect_uri or redirect_uri not in resources.login.native_redirect_uris:
        raise LoginError("redirect_uri is not an allowed app redirect URI (BFF_NATIVE_REDIRECT_URIS)")
    if (method or "S256") != "S256" or not code_challenge or not _S256.match(code_challenge):
        raise LoginError("code_challenge must be an S256 challenge (43 base64url characters)")
    return {"redirect_uri": redirect_uri, "challenge": code_challenge}


async def handoff(resources: Resources, session: Session, native: dict[str, str]) -> Response:
    """Park the new session behind a one-time code and send the app its code (and its own state)."""
    session.client = NATIVE_CLIENT  # the system browser's User-Agent is not the app's
    code = secrets.token_urlsafe(32)
    await resources.store.put_once(
        "handoff",
        code,
        {
            "session": session.to_json().decode(),
            "extras": (session.extras_json() or b"").decode(),
            "challenge": native["challenge"],
        },
        ttl=min(HANDOFF_SECONDS, resources.login.native_handoff_seconds),
    )
    app_state = native.get("app_state")
    params = {"code": code, **({"state": app_state} if app_state else {})}
    target = str(native["redirect_uri"])
    separator = "&" if "?" in target else "?"
    return RedirectResponse(f"{target}{separator}{urlencode(params)}", status_code=302, headers=NO_STORE)


def _error(message: str, status: int = 400) -> JSONResponse:
    return JSONResponse({"error": "invalid_grant", "message": message}, status_code=status, headers=NO_STORE)


@router.post("/token", summary="Exchange a one-time handoff code and its verifier for a session handle")
async def native_token(request: Request) -> Response:
    resources: Resources = request.state.resources
    try:
        if request.headers.get("content-type", "").startswith("application/json"):
            body = await request.json()
        else:
            body = dict(await request.form())
    except ValueError:
        return _error("send JSON {code, code_verifier}", 400)
    if not isinstance(body, dict):
        return _error("send JSON {code, code_verifier}", 400)
    code, verifier = body.get("code"), body.get("code_verifier")
    if not isinstance(code, str) or not isinstance(verifier, str) or len(code) > 128:
        return _error("code and code_verifier are required")
    parked = await resources.store.take_once("handoff", code)  # single use, whatever follows
    if parked is None:
        return _error("unknown, expired or already used handoff code")
    if not _VERIFIER.match(verifier) or not secrets.compare_digest(s256_challenge(verifier), str(parked["challenge"])):
        return _error("code_verifier does not match the code_challenge")
    now = resources.store.now()
    session = Session.from_json(
        str(parked["session"]).encode(), version=1, extras=str(parked.get("extras") or "").encode() or None
    )
    session.created_at = session.last_seen = now
    await resources.store.create(session)
    expires_at = min(resources.store.expires_at(session))
    return JSONResponse(
        {"session": resources.crypto.sign(session.id, "native"), "expiresAt": iso_utc(expires_at)},
        headers=NO_STORE,
    )
