"""Opens and closes every process resource from `Settings`; the one place that picks concrete classes."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
from collections.abc import AsyncIterator, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import httpx
from purgatory import AsyncCircuitBreakerFactory

from bff.admission import ClientStreamRegistry
from bff.auth.dpop import NonceCache
from bff.auth.oidc import OIDCClient, TokenTarget
from bff.auth.tokens import ServiceTokens, TokenManager
from bff.errors import BFFError, StoreUnavailable
from bff.metrics import Metrics
from bff.runtime import GCPauses
from bff.sessions.cookies import CookiePolicy
from bff.sessions.crypto import SessionCrypto, UnknownKey
from bff.sessions.memory import MemorySessionStore
from bff.sessions.redis import RedisSessionStore
from bff.sessions.store import SessionStore, UnverifiedId
from bff.settings import Settings, UpstreamSettings, mask_url
from bff.telemetry import traced_transport
from bff.upstream.aio import AiohttpUpstream
from bff.upstream.base import HTTPClient, RejectionCooldown, circuit_breakers
from bff.upstream.h1 import H1Upstream
from bff.upstream.transport import UpstreamTransport

log = logging.getLogger("bff")


@dataclass(frozen=True, slots=True)
class Credentials:
    """What a request presented as its session. ``session_id``: the verified id (an `UnverifiedId`
    when it was signed under a key id this replica does not know yet, a rotation in progress: the
    store tells whether the session exists under that key too), else None. ``presented``: whether
    anything was. ``from_cookie``: it came as the cookie (an ``Authorization: Session <handle>``
    header wins over cookies and makes the request ignore them)."""

    session_id: str | None = None
    presented: bool = False
    from_cookie: bool = False

    @property
    def invalid(self) -> bool:
        """Something was presented that names no session (garbage, forged, a retired key): a
        cookie like that is cleared wherever it is read."""
        return self.presented and self.session_id is None


@dataclass(frozen=True, slots=True)
class StreamPolicy:
    """What the streaming transports (SSE, multipart, graphql-transport-ws) need of the settings."""

    heartbeat_seconds: float
    max_seconds: float
    #: whether a stream's session reads count as activity (``BFF_STREAM_KEEPS_SESSION_ALIVE``)
    keeps_session_alive: bool
    per_connection: int
    #: a client that takes nothing for this long loses its streams (twice the write timeout)
    stall_seconds: float

    @classmethod
    def of(cls, settings: Settings) -> StreamPolicy:
        return cls(
            heartbeat_seconds=settings.stream_heartbeat_seconds,
            max_seconds=settings.stream_max_seconds,
            keeps_session_alive=settings.stream_keeps_session_alive,
            per_connection=settings.streams_per_connection,
            stall_seconds=2 * settings.write_timeout_seconds,
        )


@dataclass(frozen=True, slots=True)
class UpstreamRoute:
    """What a request's context needs of one upstream's settings."""

    url: str
    #: without a session: ``deny``, ``none`` (no token) or ``client_credentials``
    anonymous: str


@dataclass(frozen=True, slots=True)
class RequestPolicy:
    """What GraphQL execution needs of the settings, per request."""

    timeout_seconds: float
    compiled_execution: bool
    routes: Mapping[str, UpstreamRoute]
    #: ``BFF_SCOPES_CLAIM``: where `bff.User.scopes` come from, when not the token response's scope
    scopes_claim: str | None = None

    @classmethod
    def of(cls, settings: Settings) -> RequestPolicy:
        return cls(
            timeout_seconds=settings.request_timeout_seconds,
            compiled_execution=settings.compiled_execution,
            routes={name: UpstreamRoute(str(u.url), u.anonymous) for name, u in settings.upstreams.items()},
            scopes_claim=settings.scopes_claim,
        )


@dataclass(frozen=True, slots=True)
class LoginConfig:
    """What the sign-in routes (``/auth/*``, the native handoff) need of the settings."""

    redirect_uri: str
    timeout_seconds: float
    return_origins: tuple[str, ...]
    public_origin: str
    post_logout_redirect_uri: str | None
    dpop: bool
    native_redirect_uris: tuple[str, ...]
    native_handoff_seconds: float
    #: why a browser at an origin could not keep the session cookie (`Settings.cookie_problems`)
    cookie_problems: Callable[[str], list[str]]

    @classmethod
    def of(cls, settings: Settings) -> LoginConfig:
        return cls(
            redirect_uri=settings.redirect_uri,
            timeout_seconds=float(settings.login_timeout_seconds),
            return_origins=tuple(settings.login_return_origins),
            public_origin=settings.public_origin,
            post_logout_redirect_uri=settings.oidc_post_logout_redirect_uri,
            dpop=settings.oidc_dpop,
            native_redirect_uris=tuple(settings.native_redirect_uris),
            native_handoff_seconds=float(settings.native_handoff_seconds),
            cookie_problems=settings.cookie_problems,
        )


@dataclass
class Resources:
    """Everything a request may use; reaches handlers through ``request.state``. The layers above
    read the settings through the slices built here once (`streaming`, `requests`, `login`,
    `metrics_token`), never ``resources.settings`` (the architecture test checks)."""

    settings: Settings
    metrics: Metrics
    crypto: SessionCrypto
    store: SessionStore
    streaming: StreamPolicy
    requests: RequestPolicy
    login: LoginConfig
    metrics_token: str | None = field(default=None, repr=False)
    upstreams: dict[str, HTTPClient] = field(default_factory=dict)
    oidc: OIDCClient | None = None
    tokens: TokenManager | None = None
    breakers: AsyncCircuitBreakerFactory | None = None
    service_tokens: ServiceTokens | None = None
    rejections: RejectionCooldown | None = None
    streams: ClientStreamRegistry | None = None
    #: the newest DPoP nonce each upstream demanded (RFC 9449 section 9), shared by every request
    dpop_nonces: NonceCache = field(default_factory=NonceCache)

    @property
    def session_cookie(self) -> CookiePolicy:
        settings = self.settings
        return CookiePolicy(
            name=settings.cookie_name,
            secure=settings.cookie_secure,
            samesite=settings.cookie_samesite,
            max_age=settings.session_absolute_timeout_seconds,
        )

    @property
    def login_cookie(self) -> CookiePolicy:
        settings = self.settings
        # Always Lax: the IdP's redirect back to /auth/callback is a cross-site top-level navigation.
        return CookiePolicy(
            name=settings.login_cookie_name,
            secure=settings.cookie_secure,
            samesite="lax",
            max_age=settings.login_timeout_seconds,
        )

    def session_credentials(self, authorization: str | None, cookies: Mapping[str, str]) -> Credentials:
        """The session a request presents, in ``Authorization: Session <handle>`` or the cookie."""
        scheme, _, handle = (authorization or "").partition(" ")
        if scheme.lower() == "session":
            value: str | None = handle.strip()
            purpose, from_cookie = "native", False
        else:
            value = cookies.get(self.settings.cookie_name)
            purpose, from_cookie = "cookie", True
        if value is None:
            return Credentials(from_cookie=from_cookie)
        verified = self.crypto.verify(value, purpose)
        if isinstance(verified, UnknownKey):
            return Credentials(UnverifiedId(verified.session_id), True, from_cookie)
        return Credentials(verified or None, True, from_cookie)


@dataclass(frozen=True, slots=True)
class PartCheck:
    """Whether one part the BFF depends on is configured and reachable (``bff check``, startup log).
    ``warning``: it answers, but not as a correctly configured part would (``[warn]``; not a failure)."""

    part: str
    ok: bool
    detail: str
    warning: bool = False

    @property
    def status(self) -> str:
        """``ok``, ``warn`` or ``FAIL``: the tag `bff check` prints."""
        if not self.ok:
            return "FAIL"
        return "warn" if self.warning else "ok"


def upstream_answer(name: str, url: str, status: int) -> PartCheck:
    """What an upstream's answer to a GET at its configured URL says about that URL. 2xx/3xx, 401
    and 403 (reachable, wants a token) and 405 (a POST-only GraphQL endpoint) are fine; another 4xx
    (404 above all: a wrong path) or a 5xx is a warning naming the variable to check."""
    variable = f"BFF_UPSTREAMS__{name.upper()}__URL"
    detail = f"{url} answered HTTP {status}"
    if status < 400 or status in (401, 403, 405):
        return PartCheck(f"upstream {name}", True, detail)
    if status >= 500:
        return PartCheck(f"upstream {name}", True, f"{detail}: reachable but failing", warning=True)
    return PartCheck(f"upstream {name}", True, f"{detail} at its base URL: check {variable}", warning=True)


async def check_parts(resources: Resources, *, timeout: float = 3.0, verify_client: bool = False) -> list[PartCheck]:
    """Store, identity provider and upstreams, each checked once; URLs shown without credentials,
    and a failure names the variable to fix. ``verify_client`` (`bff check`): also a token-endpoint
    request the IdP must authenticate, which tells refused client credentials apart (not at every
    start: it is a request to the IdP's token endpoint, which it may count or rate-limit).
    Never raises: a check that breaks is a failed check, not a traceback."""
    settings = resources.settings
    checks: list[PartCheck] = []
    store_url = mask_url(settings.session_store)
    try:
        await asyncio.wait_for(resources.store.ping(), timeout)
        checks.append(PartCheck("session store", True, f"{store_url} reachable"))
    except Exception as exc:  # a diagnostic reports whatever went wrong
        checks.append(PartCheck("session store", False, f"{store_url}: {_reason(exc)}; check BFF_SESSION_STORE"))
    if resources.oidc is None:
        checks.append(
            PartCheck("identity provider", False, "not configured: set BFF_OIDC_ISSUER and BFF_OIDC_CLIENT_ID")
        )
    else:
        try:
            meta = await asyncio.wait_for(resources.oidc.metadata(fresh=True), timeout)
            checks.append(PartCheck("identity provider", True, f"discovery at {meta.issuer} ok"))
            accepted = await resources.oidc.client_accepted(timeout) if verify_client else None
            if accepted is False:
                detail = (
                    "refused (invalid_client): check BFF_OIDC_CLIENT_ID, BFF_OIDC_CLIENT_SECRET, "
                    "BFF_OIDC_CLIENT_AUTH_METHOD"
                )
                checks.append(PartCheck("client credentials", False, detail))
            elif accepted:
                checks.append(PartCheck("client credentials", True, f"accepted at {meta.token_endpoint}"))
        except Exception as exc:
            detail = f"{settings.oidc_issuer}: {_reason(exc)}; check BFF_OIDC_ISSUER"
            checks.append(PartCheck("identity provider", False, detail))
    for name, client in resources.upstreams.items():
        url = mask_url(settings.upstreams[name].url)
        try:
            response = await client.get("", timeout=timeout)
            checks.append(upstream_answer(name, url, response.status_code))
        except httpx.HTTPError as exc:
            checks.append(PartCheck(f"upstream {name}", False, f"{url} unreachable ({type(exc).__name__})"))
    return checks


def _reason(exc: BaseException) -> str:
    """A failure in a few words: our own errors' messages, other exceptions by type only (their
    text may hold a URL with a password)."""
    if isinstance(exc, TimeoutError):
        return "timed out"
    if isinstance(exc, BFFError):
        return str(exc)
    return f"failed ({type(exc).__name__})"


async def startup_failure(settings: Settings) -> tuple[str | None, str | None]:
    """What `bff serve` says before it starts, each as one line naming the variable to fix:
    (why it cannot start, a warning). The session store must answer: nothing works without it.
    An IdP whose discovery fails is only a warning: it may be a passing outage (a fleet restarted
    during one must still serve the sessions whose tokens are valid), and `/readyz` reports it.
    Built apart from `open_resources` (no store listener, no start-up report: the workers log those)."""
    store = session_store(settings, SessionCrypto([secrets.token_urlsafe(32)]))
    # a store's own timeout covers connect and command; its one retry doubles it at most
    budget = settings.session_store_timeout_seconds * 3
    try:
        await asyncio.wait_for(store.ping(), budget)
    except Exception as exc:  # any failure is a reason not to start
        return f"BFF_SESSION_STORE ({mask_url(settings.session_store)}): {_reason(exc)}", None
    finally:
        with contextlib.suppress(Exception):
            await store.close()
    if not settings.oidc_configured:
        return None, None  # readiness says sign-in is not configured; the server may still be wanted
    assert settings.oidc_issuer is not None
    assert settings.oidc_client_id is not None
    oidc = OIDCClient(
        issuer=settings.oidc_issuer,
        client_id=settings.oidc_client_id,
        client_secret="",  # discovery only: no client authentication at start (see check_parts)
        timeout=settings.oidc_timeout_seconds,
    )
    try:
        await asyncio.wait_for(oidc.metadata(fresh=True), settings.oidc_timeout_seconds * 2)
    except Exception as exc:
        return None, f"BFF_OIDC_ISSUER ({settings.oidc_issuer}): {_reason(exc)}"
    finally:
        await oidc.aclose()
    return None, None


async def _log_startup_checks(resources: Resources) -> None:
    """One line per part at startup, so a misconfiguration shows before the first request fails."""
    settings = resources.settings
    for origin in dict.fromkeys([*settings.cors_origins, *settings.login_return_origins]):
        for problem in settings.cookie_problems(origin):
            log.warning("browser origin %s cannot sign in: %s", origin, problem)
    if settings.env == "production" and settings.metrics_token is None:
        log.warning("/metrics is public: set BFF_METRICS_TOKEN (scrape with a bearer token) or block it at the proxy")
    try:
        checks = await check_parts(resources)
    except Exception as exc:  # a diagnostic must never take the server down
        log.warning("startup checks failed: %s", type(exc).__name__)
        return
    for check in checks:
        (log.info if check.status == "ok" else log.warning)("%s: %s", check.part, check.detail)


def session_crypto(settings: Settings) -> SessionCrypto:
    if settings.session_secret is None:
        log.warning(
            "BFF_SESSION_SECRET is not set: using a random secret; sessions will not survive a "
            "restart nor be shared between replicas"
        )
        current = secrets.token_urlsafe(32)
    else:
        current = settings.session_secret.get_secret_value()
    previous = [s.get_secret_value() for s in settings.session_previous_secrets]
    return SessionCrypto([current, *previous])


def session_store(settings: Settings, crypto: SessionCrypto, metrics: Metrics | None = None) -> SessionStore:
    limits: dict[str, Any] = {
        "idle_seconds": settings.session_idle_timeout_seconds,
        "absolute_seconds": settings.session_absolute_timeout_seconds,
        "metrics": metrics,
        "recent_seconds": settings.session_cache_seconds,
    }
    url = settings.session_store
    if url == "memory":
        return MemorySessionStore(crypto, **limits)
    if url.startswith(("redis://", "rediss://", "redis+cluster://", "unix://")):
        return RedisSessionStore(url, crypto, timeout=settings.session_store_timeout_seconds, **limits)
    raise ValueError(f"unsupported BFF_SESSION_STORE {url!r}: use memory, redis://… or redis+cluster://…")


def upstream_client(
    upstream: UpstreamSettings,
    transport: httpx.AsyncBaseTransport | None = None,
    *,
    traced: bool = False,
    implementation: str = "h1",
) -> HTTPClient:
    """One pooled, keep-alive client per upstream for the whole process.

    Our HTTP/1.1 pool (`bff.upstream.h1`; ``BFF_UPSTREAM_CLIENT=aiohttp``: aiohttp directly) unless
    a test transport is given, OpenTelemetry is on (its spans come from httpx's instrumentation) or
    ``BFF_UPSTREAM_CLIENT=httpx``; then httpx with aiohttp's pool behind it (`bff.upstream.transport`)."""
    if transport is None and not traced and implementation in ("aiohttp", "h1"):
        return (H1Upstream if implementation == "h1" else AiohttpUpstream)(
            upstream.url,
            timeout=upstream.timeout_seconds,
            max_connections=upstream.max_connections,  # aiohttp keeps idle connections up to this
        )
    limits = httpx.Limits(
        max_connections=upstream.max_connections,
        max_keepalive_connections=upstream.max_keepalive_connections,
    )
    transport = transport or UpstreamTransport(limits=limits, trust_env=False)
    return httpx.AsyncClient(
        base_url=upstream.url,
        timeout=httpx.Timeout(upstream.timeout_seconds),
        limits=limits,
        transport=traced_transport(transport) if traced else transport,
        follow_redirects=False,
    )


def token_targets(settings: Settings) -> dict[str, TokenTarget]:
    """The upstreams that get a token of their own (BFF_UPSTREAMS__<NAME>__RESOURCE, __SCOPES,
    __AUDIENCE, __TOKEN_EXCHANGE), by name; every other upstream gets the session's token."""
    return {
        name: TokenTarget(
            resource=upstream.resource,
            scopes=upstream.scopes,
            audience=upstream.audience,
            exchange=upstream.token_exchange,
        )
        for name, upstream in settings.upstreams.items()
        if upstream.own_token
    }


@contextlib.asynccontextmanager
async def open_resources(
    settings: Settings,
    *,
    transports: Mapping[str, httpx.AsyncBaseTransport] | None = None,
    log_checks: bool = True,
) -> AsyncIterator[Resources]:
    """``transports`` (tests): per-upstream or ``"oidc"`` transports replacing real sockets;
    ``log_checks``: check the store, the IdP and the upstreams once, in the background, and log it."""
    transports = transports or {}
    metrics = Metrics()
    crypto = session_crypto(settings)
    store = session_store(settings, crypto, metrics)
    startup: asyncio.Task[None] | None = None
    pauses = GCPauses(metrics.gc_pause)
    resources = Resources(
        settings=settings,
        metrics=metrics,
        crypto=crypto,
        store=store,
        streaming=StreamPolicy.of(settings),
        requests=RequestPolicy.of(settings),
        login=LoginConfig.of(settings),
        metrics_token=settings.metrics_token.get_secret_value() if settings.metrics_token else None,
        breakers=circuit_breakers(settings.breaker_threshold, settings.breaker_cooldown_seconds),
        rejections=RejectionCooldown(settings.upstream_unauthorized_cooldown_seconds),
        streams=ClientStreamRegistry(
            store,
            metrics,
            per_session=settings.streams_per_session,
            per_process=settings.streams_per_process,
            anonymous_share=settings.streams_anonymous_share,
            anonymous_per_address=settings.streams_anonymous_per_address,
            keep_alive=settings.stream_keeps_session_alive,
            recheck_seconds=settings.stream_recheck_seconds,
        ),
    )
    pauses.install()
    try:
        if isinstance(store, RedisSessionStore):
            # warn early about settings that lose sessions, and about a skewed clock
            with contextlib.suppress(StoreUnavailable):
                await store.check_configuration()
                await store.sync_clock()
        for name, upstream in settings.upstreams.items():
            resources.upstreams[name] = upstream_client(
                upstream,
                transports.get(name),
                traced=settings.otel_enabled,
                implementation=settings.upstream_client,
            )
        if settings.oidc_configured:
            assert settings.oidc_issuer is not None
            assert settings.oidc_client_id is not None
            secret = settings.oidc_client_secret
            targets = token_targets(settings)
            resources.oidc = OIDCClient(
                issuer=settings.oidc_issuer,
                client_id=settings.oidc_client_id,
                client_secret=secret.get_secret_value() if secret else "",
                auth_method=settings.oidc_client_auth_method,
                scopes=settings.oidc_scopes,
                timeout=settings.oidc_timeout_seconds,
                resources=tuple(dict.fromkeys(t.resource for t in targets.values() if t.resource)),
                transport=transports.get("oidc"),
                clock=store.now,
            )
            resources.service_tokens = ServiceTokens(resources.oidc, buffer_seconds=settings.refresh_buffer_seconds)
            resources.tokens = TokenManager(
                store,
                resources.oidc,
                metrics,
                buffer_seconds=settings.refresh_buffer_seconds,
                wait_seconds=settings.oidc_timeout_seconds,
                refresh_deadline=settings.refresh_deadline_seconds,
                usable_margin=settings.refresh_usable_margin_seconds,
                lease_seconds=settings.refresh_claim_lease_seconds,
                overdue_seconds=settings.refresh_overdue_seconds,
                reuse_grace_seconds=settings.oidc_refresh_reuse_grace_seconds,
                targets=targets,
            )
        startup = asyncio.create_task(_log_startup_checks(resources)) if log_checks else None
        yield resources
    finally:
        pauses.remove()
        if resources.streams is not None:
            await resources.streams.shutdown()
        if startup is not None:
            startup.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await startup
        if resources.tokens is not None:
            await resources.tokens.close()
        for client in resources.upstreams.values():
            await client.aclose()
        if resources.oidc is not None:
            await resources.oidc.aclose()
        await store.close()
