"""A strict resource server in front of a demo upstream, for tests of tokens per upstream.

The demo upstreams (`bff.demo.upstreams`) accept any active token of the IdP. `ResourceGuard` is what a
real API in front of them would also check: the token's audience (RFC 8707) and, for sender-constrained
tokens, a DPoP proof (RFC 9449), by RFC 7662 introspection at the IdP. What it refused, and why, is
counted in `ResourceGuard.stats`, so a test can tell a wrong-audience token from a missing proof.
"""

from __future__ import annotations

import base64
import hashlib
import json
import secrets
import time
import warnings
from collections.abc import Awaitable, Callable, MutableMapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import httpx
from joserfc import jws
from joserfc.errors import JoseError, SecurityWarning
from joserfc.jwk import JWKRegistry

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

#: signature algorithms accepted in DPoP proofs (asymmetric only, as RFC 9449 requires)
DPOP_ALGORITHMS = ("ES256", "ES384", "RS256", "PS256", "Ed25519", "EdDSA")
#: how far a proof's ``iat`` may be from now, and how long its ``jti`` is remembered
PROOF_WINDOW_SECONDS = 60
_PRIVATE_JWK_MEMBERS = frozenset({"d", "p", "q", "dp", "dq", "qi", "oth", "k"})


def b64url(data: bytes) -> str:
    """Base64url without padding (JOSE's encoding)."""
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def access_token_hash(token: str) -> str:
    """The ``ath`` claim a DPoP proof carries for ``token``: base64url(SHA-256(token))."""
    return b64url(hashlib.sha256(token.encode()).digest())


def normalized_url(url: str) -> str:
    """``scheme://host[:port]/path`` with no query or fragment, scheme and host lower-cased and a
    default port dropped: what RFC 9449 compares ``htu`` by (section 4.3, RFC 3986 normalization)."""
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    host = (parts.hostname or "").lower()
    if ":" in host:
        host = f"[{host}]"
    port = parts.port
    if port is not None and (scheme, port) not in (("http", 80), ("https", 443)):
        host = f"{host}:{port}"
    return f"{scheme}://{host}{parts.path or '/'}"


@dataclass
class GuardStats:
    """What the guard decided. ``accepted`` requests reached the wrapped app; each other counter is
    one reason for a 401 (a request counts once, under its first failed check)."""

    accepted: int = 0
    no_token: int = 0  # no Authorization header with a Bearer or DPoP token
    inactive: int = 0  # introspection: not active (unknown, expired, revoked)
    wrong_audience: int = 0  # active, but `aud` does not name this resource
    missing_proof: int = 0  # DPoP-bound token with no DPoP proof, or sent with the Bearer scheme
    bad_proof: int = 0  # a DPoP proof that fails a check (signature, htm, htu, iat, jti replay, ath, jkt)
    unbound: int = 0  # a token with no cnf.jkt where one is needed (require_dpop, or the DPoP scheme)
    insufficient_scope: int = 0  # a 403: the token lacks the guard's ``scope``
    nonce_challenges: int = 0  # 401 use_dpop_nonce answers (use_nonce=True)


class _Refused(Exception):
    """A 401 (or 403): the counter to bump, the OAuth error, and the challenge scheme."""

    def __init__(self, counter: str, error: str, description: str, scheme: str, status: int = 401) -> None:
        super().__init__(description)
        self.counter, self.error, self.description, self.scheme = counter, error, description, scheme
        self.status = status


