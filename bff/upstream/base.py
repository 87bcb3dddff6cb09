"""The shared part of upstream clients: bearer tokens, one 401 retry, the request deadline, a
retry on connect errors for idempotent calls, a circuit breaker per upstream, error mapping, metrics.

Transport errors are translated to the `bff.errors` tree in ONE place (`UpstreamClient.translated`),
after httpx's own `map_httpcore_exceptions`; answers' statuses in another (`_checked`, `_refusal`).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from typing import Any, Protocol, TypeVar, cast

import httpx
from purgatory import AsyncCircuitBreakerFactory
from purgatory.domain.model import OpenedState
from purgatory.service._async.circuitbreaker import AsyncCircuitBreaker

from bff.auth.step_up import step_up_challenge
from bff.errors import StepUpRequired, Unauthenticated, UpstreamError, UpstreamTimeout, UpstreamUnauthorized
from bff.metrics import Metrics
from bff.upstream.aio import AiohttpUpstream, UpstreamResponse

#: an app-wide pooled client: aiohttp directly in production, httpx for tests and OpenTelemetry
HTTPClient = httpx.AsyncClient | AiohttpUpstream
Response = httpx.Response | UpstreamResponse
T = TypeVar("T")
log = logging.getLogger("bff")
#: the connect retry's wait: 50 ms plus up to 50 ms of jitter
_RETRY_WAIT, _RETRY_JITTER = 0.05, 0.05


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


class ProofSource(Protocol):
    """Optional side of a `TokenSource` for sender-constrained tokens (DPoP, RFC 9449): the headers
    that carry a bound token to a URL (``Authorization: DPoP …`` and a ``DPoP`` proof); other tokens go
    as bearer tokens. The upstream client stays ignorant of keys and proofs."""

    def binds(self, token: str) -> bool:
        """Whether ``token`` is sender-constrained (cheap: asked on every call before anything else)."""
        ...

    def authorization(self, token: str, method: str, url: str) -> dict[str, str]:
        """The headers that carry a bound ``token`` to ``url``."""
        ...

    def remember_nonce(self, url: str, nonce: str) -> None:
        """The upstream demanded this DPoP nonce (``use_dpop_nonce``); the next proof carries it."""
        ...


def _nonce_challenge(response: Response) -> str | None:
    """The nonce of a 401 ``WWW-Authenticate: DPoP error="use_dpop_nonce"`` (RFC 9449 section 9)."""
    if response.status_code != 401 or "use_dpop_nonce" not in (response.headers.get("www-authenticate") or ""):
        return None
    nonce = response.headers.get("dpop-nonce")
    return str(nonce) if nonce else None


def _header_values(response: Response, name: str) -> list[str]:
    """Every value of header ``name`` (several ``WWW-Authenticate`` lines stay apart), for httpx's
    and aiohttp's header mappings alike."""
    headers: Any = response.headers
    for many in ("get_list", "getall"):
        method = getattr(headers, many, None)
        if method is not None:
            return [str(value) for value in method(name, [])] if many == "getall" else list(method(name))
    value = headers.get(name)
    return [str(value)] if value else []


def _step_up(upstream: str, response: Response) -> StepUpRequired | None:
    """A 401 or 403 carrying an RFC 9470 challenge (``error="insufficient_user_authentication"``):
    the token is fine but its sign-in was not strong or recent enough. Not a refusal of the token:
    no refresh, no retry, the session is kept; the client is told to sign in again (the GraphQL
    layer fills in `StepUpRequired.login`). A malformed challenge is an ordinary refusal."""
    if response.status_code not in (401, 403):
        return None
    asked = step_up_challenge(_header_values(response, "www-authenticate"))
    if asked is None:
        return None
    return StepUpRequired(
        f"Upstream {upstream!r} asks for a stronger sign-in",
        acr_values=asked.acr_values,
        max_age=asked.max_age,
        upstream=upstream,
    )


def circuit_breakers(threshold: int = 5, cooldown: float = 10.0) -> AsyncCircuitBreakerFactory:
    """One factory per app: a breaker per upstream opens after ``threshold`` consecutive failures
    (unreachable, timeout, 5xx), fails fast for ``cooldown`` seconds, then lets one probe through.
    Refusals that say nothing about the upstream's health (4xx, 401) do not count."""
    return _Breakers(
        default_threshold=threshold,
        default_ttl=cooldown,
        # a cancelled call (a sibling nulled by an error, a client gone) says nothing about health
        exclude=[
            (UpstreamError, lambda exc: exc.status is not None and exc.status < 500),
            Unauthenticated,
            asyncio.CancelledError,
        ],
    )


