"""Configuration: one `Settings` object, read from the environment (prefix ``BFF_``, nesting ``__``).

Pure data: nothing is built here and nothing is read at import time. The CLI and the uvicorn factory
construct it once and pass slices of it down.
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Mapping
from typing import Annotated, Any, Literal
from urllib.parse import urlsplit

from pydantic import BaseModel, Field, SecretStr, ValidationError, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict


def _split_commas(value: object) -> object:
    """List settings are comma-separated in the environment (the contract says: not JSON)."""
    if isinstance(value, str):
        return [item.strip() for item in value.split(",") if item.strip()]
    return value


CommaList = Annotated[list[str], NoDecode]
CommaSecrets = Annotated[list[SecretStr], NoDecode]


_STORE_FORMS = (
    "memory, redis://host:6379/0, rediss://host:6380/0, unix:///path/redis.sock or redis+cluster://host:port,host:port"
)


def check_store_url(value: str) -> None:
    """Refuse a session store URL that could only fail later, saying which forms work."""
    if value == "memory":
        return
    if value.startswith("redis+cluster://"):
        hosts = value.removeprefix("redis+cluster://").split("/")[0]
        for hostport in hosts.split(","):
            host, _, port_text = hostport.rpartition(":") if ":" in hostport else (hostport, "", "6379")
            if not host or not port_text.isdigit() or not 0 < int(port_text) < 65536:
                raise ValueError(f"bad cluster node {hostport!r}: expected {_STORE_FORMS}")
        return
    parts = urlsplit(value)
    if parts.scheme in ("redis", "rediss"):
        try:
            port = parts.port
        except ValueError:
            raise ValueError(f"bad port: expected {_STORE_FORMS}") from None
        if parts.hostname and (port is None or 0 < port < 65536):
            return
    if parts.scheme == "unix" and parts.path:
        return
    raise ValueError(f"expected {_STORE_FORMS}")


def check_origin(value: str) -> str:
    """One exact browser origin, ``scheme://host[:port]`` (a trailing slash is dropped); refuses
    ``*``, ``null`` and anything that is not an http(s) origin, saying why (issue 24)."""
    if "*" in value or value.lower() == "null":
        raise ValueError(
            f"{value!r} is not an origin: list each one (https://app.example.com); a wildcard or null "
            "would let any page send the session cookie and read the answers"
        )
    parts = urlsplit(value)
    try:
        parts.port  # noqa: B018 (raises on a bad port)
    except ValueError:
        parts = urlsplit("")
    if parts.scheme not in ("http", "https") or not parts.hostname or "@" in parts.netloc:
        raise ValueError(f"{value!r} is not an origin: expected scheme://host[:port], e.g. https://app.example.com")
    if parts.path not in ("", "/") or parts.query or parts.fragment:
        raise ValueError(f"{value!r} is not an origin: no path, query or fragment (https://app.example.com)")
    return f"{parts.scheme}://{parts.netloc.lower()}"


def mask_url(value: str) -> str:
    """A URL fit for logs: any user or password in it replaced by ``***``."""
    scheme, sep, rest = value.partition("://")
    if sep and "@" in rest.split("/")[0]:
        return f"{scheme}://***@{rest.split('@', 1)[1]}"
    return value


def _variable_names() -> tuple[set[str], set[str]]:
    """The top-level setting names (as after ``BFF_``) and the fields of one upstream, upper case."""
    top = {name.upper() for name in Settings.model_fields} | {"SCHEMA"}
    top.discard("SCHEMA_REF")
    return top, {name.upper() for name in UpstreamSettings.model_fields}


def unknown_variables(environ: Mapping[str, str]) -> list[str]:
    """``BFF_*`` variables that configure nothing (a misspelt name is otherwise silently ignored):
    not a setting, or, under ``BFF_UPSTREAMS__<NAME>__``, not an upstream setting. ``BFF_TEST_*``
    belongs to the test suite."""
    top, upstream = _variable_names()
    unknown = []
    for key in environ:
        name = key.upper()
        if not name.startswith("BFF_") or name.startswith("BFF_TEST_"):
            continue
        parts = name[4:].split("__")
        if parts[0] not in top or (parts[0] == "UPSTREAMS" and (len(parts) != 3 or parts[2] not in upstream)):
            unknown.append(key)
    return sorted(unknown)


def _closest(word: str, choices: set[str]) -> str | None:
    """The choice ``word`` most likely misspells: difflib's closest, else the one it abbreviates."""
    found = difflib.get_close_matches(word, sorted(choices), n=1, cutoff=0.6)
    if found:
        return found[0]
    longer = sorted(choice for choice in choices if word and choice.startswith(word))
    return longer[0] if longer else None


