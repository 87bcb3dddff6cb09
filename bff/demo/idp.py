"""A DEVELOPMENT OpenID Connect provider for `bff demo`, built on authlib's server components.

Authorization code + PKCE (S256, required), refresh tokens WITH rotation (the old one dies on use),
RFC 7009 revocation, discovery, JWKS, UserInfo, RP-initiated logout, and a login page offering a
few demo users (no passwords). Everything lives in memory and is lost on restart. Never use it to
protect anything: `bff serve` refuses to start it.

Step-up: the ID token carries ``acr`` (`ACR_DEFAULT`, or the first value of the request's
``acr_values`` it supports: `ACR_STRONG` pretends a second factor), ``amr`` and ``auth_time``;
``prompt=none`` answers from the IdP's own login cookie (``login_required`` without one, or when
``max_age`` has passed). Scopes: the OpenID ones for everyone, any other only to the users who may have it
(`bff.demo.data.USER_SCOPES`: alice all, bob the read-only ones, carol none).
"""

from __future__ import annotations

import fnmatch
import html
import logging
import secrets
import time
import warnings
from dataclasses import dataclass, field
from typing import Any, ClassVar

import authlib.deprecate
from joserfc import jwt
from joserfc.errors import JoseError
from joserfc.jwk import KeySet, RSAKey
from joserfc.jwt import JWTClaimsRegistry
from starlette.applications import Starlette
from starlette.datastructures import Headers
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, RedirectResponse, Response
from starlette.routing import Route

from bff.demo.data import API_SCOPES, KNOWN_USERS, USER_SCOPES

with warnings.catch_warnings():
    warnings.filterwarnings("ignore", category=authlib.deprecate.AuthlibDeprecationWarning)
    from authlib.oauth2 import AuthorizationServer, OAuth2Request
    from authlib.oauth2.rfc6749 import ClientMixin, TokenMixin, grants
    from authlib.oauth2.rfc6749.errors import InvalidRequestError, OAuth2Error
    from authlib.oauth2.rfc6750 import BearerTokenGenerator
    from authlib.oauth2.rfc7009 import RevocationEndpoint
    from authlib.oauth2.rfc7636 import CodeChallenge
    from authlib.oidc.core import UserInfo
    from authlib.oidc.core.grants import OpenIDCode

log = logging.getLogger("bff.demo.idp")

DEMO_USERS = {
    "alice": KNOWN_USERS["alice"],
    "bob": KNOWN_USERS["bob"],
    "carol": {"name": "Carol Example", "email": "carol@example.com"},
}
#: the scopes anyone may be granted; any other scope only to a user who may have it (`user_scopes`)
OPENID_SCOPES = ("openid", "profile", "email", "offline_access")
#: Authentication Context Class References: a sign-in at the page, and one with a (pretend) second factor
ACR_DEFAULT = "urn:bff:loa:1"
ACR_STRONG = "urn:bff:loa:2"
ACRS = {ACR_DEFAULT: ["pwd"], ACR_STRONG: ["pwd", "otp"]}


@dataclass
class DevClient(ClientMixin):  # type: ignore[misc]
    client_id: str
    client_secret: str
    redirect_uris: list[str]
    post_logout_redirect_uris: list[str] = field(default_factory=list)
    scope: str = " ".join((*OPENID_SCOPES, *API_SCOPES))

    def get_client_id(self) -> str:
        return self.client_id

    def get_default_redirect_uri(self) -> str:
        return self.redirect_uris[0]

    def get_allowed_scope(self, scope: str) -> str:
        allowed = set(self.scope.split())
        return " ".join(s for s in (scope or "").split() if s in allowed)

    def check_redirect_uri(self, redirect_uri: str) -> bool:
        return redirect_uri in self.redirect_uris

    def check_client_secret(self, client_secret: str) -> bool:
        return secrets.compare_digest(client_secret, self.client_secret)

    def check_endpoint_auth_method(self, method: str, endpoint: str) -> bool:
        return method in ("client_secret_basic", "client_secret_post")

    def check_response_type(self, response_type: str) -> bool:
        return response_type == "code"

    def check_grant_type(self, grant_type: str) -> bool:
        return grant_type in ("authorization_code", "refresh_token", "client_credentials")


