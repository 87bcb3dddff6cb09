"""The error tree of `bff`. Each class carries the contract's GraphQL ``extensions.code``.

    BFFError                      INTERNAL_SERVER_ERROR (never shown as-is: masked)
    ├── Unauthenticated           UNAUTHENTICATED: no session, or the IdP refused its refresh
    ├── Forbidden                 FORBIDDEN: an authorization directive (@requiresScopes, @policy)
    │                             denied a field to this signed-in user
    ├── StepUpRequired            STEP_UP_REQUIRED, with .login: a stronger sign-in is needed (an
    │                             upstream's RFC 9470 challenge, or a policy asking for an acr)
    ├── AuthProviderUnavailable   AUTH_PROVIDER_UNAVAILABLE: IdP down while the token has expired
    │   └── ClientRejected        (same code) the IdP refused our client credentials: configuration
    ├── InvalidGrant              (internal) the IdP answered invalid_grant
    ├── GrantRefused              (internal) the IdP refused a token for a target: invalid_target,
    │                             invalid_scope (a misconfigured upstream, not a logout)
    ├── LoginError                (HTTP 400 on /auth/*) bad state, replayed code, IdP error
    ├── StoreUnavailable          SESSION_STORE_UNAVAILABLE: Redis unreachable (session kept)
    ├── UpstreamError             UPSTREAM_ERROR, with .upstream
    │   ├── UpstreamTimeout       UPSTREAM_TIMEOUT
    │   ├── UpstreamUnauthorized  UPSTREAM_UNAUTHORIZED: the upstream refused a freshly refreshed
    │   │                         token too (session kept; no more forced refreshes for a cooldown)
    │   └── UpstreamTokenRefused  UPSTREAM_TOKEN_REFUSED: the IdP would not issue this upstream's own
    │                             token (invalid_target / invalid_scope); the session is kept
    ├── QueryRejected             a query over a limit (BAD_USER_INPUT)
    └── RequestRefused            BAD_REQUEST (HTTP 400): a request refused before execution; each
        │                         refusal's HTTP ``status`` is a class attribute, its headers its own
        ├── MethodNotAllowed      METHOD_NOT_ALLOWED (405, Allow)
        ├── NotAcceptable         NOT_ACCEPTABLE (406)
        ├── PayloadTooLarge       PAYLOAD_TOO_LARGE (413)
        ├── UnsupportedMediaType  UNSUPPORTED_MEDIA_TYPE (415)
        ├── PersistedQueryError   PERSISTED_QUERY_* (`bff.graphql.documents.persisted`)
        ├── StreamLimitExceeded   TOO_MANY_STREAMS (429): too many open subscriptions
        └── ShuttingDown          SHUTTING_DOWN (503, Retry-After): a stream asked for while the
                                  server shuts down

Lower-level errors (httpx, authlib, redis) are translated into these at the layer boundary, in one
place per layer; `graphql.errors` maps them to GraphQL errors in one place.
"""

from __future__ import annotations

from typing import Any, ClassVar


def error_entry(message: str, code: str, **extensions: Any) -> dict[str, Any]:
    """One entry of a GraphQL response's ``errors``: the one place that shape is written by hand
    (the GraphQL transports and the web middleware's refusals of ``/graphql`` requests use it)."""
    return {"message": message, "extensions": {"code": code, **extensions}}


class BFFError(Exception):
    """Base of every error `bff` raises on purpose."""

    code: ClassVar[str] = "INTERNAL_SERVER_ERROR"
    public_message: ClassVar[str] = "Internal server error"

    def __init__(self, message: str | None = None) -> None:
        super().__init__(message or self.public_message)

    @property
    def message(self) -> str:
        return str(self)

    def extensions(self) -> dict[str, Any]:
        return {"code": self.code}


class Unauthenticated(BFFError):
    code = "UNAUTHENTICATED"
    public_message = "Not signed in"


class Forbidden(BFFError):
    """A field this signed-in user may not see (an authorization directive said no)."""

    code = "FORBIDDEN"
    public_message = "Not allowed"


class StepUpRequired(BFFError):
    """A stronger sign-in is needed (RFC 9470): ``acr_values`` and ``max_age`` say what was asked;
    ``login`` is the ready ``/auth/login?...`` URL the front end follows. Raise it without ``login``
    (the upstream clients do, on an ``insufficient_user_authentication`` challenge; so may a policy):
    on its way out of a GraphQL result the request's context fills it in, absolute on
    ``BFF_PUBLIC_URL``, coming back to the page of the request's ``Referer``
    (`bff.graphql.errors.complete_step_ups`)."""

    code = "STEP_UP_REQUIRED"
    public_message = "A stronger sign-in is required"

    def __init__(
        self,
        message: str | None = None,
        *,
        acr_values: str | None = None,
        max_age: int | None = None,
        upstream: str | None = None,
        login: str | None = None,
    ) -> None:
        super().__init__(message)
        self.acr_values = acr_values
        self.max_age = max_age
        self.upstream = upstream
        self.login = login

    def extensions(self) -> dict[str, Any]:
        extensions: dict[str, Any] = {"code": self.code}
        if self.acr_values:
            extensions["acrValues"] = self.acr_values
        if self.max_age is not None:
            extensions["maxAge"] = self.max_age
        if self.upstream:
            extensions["upstream"] = self.upstream
        if self.login:
            extensions["login"] = self.login
        return extensions


