"""The shared part of upstream clients: bearer tokens, one 401 retry, the request deadline, a
retry on connect errors for idempotent calls, a circuit breaker per upstream, error mapping, metrics.

Transport and status errors are translated to the `bff.errors` tree in ONE place (`_send`),
after httpx's own `map_httpcore_exceptions`.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import AsyncIterator
from typing import Any, Protocol

import httpx
import stamina
from purgatory import AsyncCircuitBreakerFactory
from purgatory.domain.model import OpenedState

from bff.errors import Unauthenticated, UpstreamError, UpstreamTimeout, UpstreamUnauthorized
from bff.metrics import Metrics
from bff.upstream.aio import AiohttpUpstream, UpstreamResponse

#: an app-wide pooled client: aiohttp directly in production, httpx for tests and OpenTelemetry
HTTPClient = httpx.AsyncClient | AiohttpUpstream
Response = httpx.Response | UpstreamResponse


class RejectionCooldown:
    """Upstreams that refused a freshly refreshed token, per session: while one cools down, its 401s
    are answered ``UPSTREAM_UNAUTHORIZED`` at once instead of forcing more refreshes, so one
    misconfigured upstream cannot drive a refresh storm at the IdP. In-process; bounded."""

    _MAX_ENTRIES = 10_000

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds
        self._until: dict[tuple[str, str], float] = {}

    def cooling(self, upstream: str, principal: str) -> bool:
        until = self._until.get((upstream, principal))
        if until is None:
            return False
        if until <= time.monotonic():
            del self._until[(upstream, principal)]
            return False
        return True

    def start(self, upstream: str, principal: str) -> None:
        if self.seconds <= 0:
            return
        now = time.monotonic()
        if len(self._until) >= self._MAX_ENTRIES:
            self._until = {key: until for key, until in self._until.items() if until > now}
            if len(self._until) >= self._MAX_ENTRIES:
                self._until.pop(next(iter(self._until)))
        self._until[(upstream, principal)] = now + self.seconds


class TokenSource(Protocol):
    """What an upstream client asks for a bearer token (the GraphQL context implements it)."""

    async def access_token(self) -> str | None:
        """The current, fresh access token (None: call without one); raises `Unauthenticated`."""
        ...

    async def refreshed_access_token(self, rejected: str) -> str | None:
        """A new token after an upstream refused ``rejected`` (forces one refresh)."""
        ...


def circuit_breakers(threshold: int = 5, cooldown: float = 10.0) -> AsyncCircuitBreakerFactory:
    """One factory per app: a breaker per upstream opens after ``threshold`` consecutive failures
    (unreachable, timeout, 5xx), fails fast for ``cooldown`` seconds, then lets one probe through.
    Refusals that say nothing about the upstream's health (4xx, 401) do not count."""
    return AsyncCircuitBreakerFactory(
        default_threshold=threshold,
        default_ttl=cooldown,
        exclude=[(UpstreamError, lambda exc: exc.status is not None and exc.status < 500), Unauthenticated],
    )


