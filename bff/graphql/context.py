"""The per-request GraphQL context: the session, its fresh token (at most once), upstream clients
and DataLoaders. Cheap to build: nothing is read until a resolver asks."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncGenerator, AsyncIterator, Callable
from typing import Any, TypeVar

from strawberry.dataloader import DataLoader
from strawberry.fastapi import BaseContext

from bff.auth.dpop import DPoPKey
from bff.errors import AuthProviderUnavailable, StoreUnavailable, Unauthenticated, UpstreamError
from bff.resources import Resources
from bff.sessions.cookies import CookiePolicy
from bff.sessions.models import Session, TokenSet, User
from bff.tasks import shared_task
from bff.upstream import Backoff, GraphQLClient, RestClient, TokenSource, UpstreamEvent, follow

L = TypeVar("L", bound=DataLoader[Any, Any])
log = logging.getLogger("bff")


class Context(BaseContext):
    """Implements `bff.upstream.TokenSource` for the request's upstream clients."""

    def __init__(
        self,
        resources: Resources,
        session_id: str | None,
        *,
        cookie: CookiePolicy | None,
        request_id: str,
    ) -> None:
        super().__init__()
        self.resources = resources
        self.session_id = session_id
        self.request_id = request_id
        self._cookie = cookie  # None when the session came in an Authorization header
        self._session_task: asyncio.Task[Session | None] | None = None
        #: per token (None: the session's; else the upstream slot, `TokenManager.slot`): the task that
        #: made it fresh for this request
        self._fresh: dict[str | None, asyncio.Task[Session]] = {}
        #: DPoP-bound tokens handed out in this request, and the session key that proves them
        self._bound: dict[str, DPoPKey] = {}
        self._clients: dict[str, Any] = {}
        self._loaders: dict[str, Any] = {}
        self._cookie_cleared = False
        # every upstream call of this request must end by then (each call's timeout is bounded by it)
        self.deadline = time.monotonic() + resources.settings.request_timeout_seconds
        #: whether reading the session counts as activity (a stream's reads only if configured so)
        self.touch = True

    # session -----------------------------------------------------------------------------------
    async def session(self) -> Session | None:
        """The stored session, read once per request."""
        if self.session_id is None:
            return None
        if self._session_task is None:
            self._session_task = shared_task(self._read_session(self.session_id))
        return await asyncio.shield(self._session_task)

    async def user(self) -> User | None:
        """The signed-in user (sub, name, email, profile claims), or None without a session. Read
        once per request; no token material. For a field that needs a user::

            user = await info.context.user()
            if user is None:
                raise Unauthenticated()
        """
        session = await self.session()
        return None if session is None else User.of(session)

    async def _read_session(self, session_id: str) -> Session | None:
        session = await self.resources.store.get(session_id, touch=self.touch)
        if session is not None and self.request is not None:
            # for the access log: the subject and a hash of the id, never the id
            self.request.state.user_sub = session.sub
            self.request.state.session_hash = self.resources.crypto.fingerprint(session_id)
        return session

    async def fresh_session(self, upstream: str | None = None) -> Session:
        """The session with a fresh access token (``upstream``: that upstream slot's own token):
        refreshed at most once per request, lazily."""
        task = self._fresh.get(upstream)
        if task is None:
            task = self._fresh[upstream] = shared_task(self._freshen(None, upstream))
        return await asyncio.shield(task)

    async def _freshen(self, rejected: str | None, upstream: str | None = None) -> Session:
        try:
            session = await self.session()
            if session is None:
                raise Unauthenticated()
            tokens = self.resources.tokens
            if tokens is None:
                return session
            return await tokens.ensure_fresh(session, upstream=upstream, rejected_token=rejected)
        except Unauthenticated:
            self.end_session()
            raise

    def end_session(self) -> None:
        """Clear the cookie of a session that no longer exists (only if the browser sent one)."""
        if self._cookie is None or self.session_id is None or self.response is None or self._cookie_cleared:
            return
        self._cookie_cleared = True
        self.response.headers.append("set-cookie", self._cookie.clear())

    def renew(self) -> None:
        """Start over as if for a new request: the session is read again (its token made fresh
        again if due, through the same single-flight refresh as every request of the session),
        upstream clients and DataLoaders are new, and the upstream deadline starts again. A
        subscription's context is renewed before each event (`stream_results`) and before each
        connection of `events`."""
        self.release()
        self.deadline = time.monotonic() + self.resources.settings.request_timeout_seconds

    def release(self) -> None:
        """Let go of what the request built: its upstream clients and DataLoaders point back at
        the context (their token source, their load functions), so without this each request
        left ~130 objects in reference cycles (clients, loaders with their futures, the request)
        for the cyclic garbage collector, whose full collections under load then took 40-55 ms.
        Called once the answer is built; a resolver still running after it (a sibling cancelled by
        a null propagation) just builds what it needs again."""
        self._session_task = None
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
            return self.rest(upstream).events(path, params, last_event_id=last_event_id, idle_timeout=idle_timeout)

        retry_on = (AuthProviderUnavailable, StoreUnavailable, UpstreamError)
        async with contextlib.aclosing(
            follow(connect, name=upstream, retry_on=retry_on, backoff=backoff or Backoff())
        ) as events:
            async for event in events:
                yield event

    # TokenSource -------------------------------------------------------------------------------
    async def access_token(self, upstream: str | None = None) -> str:
        """The session's own access token, or (``upstream``) the token issued for that upstream slot
        (its resource, scopes, audience or exchange), never another upstream's."""
        session = await self.fresh_session(upstream)
        return self._handed_out(session, _tokens_for(session, upstream))

    def _handed_out(self, session: Session, tokens: TokenSet) -> str:
        """``tokens``' access token; a DPoP-bound one is remembered with its key for `authorization`."""
        token = tokens.access_token
        if session.dpop_key is not None and tokens.token_type.lower() == "dpop" and token not in self._bound:
            self._bound[token] = DPoPKey.from_jwk(session.dpop_key)
        return token

    # ProofSource (bff.upstream.base): DPoP-bound tokens go with a proof of the session's key
    def binds(self, token: str) -> bool:
        return token in self._bound

    def authorization(self, token: str, method: str, url: str) -> dict[str, str]:
        key = self._bound[token]
        nonce = self.resources.dpop_nonces.get(url)
        return {"Authorization": f"DPoP {token}", "DPoP": key.proof(method, url, access_token=token, nonce=nonce)}

    def remember_nonce(self, url: str, nonce: str) -> None:
        self.resources.dpop_nonces.remember(url, nonce)

    async def refreshed_access_token(self, rejected: str, upstream: str | None = None) -> str:
        """After an upstream 401: one forced refresh, shared by every resolver that saw it."""
        current = await self.fresh_session(upstream)
        if _tokens_for(current, upstream).access_token == rejected:
            task = self._fresh.get(upstream)
            if task is not None and task.done() and task.result() is current:
                self._fresh[upstream] = shared_task(self._freshen(rejected, upstream))
        return await self.access_token(upstream)

    def upstream_tokens(self, name: str) -> TokenSource:
        anonymous = self.resources.settings.upstreams[name].anonymous
        manager = self.resources.tokens
        source: TokenSource = self
        slot = None if manager is None else manager.slot(name)
        if slot is not None:  # its own token (shared with upstreams that ask for the same one)
            source = _UpstreamToken(self, slot)
        return source if anonymous == "deny" else _AnonymousAware(self, anonymous, source)

    # upstreams and loaders ---------------------------------------------------------------------
    def rest(self, name: str) -> RestClient:
        client = self._clients.get(name)
        if client is None:
            client = RestClient(
                name, self._http(name), self.upstream_tokens(name), self.resources.metrics, **self._client_options()
            )
            self._clients[name] = client
        return client

    def graphql(self, name: str) -> GraphQLClient:
        client = self._clients.get(name)
        if client is None:
            http = self._http(name)
            endpoint = self.resources.settings.upstreams[name].url
            client = GraphQLClient(
                name,
                http,
                self.upstream_tokens(name),
                self.resources.metrics,
                endpoint=endpoint,
                **self._client_options(),
            )
            self._clients[name] = client
        return client

    def _client_options(self) -> dict[str, Any]:
        principal = self.resources.crypto.fingerprint(self.session_id) if self.session_id else None
        return {
            "breakers": self.resources.breakers,
            "deadline": self.deadline,
            "rejections": self.resources.rejections,
            "principal": principal,
        }

    def _http(self, name: str) -> Any:
        try:
            return self.resources.upstreams[name]
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
        return self.context.binds(token)

    def authorization(self, token: str, method: str, url: str) -> dict[str, str]:
        return self.context.authorization(token, method, url)

    def remember_nonce(self, url: str, nonce: str) -> None:
        self.context.remember_nonce(url, nonce)


