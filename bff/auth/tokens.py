"""Keeping a session's access token fresh: at most one refresh per session per rotation.

Two levels of single flight:

* in a process, one refresh task per session; concurrent callers await the same task;
* across replicas (shared store), a leased lock that its holder renews while the IdP is slow. The
  holder RE-READS the session after taking the lock and skips the refresh when another replica
  already rotated it; the winner's compare-and-set announces the new version, so waiters wake at
  once; every wait is bounded.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable

from bff.auth.oidc import OIDCClient
from bff.errors import AuthProviderUnavailable, InvalidGrant, Unauthenticated
from bff.metrics import Metrics
from bff.sessions.models import Session, TokenSet
from bff.sessions.store import SessionStore
from bff.telemetry import span

log = logging.getLogger("bff.auth")


class TokenManager:
    def __init__(
        self,
        store: SessionStore,
        oidc: OIDCClient,
        metrics: Metrics,
        *,
        buffer_seconds: float,
        lease_seconds: float,
        provider_timeout: float,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.store = store
        self.oidc = oidc
        self.metrics = metrics
        self.buffer_seconds = buffer_seconds
        self.lease_seconds = lease_seconds
        # A waiter gives up after the IdP timeout plus one lease: by then the holder either
        # finished or died and its lease ran out.
        self.max_wait = provider_timeout + lease_seconds + 1.0
        self.clock = clock
        self._inflight: dict[str, asyncio.Task[Session]] = {}

    def needs_refresh(self, session: Session) -> bool:
        return session.tokens.needs_refresh(self.clock(), self.buffer_seconds)

    async def ensure_fresh(self, session: Session, *, rejected_token: str | None = None) -> Session:
        """The session with a usable access token.

        ``rejected_token``: an upstream answered 401 to it; refresh unless someone already did.
        Raises `Unauthenticated` (session ended) or `AuthProviderUnavailable` (session kept).
        """
        if rejected_token is None and not self.needs_refresh(session):
            return session
        if rejected_token is not None and session.tokens.access_token != rejected_token:
            return session
        task = self._inflight.get(session.id)
        if task is None:
            task = asyncio.create_task(self._refresh(session, rejected_token))
            self._inflight[session.id] = task
            task.add_done_callback(lambda _: self._inflight.pop(session.id, None))
        else:
            self.metrics.token_refresh.labels("coalesced").inc()
        # shield: a caller that goes away must not cancel the refresh the others are waiting for
        return await asyncio.shield(task)

    def _is_fresh(self, current: Session, seen: Session, rejected_token: str | None) -> bool:
        """Another request or replica already rotated the tokens we were about to refresh."""
        if rejected_token is not None:
            return current.tokens.access_token != rejected_token
        return current.version != seen.version and not self.needs_refresh(current)

    async def _refresh(self, seen: Session, rejected_token: str | None) -> Session:
        deadline = time.monotonic() + self.max_wait
        while True:
            async with self.store.lock(seen.id, lease=self.lease_seconds, wait=0) as acquired:
                current = await self.store.get(seen.id)
                if current is None:
                    raise Unauthenticated("The session has ended")
                if self._is_fresh(current, seen, rejected_token):
                    self.metrics.token_refresh.labels("coalesced").inc()
                    return current
                if acquired:
                    return await self._refresh_locked(current, rejected_token)
            # Another replica holds the lock: wait for its announcement (or poll slowly), bounded.
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return self._fallback(current, "timed out waiting for another replica's refresh")
            await self.store.wait_for_change(seen.id, min(remaining, 0.25))

    async def _refresh_locked(self, current: Session, rejected_token: str | None) -> Session:
        refresh_token = current.tokens.refresh_token
        if not refresh_token:
            if current.tokens.is_expired(self.clock()) or rejected_token is not None:
                await self.store.delete(current.id)
                raise Unauthenticated("The session has expired")
            return current
        started = time.perf_counter()
        try:
            with span("bff.token_refresh", **{"enduser.id": current.sub}):
                tokens = await self.oidc.refresh(refresh_token)
        except InvalidGrant:
            self.metrics.token_refresh.labels("invalid_grant").inc()
            again = await self.store.get(current.id)
            if again is not None and again.version != current.version:
                return again  # rotated by someone else meanwhile: theirs is the valid one
            log.info("refresh refused by the identity provider; session ended")
            await self.store.delete(current.id)
            raise Unauthenticated("The identity provider ended the session") from None
        except AuthProviderUnavailable as exc:
            self.metrics.token_refresh.labels("provider_error").inc()
            if rejected_token is not None:
                raise
            return self._fallback(current, str(exc))
        finally:
            self.metrics.token_refresh_duration.observe(time.perf_counter() - started)
        tokens.refresh_token = tokens.refresh_token or refresh_token
        tokens.id_token = tokens.id_token or current.tokens.id_token
        current.tokens = tokens
        stored = await self.store.replace(current)
        if stored is None:
            # Should not happen under the lock; if the lease was lost, the newest record wins.
            latest = await self.store.get(current.id)
            if latest is None:
                raise Unauthenticated("The session has ended")
            return latest
        self.metrics.token_refresh.labels("success").inc()
        log.info(
            "access token refreshed for %s (session %s), valid %ds",
            current.sub,
            self.store.crypto.fingerprint(current.id),
            int(tokens.expires_at - tokens.issued_at),
        )
        return stored

    def _fallback(self, current: Session, reason: str) -> Session:
        """IdP unavailable: keep using a still-valid token; otherwise fail, keeping the session."""
        if not current.tokens.is_expired(self.clock()):
            self.metrics.token_refresh.labels("stale_token_used").inc()
            log.warning("refresh failed (%s); using the current access token", reason)
            return current
        raise AuthProviderUnavailable()


class ServiceTokens:
    """The BFF's own access token (client_credentials) for public upstream data on anonymous
    requests: fetched once, shared by every request, renewed under the same refresh policy."""

    def __init__(self, oidc: OIDCClient, *, buffer_seconds: float, clock: Callable[[], float] = time.time) -> None:
        self.oidc = oidc
        self.buffer_seconds = buffer_seconds
        self.clock = clock
        self._tokens: TokenSet | None = None
        self._lock = asyncio.Lock()

    async def access_token(self) -> str:
        tokens = self._tokens
        if tokens is not None and not tokens.needs_refresh(self.clock(), self.buffer_seconds):
            return tokens.access_token
        async with self._lock:  # single flight: the first caller fetches, the others reuse it
            tokens = self._tokens
            if tokens is None or tokens.needs_refresh(self.clock(), self.buffer_seconds):
                tokens = self._tokens = await self.oidc.client_credentials()
            return tokens.access_token

    def invalidate(self, rejected: str) -> None:
        if self._tokens is not None and self._tokens.access_token == rejected:
            self._tokens = None