def suggest_variable(key: str) -> str | None:
    """The setting an unknown ``BFF_*`` variable probably meant, or None. Under
    ``BFF_UPSTREAMS__<NAME>__<FIELD>`` the upstream's name is kept and only the field corrected
    (``BFF_UPSTREAMS__ACCOUNTS__TIMEOUT`` -> ``BFF_UPSTREAMS__ACCOUNTS__TIMEOUT_SECONDS``)."""
    name = key.upper()
    if not name.startswith("BFF_"):
        return None
    top, upstream = _variable_names()
    parts = name[4:].split("__")
    if len(parts) > 1 and difflib.get_close_matches(parts[0], ["UPSTREAMS"], n=1, cutoff=0.8):
        if len(parts) == 2 and parts[1]:
            return f"BFF_UPSTREAMS__{parts[1]}__URL"
        if len(parts) == 3 and parts[1]:
            field = parts[2] if parts[2] in upstream else _closest(parts[2], upstream)
            return None if field is None else f"BFF_UPSTREAMS__{parts[1]}__{field}"
        return None
    # BFF_OIDC__ISSUER: a nested delimiter where the setting has a single underscore
    flat = "_".join(part for part in parts if part)
    found = flat if flat in top else _closest(flat, top - {"UPSTREAMS"})
    return None if found is None else f"BFF_{found}"


def unknown_variable_message(key: str) -> str:
    """One line about a ``BFF_*`` variable that configures nothing, with a "did you mean"."""
    suggestion = suggest_variable(key)
    hint = f"; did you mean {suggestion}?" if suggestion and suggestion != key.upper() else ""
    return f"{key} is not a setting (misspelt?): it configures nothing{hint}"


def invalid_configuration(error: ValidationError) -> str:
    """The message for a configuration that cannot start: one line per invalid variable."""
    return "invalid configuration:\n  " + "\n  ".join(describe_errors(error))


def describe_errors(error: ValidationError) -> list[str]:
    """One line per invalid setting, named as the environment variable a user sets."""
    lines = []
    for item in error.errors():
        loc = [str(part) for part in item.get("loc", ()) if str(part)]
        name = "BFF_" + "__".join(part.upper() for part in loc) if loc else "configuration"
        message = str(item.get("msg", "invalid")).removeprefix("Value error, ")
        given = item.get("input")
        if isinstance(given, str):
            given = mask_url(given)
        shown = "" if "secret" in name.lower() or isinstance(given, dict) or given is None else f" (got {given!r})"
        lines.append(f"{name}: {message}{shown}")
    return lines


def _site(host: str) -> str:
    """An approximation of the registrable domain (no public-suffix list): IPs and single labels
    as they are, otherwise the last two labels."""
    host = host.lower().rstrip(".")
    if not host or host.replace(".", "").isdigit() or ":" in host or "." not in host:
        return host
    return ".".join(host.split(".")[-2:])


