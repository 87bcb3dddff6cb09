"""Keeping a session's access token fresh: at most one refresh per session per rotation, and no
single fault (a slow or dead IdP, a dead or paused replica, a lost key, Redis gone for a moment)
may log a user out or stall a request that holds a valid token.

How (each rule answers a fault seen in the chaos runs; the README's "Failure semantics" has the table):

* A request whose access token is still usable (valid beyond a small margin) never waits for a
  refresh: it uses that token and the refresh runs beside it, in a background task.
* In a process, one refresh task per session (single flight); across replicas, the refresh CLAIM
  lives inside the session record (`SessionStore.claim_refresh`), taken atomically on the record's
  version and judged by the store's clock: deleting some other key cannot free it, and a holder
  that did not get it never sends the refresh token.
* Once sent, the refresh call is shielded and has its own deadline (``refresh_deadline``, longer
  than the waiters' budget); the claim lasts that long, so no replica replays the same refresh
  token while the first call may still be answered. Waiters give up after ``wait_seconds``.
* The IdP's answer is written first, before anything else. If the store cannot take the write,
  the new token set is kept in this process (used by its requests) and the write is retried until
  it lands; the superseded token set is never refreshed from again.
* ``invalid_grant`` ends the session only if nobody rotated it meanwhile.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import time
import uuid
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from typing import Any

from bff.auth.oidc import OIDCClient
from bff.errors import AuthProviderUnavailable, InvalidGrant, StoreUnavailable, Unauthenticated
from bff.metrics import Metrics
from bff.sessions.models import Session, TokenSet
from bff.sessions.store import Claim, SessionStore
from bff.tasks import shared_task
from bff.telemetry import span

log = logging.getLogger("bff.auth")

#: a claim outlives the refresh call by this much, so its holder can write the answer
_CLAIM_MARGIN_SECONDS = 5.0
#: after the IdP failed, background refreshes of that session pause this long (no retry storm)
_BACKOFF_SECONDS = 5.0


@dataclass(slots=True)
class _Pending:
    """Tokens the IdP issued that the store has not taken yet; they replace ``base_version``."""

    base_version: int
    tokens: TokenSet
    holder: str


class TokenManager:
    def __init__(
        self,
        store: SessionStore,
        oidc: OIDCClient,
        metrics: Metrics,
        *,
        buffer_seconds: float,
        wait_seconds: float,
        refresh_deadline: float = 30.0,
        usable_margin: float = 5.0,
        clock: Callable[[], float] | None = None,
    ) -> None:
        self.store = store
        self.oidc = oidc
        self.metrics = metrics
        self.buffer_seconds = buffer_seconds
        self.wait_seconds = wait_seconds  # how long a request with an unusable token waits
        self.refresh_deadline = refresh_deadline
        self.claim_seconds = refresh_deadline + _CLAIM_MARGIN_SECONDS
        self.usable_margin = usable_margin
        self.clock = clock or store.now
        self.replica = uuid.uuid4().hex[:12]
        self._attempts = 0
        self._inflight: dict[str, asyncio.Task[Session]] = {}
        self._pending: dict[str, _Pending] = {}
        self._backoff: dict[str, float] = {}
        self._background: set[asyncio.Task[Any]] = set()

    # policy ------------------------------------------------------------------------------------
    def needs_refresh(self, session: Session) -> bool:
        return session.tokens.needs_refresh(self.clock(), self.buffer_seconds)

    def usable(self, tokens: TokenSet) -> bool:
        """Valid for longer than the safety margin (a quarter of its life for short tokens)."""
        margin = min(self.usable_margin, (tokens.expires_at - tokens.issued_at) / 4)
        return tokens.seconds_left(self.clock()) > margin

    # entry point -------------------------------------------------------------------------------
    async def ensure_fresh(self, session: Session, *, rejected_token: str | None = None) -> Session:
        """The session with a usable access token.

        ``rejected_token``: an upstream answered 401 to it; refresh unless someone already did.
        Raises `Unauthenticated` (session ended), `AuthProviderUnavailable` (session kept) or
        `StoreUnavailable` (session kept).
        """
        session = self._overlay(session)
        if rejected_token is None:
            if not self.needs_refresh(session):
                return session
            if self.usable(session.tokens):
                # Never wait while the token in hand is good: refresh beside the request.
                if time.monotonic() >= self._backoff.get(session.id, 0.0):
                    self._start(session.id, None)
                return session
        else:
            session = await self._latest(session.id)  # the newest tokens, not the request's snapshot
            if session.tokens.access_token != rejected_token:
                return session
        task = self._start(session.id, rejected_token)
        try:
            # shield: a caller that goes away (or gives up) must not cancel the refresh
            return await asyncio.wait_for(asyncio.shield(task), self.wait_seconds)
        except TimeoutError:
            self.metrics.token_refresh.labels("wait_timeout").inc()
            if rejected_token is None:
                return self._fallback(session, "the identity provider did not answer in time")
            raise AuthProviderUnavailable() from None
        except AuthProviderUnavailable as exc:
            if rejected_token is None:
                return self._fallback(session, str(exc))
            raise

    def _start(self, session_id: str, rejected_token: str | None) -> asyncio.Task[Session]:
        task = self._inflight.get(session_id)
        if task is not None:
            self.metrics.token_refresh.labels("coalesced").inc()
            return task
        task = shared_task(self._refresh(session_id, rejected_token), name="bff-token-refresh")
        self._inflight[session_id] = task

        def done(finished: asyncio.Task[Session]) -> None:
            if self._inflight.get(session_id) is finished:
                del self._inflight[session_id]

        task.add_done_callback(done)
        return task

    # the refresh -------------------------------------------------------------------------------
    async def _latest(self, session_id: str) -> Session:
        current = await self.store.get(session_id)
        if current is None:
            self._pending.pop(session_id, None)
            raise Unauthenticated("The session has ended")
        return self._overlay(current)

    def _overlay(self, session: Session) -> Session:
        """This process's unwritten tokens win over the record they replace."""
        pending = self._pending.get(session.id)
        if pending is None:
            return session
        if session.version == pending.base_version:
            return dataclasses.replace(session, tokens=pending.tokens)
        if session.version > pending.base_version:
            del self._pending[session.id]  # written meanwhile (by us or, after our claim ran out, by another)
        return session

    def _done(self, current: Session, rejected_token: str | None) -> bool:
        if rejected_token is not None:
            return current.tokens.access_token != rejected_token
        return not self.needs_refresh(current)

    async def _refresh(self, session_id: str, rejected_token: str | None) -> Session:
        deadline = time.monotonic() + self.claim_seconds
        while True:
            current = await self._latest(session_id)
            if self._done(current, rejected_token):
                self.metrics.token_refresh.labels("coalesced").inc()
                return current
            if not current.tokens.refresh_token:
                if current.tokens.is_expired(self.clock()) or rejected_token is not None:
                    await self.store.delete(session_id)
                    raise Unauthenticated("The session has expired")
                return current
            self._attempts += 1
            holder = f"{self.replica}:{self._attempts}"
            claim = await self.store.claim_refresh(session_id, current.version, holder, self.claim_seconds)
            if claim is Claim.TAKEN:
                return await self._refresh_claimed(current, holder)
            if claim is Claim.MOVED:
                continue
            # Another replica's live claim: wait for its write (announced), bounded by its claim.
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise AuthProviderUnavailable("another replica's refresh did not finish")
            await self.store.wait_for_change(session_id, min(remaining, 0.5))

    async def _refresh_claimed(self, current: Session, holder: str) -> Session:
        refresh_token = current.tokens.refresh_token
        assert refresh_token is not None
        started = time.perf_counter()
        try:
            with span("bff.token_refresh", **{"enduser.id": current.sub}):
                tokens = await self.oidc.refresh(refresh_token, timeout=self.refresh_deadline)
        except InvalidGrant:
            self.metrics.token_refresh.labels("invalid_grant").inc()
            again = await self.store.get(current.id)
            if again is not None and again.version != current.version:
                return again  # rotated by someone else meanwhile: theirs is the valid one
            log.info("refresh refused by the identity provider; session ended")
            await self.store.delete(current.id, session=current)
            raise Unauthenticated("The identity provider ended the session") from None
        except AuthProviderUnavailable:
            self.metrics.token_refresh.labels("provider_error").inc()
            now = time.monotonic()
            if len(self._backoff) > 10_000:  # a long outage over many sessions: keep only live entries
                self._backoff = {key: until for key, until in self._backoff.items() if until > now}
            self._backoff[current.id] = now + _BACKOFF_SECONDS
            with contextlib.suppress(StoreUnavailable):
                await self.store.release_refresh(current.id, holder)  # the call is over: others may try
            raise
        finally:
            self.metrics.token_refresh_duration.observe(time.perf_counter() - started)
        # Write first: until the store has it, a dead replica here would lose the rotation.
        tokens.refresh_token = tokens.refresh_token or refresh_token
        tokens.id_token = tokens.id_token or current.tokens.id_token
        updated = dataclasses.replace(current, tokens=tokens)
        self._backoff.pop(current.id, None)
        try:
            stored = await self.store.replace(updated, end_claim=holder)
        except StoreUnavailable:
            self.metrics.token_refresh.labels("write_deferred").inc()
            log.warning("session store unavailable after a rotation; keeping the new tokens and retrying the write")
            self._pending[current.id] = _Pending(current.version, tokens, holder)
            self._spawn(self._write_later(current, tokens, holder))
            return updated
        if stored is None:
            return await self._lost_write(current, tokens)
        self.metrics.token_refresh.labels("success").inc()
        log.info(
            "access token refreshed for %s (session %s), valid %ds",
            current.sub,
            self.store.crypto.fingerprint(current.id),
            int(tokens.expires_at - tokens.issued_at),
        )
        return stored

    async def _lost_write(self, current: Session, tokens: TokenSet) -> Session:
        """The record moved under our claim: ended (logout) or rewritten after our claim ran out."""
        latest = await self.store.get(current.id)
        if latest is None:
            # signed out while we refreshed: the rotated refresh token must not outlive the logout
            if tokens.refresh_token and tokens.refresh_token != current.tokens.refresh_token:
                await self.oidc.revoke(tokens.refresh_token)
            raise Unauthenticated("The session has ended")
        return latest

    async def _write_later(self, base: Session, tokens: TokenSet, holder: str) -> None:
        """Retry the write of a rotation until it lands, the record moves, or the session is over."""
        delay = 0.1
        give_up = time.monotonic() + self.store.idle_seconds
        while time.monotonic() < give_up and base.id in self._pending:
            await asyncio.sleep(delay)
            delay = min(delay * 2, 1.0)
            try:
                stored = await self.store.replace(dataclasses.replace(base, tokens=tokens), end_claim=holder)
                if stored is None:
                    self._pending.pop(base.id, None)
                    await self._lost_write(base, tokens)
                    return
            except StoreUnavailable:
                continue
            except Unauthenticated:
                return
            self._pending.pop(base.id, None)
            self.metrics.token_refresh.labels("success").inc()
            log.info("deferred token write landed (session %s)", self.store.crypto.fingerprint(base.id))
            return
        self._pending.pop(base.id, None)

    def _spawn(self, work: Coroutine[Any, Any, None]) -> None:
        task = asyncio.create_task(work)
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    def _fallback(self, current: Session, reason: str) -> Session:
        """IdP unavailable: keep using a still-valid token; otherwise fail, keeping the session."""
        if not current.tokens.is_expired(self.clock()):
            self.metrics.token_refresh.labels("stale_token_used").inc()
            log.warning("refresh failed (%s); using the current access token", reason)
            return current
        raise AuthProviderUnavailable()

    async def close(self) -> None:
        """Let deferred writes and in-flight rotations finish briefly; they hold tokens nobody else has."""
        pending = [*self._background, *self._inflight.values()]
        if pending:
            await asyncio.wait(pending, timeout=min(5.0, self.refresh_deadline))


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