@dataclass
class DevUser:
    sub: str
    sid: str
    #: when and how strongly this login happened (``prompt=none`` answers with these)
    auth_time: int = 0
    acr: str = ACR_DEFAULT

    def get_user_id(self) -> str:
        return self.sub


@dataclass
class AuthCode:
    code: str
    client_id: str
    redirect_uri: str
    scope: str
    nonce: str | None
    code_challenge: str | None
    code_challenge_method: str | None
    user: DevUser
    auth_time: int
    expires_at: float
    acr: str = ACR_DEFAULT

    def get_redirect_uri(self) -> str:
        return self.redirect_uri

    def get_scope(self) -> str:
        return self.scope

    def get_nonce(self) -> str | None:
        return self.nonce

    def get_auth_time(self) -> int:
        return self.auth_time

    def get_acr(self) -> str:
        return self.acr

    def get_amr(self) -> list[str]:
        return list(ACRS.get(self.acr, ["pwd"]))


@dataclass
class RefreshToken(TokenMixin):  # type: ignore[misc]
    token: str
    client_id: str
    scope: str
    user: DevUser
    expires_at: float
    revoked: bool = False

    def check_client(self, client: DevClient) -> bool:
        return bool(client.client_id == self.client_id)

    def get_scope(self) -> str:
        return self.scope

    def get_expires_in(self) -> int:
        return int(self.expires_at - time.time())

    def is_expired(self) -> bool:
        return time.time() >= self.expires_at

    def is_revoked(self) -> bool:
        return self.revoked

    def get_user(self) -> DevUser:
        return self.user

    def get_client(self) -> Any:
        return None


class _Payload:
    def __init__(self, data: dict[str, str]) -> None:
        self.data = data
        self.datalist = {k: [v] for k, v in data.items()}

    @property
    def client_id(self) -> str | None:
        return self.data.get("client_id")

    @property
    def response_type(self) -> str | None:
        return self.data.get("response_type")

    @property
    def grant_type(self) -> str | None:
        return self.data.get("grant_type")

    @property
    def redirect_uri(self) -> str | None:
        return self.data.get("redirect_uri")

    @property
    def scope(self) -> str | None:
        return self.data.get("scope")

    @property
    def state(self) -> str | None:
        return self.data.get("state")


@dataclass
class Incoming:
    """An already-read Starlette request (authlib's server is synchronous)."""

    method: str
    url: str
    headers: Headers
    query: dict[str, str]
    form: dict[str, str]

    @classmethod
    async def read(cls, request: Request) -> Incoming:
        form = {k: str(v) for k, v in (await request.form()).items()} if request.method == "POST" else {}
        return cls(request.method, str(request.url), request.headers, dict(request.query_params), form)


class _Request(OAuth2Request):  # type: ignore[misc]
    def __init__(self, incoming: Incoming) -> None:
        super().__init__(incoming.method, incoming.url, headers=incoming.headers)
        self._incoming = incoming
        self.payload = _Payload({**incoming.query, **incoming.form})

    @property
    def args(self) -> dict[str, str]:
        return self._incoming.query

    @property
    def form(self) -> dict[str, str]:
        return self._incoming.form