class UpstreamSettings(BaseModel):
    """One upstream service: its base URL (REST) or endpoint URL (GraphQL) and its limits."""

    url: str
    timeout_seconds: float = Field(default=5.0, gt=0)
    max_connections: int = Field(default=100, gt=0)
    max_keepalive_connections: int = Field(default=20, ge=0)
    #: requests without a session: "deny" (UNAUTHENTICATED), "client_credentials" (the BFF's own
    #: token, for public data), or "none" (no Authorization header)
    anonymous: Literal["deny", "client_credentials", "none"] = "deny"
    #: this upstream's own access token (none of these: it gets the session's token). RFC 8707
    #: resource indicator, asked for at sign-in and on this upstream's refresh-token grant
    resource: str | None = None
    #: space-separated scopes of this upstream's token, sent on its grant (Entra: ``api://…/.default``)
    scopes: str | None = None
    #: Auth0's ``audience`` parameter on this upstream's grant
    audience: str | None = None
    #: the token comes from RFC 8693 token exchange of the session's access token instead
    token_exchange: bool = False
    #: a declarative source (`bff.sources`): the path or URL of this upstream's OpenAPI 3 document,
    #: whose operations become fields
    openapi: str | None = None
    #: a declarative source: ``introspect`` or the path of this GraphQL upstream's SDL, whose root
    #: fields are mounted
    graphql: str | None = None
    #: put before every field name a source mounts
    prefix: str = ""
    #: the operations a source mounts (operationId or tag; comma-separated in the environment); empty: all
    include: Annotated[list[str], NoDecode] = Field(default_factory=list)
    #: operations (operationId or tag) a source leaves out
    exclude: Annotated[list[str], NoDecode] = Field(default_factory=list)

    @field_validator("include", "exclude", mode="before")
    @classmethod
    def _comma_separated(cls, value: Any) -> Any:
        if isinstance(value, str):
            return [item.strip() for item in value.split(",") if item.strip()]
        return value

    @field_validator("prefix")
    @classmethod
    def _prefix_is_a_name(cls, value: str) -> str:
        if value and not re.fullmatch(r"[_A-Za-z][_0-9A-Za-z]*", value):
            raise ValueError("a prefix must be a GraphQL name: letters, digits and _, not starting with a digit")
        return value

    @field_validator("resource")
    @classmethod
    def _absolute_resource(cls, value: str | None) -> str | None:
        # RFC 8707 section 2: an absolute URI without a fragment
        if value is not None and (not urlsplit(value).scheme or "#" in value):
            raise ValueError("a resource indicator must be an absolute URI without a fragment")
        return value

    @property
    def own_token(self) -> bool:
        """Whether this upstream gets a token of its own rather than the session's."""
        return bool(self.resource or self.scopes or self.audience or self.token_exchange)