class AuthProviderUnavailable(BFFError):
    code = "AUTH_PROVIDER_UNAVAILABLE"
    public_message = "The identity provider is unavailable; try again shortly"


class ClientRejected(AuthProviderUnavailable):
    """The IdP refused this BFF's own client credentials (``invalid_client``): a configuration error,
    not an outage. Sessions are kept (it may be a secret rotating at the IdP); sign-in says so."""

    public_message = "The identity provider refused this server's client credentials"


class InvalidGrant(BFFError):
    """The IdP refused a grant (expired, revoked or already-rotated refresh token)."""

    code = "UNAUTHENTICATED"
    public_message = "The identity provider refused the grant"


class GrantRefused(BFFError):
    """The IdP refused to issue a token for what was asked (``invalid_target``, ``invalid_scope``):
    the request was wrong for this client, the grant itself is fine."""

    code = "UPSTREAM_TOKEN_REFUSED"
    public_message = "The identity provider refused a token for this upstream"

    def __init__(self, error: str, message: str | None = None) -> None:
        super().__init__(message or f"the identity provider answered {error}")
        self.error = error


class LoginError(BFFError):
    """A login or callback that cannot proceed; answered with HTTP 400 and this message."""

    code = "BAD_REQUEST"
    public_message = "The sign-in could not be completed"


class StoreUnavailable(BFFError):
    """The session store cannot be reached; nothing is concluded about the session."""

    code = "SESSION_STORE_UNAVAILABLE"
    public_message = "The session store is unavailable; try again shortly"


class QueryRejected(BFFError):
    code = "BAD_USER_INPUT"
    public_message = "The query was rejected"


class RequestRefused(BFFError):
    """A request refused before anything ran: the transports answer it with ``status``, ``headers``
    and ``{"errors": [{"message", "extensions": {"code"}}]}`` (`bff.graphql.errors.error_entry`)."""

    code = "BAD_REQUEST"
    public_message = "Bad request"
    status: ClassVar[int] = 400

    def __init__(self, message: str | None = None, *, headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.headers = dict(headers or {})


class MethodNotAllowed(RequestRefused):
    code = "METHOD_NOT_ALLOWED"
    public_message = "Method not allowed"
    status = 405


class NotAcceptable(RequestRefused):
    code = "NOT_ACCEPTABLE"
    public_message = "Not acceptable"
    status = 406


class PayloadTooLarge(RequestRefused):
    code = "PAYLOAD_TOO_LARGE"
    public_message = "The request body is too large"
    status = 413


class UnsupportedMediaType(RequestRefused):
    code = "UNSUPPORTED_MEDIA_TYPE"
    public_message = "Unsupported media type"
    status = 415


class StreamLimitExceeded(RequestRefused):
    """Too many open streams (subscriptions) for this session or this process."""

    code = "TOO_MANY_STREAMS"
    public_message = "Too many open streams"
    status = 429


class ShuttingDown(RequestRefused):
    """A new stream refused because this server is shutting down: not the client's fault and not
    a limit, so a 503 whose retry reaches another replica (``retry_after`` seconds later)."""

    code = "SHUTTING_DOWN"
    public_message = "The server is shutting down; try again"
    status = 503
    retry_after: ClassVar[int] = 1

    def __init__(self, message: str | None = None) -> None:
        super().__init__(message, headers={"Retry-After": str(self.retry_after)})


class UpstreamError(BFFError):
    """An upstream failed; only the fields that depend on it resolve to null."""

    code = "UPSTREAM_ERROR"
    public_message = "An upstream service failed"

    def __init__(self, upstream: str, message: str | None = None, *, status: int | None = None):
        super().__init__(message or f"Upstream {upstream!r} failed")
        self.upstream = upstream
        self.status = status

    def extensions(self) -> dict[str, Any]:
        return {"code": self.code, "upstream": self.upstream}


class UpstreamTimeout(UpstreamError):
    code = "UPSTREAM_TIMEOUT"
    public_message = "An upstream service timed out"


class UpstreamUnauthorized(UpstreamError):
    """The upstream answered 401 to our bearer token. Internally: refresh once and retry; shown to
    the client only when the fresh token was refused too (a misconfigured upstream, not a logout)."""

    code = "UPSTREAM_UNAUTHORIZED"
    public_message = "An upstream service refused the session's credentials"


class UpstreamTokenRefused(UpstreamError):
    """The IdP would not issue this upstream's own token (its resource, scopes or audience are not
    allowed for this client): only this upstream's fields fail; the session is kept."""

    code = "UPSTREAM_TOKEN_REFUSED"
    public_message = "The identity provider refused a token for this upstream"