class DevIdentityProvider:
    """The provider's state and its ASGI app (mount it at ``{issuer path}``)."""

    def __init__(
        self,
        issuer: str,
        clients: list[DevClient],
        *,
        access_ttl: int = 300,
        users: dict[str, dict[str, str]] | None = None,
        user_scopes: dict[str, tuple[str, ...]] | None = None,
    ) -> None:
        self.issuer = issuer.rstrip("/")
        #: who may sign in: sub -> {"name", "email"} (add to it at any time)
        self.users = dict(DEMO_USERS) if users is None else users
        #: the scopes beyond `OPENID_SCOPES` each user may be granted, as `fnmatch` patterns (add to
        #: it at any time; a plain scope name is a pattern matching itself)
        self.user_scopes = dict(USER_SCOPES) if user_scopes is None else user_scopes
        self.clients = {c.client_id: c for c in clients}
        self.access_ttl = access_ttl
        self.key = RSAKey.generate_key(2048, parameters={"kid": secrets.token_hex(4), "alg": "RS256", "use": "sig"})
        self.codes: dict[str, AuthCode] = {}
        self.refresh_tokens: dict[str, RefreshToken] = {}
        self.logins: dict[str, DevUser] = {}  # IdP browser session cookie -> user
        self.stats = {"refresh_grants": 0, "revocations": 0}
        self.server = self._build_server()

    # tokens ------------------------------------------------------------------------------------
    def _access_token(self, client: DevClient, grant_type: str, user: DevUser | None, scope: str) -> str:
        now = int(time.time())
        claims = {
            "iss": self.issuer,
            "sub": user.sub if user is not None else client.client_id,  # client_credentials: the client
            "aud": "demo-api",
            "client_id": client.client_id,
            "scope": scope,
            "iat": now,
            "exp": now + self.access_ttl,
            "jti": secrets.token_urlsafe(12),
        }
        if user is not None:  # the sign-in behind the token, for upstreams that ask for a step-up
            claims.update({"acr": user.acr, "auth_time": user.auth_time})
        return jwt.encode({"alg": "RS256", "kid": self.key.kid, "typ": "at+jwt"}, claims, self.key)

    def verify_access_token(self, token: str) -> dict[str, Any] | None:
        try:
            decoded = jwt.decode(token, KeySet([self.key]), algorithms=["RS256"])
            JWTClaimsRegistry(iss={"essential": True, "value": self.issuer}, exp={"essential": True}).validate(
                decoded.claims
            )
        except (JoseError, ValueError):
            return None
        return dict(decoded.claims)

    def granted_scope(self, user: DevUser, scope: str) -> str:
        """What of ``scope`` (already narrowed to the client's allowed scopes) ``user`` gets."""
        patterns = self.user_scopes.get(user.sub, ())
        return " ".join(
            s for s in scope.split() if s in OPENID_SCOPES or any(fnmatch.fnmatchcase(s, p) for p in patterns)
        )

    def _build_server(self) -> AuthorizationServer:
        idp = self

        class Server(AuthorizationServer):  # type: ignore[misc]
            def query_client(self, client_id: str) -> DevClient | None:
                return idp.clients.get(client_id)

            def save_token(self, token: dict[str, Any], request: _Request) -> None:
                if token.get("refresh_token"):
                    idp.refresh_tokens[token["refresh_token"]] = RefreshToken(
                        token=token["refresh_token"],
                        client_id=request.client.client_id,
                        scope=token.get("scope", ""),
                        user=request.user,
                        expires_at=time.time() + 24 * 3600,
                    )

            def create_oauth2_request(self, request: Incoming) -> _Request:
                return _Request(request)

            def validate_requested_scope(self, scope: str) -> None:
                """Scopes it does not know are left out of the grant (RFC 6749 3.3), not refused."""
                return None

            def handle_response(self, status: int, body: Any, headers: Any) -> Response:
                headers = dict(headers)
                if isinstance(body, dict):
                    return JSONResponse(body, status_code=status, headers=headers)
                return Response(body or "", status_code=status, headers=headers)

            def send_signal(self, name: str, *args: Any, **kwargs: Any) -> None:
                return None

        class CodeGrant(grants.AuthorizationCodeGrant):  # type: ignore[misc]
            TOKEN_ENDPOINT_AUTH_METHODS: ClassVar[list[str]] = ["client_secret_basic", "client_secret_post"]

            def save_authorization_code(self, code: str, request: _Request) -> None:
                data = request.payload.data
                if data.get("code_challenge_method") != "S256" or not data.get("code_challenge"):
                    raise InvalidRequestError("PKCE with S256 is required")
                user: DevUser = request.user
                idp.codes[code] = AuthCode(
                    code=code,
                    client_id=request.client.client_id,
                    redirect_uri=str(request.payload.redirect_uri),
                    scope=idp.granted_scope(user, request.scope or ""),
                    nonce=data.get("nonce"),
                    code_challenge=data.get("code_challenge"),
                    code_challenge_method=data.get("code_challenge_method"),
                    user=user,
                    auth_time=user.auth_time or int(time.time()),
                    expires_at=time.time() + 60,
                    acr=user.acr,
                )

            def query_authorization_code(self, code: str, client: DevClient) -> AuthCode | None:
                item = idp.codes.get(code)
                if item and item.client_id == client.client_id and time.time() < item.expires_at:
                    return item
                return None

            def delete_authorization_code(self, authorization_code: AuthCode) -> None:
                idp.codes.pop(authorization_code.code, None)

            def authenticate_user(self, authorization_code: AuthCode) -> DevUser:
                return authorization_code.user

        class RefreshGrant(grants.RefreshTokenGrant):  # type: ignore[misc]
            TOKEN_ENDPOINT_AUTH_METHODS: ClassVar[list[str]] = ["client_secret_basic", "client_secret_post"]
            INCLUDE_NEW_REFRESH_TOKEN = True  # rotation

            def authenticate_refresh_token(self, refresh_token: str) -> RefreshToken | None:
                item = idp.refresh_tokens.get(refresh_token)
                if item and not item.is_revoked() and not item.is_expired():
                    return item
                return None

            def authenticate_user(self, credential: RefreshToken) -> DevUser:
                return credential.user

            def revoke_old_credential(self, credential: RefreshToken) -> None:
                credential.revoked = True
                idp.stats["refresh_grants"] += 1
                log.info("dev IdP: refresh token rotated for %s", credential.user.sub)

        class ClientGrant(grants.ClientCredentialsGrant):  # type: ignore[misc]
            TOKEN_ENDPOINT_AUTH_METHODS: ClassVar[list[str]] = ["client_secret_basic", "client_secret_post"]

        class OpenID(OpenIDCode):  # type: ignore[misc]
            def exists_nonce(self, nonce: str, request: _Request) -> bool:
                return any(c.nonce == nonce for c in idp.codes.values())

            def resolve_client_private_key(self, client: DevClient) -> Any:
                return idp.key

            def get_client_algorithm(self, client: DevClient) -> str:
                return "RS256"

            def get_encode_header(self, client: DevClient) -> dict[str, str]:
                return {"alg": "RS256", "kid": str(idp.key.kid)}

            def get_client_claims(self, client: DevClient) -> dict[str, Any]:
                return {"iss": idp.issuer, "aud": [client.client_id], "exp": int(time.time()) + 3600}

            def generate_user_info(self, user: DevUser, scope: str) -> UserInfo:
                return UserInfo(sub=user.sub, sid=user.sid, **idp.profile(user.sub, scope))

        class Revocation(RevocationEndpoint):  # type: ignore[misc]
            CLIENT_AUTH_METHODS: ClassVar[list[str]] = ["client_secret_basic", "client_secret_post"]

            def query_token(self, token_string: str, token_type_hint: str | None) -> RefreshToken | None:
                return idp.refresh_tokens.get(token_string)

            def revoke_token(self, token: RefreshToken, request: _Request) -> None:
                token.revoked = True
                idp.stats["revocations"] += 1

        server = Server(scopes_supported=[*OPENID_SCOPES, *API_SCOPES])
        server.register_token_generator(
            "default",
            BearerTokenGenerator(
                access_token_generator=idp._access_token,
                refresh_token_generator=lambda **_: secrets.token_urlsafe(32),
                expires_generator=lambda client, grant_type: idp.access_ttl,
            ),
        )
        server.register_grant(CodeGrant, [CodeChallenge(required=True), OpenID(require_nonce=True)])
        server.register_grant(RefreshGrant)
        server.register_grant(ClientGrant)
        server.register_endpoint(Revocation)
        return server

    def profile(self, sub: str, scope: str) -> dict[str, str]:
        person = self.users.get(sub, {"name": sub, "email": f"{sub}@example.com"})
        claims = {}
        if "profile" in scope.split():
            claims["name"] = person["name"]
        if "email" in scope.split():
            claims["email"] = person["email"]
        return claims

    # HTTP --------------------------------------------------------------------------------------
    def app(self) -> Starlette:
        return Starlette(
            routes=[
                Route("/.well-known/openid-configuration", self.discovery),
                Route("/jwks", self.jwks),
                Route("/authorize", self.authorize, methods=["GET", "POST"]),
                Route("/token", self.token, methods=["POST"]),
                Route("/revoke", self.revoke, methods=["POST"]),
                Route("/userinfo", self.userinfo, methods=["GET", "POST"]),
                Route("/logout", self.logout, methods=["GET", "POST"]),
            ]
        )

    async def discovery(self, request: Request) -> Response:
        i = self.issuer
        return JSONResponse(
            {
                "issuer": i,
                "authorization_endpoint": f"{i}/authorize",
                "token_endpoint": f"{i}/token",
                "jwks_uri": f"{i}/jwks",
                "revocation_endpoint": f"{i}/revoke",
                "userinfo_endpoint": f"{i}/userinfo",
                "end_session_endpoint": f"{i}/logout",
                "response_types_supported": ["code"],
                "grant_types_supported": ["authorization_code", "refresh_token", "client_credentials"],
                "code_challenge_methods_supported": ["S256"],
                "scopes_supported": [*OPENID_SCOPES, *API_SCOPES],
                "acr_values_supported": list(ACRS),
                "claims_supported": ["sub", "sid", "name", "email", "acr", "amr", "auth_time"],
                "subject_types_supported": ["public"],
                "id_token_signing_alg_values_supported": ["RS256"],
                "token_endpoint_auth_methods_supported": ["client_secret_basic", "client_secret_post"],
            }
        )

    async def jwks(self, request: Request) -> Response:
        return JSONResponse(KeySet([self.key]).as_dict(private=False))

    def _known_login(self, request: Request, max_age: str | None) -> DevUser | None:
        """The user of this browser's IdP login cookie, unless ``max_age`` has passed since."""
        user = self.logins.get(request.cookies.get("dev_idp_login", ""))
        if user is None or (max_age is not None and max_age.isdigit() and time.time() - user.auth_time > int(max_age)):
            return None
        return user

    async def authorize(self, request: Request) -> Response:
        incoming = await Incoming.read(request)
        silent = "none" in (incoming.query.get("prompt") or "").split()
        known = self._known_login(request, incoming.query.get("max_age")) if silent else None
        try:
            grant = self.server.get_consent_grant(incoming, end_user=known)
        except OAuth2Error as error:
            if error.redirect_uri:  # e.g. login_required for prompt=none: back to the client
                refused: Response = self.server.handle_error_response(incoming, error)
                return refused
            return HTMLResponse(
                f"<h1>Sign-in request refused</h1><p>{html.escape(error.error)}: "
                f"{html.escape(error.description or '')}</p>",
                status_code=400,
            )
        if known is not None:  # prompt=none, answered from the IdP's own login
            silently: Response = self.server.create_authorization_response(incoming, grant_user=known, grant=grant)
            return silently
        chosen = incoming.form.get("user")
        if request.method == "POST" and chosen in self.users:
            user = DevUser(
                sub=chosen, sid=secrets.token_urlsafe(16), auth_time=int(time.time()), acr=self._acr(incoming)
            )
            login_id = secrets.token_urlsafe(16)
            self.logins[login_id] = user
            incoming.form = {}  # the authorization parameters travel in the query string
            response: Response = self.server.create_authorization_response(incoming, grant_user=user, grant=grant)
            response.set_cookie("dev_idp_login", login_id, httponly=True, samesite="lax", path="/")
            log.info("dev IdP: %s signed in", chosen)
            return response
        return HTMLResponse(self._login_page(str(request.url), self._acr(incoming), incoming.query.get("login_hint")))

    @staticmethod
    def _acr(incoming: Incoming) -> str:
        """The first of the request's ``acr_values`` this IdP supports, else `ACR_DEFAULT`."""
        asked = (incoming.query.get("acr_values") or "").split()
        return next((acr for acr in asked if acr in ACRS), ACR_DEFAULT)

    def _grants(self, sub: str) -> str:
        """What the sign-in page says a user may be granted beyond the OpenID scopes."""
        patterns = self.user_scopes.get(sub, ())
        if not patterns:
            return "OpenID scopes only"
        return "every scope asked for" if "*" in patterns else "scopes " + ", ".join(patterns)

    def _login_page(self, action: str, acr: str = ACR_DEFAULT, hint: str | None = None) -> str:
        buttons = "".join(
            f'<button type="submit" name="user" value="{html.escape(sub)}" data-user="{html.escape(sub)}"'
            f"{' autofocus' if sub == hint else ''}>"
            f"{html.escape(p['name'])}<small>{html.escape(p['email'])} · {html.escape(self._grants(sub))}</small>"
            "</button>"
            for sub, p in self.users.items()
        )
        strength = (
            f'<p class="step">Stronger sign-in asked for ({html.escape(acr)}): this one counts as a '
            "second factor (pretend).</p>"
            if acr != ACR_DEFAULT
            else ""
        )
        return f"""<!doctype html><html><head><meta charset="utf-8"><title>Dev IdP sign-in</title>
<style>body{{font-family:system-ui,sans-serif;max-width:28rem;margin:4rem auto;color:#222}}
.warn{{background:#fff3cd;border:1px solid #e0c36a;padding:.6rem;border-radius:6px}}
.step{{background:#e7f1ff;border:1px solid #8fb3e6;padding:.6rem;border-radius:6px}}
button{{display:block;width:100%;margin:.5rem 0;padding:.8rem;font-size:1rem;text-align:left;cursor:pointer}}
small{{display:block;color:#666}}</style></head><body>
<p class="warn"><b>Development identity provider.</b> For <code>bff demo</code> only:
no passwords, everything in memory.</p>
{strength}<h1>Sign in as</h1><form method="post" action="{html.escape(action)}">{buttons}</form></body></html>"""

    async def token(self, request: Request) -> Response:
        response: Response = self.server.create_token_response(await Incoming.read(request))
        response.headers["Cache-Control"] = "no-store"
        return response

    async def revoke(self, request: Request) -> Response:
        response: Response = self.server.create_endpoint_response("revocation", await Incoming.read(request))
        return response

    async def userinfo(self, request: Request) -> Response:
        scheme, _, token = request.headers.get("authorization", "").partition(" ")
        claims = self.verify_access_token(token.strip()) if scheme.lower() == "bearer" else None
        if claims is None:
            return JSONResponse({"error": "invalid_token"}, status_code=401)
        return JSONResponse({"sub": claims["sub"], **self.profile(claims["sub"], claims.get("scope", ""))})

    async def logout(self, request: Request) -> Response:
        """RP-initiated logout: forget the IdP login; redirect back when the URI is registered."""
        login_id = request.cookies.get("dev_idp_login")
        if login_id:
            self.logins.pop(login_id, None)
        params = dict(request.query_params)
        target = params.get("post_logout_redirect_uri")
        client = self.clients.get(params.get("client_id", ""))
        if target and client and target in client.post_logout_redirect_uris:
            response: Response = RedirectResponse(target, status_code=302)
        else:
            response = HTMLResponse("<!doctype html><p>You are signed out of the development IdP.</p>")
        response.delete_cookie("dev_idp_login", path="/")
        return response
