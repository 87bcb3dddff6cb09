"""A small typed facade over authlib (token endpoint, PKCE) and joserfc (ID and logout tokens).

Nothing of authlib leaks past this module. Every IdP failure is translated in ONE place
(`_provider_errors`): ``invalid_grant`` -> `InvalidGrant`; transport errors, timeouts, 5xx and
unparseable answers -> `AuthProviderUnavailable`.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import time
import warnings
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlencode

import authlib.deprecate  # installs an "always" filter of its own: ours must come after it
import httpx
from aiocache import SimpleMemoryCache
from joserfc import jws, jwt
from joserfc.errors import InvalidKeyIdError, JoseError
from joserfc.jwk import KeySet
from joserfc.jwt import JWTClaimsRegistry

from bff.auth.dpop import DPoPKey, NonceCache
from bff.errors import AuthProviderUnavailable, ClientRejected, GrantRefused, InvalidGrant, LoginError
from bff.sessions.models import TokenSet

with warnings.catch_warnings():
    # authlib prefers the httpx2 fork and warns about plain httpx, which it still supports.
    warnings.filterwarnings("ignore", message=".*httpx2", category=authlib.deprecate.AuthlibDeprecationWarning)
    from authlib.integrations.httpx_client import AsyncOAuth2Client, OAuthError
    from authlib.oauth2.client import DEFAULT_HEADERS
    from authlib.oauth2.rfc7636 import create_s256_code_challenge

log = logging.getLogger("bff.auth")

_BACKCHANNEL_EVENT = "http://schemas.openid.net/event/backchannel-logout"
#: a logout token issued longer ago than this (plus clock leeway) is refused as stale
LOGOUT_TOKEN_MAX_AGE = 300
_CLOCK_LEEWAY = 60
_JWKS_MIN_REFETCH_SECONDS = 30.0
_METADATA_TTL = 3600
_TOKEN_EXCHANGE = "urn:ietf:params:oauth:grant-type:token-exchange"
_ACCESS_TOKEN_TYPE = "urn:ietf:params:oauth:token-type:access_token"
#: a grant type nobody supports: the token endpoint refuses it at once (see `OIDCClient.probe`)
_PROBE_GRANT = "urn:bff:params:oauth:grant-type:reachability-probe"


@dataclass(frozen=True, slots=True)
class TokenTarget:
    """What one upstream's own token is asked for with (RFC 8707 ``resource``, ``scope``, Auth0's
    ``audience``), and whether it comes from token exchange (RFC 8693) rather than a refresh."""

    resource: str | None = None
    scopes: str | None = None
    audience: str | None = None
    exchange: bool = False

    def params(self) -> dict[str, str]:
        params = {"resource": self.resource, "scope": self.scopes, "audience": self.audience}
        return {name: value for name, value in params.items() if value}


@dataclass(frozen=True, slots=True)
class ProviderMetadata:
    issuer: str
    authorization_endpoint: str
    token_endpoint: str
    jwks_uri: str
    revocation_endpoint: str | None
    end_session_endpoint: str | None
    userinfo_endpoint: str | None
    id_token_algs: tuple[str, ...]
    introspection_endpoint: str | None = None


@dataclass(frozen=True, slots=True)
class LogoutToken:
    """A verified logout token: whose sessions to end, and how to refuse its replays."""

    sid: str | None
    sub: str | None
    #: a hash of the issuer and the token's ``jti``: remember it, set-if-absent, in the shared store
    replay_key: str
    #: how long the token could still be accepted; remembering the key longer is useless
    remember_seconds: float


def s256_challenge(verifier: str) -> str:
    return str(create_s256_code_challenge(verifier))


class OIDCClient:
    """A confidential OIDC client. One per app; safe for concurrent use across sessions."""

    def __init__(
        self,
        *,
        issuer: str,
        client_id: str,
        client_secret: str,
        auth_method: str = "client_secret_basic",
        scopes: str = "openid profile email offline_access",
        timeout: float = 5.0,
        resources: tuple[str, ...] = (),
        transport: httpx.AsyncBaseTransport | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.issuer = issuer
        self.clock = clock
        self.client_id = client_id
        self.scopes = scopes
        self.timeout = timeout
        #: RFC 8707 resource indicators asked for at sign-in (every upstream's that has one)
        self.resources = resources
        # authlib keeps the last token response on the instance (`.token`); we never read it, so one
        # client serves every session. Refresh coordination is ours (auth.tokens), not authlib's.
        self._http = AsyncOAuth2Client(
            client_id=client_id,
            client_secret=client_secret,
            token_endpoint_auth_method=auth_method,
            revocation_endpoint_auth_method=auth_method,
            timeout=timeout,
            transport=transport,
            limits=httpx.Limits(max_connections=50, max_keepalive_connections=10),
        )
        self._cache = SimpleMemoryCache(timeout=0)
        self._jwks_fetched_at = 0.0
        #: the IdP's newest DPoP nonce, read off every token response (authlib's hooks see them all)
        self.dpop_nonces = NonceCache()
        for hook in ("access_token_response", "refresh_token_response"):
            self._http.register_compliance_hook(hook, self._keep_nonce)

    def _keep_nonce(self, response: httpx.Response) -> httpx.Response:
        self.dpop_nonces.remember(str(response.url), response.headers.get("dpop-nonce"))
        return response

    async def _token_request(self, dpop: DPoPKey | None, url: str, call: Callable[[dict[str, str] | None], Any]) -> Any:
        """A token-endpoint call, with a DPoP proof when the session has a key; answered
        ``use_dpop_nonce``, it is sent once more with the nonce the IdP just gave (RFC 9449 section 8)."""
        if dpop is None:
            return await call(None)  # authlib's default headers

        def headers() -> dict[str, str]:
            return {**DEFAULT_HEADERS, "DPoP": dpop.proof("POST", url, nonce=self.dpop_nonces.get(url))}

        try:
            return await call(headers())
        except OAuthError as exc:
            if exc.error != "use_dpop_nonce" or self.dpop_nonces.get(url) is None:
                raise
        return await call(headers())

    async def aclose(self) -> None:
        await self._http.aclose()

    # errors: the one place -----------------------------------------------------------------------
    @contextlib.asynccontextmanager
    async def _provider_errors(self, what: str) -> AsyncIterator[None]:
        try:
            yield
        except OAuthError as exc:
            if exc.error == "invalid_grant":
                raise InvalidGrant(f"{what}: invalid_grant") from exc
            if exc.error == "invalid_client":
                log.error(
                    "identity provider refused this client's credentials at %s (invalid_client): check "
                    "BFF_OIDC_CLIENT_ID, BFF_OIDC_CLIENT_SECRET and BFF_OIDC_CLIENT_AUTH_METHOD",
                    what,
                )
                raise ClientRejected(f"identity provider refused the client credentials ({what})") from exc
            if exc.error in ("invalid_target", "invalid_scope"):
                log.warning("identity provider refused %s: %s", what, exc.error)
                raise GrantRefused(str(exc.error)) from exc
            log.warning("identity provider refused %s: %s", what, exc.error)
            raise AuthProviderUnavailable(f"identity provider refused {what}") from exc
        except httpx.TimeoutException as exc:
            raise AuthProviderUnavailable(f"identity provider timed out ({what})") from exc
        except (httpx.HTTPError, ValueError, KeyError, TypeError) as exc:
            raise AuthProviderUnavailable(f"identity provider failed ({what}): {type(exc).__name__}") from exc

    async def _get(self, url: str) -> httpx.Response:
        # withhold_token: never let authlib attach (or auto-refresh!) the last token it saw.
        response: httpx.Response = await self._http.request("GET", url, withhold_token=True)
        return response

    # discovery -----------------------------------------------------------------------------------
    async def metadata(self, *, fresh: bool = False) -> ProviderMetadata:
        """Discovery document, fetched once and cached (aiocache) for an hour; ``fresh`` refetches
        (readiness checks)."""
        cached: ProviderMetadata | None = None if fresh else await self._cache.get("metadata")
        if cached is not None:
            return cached
        async with self._provider_errors(f"discovery at {self.issuer}"):
            response = await self._get(f"{self.issuer}/.well-known/openid-configuration")
            response.raise_for_status()
            doc = response.json()
            meta = ProviderMetadata(
                issuer=doc["issuer"],
                authorization_endpoint=doc["authorization_endpoint"],
                token_endpoint=doc["token_endpoint"],
                jwks_uri=doc["jwks_uri"],
                revocation_endpoint=doc.get("revocation_endpoint"),
                end_session_endpoint=doc.get("end_session_endpoint"),
                userinfo_endpoint=doc.get("userinfo_endpoint"),
                id_token_algs=tuple(doc.get("id_token_signing_alg_values_supported") or ["RS256"]),
                introspection_endpoint=doc.get("introspection_endpoint"),
            )
        if meta.issuer.rstrip("/") != self.issuer:
            raise AuthProviderUnavailable("discovery document names another issuer")
        await self._cache.set("metadata", meta, ttl=_METADATA_TTL)
        return meta

    async def _keys(self, *, refetch: bool = False) -> KeySet:
        """JWKS, cached; refetched on an unknown ``kid`` (key rotation) at most every 30 s."""
        keys: KeySet | None = await self._cache.get("jwks")
        too_soon = time.monotonic() - self._jwks_fetched_at < _JWKS_MIN_REFETCH_SECONDS
        if keys is not None and (not refetch or too_soon):
            return keys
        meta = await self.metadata()
        async with self._provider_errors("jwks"):
            response = await self._get(meta.jwks_uri)
            response.raise_for_status()
            keys = KeySet.import_key_set(response.json())
        self._jwks_fetched_at = time.monotonic()
        await self._cache.set("jwks", keys, ttl=_METADATA_TTL)
        return keys

    async def _decode(self, token: str, algorithms: list[str]) -> jwt.Token:
        try:
            return jwt.decode(token, await self._keys(), algorithms=algorithms)
        except InvalidKeyIdError:
            return jwt.decode(token, await self._keys(refetch=True), algorithms=algorithms)

    # login ---------------------------------------------------------------------------------------
    async def authorization_url(
        self,
        *,
        redirect_uri: str,
        state: str,
        nonce: str,
        code_challenge: str,
        prompt: str | None = None,
        acr_values: str | None = None,
        max_age: int | None = None,
        login_hint: str | None = None,
    ) -> str:
        """The authorization request's URL. ``prompt``, ``acr_values``, ``max_age`` and ``login_hint``
        (validated by the caller: `bff.auth.step_up.SignInOptions`) go as given, except that
        ``consent`` joins the prompt when ``offline_access`` is asked for (unless it is ``none``,
        which stands alone)."""
        meta = await self.metadata()
        params = {
            "response_type": "code",
            "client_id": self.client_id,
            "redirect_uri": redirect_uri,
            "scope": self.scopes,
            "state": state,
            "nonce": nonce,
            "code_challenge": code_challenge,
            "code_challenge_method": "S256",
        }
        prompts = prompt.split() if prompt else []
        if "offline_access" in self.scopes.split() and "none" not in prompts and "consent" not in prompts:
            # OIDC Core 11: offline_access is only honoured with prompt=consent.
            prompts.append("consent")
        if prompts:
            params["prompt"] = " ".join(prompts)
        optional = {"acr_values": acr_values, "max_age": None if max_age is None else str(max_age)}
        params.update({name: value for name, value in optional.items() if value is not None})
        if login_hint:
            params["login_hint"] = login_hint
        query = [*params.items(), *(("resource", resource) for resource in self.resources)]
        separator = "&" if "?" in meta.authorization_endpoint else "?"
        return f"{meta.authorization_endpoint}{separator}{urlencode(query)}"

    async def exchange_code(
        self, *, code: str, code_verifier: str, redirect_uri: str, dpop: DPoPKey | None = None
    ) -> TokenSet:
        """The authorization code grant; with ``dpop``, the tokens are bound to that key."""
        meta = await self.metadata()
        async with self._provider_errors("authorization_code"):
            raw = await self._token_request(
                dpop,
                meta.token_endpoint,
                lambda headers: self._http.fetch_token(
                    meta.token_endpoint,
                    grant_type="authorization_code",
                    code=code,
                    redirect_uri=redirect_uri,
                    code_verifier=code_verifier,
                    headers=headers,
                ),
            )
            tokens = _token_set(dict(raw), self.clock())
        if tokens.scope is None:  # RFC 6749 5.1: absent means granted as requested
            tokens.scope = self.scopes
        return tokens

    async def validate_id_token(self, id_token: str, *, nonce: str | None) -> dict[str, Any]:
        """Signature, iss, aud, azp, exp, iat and nonce; raises `LoginError` when any fails."""
        meta = await self.metadata()
        try:
            token = await self._decode(id_token, list(meta.id_token_algs))
            checks: dict[str, Any] = {
                "iss": {"essential": True, "value": meta.issuer},
                "aud": {"essential": True, "value": self.client_id},
                "sub": {"essential": True},
                "exp": {"essential": True},
                "iat": {"essential": True},
            }
            if nonce is not None:
                checks["nonce"] = {"essential": True, "value": nonce}
            registry = JWTClaimsRegistry(leeway=_CLOCK_LEEWAY, **checks)
            registry.validate(token.claims)
        except (JoseError, ValueError) as exc:
            raise LoginError(f"the ID token is not valid ({type(exc).__name__})") from exc
        claims = dict(token.claims)
        audiences = claims["aud"] if isinstance(claims["aud"], list) else [claims["aud"]]
        if len(audiences) > 1 and claims.get("azp") != self.client_id:
            raise LoginError("the ID token was issued to another party (azp)")
        return claims

    async def userinfo(self, access_token: str, *, sub: str, dpop: DPoPKey | None = None) -> dict[str, Any]:
        """Profile claims from the UserInfo endpoint (many IdPs keep them out of the ID token).
        Best effort: an empty dict when there is no endpoint or it fails; a foreign ``sub`` is
        refused (OIDC Core 5.3.2). ``dpop``: the token is bound to that key; it goes with a proof (and
        the nonce retry)."""
        meta = await self.metadata()
        endpoint = meta.userinfo_endpoint
        if not endpoint:
            return {}

        def headers() -> dict[str, str]:
            if dpop is None:
                return {"Authorization": f"Bearer {access_token}", "Accept": "application/json"}
            nonce = self.dpop_nonces.get(endpoint)
            proof = dpop.proof("GET", endpoint, access_token=access_token, nonce=nonce)
            return {"Authorization": f"DPoP {access_token}", "DPoP": proof, "Accept": "application/json"}

        try:
            response = await self._http.request("GET", endpoint, withhold_token=True, headers=headers())
            if dpop is not None and response.status_code == 401 and response.headers.get("dpop-nonce"):
                self.dpop_nonces.remember(endpoint, response.headers.get("dpop-nonce"))
                response = await self._http.request("GET", endpoint, withhold_token=True, headers=headers())
            response.raise_for_status()
            claims = response.json()
        except (httpx.HTTPError, ValueError) as exc:
            log.warning("userinfo failed: %s", type(exc).__name__)
            return {}
        if not isinstance(claims, dict) or claims.get("sub") != sub:
            return {}
        return claims

    # refresh, revocation, logout -----------------------------------------------------------------
    async def refresh(
        self,
        refresh_token: str,
        *,
        timeout: float | None = None,
        target: TokenTarget | None = None,
        dpop: DPoPKey | None = None,
    ) -> TokenSet:
        """A refresh_token grant. Raises `InvalidGrant`, `GrantRefused` (``target`` not allowed)
        or `AuthProviderUnavailable`.

        ``timeout``: this call's own deadline, longer than the IdP timeout of other calls: once
        sent, a rotation must be allowed to finish so that its answer is not lost. ``target``: an
        upstream's own token (its resource, scopes, audience) instead of the session's."""
        meta = await self.metadata()
        extra: dict[str, Any] = {} if timeout is None else {"timeout": timeout}
        if target is not None:
            extra.update(target.params())
        async with self._provider_errors("refresh_token"):
            raw = await self._token_request(
                dpop,
                meta.token_endpoint,
                lambda headers: self._http.refresh_token(
                    meta.token_endpoint, refresh_token=refresh_token, headers=headers, **extra
                ),
            )
            tokens = _token_set(dict(raw), self.clock())
        if tokens.refresh_token == refresh_token:
            tokens.refresh_token = None  # authlib copies the old one in: let the caller decide
        return tokens

    async def exchange(
        self, subject_token: str, target: TokenTarget, *, timeout: float | None = None, dpop: DPoPKey | None = None
    ) -> TokenSet:
        """RFC 8693 token exchange of the session's access token for an upstream's own token.
        Raises `InvalidGrant` (the subject token was refused), `GrantRefused` or
        `AuthProviderUnavailable`."""
        meta = await self.metadata()
        extra: dict[str, Any] = {} if timeout is None else {"timeout": timeout}
        async with self._provider_errors("token_exchange"):
            raw = await self._token_request(
                dpop,
                meta.token_endpoint,
                lambda headers: self._http.fetch_token(
                    meta.token_endpoint,
                    grant_type=_TOKEN_EXCHANGE,
                    subject_token=subject_token,
                    subject_token_type=_ACCESS_TOKEN_TYPE,
                    requested_token_type=_ACCESS_TOKEN_TYPE,
                    headers=headers,
                    **target.params(),
                    **extra,
                ),
            )
            tokens = _token_set(dict(raw), self.clock())
        tokens.refresh_token = None  # never part of the session's refresh chain
        tokens.id_token = None
        return tokens

    async def _probe_request(self, timeout: float, *, authenticated: bool) -> httpx.Response | None:
        """A POST to the token endpoint with a grant type no IdP supports (nothing is issued, used up
        or counted as a refresh); the answer, or None when there is none in time."""
        auth: Any = self._http.client_auth(self._http.token_endpoint_auth_method) if authenticated else None
        extra = {"auth": auth} if authenticated else {}
        try:
            meta = await self.metadata()
            response: httpx.Response = await self._http.request(
                "POST",
                meta.token_endpoint,
                data={"grant_type": _PROBE_GRANT},
                withhold_token=True,
                timeout=timeout,
                **extra,
            )
        except (httpx.HTTPError, AuthProviderUnavailable):
            return None
        return response

    async def probe(self, timeout: float) -> bool:
        """Whether the token endpoint answers this process within ``timeout`` (any HTTP answer):
        evidence, for a peer whose own refresh hangs, that the IdP is up and that peer's path to it is
        what is broken (`TokenManager`)."""
        return await self._probe_request(timeout, authenticated=False) is not None

    async def client_accepted(self, timeout: float) -> bool | None:
        """Whether the IdP accepts this client's credentials: the probe with client authentication.
        ``invalid_client`` → False; another refusal → True (most IdPs, oidc-provider among them,
        authenticate the client before they look at the grant type); no answer → None."""
        response = await self._probe_request(timeout, authenticated=True)
        if response is None:
            return None
        try:
            error = response.json().get("error") if response.status_code >= 400 else None
        except (ValueError, AttributeError):
            error = None
        return not (error == "invalid_client" or (response.status_code == 401 and error is None))

    async def refresh_token_unused(self, refresh_token: str, timeout: float) -> bool | None:
        """RFC 7662 introspection of our own refresh token: True while the IdP still takes it (it has
        not been used), False once used or revoked, None when the IdP cannot tell us (no endpoint, no
        answer in time). Reads only: nothing is rotated or consumed."""
        try:
            meta = await self.metadata()
            if not meta.introspection_endpoint:
                return None
            response = await self._http.request(
                "POST",
                meta.introspection_endpoint,
                data={"token": refresh_token, "token_type_hint": "refresh_token"},
                auth=self._http.client_auth(self._http.token_endpoint_auth_method),
                withhold_token=True,
                timeout=timeout,
            )
            if response.status_code != 200:
                return None
            body = response.json()
        except (httpx.HTTPError, ValueError, AuthProviderUnavailable):
            return None
        if not isinstance(body, dict) or not isinstance(body.get("active"), bool):
            return None
        return bool(body["active"])

    async def client_credentials(
        self, scope: str | None = None, *, resource: str | None = None, audience: str | None = None
    ) -> TokenSet:
        """The BFF's own token (client_credentials grant), for upstream calls without a user;
        ``resource`` (RFC 8707) and ``audience`` (Auth0) name the API it is for."""
        meta = await self.metadata()
        async with self._provider_errors("client_credentials"):
            wanted = {"scope": scope, "resource": resource, "audience": audience}
            extra = {key: value for key, value in wanted.items() if value}
            raw = await self._http.fetch_token(meta.token_endpoint, grant_type="client_credentials", **extra)
            return _token_set(dict(raw), self.clock())

    async def revoke(self, token: str, *, hint: str = "refresh_token") -> bool:
        """RFC 7009 revocation when the IdP offers it; failures are logged, never raised."""
        try:
            meta = await self.metadata()
            if not meta.revocation_endpoint:
                return False
            async with self._provider_errors("revocation"):
                response = await self._http.revoke_token(meta.revocation_endpoint, token=token, token_type_hint=hint)
                response.raise_for_status()
        except (AuthProviderUnavailable, InvalidGrant) as exc:
            log.warning("token revocation failed: %s", exc)
            return False
        return True

    async def end_session_url(self, *, post_logout_redirect_uri: str | None) -> str | None:
        """RP-Initiated Logout 1.0 URL for the browser. It names the client (``client_id``) rather
        than sending ``id_token_hint``: the URL travels through the browser, and no token may."""
        try:
            meta = await self.metadata()
        except AuthProviderUnavailable:
            return None
        if not meta.end_session_endpoint:
            return None
        params = {"client_id": self.client_id}
        if post_logout_redirect_uri:
            params["post_logout_redirect_uri"] = post_logout_redirect_uri
        separator = "&" if "?" in meta.end_session_endpoint else "?"
        return f"{meta.end_session_endpoint}{separator}{urlencode(params)}"

    async def verify_logout_token(self, logout_token: str) -> LogoutToken:
        """OIDC Back-Channel Logout 1.0, sections 2.4 and 2.6: signature, iss, aud, ``exp``
        (required), a fresh ``iat`` (at most `LOGOUT_TOKEN_MAX_AGE` old, plus clock leeway), ``jti``,
        the back-channel event, no nonce, and sid or sub. Raises `LoginError` when invalid.

        Replays are the caller's to refuse: remember `LogoutToken.replay_key` in the shared store for
        `LogoutToken.remember_seconds` (after that the token is refused as stale or expired anyway)."""
        meta = await self.metadata()
        try:
            header = jws.extract_compact(logout_token.encode()).protected
            if header.get("alg") in (None, "none"):
                raise LoginError("unsigned logout token")
            token = await self._decode(logout_token, list(meta.id_token_algs))
            JWTClaimsRegistry(
                leeway=_CLOCK_LEEWAY,
                iss={"essential": True, "value": meta.issuer},
                aud={"essential": True, "value": self.client_id},
                iat={"essential": True},
                exp={"essential": True},
                jti={"essential": True},
            ).validate(token.claims)
        except (JoseError, ValueError) as exc:
            raise LoginError(f"the logout token is not valid ({type(exc).__name__})") from exc
        claims = dict(token.claims)
        now = time.time()
        if float(claims["iat"]) < now - LOGOUT_TOKEN_MAX_AGE - _CLOCK_LEEWAY:
            raise LoginError("the logout token is stale (issued too long ago)")
        events = claims.get("events")
        if not isinstance(events, dict) or _BACKCHANNEL_EVENT not in events:
            raise LoginError("the logout token has no back-channel logout event")
        if "nonce" in claims:
            raise LoginError("a logout token must not carry a nonce")
        sid, sub = claims.get("sid"), claims.get("sub")
        if (sid is not None and not isinstance(sid, str)) or (sub is not None and not isinstance(sub, str)):
            raise LoginError("the logout token's sid and sub must be strings")
        if not sid and not sub:
            raise LoginError("the logout token names neither sid nor sub")
        # Accepted until exp or until it turns stale, whichever comes first (plus leeway on both).
        last_accepted = min(float(claims["exp"]), float(claims["iat"]) + LOGOUT_TOKEN_MAX_AGE) + _CLOCK_LEEWAY
        digest = hashlib.sha256(f"{meta.issuer}\x00{claims['jti']}".encode()).hexdigest()
        return LogoutToken(
            sid=sid or None,
            sub=sub or None,
            replay_key=digest,
            remember_seconds=max(1.0, last_accepted - now),
        )


def _jwt_lifetime(access_token: str, now: float) -> float:
    """Without ``expires_in`` (it is only RECOMMENDED): a JWT access token's own ``exp`` (read, not
    verified: it only schedules our refresh), else an hour."""
    try:
        payload = json.loads(jws.extract_compact(access_token.encode()).payload)
        return max(0.0, float(payload["exp"]) - now)
    except (JoseError, ValueError, KeyError, TypeError):
        return 3600.0


def _token_set(raw: dict[str, Any], now: float) -> TokenSet:
    """Expiry is obtained-at + ``expires_in`` by the given clock (the session store's, shared by all
    replicas), else the JWT's own ``exp``."""
    access = raw.get("access_token")
    if not isinstance(access, str) or not access:
        raise ValueError("token response without access_token")
    expires_in = raw.get("expires_in")
    lifetime = float(expires_in) if expires_in is not None else _jwt_lifetime(access, now)
    return TokenSet(
        access_token=access,
        expires_at=now + lifetime,
        issued_at=now,
        refresh_token=raw.get("refresh_token"),
        id_token=raw.get("id_token"),
        token_type=str(raw.get("token_type") or "Bearer"),
        scope=str(raw["scope"]) if raw.get("scope") else None,
    )