class UpstreamClient:
    """One upstream, for one GraphQL request; cheap to build over an app-wide pooled client."""

    def __init__(
        self,
        name: str,
        http: HTTPClient,
        tokens: TokenSource | None,
        metrics: Metrics | None = None,
        *,
        breakers: AsyncCircuitBreakerFactory | None = None,
        deadline: float | None = None,
        retry_connect_errors: bool = True,
        rejections: RejectionCooldown | None = None,
        principal: str | None = None,
    ) -> None:
        self.name = name
        self.http = http
        self.tokens = tokens
        self.metrics = metrics
        self.breakers = breakers
        self.deadline = deadline  # time.monotonic() by which the whole GraphQL request must end
        self.retry_connect_errors = retry_connect_errors
        self.rejections = rejections
        self.principal = principal  # whose token (a session's hash): the key of the 401 cooldown

    async def request(self, method: str, url: str, *, idempotent: bool | None = None, **kwargs: Any) -> Response:
        """Send with the user's bearer token; on 401 refresh once and retry once. If the fresh token
        is refused too, `UpstreamUnauthorized` (the session is kept) and a cooldown starts."""
        idempotent = method in ("GET", "HEAD", "OPTIONS") if idempotent is None else idempotent
        if self.tokens is None:
            return await self._attempts(method, url, None, idempotent, **kwargs)
        token = await self.tokens.access_token()
        try:
            return await self._attempts(method, url, token, idempotent, **kwargs)
        except UpstreamUnauthorized:
            if token is None:
                raise Unauthenticated(f"Upstream {self.name!r} requires a signed-in user") from None
            if self._cooling():
                raise self._refused() from None
            token = await self.tokens.refreshed_access_token(token)
        try:
            return await self._attempts(method, url, token, idempotent, **kwargs)
        except UpstreamUnauthorized:
            if self.rejections is not None and self.principal is not None:
                self.rejections.start(self.name, self.principal)
            raise self._refused() from None

    def _cooling(self) -> bool:
        return (
            self.rejections is not None
            and self.principal is not None
            and self.rejections.cooling(self.name, self.principal)
        )

    def _refused(self) -> UpstreamUnauthorized:
        return UpstreamUnauthorized(self.name, f"Upstream {self.name!r} refused the session's token", status=401)

    async def _attempts(self, method: str, url: str, token: str | None, idempotent: bool, **kwargs: Any) -> Response:
        if not (idempotent and self.retry_connect_errors):
            return await self._send(method, url, token, **kwargs)
        # One retry with jitter, only when the connection was never made (nothing reached the upstream).
        async for attempt in stamina.retry_context(
            on=_ConnectFailed, attempts=2, wait_initial=0.05, wait_max=0.2, wait_jitter=0.05, timeout=None
        ):
            with attempt:
                return await self._send(method, url, token, **kwargs)
        raise AssertionError("unreachable")  # pragma: no cover

    @contextlib.asynccontextmanager
    async def _breaker(self) -> AsyncIterator[None]:
        if self.breakers is None:
            yield
            return
        try:
            breaker = await self.breakers.get_breaker(self.name)
            async with breaker:
                yield
        except OpenedState:
            raise UpstreamError(self.name, f"Upstream {self.name!r} is failing; not calling it for a while") from None

    def _timeout(self) -> httpx.Timeout | None:
        if self.deadline is None:
            return None
        remaining = self.deadline - time.monotonic()
        if remaining <= 0:
            raise UpstreamTimeout(self.name, "The request's deadline passed before the upstream call")
        configured = self.http.timeout.read or remaining
        return httpx.Timeout(min(configured, remaining))

    async def _send(self, method: str, url: str, token: str | None, **kwargs: Any) -> Response:
        headers = dict(kwargs.pop("headers", None) or {})
        if token is not None:
            headers["Authorization"] = f"Bearer {token}"
        timeout = self._timeout()
        if timeout is not None:
            kwargs["timeout"] = timeout
        started = time.perf_counter()
        status = "error"
        try:
            async with self._breaker():
                try:
                    response: Response = await self.http.request(method, url, headers=headers, **kwargs)
                except httpx.TimeoutException as exc:
                    status = "timeout"
                    raise UpstreamTimeout(self.name, f"Upstream {self.name!r} timed out") from exc
                except httpx.ConnectError as exc:
                    raise _ConnectFailed(self.name, f"Upstream {self.name!r} is unreachable") from exc
                except httpx.HTTPError as exc:
                    raise UpstreamError(self.name, f"Upstream {self.name!r} failed ({type(exc).__name__})") from exc
                status = str(response.status_code)
                if response.status_code >= 500:
                    raise UpstreamError(
                        self.name,
                        f"Upstream {self.name!r} answered HTTP {response.status_code}",
                        status=response.status_code,
                    )
        finally:
            if self.metrics is not None:
                self.metrics.upstream_duration.labels(self.name, status).observe(time.perf_counter() - started)
        if response.status_code == 401:
            raise UpstreamUnauthorized(self.name, status=401)
        if response.status_code >= 400:
            raise UpstreamError(
                self.name, f"Upstream {self.name!r} answered HTTP {response.status_code}", status=response.status_code
            )
        return response

    def json(self, response: Response) -> Any:
        try:
            return response.json()
        except ValueError:
            raise UpstreamError(self.name, f"Upstream {self.name!r} sent invalid JSON") from None


class _ConnectFailed(UpstreamError):
    """The connection was never made: safe to retry an idempotent call."""
