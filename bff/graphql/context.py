"""The per-request GraphQL context: the session, its fresh token (at most once), upstream clients
and DataLoaders. Cheap to build: nothing is read until a resolver asks.

The context is what a team's resolvers hold, so its public names reach no token, no session id, no
secret, no store and no `Settings`: the user is a frozen `User`, the request a `ClientRequest` without
its cookies and credentials, and the token source behind the upstream clients a private object
(`tests/graphql/test_surface.py` walks every public name to prove it)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import warnings
from collections.abc import AsyncGenerator, AsyncIterator, Callable, Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any, NoReturn, TypeVar

from starlette.datastructures import Headers
from starlette.requests import HTTPConnection
from starlette.responses import Response
from strawberry.dataloader import DataLoader

from bff.auth.dpop import DPoPKey
from bff.auth.step_up import login_url, referer_return_to
from bff.errors import AuthProviderUnavailable, StepUpRequired, StoreUnavailable, Unauthenticated, UpstreamError
from bff.resources import Resources
from bff.sessions.cookies import CookiePolicy
from bff.sessions.models import Session, TokenSet, User
from bff.tasks import shared_task
from bff.upstream import Backoff, GraphQLClient, RestClient, TokenSource, UpstreamEvent, follow

L = TypeVar("L", bound=DataLoader[Any, Any])
T = TypeVar("T")
log = logging.getLogger("bff")


#: request headers a resolver never sees: the session's credentials travel in them
_WITHHELD = frozenset({"cookie", "authorization", "proxy-authorization", "x-bff-csrf"})


@dataclass(frozen=True, slots=True)
class ClientRequest:
    """What a resolver may know of the request it serves: its method, path, client address and
    headers, without the cookies and credentials that carry the session (`Context.request`)."""

    method: str
    path: str
    headers: Headers
    client: str | None

    @classmethod
    def of(cls, connection: HTTPConnection) -> ClientRequest:
        raw = [(k, v) for k, v in connection.headers.raw if k.decode("latin-1").lower() not in _WITHHELD]
        method = connection.scope.get("method", "GET")
        client = connection.client.host if connection.client else None
        return cls(method=method, path=connection.url.path, headers=Headers(raw=raw), client=client)


class Context:
    """What a resolver gets as ``info.context``: the user, upstream clients by name, per-request
    DataLoaders, the request (a `ClientRequest`) and a response whose headers it may set."""

    def __init__(
        self,
        resources: Resources,
        session_id: str | None,
        *,
        cookie: CookiePolicy | None,
        request_id: str,
        connection: HTTPConnection | None = None,
        response: Response | None = None,
        connection_params: Mapping[str, Any] | None = None,
    ) -> None:
        self._resources = resources
        self._session_id = session_id
        self.request_id = request_id
        #: the real request, for the access log (`request.state`); resolvers see `request`
        self._connection = connection
        self._request_view: ClientRequest | None = None
        #: the sub-response: headers a resolver sets here go out with the answer (HTTP only)
        self.response = response
        #: graphql-transport-ws ``connection_init`` payload, without the session credential
        self.connection_params: Mapping[str, Any] | None = (
            None
            if connection_params is None
            else MappingProxyType({k: v for k, v in connection_params.items() if str(k).lower() not in _WITHHELD})
        )
        self._cookie = cookie  # None unless a session cookie was presented (not a header, not nothing)
        self._session_task: asyncio.Future[Session | None] | None = None
        #: per token (None: the session's; else the upstream slot, `TokenManager.slot`): the task that
        #: made it fresh for this request
        self._fresh: dict[str | None, asyncio.Future[Session]] = {}
        #: DPoP-bound tokens handed out in this request, and the session key that proves them
        self._bound: dict[str, DPoPKey] = {}
        self._clients: dict[str, Any] = {}
        self._loaders: dict[str, Any] = {}
        self._cookie_cleared = False
        # every upstream call of this request must end by then (each call's timeout is bounded by it);
        # None after `renew`: a stream's event, whose deadline starts with its first upstream call
        self._deadline: float | None = time.monotonic() + resources.requests.timeout_seconds
        #: whether reading the session counts as activity (a stream's reads only if configured so)
        self.touch = True
        #: the authorization decisions of the operation running in this context, by operation
        #: (`bff.graphql.authorization`): decided once, before any guarded field resolves
        self._authz: dict[int, Any] = {}
        #: the `User` of the session read last (resolvers and the authorization ask for it)
        self._user: tuple[Session, User] | None = None

    @property
    def deadline(self) -> float:
        """``time.monotonic()`` by which the request's upstream calls must end. For a stream's
        event whose fields have made no upstream call yet: what it would be if one started now."""
        deadline = self._deadline
        return self._deadline_from_now() if deadline is None else deadline

    def _deadline_from_now(self) -> float:
        return time.monotonic() + self._resources.requests.timeout_seconds

    @property
    def request(self) -> ClientRequest | None:
        """The request (for a subscription over WebSocket: the upgrade request), without the
        cookies and credentials that carry the session."""
        if self._request_view is None and self._connection is not None:
            self._request_view = ClientRequest.of(self._connection)
        return self._request_view

    @property
    def resources(self) -> NoReturn:
        """Removed in 0.3 (it was the whole runtime: store, OIDC client, cookie signer, settings)."""
        raise AttributeError(
            "Context.resources was removed in 0.3: a resolver reaches upstreams through "
            "info.context.rest(name) / graphql(name) and the user through await info.context.user()"
        )

    # session -----------------------------------------------------------------------------------
    async def session(self) -> User | None:
        """Deprecated since 0.3 (it returned the stored session, tokens included): `user`."""
        warnings.warn(
            "Context.session() is deprecated: use `await info.context.user()` (a bff.User, without tokens)",
            DeprecationWarning,
            stacklevel=2,
        )
        return await self.user()

    async def _session(self) -> Session | None:
        """The stored session, read once per request."""
        if self._session_id is None:
            return None
        task = self._session_task
        if task is None:
            known = self._resources.store.recent(self._session_id, touch=self.touch)
            if known is not None:  # this process's copy: no task, no store call (issue 26)
                self._session_task = _settled(self._noted(self._session_id, known))
                return known
            task = self._session_task = shared_task(self._read_session(self._session_id))
        if task.done():
            return task.result()
        return await asyncio.shield(task)

    async def user(self) -> User | None:
        """The signed-in user (sub, name, email, profile claims), or None without a session. Read
        once per request; no token material. For a field that needs a user::

            user = await info.context.user()
            if user is None:
                raise Unauthenticated()
        """
        session = await self._session()
        if session is None:
            return None
        known = self._user
        if known is not None and known[0] is session:  # the same read: the same User
            return known[1]
        user = User.of(session, scopes_claim=self._resources.requests.scopes_claim)
        self._user = (session, user)
        return user

    async def _read_session(self, session_id: str) -> Session | None:
        session = await self._resources.store.get(session_id, touch=self.touch, recent=True)
        return None if session is None else self._noted(session_id, session)

    def _noted(self, session_id: str, session: Session) -> Session:
        if self._connection is not None:
            # for the access log: the subject and a hash of the id, never the id
            self._connection.state.user_sub = session.sub
            self._connection.state.session_hash = self._resources.crypto.fingerprint(session_id)
        return session

    async def _fresh_session(self, upstream: str | None = None) -> Session:
        """The session with a fresh access token (``upstream``: that upstream slot's own token):
        refreshed at most once per request, lazily."""
        task = self._fresh.get(upstream)
        if task is None:
            fresh = self._fresh_now(upstream)
            if fresh is not None:
                self._fresh[upstream] = _settled(fresh)
                return fresh
            task = self._fresh[upstream] = shared_task(self._freshen(None, upstream))
        if task.done():
            return task.result()
        return await asyncio.shield(task)

    def _fresh_now(self, upstream: str | None) -> Session | None:
        """`_freshen`'s answer when it needs no waiting: the session already read, its token good
        (the usual case: without a task per request and token; with the session read, ~2 % of a viewer
        request's instructions)."""
        read = self._session_task
        if read is None or not read.done() or read.cancelled() or read.exception() is not None:
            return None
        session = read.result()
        if session is None:
            return None
        tokens = self._resources.tokens
        return session if tokens is None else tokens.fresh_now(session, upstream=upstream)

    async def _freshen(self, rejected: str | None, upstream: str | None = None) -> Session:
        try:
            session = await self._session()
            if session is None:
                raise Unauthenticated()
            tokens = self._resources.tokens
            if tokens is None:
                return session
            return await tokens.ensure_fresh(session, upstream=upstream, rejected_token=rejected)
        except Unauthenticated:
            self.end_session()
            raise

    def _step_up_login(self, step_up: StepUpRequired) -> str:
        """The ready login URL of a ``STEP_UP_REQUIRED`` leaving this request
        (`bff.graphql.errors.complete_step_ups`): absolute, on ``BFF_PUBLIC_URL`` (an SPA on another
        origin follows it as it is), coming back to the page that made the request (its ``Referer``,
        when on the BFF's origin or one of ``BFF_LOGIN_RETURN_ORIGINS``; else ``/``)."""
        login = self._resources.login
        view = self.request
        referer = view.headers.get("referer") if view is not None else None
        return_to = referer_return_to(referer, public_origin=login.public_origin, return_origins=login.return_origins)
        base = login.redirect_uri.removesuffix("/auth/callback")  # BFF_PUBLIC_URL, path prefix included
        return login_url(base, acr_values=step_up.acr_values, max_age=step_up.max_age, return_to=return_to)

    def end_session(self) -> None:
        """Clear the cookie of a session that no longer exists (only if the browser sent one)."""
        if self._cookie is None or self.response is None or self._cookie_cleared:
            return
        self._cookie_cleared = True
        self.response.headers.append("set-cookie", self._cookie.clear())

    def renew(self) -> None:
        """Start over as if for a new request: the session is read again (its token made fresh
        again if due, through the same single-flight refresh as every request of the session),
        upstream clients and DataLoaders are new, and the upstream deadline starts again. A
        subscription's context is renewed before each event (`stream_results`) and before each
        connection of `events`.

        The deadline starts again with the event's first upstream call, not here: a stream renews
        its context before it waits for the next event, which may come any time later."""
        self.release()
        self._deadline = None

    def _event_started(self) -> None:
        """A subscription's source gave its next event (the compiled path calls this before it
        executes the event): the event's upstream calls get a deadline of their own, from their
        first call, whatever the source itself called while it waited (its clients are not
        reused)."""
        self._deadline = None
        self._clients.clear()
        self._loaders.clear()

    def release(self) -> None:
        """Let go of what the request built: its upstream clients and DataLoaders point back at
        the context (their token source, their load functions), so without this each request
        left ~130 objects in reference cycles (clients, loaders with their futures, the request)
        for the cyclic garbage collector, whose full collections under load then took 40-55 ms.
        Called once the answer is built; a resolver still running after it (a sibling cancelled by
        a null propagation) just builds what it needs again."""
        self._session_task = None
        self._user = None  # an open stream holds no session between its events (read again for each)
        self._authz.clear()  # decided again with the session read again: a scope lost ends a stream
        self._fresh.clear()
        self._bound.clear()
        self._clients.clear()
        self._loaders.clear()

    async def poll(
        self,
        upstream: str,
        path: str,
        *,
        interval: float,
        params: dict[str, Any] | None = None,
    ) -> AsyncIterator[Any]:
        """For a subscription over an upstream that has no stream: ``GET path`` on the REST
        ``upstream`` every ``interval`` seconds with the session's fresh token, yielding the JSON
        body whenever it differs from the last one yielded (the first answer is always yielded).

        Each poll renews the context (`renew`). `Unauthenticated` (no session, or the IdP refused
        the refresh) ends the iteration by propagating; an IdP or session-store outage, an
        upstream error or timeout skip that poll and try again after ``interval``::

            @strawberry.subscription
            async def order_status(self, info: Info[Context, None], id: strawberry.ID) -> AsyncIterator[str]:
                async for body in info.context.poll("accounts", f"/orders/{id}/status", interval=2):
                    yield body["status"]
        """
        unset = object()
        last: Any = unset
        while True:
            self.renew()
            try:
                body = await self.rest(upstream).get_json(path, params)
            except (AuthProviderUnavailable, StoreUnavailable, UpstreamError) as exc:
                if isinstance(exc, UpstreamError) and exc.code == "UPSTREAM_UNAUTHORIZED":
                    raise
                log.info("poll of %s %s skipped: %s", upstream, path, type(exc).__name__)
            else:
                if body != last:
                    last = body
                    yield body
            await asyncio.sleep(interval)

    async def events(
        self,
        upstream: str,
        path: str,
        *,
        params: dict[str, Any] | None = None,
        idle_timeout: float | None = 60.0,
        backoff: Backoff | None = None,
    ) -> AsyncGenerator[UpstreamEvent, None]:
        """For a subscription over an upstream that streams: ``GET path`` on the REST ``upstream``
        as Server-Sent Events with the session's fresh token, yielding each event (`UpstreamEvent`:
        ``event``, ``data`` parsed as JSON, ``id``) for as long as the subscription lasts.

        When the upstream ends its stream (as resource servers do when the token it was opened
        with expires) or it fails (unreachable, timeout, 5xx, an IdP or session-store outage), the
        context is renewed (`renew`: the session re-read, its token refreshed through the
        single-flight refresh if due) and the stream reopened with ``Last-Event-ID`` after a short
        `Backoff`, growing while attempts fail. A 401 on opening forces one refresh, as for every
        call. `Unauthenticated` (no session, or the IdP refused the refresh) and an upstream that
        refuses a fresh token (``UPSTREAM_UNAUTHORIZED``) end the iteration by propagating.
        ``idle_timeout``: seconds without a byte (events or comments) after which the stream is
        taken for dead and reopened::

            @strawberry.subscription
            async def order_status(self, info: Info[Context, None], id: strawberry.ID) -> AsyncIterator[str]:
                async for event in info.context.events("accounts", f"/orders/{id}/events"):
                    yield event.data["status"]
        """

        def connect(last_event_id: str | None) -> AsyncGenerator[UpstreamEvent, None]:
            self.renew()
            # a client of its own, with its own deadline (for opening the stream): the events' fields
            # get theirs from their first upstream call, whenever the event comes
            client = self._rest_client(upstream, own_deadline=True)
            return client.events(path, params, last_event_id=last_event_id, idle_timeout=idle_timeout)

        retry_on = (AuthProviderUnavailable, StoreUnavailable, UpstreamError)
        async with contextlib.aclosing(
            follow(connect, name=upstream, retry_on=retry_on, backoff=backoff or Backoff())
        ) as events:
            async for event in events:
                yield event

    # the upstream clients' token source (private: a resolver never holds a token) -----------------------
    async def _access_token(self, upstream: str | None = None) -> str:
        """The session's own access token, or (``upstream``) the token issued for that upstream slot
        (its resource, scopes, audience or exchange), never another upstream's."""
        session = await self._fresh_session(upstream)
        return self._handed_out(session, _tokens_for(session, upstream))

    def _handed_out(self, session: Session, tokens: TokenSet) -> str:
        """``tokens``' access token; a DPoP-bound one is remembered with its key for `authorization`."""
        token = tokens.access_token
        if session.dpop_key is not None and tokens.token_type.lower() == "dpop" and token not in self._bound:
            self._bound[token] = DPoPKey.from_jwk(session.dpop_key)
        return token

    # proofs (bff.upstream.base.ProofSource): DPoP-bound tokens go with a proof of the session's key
    def _binds(self, token: str) -> bool:
        return token in self._bound

    def _authorization(self, token: str, method: str, url: str) -> dict[str, str]:
        key = self._bound[token]
        nonce = self._resources.dpop_nonces.get(url)
        return {"Authorization": f"DPoP {token}", "DPoP": key.proof(method, url, access_token=token, nonce=nonce)}

    def _remember_nonce(self, url: str, nonce: str) -> None:
        self._resources.dpop_nonces.remember(url, nonce)

    async def _refreshed_access_token(self, rejected: str, upstream: str | None = None) -> str:
        """After an upstream 401: one forced refresh, shared by every resolver that saw it."""
        current = await self._fresh_session(upstream)
        if _tokens_for(current, upstream).access_token == rejected:
            task = self._fresh.get(upstream)
            if task is not None and task.done() and task.result() is current:
                self._fresh[upstream] = shared_task(self._freshen(rejected, upstream))
        return await self._access_token(upstream)

    def _upstream_tokens(self, name: str) -> TokenSource:
        anonymous = self._resources.requests.routes[name].anonymous
        manager = self._resources.tokens
        # its own token (shared with upstreams that ask for the same one), else the session's (None)
        source: TokenSource = _Token(self, None if manager is None else manager.slot(name))
        return source if anonymous == "deny" else _AnonymousAware(self, anonymous, source)

    # upstreams and loaders ---------------------------------------------------------------------
    def rest(self, name: str) -> RestClient:
        client = self._clients.get(name)
        if client is None:
            client = self._clients[name] = self._rest_client(name)
        return client

    def _rest_client(self, name: str, *, own_deadline: bool = False) -> RestClient:
        return RestClient(
            name,
            self._http(name),
            self._upstream_tokens(name),
            self._resources.metrics,
            **self._client_options(own_deadline=own_deadline),
        )

    def graphql(self, name: str) -> GraphQLClient:
        client = self._clients.get(name)
        if client is None:
            http = self._http(name)
            endpoint = self._resources.requests.routes[name].url
            client = GraphQLClient(
                name,
                http,
                self._upstream_tokens(name),
                self._resources.metrics,
                endpoint=endpoint,
                **self._client_options(),
            )
            self._clients[name] = client
        return client

    def _client_options(self, *, own_deadline: bool = False) -> dict[str, Any]:
        principal = self._resources.crypto.fingerprint(self._session_id) if self._session_id else None
        deadline = self._deadline
        if own_deadline:
            deadline = self._deadline_from_now()
        elif deadline is None:  # the first upstream call of a stream's event
            deadline = self._deadline = self._deadline_from_now()
        return {
            "breakers": self._resources.breakers,
            "deadline": deadline,
            "rejections": self._resources.rejections,
            "principal": principal,
        }

    def _http(self, name: str) -> Any:
        try:
            return self._resources.upstreams[name]
        except KeyError:
            log.warning("upstream %r is used but not configured (BFF_UPSTREAMS__%s__URL)", name, name.upper())
            raise UpstreamError(name, f"Upstream {name!r} is not configured") from None

    def loader(self, key: str, factory: Callable[[Context], L]) -> L:
        """A DataLoader for this request only, built on first use."""
        loader = self._loaders.get(key)
        if loader is None:
            loader = factory(self)
            self._loaders[key] = loader
        return loader


def _settled(value: T) -> asyncio.Future[T]:
    """A future already holding ``value``: what a shared task would have become, without the task."""
    future: asyncio.Future[T] = asyncio.get_running_loop().create_future()
    future.set_result(value)
    return future


def _tokens_for(session: Session, upstream: str | None) -> TokenSet:
    if upstream is None:
        return session.tokens
    tokens = session.upstream_tokens.get(upstream)
    if tokens is None:  # ensure_fresh returned without one: never fall back to another token
        raise AuthProviderUnavailable(f"no token for upstream {upstream!r}")
    return tokens


class _ContextProofs:
    """`bff.upstream.base.ProofSource` of a token source over the context: the context knows which
    tokens it handed out are DPoP-bound (never the BFF's own token) and proves them."""

    context: Context

    def binds(self, token: str) -> bool:
        return self.context._binds(token)

    def authorization(self, token: str, method: str, url: str) -> dict[str, str]:
        return self.context._authorization(token, method, url)

    def remember_nonce(self, url: str, nonce: str) -> None:
        self.context._remember_nonce(url, nonce)


class _Token(_ContextProofs):
    """The token source of an upstream: the session's token (``upstream`` None) or, for an upstream
    with a token of its own, only ever that token."""

    __slots__ = ("context", "upstream")

    def __init__(self, context: Context, upstream: str | None) -> None:
        self.context = context
        self.upstream = upstream

    async def access_token(self) -> str:
        return await self.context._access_token(self.upstream)

    async def refreshed_access_token(self, rejected: str) -> str:
        return await self.context._refreshed_access_token(rejected, self.upstream)


class _AnonymousAware(_ContextProofs):
    """An upstream that serves anonymous requests too: the user's token when there is a session,
    else the BFF's own token (``client_credentials``) or none at all (``none``)."""

    def __init__(self, context: Context, anonymous: str, user: TokenSource) -> None:
        self.context = context
        self.anonymous = anonymous
        self.user = user

    async def _anonymous(self) -> bool:
        return await self.context._session() is None

    async def access_token(self) -> str | None:
        if not await self._anonymous():
            return await self.user.access_token()
        service = self.context._resources.service_tokens
        if self.anonymous == "none" or service is None:
            return None
        return await service.access_token()

    async def refreshed_access_token(self, rejected: str) -> str | None:
        if not await self._anonymous():
            return await self.user.refreshed_access_token(rejected)
        service = self.context._resources.service_tokens
        if self.anonymous == "none" or service is None:
            raise Unauthenticated()
        service.invalidate(rejected)
        return await service.access_token()