class _Breakers(AsyncCircuitBreakerFactory):
    """purgatory's factory, each upstream's breaker kept once made. With the in-memory repository
    (ours) ``get_breaker`` answers the same breaker state every time, through a unit of work, two
    awaits and a new wrapper per upstream call (issue 26); the wrapper holds no state of a call."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._known: dict[str, AsyncCircuitBreaker] = {}

    def known(self, circuit: str) -> AsyncCircuitBreaker | None:
        return self._known.get(circuit)

    async def get_breaker(
        self, circuit: str, threshold: Any = None, ttl: Any = None, exclude: Any = None
    ) -> AsyncCircuitBreaker:
        if threshold is not None or ttl is not None or exclude is not None:
            return await super().get_breaker(circuit, threshold, ttl, exclude)
        breaker = self._known.get(circuit)
        if breaker is None:
            breaker = self._known[circuit] = await super().get_breaker(circuit)
        return breaker


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
        self._http = http
        self._tokens = tokens
        self._metrics = metrics
        self._breakers = breakers
        self._deadline = deadline  # time.monotonic() by which the whole GraphQL request must end
        self._retry_connect_errors = retry_connect_errors
        self._rejections = rejections
        self._principal = principal  # whose token (a session's hash): the key of the 401 cooldown
        #: DPoP-bound tokens: the token source that makes their proofs (None: bearer tokens only)
        self._proofs = cast("ProofSource | None", tokens if hasattr(tokens, "authorization") else None)

    async def _request(self, method: str, url: str, *, idempotent: bool | None = None, **kwargs: Any) -> Response:
        """Send with the user's bearer token; on 401 refresh once and retry once. If the fresh token
        is refused too, `UpstreamUnauthorized` (the session is kept) and a cooldown starts."""
        retry = (
            method in ("GET", "HEAD", "OPTIONS") if idempotent is None else idempotent
        ) and self._retry_connect_errors
        # `_authorized` and `_attempts` written out for the call every resolver makes: each closure
        # and coroutine level they add costs on every upstream call (issue 26)
        tokens = self._tokens
        if tokens is None:
            return await self._attempt(retry, method, url, None, kwargs)
        token = await tokens.access_token()
        try:
            return await self._attempt(retry, method, url, token, kwargs)
        except UpstreamUnauthorized:
            token = await self._after_refusal(token)
        try:
            return await self._attempt(retry, method, url, token, kwargs)
        except UpstreamUnauthorized:
            raise self._refused_again() from None

    async def _attempt(self, retry: bool, method: str, url: str, token: str | None, kwargs: dict[str, Any]) -> Response:
        """`_attempts` of `_send` without the closures."""
        send = self._send if self._proofs is not None else self._send_once
        if not retry:
            return await send(method, url, token, **kwargs)
        try:
            return await send(method, url, token, **kwargs)
        except _ConnectFailed as exc:
            log.info("%s; retrying once", exc)
            await asyncio.sleep(_RETRY_WAIT + random.random() * _RETRY_JITTER)  # noqa: S311 - jitter, not a secret
        return await send(method, url, token, **kwargs)

    @contextlib.asynccontextmanager
    async def _stream(
        self, method: str, url: str, *, idle_timeout: float | None, **kwargs: Any
    ) -> AsyncIterator[httpx.Response]:
        """An answer read as it arrives (Server-Sent Events, see `bff.upstream.sse`). Opening it is
        a request like any other: the token with one refresh on 401, a retry if the connection was
        never made, the breaker, the deadline, metrics. Once open, the deadline no longer applies:
        ``idle_timeout`` bounds each wait for more of the body (None: no bound); read it inside
        `translated` so that a broken stream becomes an `UpstreamError` too."""

        retry = method in ("GET", "HEAD", "OPTIONS") and self._retry_connect_errors

        async def send(token: str | None) -> tuple[httpx.Response, contextlib.AsyncExitStack]:
            return await self._attempts(retry, lambda: self._open(method, url, token, idle_timeout, **kwargs))

        response, opened = await self._authorized(send)
        async with opened:
            yield response

    async def _authorized(self, send: Callable[[str | None], Awaitable[T]]) -> T:
        if self._tokens is None:
            return await send(None)
        token = await self._tokens.access_token()
        try:
            return await send(token)
        except UpstreamUnauthorized:
            token = await self._after_refusal(token)
        try:
            return await send(token)
        except UpstreamUnauthorized:
            raise self._refused_again() from None

    async def _after_refusal(self, token: str | None) -> str | None:
        """The token to send once more after an upstream refused ``token`` (a forced refresh), or
        the error that ends the call: no user, or this upstream cooling down for this user."""
        if token is None:
            raise Unauthenticated(f"Upstream {self.name!r} requires a signed-in user") from None
        if self._cooling():
            raise self._refused() from None
        assert self._tokens is not None
        return await self._tokens.refreshed_access_token(token)

    def _refused_again(self) -> UpstreamUnauthorized:
        """A fresh token refused too: the cooldown starts, and the call fails."""
        if self._rejections is not None and self._principal is not None:
            self._rejections.start(self.name, self._principal)
        return self._refused()

    def _cooling(self) -> bool:
        return (
            self._rejections is not None
            and self._principal is not None
            and self._rejections.cooling(self.name, self._principal)
        )

    def _refused(self) -> UpstreamUnauthorized:
        return UpstreamUnauthorized(self.name, f"Upstream {self.name!r} refused the session's token", status=401)

    @staticmethod
    async def _attempts(retry: bool, send: Callable[[], Awaitable[T]]) -> T:
        """One retry after 50-100 ms, only when the connection was never made (nothing reached the
        upstream). A plain loop by hand: stamina's retry context built a tenacity controller (with
        a Condition, an RLock and a thread-local) for every upstream call, ~5 % of a worker's CPU
        on the viewer query, for one fixed retry."""
        if not retry:
            return await send()
        try:
            return await send()
        except _ConnectFailed as exc:
            log.info("%s; retrying once", exc)
            await asyncio.sleep(_RETRY_WAIT + random.random() * _RETRY_JITTER)  # noqa: S311 - jitter, not a secret
        return await send()

    async def _enter_breaker(self) -> AsyncCircuitBreaker | None:
        """The upstream's breaker, entered (the caller exits it with the outcome); `UpstreamError`
        at once while it is open."""
        if self._breakers is None:
            return None
        breakers = self._breakers
        known = breakers.known(self.name) if isinstance(breakers, _Breakers) else None
        breaker = known if known is not None else await breakers.get_breaker(self.name)
        try:
            await breaker.__aenter__()
        except OpenedState:
            raise UpstreamError(self.name, f"Upstream {self.name!r} is failing; not calling it for a while") from None
        return breaker

    def _remaining(self) -> float | None:
        if self._deadline is None:
            return None
        remaining = self._deadline - time.monotonic()
        if remaining <= 0:
            raise UpstreamTimeout(self.name, "The request's deadline passed before the upstream call")
        return remaining

    def _timeout(self) -> float | None:
        """Seconds this call may take (every client takes a float: httpx applies it to each phase)."""
        remaining = self._remaining()
        if remaining is None:
            return None
        configured = self._http.timeout.read or remaining
        return min(configured, remaining)

    @contextlib.contextmanager
    def _translated(self) -> Iterator[None]:
        """The one translation of transport errors (httpx's, which `bff.upstream.aio` raises too)
        into the `bff.errors` tree, for requests and for reading streams."""
        try:
            yield
        except httpx.HTTPError as exc:
            raise self._translate(exc) from exc

    def _translate(self, exc: httpx.HTTPError) -> UpstreamError:
        if isinstance(exc, httpx.TimeoutException):
            return UpstreamTimeout(self.name, f"Upstream {self.name!r} timed out")
        if isinstance(exc, httpx.ConnectError):
            return _ConnectFailed(self.name, f"Upstream {self.name!r} is unreachable")
        return UpstreamError(self.name, f"Upstream {self.name!r} failed ({type(exc).__name__})")

    @contextlib.asynccontextmanager
    async def _exchange(self) -> AsyncIterator[list[str]]:
        """Breaker, metrics and error translation around opening a stream (`_send` does the same
        written out); the caller puts the answer's status in the yielded list (a 5xx counts as a
        failure of the breaker)."""
        started = time.perf_counter()
        status = ["error"]
        try:
            breaker = await self._enter_breaker()
            try:
                try:
                    with self._translated():
                        yield status
                except UpstreamTimeout:
                    status[0] = "timeout"
                    raise
            except BaseException as exc:
                await self._leave_breaker(breaker, exc)
                raise
            await self._leave_breaker(breaker, None)
        finally:
            self._observe(status[0], started)

    @staticmethod
    async def _leave_breaker(breaker: AsyncCircuitBreaker | None, exc: BaseException | None) -> None:
        """Tell the breaker entered by `_enter_breaker` how the call ended (``exc``: it failed)."""
        if breaker is not None:
            await breaker.__aexit__(type(exc) if exc else None, exc, exc.__traceback__ if exc else None)

    def _observe(self, status: str, started: float) -> None:
        if self._metrics is not None:
            elapsed = time.perf_counter() - started
            self._metrics.child(self._metrics.upstream_duration, self.name, status).observe(elapsed)

    def _headers(self, token: str | None, kwargs: dict[str, Any], method: str = "GET", url: str = "") -> dict[str, str]:
        headers = dict(kwargs.pop("headers", None) or {})
        if token is not None:
            if self._proofs is not None and self._proofs.binds(token):
                headers.update(self._proofs.authorization(token, method, self._absolute(url)))
            else:
                headers["Authorization"] = f"Bearer {token}"
        return headers

    def _absolute(self, url: str) -> str:
        """The URL a request goes to (a DPoP proof names it)."""
        if isinstance(self._http, httpx.AsyncClient):
            return str(self._http.build_request("GET", url).url)
        return self._http.absolute_url(url)

    def _checked(self, status_code: int) -> None:
        if status_code >= 500:
            raise UpstreamError(self.name, f"Upstream {self.name!r} answered HTTP {status_code}", status=status_code)

    def _refusal(self, response: Response) -> UpstreamError | StepUpRequired | None:
        status_code = response.status_code
        if status_code < 400:
            return None
        step_up = _step_up(self.name, response)
        if step_up is not None:
            return step_up
        if status_code == 401:
            return UpstreamUnauthorized(self.name, status=401)
        return UpstreamError(self.name, f"Upstream {self.name!r} answered HTTP {status_code}", status=status_code)

    async def _send(self, method: str, url: str, token: str | None, **kwargs: Any) -> Response:
        """`_exchange` written out for the common case (no breaker open, no error): every upstream
        call runs it, and each context manager costs a generator and a reference cycle. A DPoP
        upstream that demands a nonce gets the request once more with it (nothing was done: a 401)."""
        if self._proofs is None or token is None or not self._proofs.binds(token):
            return await self._send_once(method, url, token, **kwargs)
        try:
            return await self._send_once(method, url, token, **kwargs)
        except _NonceRequired as demanded:
            self._proofs.remember_nonce(self._absolute(url), demanded.nonce)
        return await self._send_once(method, url, token, **kwargs)

    async def _send_once(self, method: str, url: str, token: str | None, **kwargs: Any) -> Response:
        headers = self._headers(token, kwargs, method, url)
        timeout = self._timeout()
        if timeout is not None:
            kwargs["timeout"] = timeout
        started = time.perf_counter()
        label = "error"
        try:
            breaker = await self._enter_breaker()
            try:
                try:
                    response: Response = await self._http.request(method, url, headers=headers, **kwargs)
                except httpx.HTTPError as exc:
                    label = "timeout" if isinstance(exc, httpx.TimeoutException) else "error"
                    raise self._translate(exc) from exc
                label = str(response.status_code)
                self._checked(response.status_code)
            except BaseException as exc:
                await self._leave_breaker(breaker, exc)
                raise
            await self._leave_breaker(breaker, None)
        finally:
            self._observe(label, started)
        if response.status_code >= 400:
            if self._proofs is not None and (nonce := _nonce_challenge(response)) is not None:
                raise _NonceRequired(self.name, nonce)
            refusal = self._refusal(response)
            if refusal is not None:
                raise refusal
        return response

    async def _open(
        self, method: str, url: str, token: str | None, idle_timeout: float | None, **kwargs: Any
    ) -> tuple[httpx.Response, contextlib.AsyncExitStack]:
        headers = self._headers(token, kwargs, method, url)
        remaining = self._remaining()  # the deadline bounds opening the stream, not reading it
        connect = self._http.timeout.connect
        if remaining is not None:
            connect = remaining if connect is None else min(connect, remaining)
        timeout = httpx.Timeout(connect, read=idle_timeout)
        opened = contextlib.AsyncExitStack()
        try:
            async with self._exchange() as status:
                response = await opened.enter_async_context(
                    self._http.stream(method, url, headers=headers, timeout=timeout, **kwargs)
                )
                status[0] = str(response.status_code)
                self._checked(response.status_code)
            refusal = self._refusal(response)
            if refusal is not None:
                raise refusal
        except BaseException:
            await opened.aclose()
            raise
        return response, opened

    def _json(self, response: Response) -> Any:
        try:
            return response.json()
        except ValueError:
            raise UpstreamError(self.name, f"Upstream {self.name!r} sent invalid JSON") from None


class _ConnectFailed(UpstreamError):
    """The connection was never made: safe to retry an idempotent call."""


class _NonceRequired(UpstreamUnauthorized):
    """A DPoP upstream answered 401 ``use_dpop_nonce``: send again once with its nonce."""

    def __init__(self, upstream: str, nonce: str) -> None:
        super().__init__(upstream, status=401)
        self.nonce = nonce