class _UpstreamToken(_ContextProofs):
    """The token source of an upstream with a token of its own: only ever that token."""

    __slots__ = ("context", "upstream")

    def __init__(self, context: Context, upstream: str) -> None:
        self.context = context
        self.upstream = upstream

    async def access_token(self) -> str:
        return await self.context.access_token(self.upstream)

    async def refreshed_access_token(self, rejected: str) -> str:
        return await self.context.refreshed_access_token(rejected, self.upstream)


class _AnonymousAware(_ContextProofs):
    """An upstream that serves anonymous requests too: the user's token when there is a session,
    else the BFF's own token (``client_credentials``) or none at all (``none``)."""

    def __init__(self, context: Context, anonymous: str, user: TokenSource) -> None:
        self.context = context
        self.anonymous = anonymous
        self.user = user

    async def _anonymous(self) -> bool:
        return await self.context.session() is None

    async def access_token(self) -> str | None:
        if not await self._anonymous():
            return await self.user.access_token()
        service = self.context.resources.service_tokens
        if self.anonymous == "none" or service is None:
            return None
        return await service.access_token()

    async def refreshed_access_token(self, rejected: str) -> str | None:
        if not await self._anonymous():
            return await self.user.refreshed_access_token(rejected)
        service = self.context.resources.service_tokens
        if self.anonymous == "none" or service is None:
            raise Unauthenticated()
        service.invalidate(rejected)
        return await service.access_token()