class ResourceGuard:
    """ASGI middleware: only requests with a token for ``audience`` (and, for a DPoP-bound token, a
    valid proof of possession) reach ``app``, with ``Authorization: Bearer <token>`` so that the demo
    app's own validation accepts them. Everything is introspected at ``issuer`` with the resource
    server's client credentials; an active answer is cached per token until its ``exp``.

    ``scope`` (optional) must be among the token's scopes, else 403 ``insufficient_scope``.
    ``require_dpop`` refuses tokens that are not DPoP-bound. ``use_nonce`` makes the guard require
    its current nonce in every DPoP proof (RFC 9449 section 9): a proof without it is answered 401
    ``WWW-Authenticate: DPoP error="use_dpop_nonce"`` with the nonce in ``DPoP-Nonce``. Call
    `aclose` when done (it closes the introspection client)."""

    def __init__(
        self,
        app: ASGIApp,
        *,
        issuer: str,
        audience: str,
        client_id: str = "resource-server",
        client_secret: str = "resource-secret",
        scope: str | None = None,
        require_dpop: bool = False,
        use_nonce: bool = False,
    ) -> None:
        self.app = app
        self.issuer = issuer.rstrip("/")
        self.audience = audience
        self.client_id = client_id
        self.client_secret = client_secret
        self.scope = scope
        self.require_dpop = require_dpop
        self.use_nonce = use_nonce
        self.nonce = secrets.token_urlsafe(16)
        self.stats = GuardStats()
        self.http = httpx.AsyncClient(timeout=5)
        self._endpoint: str | None = None
        self._introspected: dict[str, dict[str, Any]] = {}
        self._seen_jti: dict[str, float] = {}

    def rotate_nonce(self) -> str:
        """A new current nonce (the old one is refused from now on), as a server does from time to time."""
        self.nonce = secrets.token_urlsafe(16)
        return self.nonce

    async def aclose(self) -> None:
        await self.http.aclose()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)  # lifespan (and anything else) is the app's business
            return
        headers = [(k.lower(), v) for k, v in scope["headers"]]
        try:
            token = await self._check(scope, headers)
        except _Refused as refused:
            setattr(self.stats, refused.counter, getattr(self.stats, refused.counter) + 1)
            await self._refuse(send, refused)
            return
        except httpx.HTTPError:
            await self._answer(send, 503, {"error": "temporarily_unavailable"}, [])
            return
        self.stats.accepted += 1
        kept = [(k, v) for k, v in headers if k not in (b"authorization", b"dpop")]
        await self.app({**scope, "headers": [*kept, (b"authorization", f"Bearer {token}".encode())]}, receive, send)

    async def _check(self, scope: Scope, headers: list[tuple[bytes, bytes]]) -> str:
        """The access token, once every check passed (else `_Refused`)."""
        challenge = "DPoP" if self.require_dpop else "Bearer"
        authorization = [v.decode("latin-1") for k, v in headers if k == b"authorization"]
        scheme, _, token = (authorization[0] if len(authorization) == 1 else "").partition(" ")
        scheme, token = scheme.lower(), token.strip()
        if scheme not in ("bearer", "dpop") or not token:
            raise _Refused("no_token", "invalid_request", "no access token", challenge)
        info = await self._introspect(token)
        if info is None:
            raise _Refused("inactive", "invalid_token", "the access token is not active", challenge)
        audiences = info.get("aud")
        audiences = [audiences] if isinstance(audiences, str) else list(audiences or [])
        if self.audience not in audiences:
            raise _Refused("wrong_audience", "invalid_token", f"the access token is not for {self.audience}", challenge)
        jkt = (info.get("cnf") or {}).get("jkt")
        if jkt is None:
            if self.require_dpop or scheme == "dpop":
                raise _Refused("unbound", "invalid_token", "the access token is not DPoP-bound", "DPoP")
        elif scheme != "dpop":
            raise _Refused("missing_proof", "invalid_token", "a DPoP-bound token needs the DPoP scheme", "DPoP")
        else:
            proofs = [v.decode("latin-1") for k, v in headers if k == b"dpop"]
            if not proofs:
                raise _Refused("missing_proof", "invalid_token", "no DPoP proof", "DPoP")
            if len(proofs) > 1:
                raise _Refused("bad_proof", "invalid_dpop_proof", "more than one DPoP proof", "DPoP")
            self._check_proof(proofs[0], scope, headers, token, jkt)
        if self.scope is not None and self.scope not in str(info.get("scope") or "").split():
            scheme_name = "DPoP" if jkt or self.require_dpop else "Bearer"
            raise _Refused(
                "insufficient_scope", "insufficient_scope", f"the token lacks {self.scope}", scheme_name, 403
            )
        return token

    def _check_proof(self, proof: str, scope: Scope, headers: list[tuple[bytes, bytes]], token: str, jkt: str) -> None:
        """RFC 9449 section 4.3 (and 7.1: ``ath``, key bound to the token), then the nonce."""

        def bad(description: str) -> _Refused:
            return _Refused("bad_proof", "invalid_dpop_proof", description, "DPoP")

        try:
            header = jws.extract_compact(proof.encode()).headers()
            alg, jwk = header.get("alg"), header.get("jwk")
            if header.get("typ") != "dpop+jwt" or alg not in DPOP_ALGORITHMS or not isinstance(jwk, dict):
                raise bad("the proof needs typ dpop+jwt, an asymmetric alg and a jwk")
            if _PRIVATE_JWK_MEMBERS & jwk.keys():
                raise bad("the proof's jwk must be a public key")
            key = JWKRegistry.import_key(jwk)
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", SecurityWarning)  # EdDSA is deprecated in favour of Ed25519
                claims = json.loads(jws.deserialize_compact(proof, key, algorithms=[alg]).payload)
            thumbprint = key.thumbprint()
        except (JoseError, ValueError, TypeError) as exc:
            raise bad(f"the proof is not a valid JWS: {exc}") from exc
        if not isinstance(claims, dict):
            raise bad("the proof's payload is not a JSON object")
        if claims.get("htm") != scope["method"]:
            raise bad("htm does not match the request method")
        if not isinstance(claims.get("htu"), str) or normalized_url(claims["htu"]) != self._request_url(scope, headers):
            raise bad("htu does not match the request URL")
        iat, now = claims.get("iat"), time.time()
        if not isinstance(iat, int | float) or isinstance(iat, bool) or abs(now - iat) > PROOF_WINDOW_SECONDS:
            raise bad("iat is not within the accepted window")
        jti = claims.get("jti")
        if not isinstance(jti, str) or not jti:
            raise bad("the proof has no jti")
        if claims.get("ath") != access_token_hash(token):
            raise bad("ath does not match the access token")
        if thumbprint != jkt:
            raise bad("the proof's key is not the key the token is bound to")
        self._seen_jti = {j: t for j, t in self._seen_jti.items() if t > now}
        if jti in self._seen_jti:
            raise bad("the proof was used before (jti replay)")
        if self.use_nonce and claims.get("nonce") != self.nonce:
            raise _Refused("nonce_challenges", "use_dpop_nonce", "the resource server requires its DPoP nonce", "DPoP")
        self._seen_jti[jti] = now + 2 * PROOF_WINDOW_SECONDS

    @staticmethod
    def _request_url(scope: Scope, headers: list[tuple[bytes, bytes]]) -> str:
        """The request's URL as the client addressed it: its Host header (else the server address)."""
        host = next((v.decode("latin-1") for k, v in headers if k == b"host"), None)
        if host is None:
            server_host, server_port = scope.get("server") or ("localhost", None)
            host = f"{server_host}:{server_port}" if server_port else str(server_host)
        path = scope.get("root_path", "") + scope["path"]
        return normalized_url(f"{scope.get('scheme', 'http')}://{host}{path}")

    async def _introspect(self, token: str) -> dict[str, Any] | None:
        """The IdP's answer for an active, unexpired token (cached until ``exp``), else None."""
        key = hashlib.sha256(token.encode()).hexdigest()
        known = self._introspected.get(key)
        if known is None:
            if self._endpoint is None:
                meta = (await self.http.get(f"{self.issuer}/.well-known/openid-configuration")).json()
                self._endpoint = str(meta["introspection_endpoint"])
            response = await self.http.post(
                self._endpoint,
                data={"token": token, "token_type_hint": "access_token"},
                auth=(self.client_id, self.client_secret),
            )
            response.raise_for_status()
            known = response.json()
            if not known.get("active"):
                return None
            self._introspected[key] = known
        if float(known.get("exp", 0)) <= time.time():
            self._introspected.pop(key, None)
            return None
        return known

    async def _refuse(self, send: Send, refused: _Refused) -> None:
        description = refused.description.replace('"', "'").replace("\\", "/")
        challenge = f'{refused.scheme} error="{refused.error}", error_description="{description}"'
        extra: list[tuple[bytes, bytes]] = []
        if refused.scheme == "DPoP":
            challenge += f', algs="{" ".join(DPOP_ALGORITHMS)}"'
        if refused.error == "use_dpop_nonce":
            extra.append((b"dpop-nonce", self.nonce.encode()))
        extra.append((b"www-authenticate", challenge.encode()))
        body = {"error": refused.error, "error_description": refused.description}
        await self._answer(send, refused.status, body, extra)

    @staticmethod
    async def _answer(send: Send, status: int, body: dict[str, Any], headers: list[tuple[bytes, bytes]]) -> None:
        payload = json.dumps(body).encode()
        await send(
            {
                "type": "http.response.start",
                "status": status,
                "headers": [
                    (b"content-type", b"application/json"),
                    (b"content-length", str(len(payload)).encode()),
                    (b"cache-control", b"no-store"),
                    *headers,
                ],
            }
        )
        await send({"type": "http.response.body", "body": payload})