class Settings(BaseSettings):
    """Everything the BFF can be told; see the README's configuration table."""

    model_config = SettingsConfigDict(
        env_prefix="BFF_",
        env_nested_delimiter="__",
        extra="ignore",
        case_sensitive=False,
        populate_by_name=True,
    )

    #: the GraphQL schema to serve, ``package.module:attribute`` naming a schema built with
    #: ``bff.build_schema`` (BFF_SCHEMA; a field named ``schema`` would shadow pydantic's method)
    schema_ref: str = Field(default="bff.demo.api:schema", validation_alias="BFF_SCHEMA")
    #: a TOML or YAML file of links between declarative sources (`bff.sources.links`)
    source_links: str | None = None
    env: Literal["development", "production"] = "development"
    public_url: str = "http://127.0.0.1:8000"

    oidc_issuer: str | None = None
    oidc_client_id: str | None = None
    oidc_client_secret: SecretStr | None = None
    oidc_client_auth_method: Literal["client_secret_basic", "client_secret_post"] = "client_secret_basic"
    oidc_scopes: str = "openid profile email offline_access"
    #: a claim of the access token (when it is a JWT) or else of the ID token that holds the user's
    #: scopes (a space-separated string or a list: ``scp``, ``permissions``), for IdPs whose token
    #: response has no ``scope``; unset: the token response's ``scope``
    scopes_claim: str | None = None
    oidc_timeout_seconds: float = Field(default=5.0, gt=0)
    oidc_post_logout_redirect_uri: str | None = None

    session_store: str = "memory"
    #: per Redis command (and connect): a hung Redis answers SESSION_STORE_UNAVAILABLE this fast
    session_store_timeout_seconds: float = Field(default=1.0, gt=0)
    session_secret: SecretStr | None = None
    session_previous_secrets: CommaSecrets = []
    session_idle_timeout_seconds: int = Field(default=8 * 3600, gt=0)
    #: how long a GraphQL request may reuse the session another request of this process read: every
    #: change announcement (refresh, logout, back-channel logout, on any replica) forgets it at once;
    #: 0 reads the store on every request
    session_cache_seconds: float = Field(default=0.25, ge=0, le=5)
    session_absolute_timeout_seconds: int = Field(default=7 * 24 * 3600, gt=0)
    login_timeout_seconds: int = Field(default=600, gt=0, le=600)

    cookie_secure: bool = True
    cookie_samesite: Literal["strict", "lax"] = "strict"

    refresh_buffer_seconds: int = Field(default=300, ge=0)
    #: a refresh call, once sent, may take this long; no replica sends the same refresh token meanwhile
    refresh_deadline_seconds: float = Field(default=30.0, gt=0)
    #: a token with less than this left (or a quarter of its life) is not used: the request waits
    #: (never past the token's own end: a still-valid token goes out rather than time out)
    refresh_usable_margin_seconds: float = Field(default=5.0, ge=0)
    #: the refresh claim is a lease its live holder renews: a dead holder's claim lapses this fast
    refresh_claim_lease_seconds: float = Field(default=3.0, gt=0)
    #: a refresh running longer than this is overdue: requests that need it fail fast
    #: (AUTH_PROVIDER_UNAVAILABLE, session kept) and a replica whose own calls hang stops claiming
    refresh_overdue_seconds: float = Field(default=2.0, gt=0)
    #: the IdP's refresh-token reuse interval (Okta's grace period, Auth0's reuse interval,
    #: Keycloak's max reuse), if it has one: inside it a peer may take over an overdue claim
    oidc_refresh_reuse_grace_seconds: float = Field(default=0.0, ge=0)
    #: DPoP (RFC 9449): sender-constrained tokens, one key pair per session
    oidc_dpop: bool = False
    #: after a forced refresh, a second 401 from the same upstream stops forced refreshes this long
    upstream_unauthorized_cooldown_seconds: float = Field(default=30.0, ge=0)

    upstreams: dict[str, UpstreamSettings] = {}
    #: "h1" (our HTTP/1.1 pool, fastest; streams on aiohttp), "aiohttp" (aiohttp's client directly) or
    #: "httpx" (httpx's client over aiohttp's pool; always used with OpenTelemetry)
    upstream_client: Literal["h1", "aiohttp", "httpx"] = "h1"
    request_timeout_seconds: float = Field(default=15.0, gt=0)
    breaker_threshold: int = Field(default=5, gt=0)
    breaker_cooldown_seconds: float = Field(default=10.0, gt=0)
    cors_origins: CommaList = []
    #: origins an absolute sign-in ``return_to`` may point at (an SPA on its own origin)
    login_return_origins: CommaList = []
    native_redirect_uris: CommaList = []
    native_handoff_seconds: int = Field(default=60, gt=0, le=60)

    graphiql: bool | None = None
    introspection: bool | None = None
    max_depth: int = Field(default=12, gt=0)
    max_tokens: int = Field(default=2000, gt=0)
    max_aliases: int = Field(default=30, ge=0)
    max_cost: int = Field(default=5000, gt=0)
    max_body_bytes: int = Field(default=1024 * 1024, gt=0)
    batch_max_operations: int = Field(default=0, ge=0)
    persisted_queries: bool = True
    trusted_documents: str | None = None
    log_level: str = "info"
    otel_enabled: bool = False
    #: cached, validated queries run by a compiled plan (bff.graphql.execution.compiled); off: graphql-core
    compiled_execution: bool = True
    #: subscriptions (GraphQL over SSE on /graphql): limits, keep-alive and lifetime of a stream
    streams_per_session: int = Field(default=10, gt=0)
    streams_per_process: int = Field(default=1000, gt=0)
    stream_heartbeat_seconds: float = Field(default=15.0, gt=0)
    stream_max_seconds: float = Field(default=3600.0, gt=0)
    #: whether an open stream counts as activity for the idle timeout
    stream_keeps_session_alive: bool = False

    # -- issue 24: what one client may hold (streams, connections, writes) ---------------------
    #: operations one WebSocket connection may run at once (an ``error`` TOO_MANY_STREAMS beyond)
    streams_per_connection: int = Field(default=20, gt=0)
    #: the share of BFF_STREAMS_PER_PROCESS that streams without a session may hold together: the
    #: rest is kept for signed-in users
    streams_anonymous_share: float = Field(default=0.5, gt=0, le=1)
    #: streams without a session one client address (an IPv6 /64) may hold at once
    streams_anonymous_per_address: int = Field(default=20, gt=0)
    #: a write to a client that does not take it (its socket's buffer stays full) for this long
    #: aborts the connection (`bff serve`, `bff demo`, or uvicorn with bff.serving's protocols)
    write_timeout_seconds: float = Field(default=10.0, gt=0)
    #: a session with open streams is looked at least this often, whatever the store announces (a
    #: lost pub/sub message ends its streams within this)
    stream_recheck_seconds: float = Field(default=10.0, gt=0)
    #: when set, /metrics answers only ``Authorization: Bearer <token>`` (401 otherwise)
    metrics_token: SecretStr | None = None

    @field_validator(
        "cors_origins", "login_return_origins", "native_redirect_uris", "session_previous_secrets", mode="before"
    )
    @classmethod
    def _comma_lists(cls, value: object) -> object:
        return _split_commas(value)

    @field_validator("cors_origins", "login_return_origins")
    @classmethod
    def _exact_origins(cls, value: list[str]) -> list[str]:
        # issue 24: "*" (or "null") would make CORSMiddleware reflect any Origin with credentials
        return [check_origin(item) for item in value]

    @field_validator("public_url")
    @classmethod
    def _strip_slash(cls, value: str) -> str:
        parts = urlsplit(value)
        if parts.scheme not in ("http", "https") or not parts.netloc:
            raise ValueError("BFF_PUBLIC_URL must be an absolute http(s) URL")
        return value.rstrip("/")

    @field_validator("oidc_issuer")
    @classmethod
    def _issuer_no_slash(cls, value: str | None) -> str | None:
        if value:
            parts = urlsplit(value)
            if parts.scheme not in ("http", "https") or not parts.netloc:
                raise ValueError("the issuer must be an absolute http(s) URL, e.g. https://idp.example.com/realms/app")
        return value.rstrip("/") if value else value

    @field_validator("session_store")
    @classmethod
    def _store_url(cls, value: str) -> str:
        check_store_url(value)
        return value

    @model_validator(mode="after")
    def _production_needs_secret(self) -> Settings:
        if self.env == "production" and self.session_secret is None:
            raise ValueError("BFF_SESSION_SECRET is required when BFF_ENV=production")
        return self

    def cookie_problems(self, origin: str) -> list[str]:
        """Why a browser page on ``origin`` would not send the session cookie to this BFF (empty
        when it would): another site with a Strict (or, for fetches, Lax) cookie, or http vs https."""
        parts, own = urlsplit(origin), urlsplit(self.public_url)
        problems = []
        if _site(parts.hostname or "") != _site(own.hostname or ""):
            problems.append(
                f"{origin} is another site than {self.public_origin}: the SameSite={self.cookie_samesite.capitalize()} "
                "session cookie is not sent by its fetches; serve the SPA and the BFF under the same host name "
                "(localhost and 127.0.0.1 are different sites) or proxy /graphql and /auth through the SPA's server"
            )
        if self.cookie_secure and parts.scheme != "https":
            problems.append(f"{origin} is not https: the Secure session cookie (BFF_COOKIE_SECURE) is not sent")
        return problems

    @property
    def public_origin(self) -> str:
        parts = urlsplit(self.public_url)
        return f"{parts.scheme}://{parts.netloc}"

    @property
    def redirect_uri(self) -> str:
        return f"{self.public_url}/auth/callback"

    @property
    def graphiql_enabled(self) -> bool:
        return self.graphiql if self.graphiql is not None else self.env == "development"

    @property
    def introspection_enabled(self) -> bool:
        return self.introspection if self.introspection is not None else self.env == "development"

    @property
    def cookie_name(self) -> str:
        # The __Host- prefix requires Secure, Path=/ and no Domain; browsers drop it over plain http.
        return "__Host-bff_session" if self.cookie_secure else "bff_session"

    @property
    def login_cookie_name(self) -> str:
        return "__Host-bff_login" if self.cookie_secure else "bff_login"

    @property
    def oidc_configured(self) -> bool:
        return bool(self.oidc_issuer and self.oidc_client_id)
