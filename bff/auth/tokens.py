"""Keeping a session's tokens fresh: at most one grant per token per rotation, and no single fault
(a slow or dead IdP, a dead, paused or partitioned replica, a lost key, Redis gone for a moment) may log a
user out or stall a request that holds a valid token.

A session holds one refresh-token CHAIN (``Session.tokens``: the login access token and the refresh
token) and, per upstream that needs a token of its own (`TokenTarget`: an RFC 8707 resource, scopes,
an audience, or RFC 8693 token exchange), that upstream's access token (``Session.upstream_tokens``).
Every grant of a session, whichever token it is for, runs under the session's one refresh claim and
uses the newest refresh token, so the chain is never forked and never replayed. A token is refreshed
only when something that uses it asks.

How (each rule answers a fault seen in the chaos runs; the README's "Failure semantics" has the table):

* A request whose token is still usable (valid beyond a small margin) never waits for a refresh: it
  uses that token and the refresh runs beside it, in a background task. A request whose token is
  valid but nearly spent waits at most 0.5 s (never past the token's end), then goes out with it.
* In a process, one refresh task per session and token (single flight); across replicas, the refresh
  CLAIM lives inside the session record (`SessionStore.claim_refresh`), taken atomically on the
  record's version and judged by the store's clock.
* The claim is a short LEASE (``lease_seconds``) that only a live holder renews while its IdP call is
  in flight: a killed or frozen holder's claim lapses within one lease.
* A refresh running longer than ``overdue_seconds`` is overdue. A request that cannot be served until
  another holder's overdue refresh ends fails fast (`AuthProviderUnavailable`, session kept), and its
  replica asks the IdP (introspection) whether the refresh token the holder sent is still unused. Unused:
  the call never arrived (a blackhole); the holder closes it and gives the claim up, and a peer
  refreshes. Used: the answer is only late; nobody replays the token and the holder stores the answer.
  A replica whose call hangs while others' are answered takes no new claims until the IdP answers it.
* A claim whose lease lapsed unfinished (a dead or frozen holder) is checked the same way before its
  refresh token is sent again.
* With the IdP's refresh-token reuse interval configured (``reuse_grace_seconds``), a peer may take
  over an overdue claim inside that interval: the replayed refresh token is accepted there.
* Once sent, a refresh call is shielded and has its own deadline (``refresh_deadline``): its answer,
  however late, is still written if nobody rotated meanwhile.
* The IdP's answer is written first, before anything else. If the store cannot take the write, the
  new tokens are kept in this process (used by its requests), the lease kept, and the write retried
  until it lands; the superseded tokens are never refreshed from again.
* ``invalid_grant`` ends the session only if nobody rotated it meanwhile; ``invalid_target`` and
  ``invalid_scope`` (an upstream misconfigured at the IdP) fail that upstream's fields only.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import time
import uuid
from collections.abc import Callable, Coroutine, Mapping
from dataclasses import dataclass
from typing import Any

from bff.auth.dpop import DPoPKey
from bff.auth.oidc import OIDCClient, TokenTarget
from bff.errors import (
    AuthProviderUnavailable,
    GrantRefused,
    InvalidGrant,
    StoreUnavailable,
    Unauthenticated,
    UpstreamTokenRefused,
)
from bff.metrics import Metrics
from bff.sessions.models import Session, TokenSet
from bff.sessions.store import Claim, SessionStore, claim_holder, claim_started
from bff.tasks import shared_task
from bff.telemetry import span

log = logging.getLogger("bff.auth")

#: after the IdP failed, background refreshes of that session pause this long (no retry storm)
_BACKOFF_SECONDS = 5.0
#: a request going out with a nearly spent token leaves this much of its life for the trip
_TRIP_SECONDS = 0.5
#: the longest a request holding a still-valid (nearly spent) token waits for its refresh
_VALID_WAIT_SECONDS = 0.5
#: a slot: the upstream whose own token it is, or None for the session's (login) token
Slot = str | None


@dataclass(slots=True)
class _Pending:
    """Tokens the IdP issued that the store has not taken yet; they replace ``base_version``."""

    base_version: int
    tokens: TokenSet
    upstream_tokens: dict[str, TokenSet]
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
        lease_seconds: float = 3.0,
        overdue_seconds: float = 2.0,
        reuse_grace_seconds: float = 0.0,
        targets: Mapping[str, TokenTarget] | None = None,
        clock: Callable[[], float] | None = None,
    ) -> None:
        self.store = store
        self.oidc = oidc
        self.metrics = metrics
        self.buffer_seconds = buffer_seconds
        self.wait_seconds = wait_seconds  # how long a request with an unusable token waits
        self.refresh_deadline = refresh_deadline
        self.usable_margin = usable_margin
        self.lease_seconds = lease_seconds
        self.overdue_seconds = overdue_seconds
        self.reuse_grace_seconds = reuse_grace_seconds
        #: upstreams with a token of their own, by name; any other upstream gets the session's token
        self.targets: dict[str, TokenTarget] = dict(targets or {})
        # upstreams asking for the same token (same resource, scopes, audience) share it: one grant
        # each rotation, kept under the first such upstream's name
        first: dict[TokenTarget, str] = {}
        self._slots = {name: first.setdefault(target, name) for name, target in self.targets.items()}
        self.clock = clock or store.now
        self.replica = uuid.uuid4().hex[:12]
        self._attempts = 0
        self._inflight: dict[tuple[str, Slot], asyncio.Task[Session]] = {}
        self._pending: dict[str, _Pending] = {}
        #: (session, slot) -> until when background refreshes pause, and whether because the IdP refused
        #: the slot's target (invalid_target / invalid_scope: then requests fail at once meanwhile)
        self._backoff: dict[tuple[str, Slot], tuple[float, bool]] = {}
        self._background: set[asyncio.Task[Any]] = set()
        self._leases: set[asyncio.Task[None]] = set()
        #: this replica's IdP calls in flight: holder -> start (store clock)
        self._calls: dict[str, float] = {}
        #: calls given up on because our path to the IdP is broken, and until when we take no claims
        self._abandoned: set[str] = set()
        self._cut_off_until = 0.0
        #: the grant call of each claim we hold (cancelled when we give a hung one up)
        self._grants: dict[str, asyncio.Future[Session]] = {}
        #: overdue claims (by holder) this replica checked lately, and when it may check again
        self._checked: dict[str, float] = {}
        self._next_self_probe = 0.0
        #: sessions whose refresh token we found used after a lapsed claim, since when
        self._used_since: dict[str, float] = {}

    # policy ------------------------------------------------------------------------------------
    def slot(self, upstream: str | None) -> Slot:
        """Which token an upstream gets: its own (shared with upstreams that ask for the same one),
        or (None) the session's."""
        return None if upstream is None else self._slots.get(upstream)

    @staticmethod
    def tokens_of(session: Session, slot: Slot) -> TokenSet | None:
        return session.tokens if slot is None else session.upstream_tokens.get(slot)

    def usable(self, tokens: TokenSet | None) -> bool:
        """Valid for longer than the safety margin (a quarter of its life for short tokens)."""
        if tokens is None:
            return False
        margin = min(self.usable_margin, (tokens.expires_at - tokens.issued_at) / 4)
        return tokens.seconds_left(self.clock()) > margin

    def cut_off(self) -> bool:
        """Whether this replica takes no claims: one of its IdP calls hung while peers' were answered.
        It ends when the IdP answers us again (a probe, or a call), or after the refresh deadline."""
        return time.monotonic() < self._cut_off_until

    # entry point -------------------------------------------------------------------------------
    def fresh_now(self, session: Session, *, upstream: str | None = None) -> Session | None:
        """`ensure_fresh`'s answer when it needs no waiting (the token is fresh, or still usable with
        its refresh started beside the request), else None: the common case without a coroutine."""
        slot = self.slot(upstream)
        session = self._overlay(session)
        tokens = self.tokens_of(session, slot)
        if tokens is not None and not tokens.needs_refresh(self.clock(), self.buffer_seconds):
            return session
        if self.usable(tokens):
            # Never wait while the token in hand is good: refresh beside the request.
            if time.monotonic() >= self._backoff.get((session.id, slot), (0.0, False))[0]:
                self._start(session.id, slot, None)
            return session
        return None

    async def ensure_fresh(
        self, session: Session, *, upstream: str | None = None, rejected_token: str | None = None
    ) -> Session:
        """The session with a usable token for ``upstream`` (its own token if it has a `TokenTarget`,
        else the session's; `tokens_of` with `slot` reads it).

        ``rejected_token``: an upstream answered 401 to it; refresh unless someone already did.
        Raises `Unauthenticated` (session ended), `AuthProviderUnavailable` (session kept),
        `UpstreamTokenRefused` (this upstream's token cannot be had; session kept) or
        `StoreUnavailable` (session kept).
        """
        if rejected_token is None:
            ready = self.fresh_now(session, upstream=upstream)
            if ready is not None:
                return ready
        slot = self.slot(upstream)
        session = self._overlay(session)
        tokens = self.tokens_of(session, slot)
        if rejected_token is not None:
            session = await self._latest(session.id)  # the newest tokens, not the request's snapshot
            tokens = self.tokens_of(session, slot)
            if tokens is not None and tokens.access_token != rejected_token:
                return session
        until, refused = self._backoff.get((session.id, slot), (0.0, False))
        if refused and time.monotonic() < until and slot is not None:
            raise UpstreamTokenRefused(slot, _refused_message(slot))
        task = self._start(session.id, slot, rejected_token)
        budget = self.wait_seconds
        left = 0.0 if tokens is None else tokens.seconds_left(self.clock()) - _TRIP_SECONDS
        if rejected_token is None and left > 0:
            # a still-valid token goes out before its end rather than wait past it, and rather than
            # wait long on a refresh that may be stuck elsewhere (a cut-off holder's); one that would
            # expire on its way is as good as expired: wait for the refresh
            budget = min(budget, _VALID_WAIT_SECONDS, left)
        try:
            # shield: a caller that goes away (or gives up) must not cancel the refresh
            return await asyncio.wait_for(asyncio.shield(task), budget)
        except TimeoutError:
            self.metrics.token_refresh.labels("wait_timeout").inc()
            if rejected_token is None:
                return self._fallback(session, slot, "the identity provider did not answer in time")
            raise AuthProviderUnavailable() from None
        except AuthProviderUnavailable as exc:
            if rejected_token is None:
                return self._fallback(session, slot, str(exc))
            raise

    def _start(self, session_id: str, slot: Slot, rejected_token: str | None) -> asyncio.Task[Session]:
        key = (session_id, slot)
        task = self._inflight.get(key)
        if task is not None:
            self.metrics.token_refresh.labels("coalesced").inc()
            return task
        task = shared_task(self._refresh(session_id, slot, rejected_token), name="bff-token-refresh")
        self._inflight[key] = task

        def done(finished: asyncio.Task[Session]) -> None:
            if self._inflight.get(key) is finished:
                del self._inflight[key]

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
            return dataclasses.replace(session, tokens=pending.tokens, upstream_tokens=pending.upstream_tokens)
        if session.version > pending.base_version:
            del self._pending[session.id]  # written meanwhile (by us or, after our claim ran out, by another)
        return session

    def _done(self, current: Session, slot: Slot, rejected_token: str | None) -> bool:
        tokens = self.tokens_of(current, slot)
        if tokens is None:
            return False
        if rejected_token is not None:
            return tokens.access_token != rejected_token
        return not tokens.needs_refresh(self.clock(), self.buffer_seconds)

    async def _refresh(self, session_id: str, slot: Slot, rejected_token: str | None) -> Session:
        deadline = time.monotonic() + max(self.wait_seconds, self.lease_seconds)
        while True:
            current = await self._latest(session_id)
            if self._done(current, slot, rejected_token):
                self.metrics.token_refresh.labels("coalesced").inc()
                return current
            step = slot
            target = self.targets.get(slot) if slot is not None else None
            if target is not None and target.exchange and not self.usable(current.tokens):
                step = None  # token exchange needs a valid subject token: the session's comes first
            needs_chain = step is None or (target is not None and not target.exchange)
            if needs_chain and not current.tokens.refresh_token:
                return await self._without_refresh_token(current, slot, rejected_token)
            if self.cut_off():
                # our IdP calls hang while peers' are answered: leave the refresh to them
                self._probe_self()
                if current.refresh_claim is None:  # nobody is refreshing it: nothing to wait for
                    raise AuthProviderUnavailable("this replica cannot reach the identity provider")
                await self._wait_for_peer(current, deadline, "this replica cannot reach the identity provider")
                continue
            self._attempts += 1
            holder = claim_holder(self.replica, self._attempts, self.store.now())
            takeover = None
            if self.reuse_grace_seconds > 0:
                takeover = (self.overdue_seconds, self.reuse_grace_seconds)
            claim = await self.store.claim_refresh(
                session_id, current.version, holder, self.lease_seconds, takeover=takeover
            )
            if claim is Claim.LAPSED:
                await self._verify_lapsed(current)
            if claim in (Claim.TAKEN, Claim.LAPSED):
                other = current.refresh_claim
                if other is not None and other != holder:
                    self.metrics.refresh_claims.labels("taken_over").inc()
                    log.info("took over an overdue refresh inside the reuse interval")
                updated = await self._refresh_claimed(current, holder, step)
                if step == slot:
                    return updated
                continue  # the session's token came first (token exchange); now the upstream's
            if claim is Claim.MOVED:
                continue
            await self._wait_for_peer(current, deadline, "another replica's refresh did not finish")

    async def _verify_lapsed(self, current: Session) -> None:
        """We took a claim whose holder stopped renewing it without a write: dead, or frozen (SIGSTOP)
        with its refresh perhaps already answered. If the IdP says the refresh token is used, sending it
        again would make a rotating IdP revoke the grant: this request fails fast and our claim is left
        to lapse (a frozen holder writes its answer when it wakes; the write needs no claim). If it stays
        used for longer than any refresh may take, its holder died with the new tokens: the session is
        over. Unused, or the IdP cannot tell: go ahead."""
        refresh_token = current.tokens.refresh_token
        if not refresh_token or self.reuse_grace_seconds > 0:
            return  # the IdP accepts a replay inside its reuse interval (and refuses it, safely, after)
        unused = await self.oidc.refresh_token_unused(refresh_token, timeout=self.overdue_seconds / 2)
        if unused is not False:
            self._used_since.pop(current.id, None)
            return
        now = time.monotonic()
        first = self._used_since.setdefault(current.id, now)
        if len(self._used_since) > 10_000:
            self._used_since = {current.id: first}
        if now - first > self.refresh_deadline:
            self._used_since.pop(current.id, None)
            log.info("a dead replica's rotation of this session was lost; session ended")
            await self.store.delete(current.id, session=current)
            raise Unauthenticated("The session's refresh was lost")
        log.warning("a lapsed refresh claim's token is already used at the IdP; not replaying it")
        raise AuthProviderUnavailable("a previous refresh of this session may still be answered")

    async def _wait_for_peer(self, current: Session, deadline: float, reason: str) -> None:
        """Someone else's claim (or nobody's, while we are cut off): wait for its write, briefly.
        An overdue one fails fast: waiting it out would only stall the request."""
        started = claim_started(current.refresh_claim)
        age = None if started is None else self.store.now() - started
        if age is not None and age > self.overdue_seconds:
            self.metrics.token_refresh.labels("overdue").inc()
            self.metrics.refresh_claims.labels("overdue").inc()
            holder = current.refresh_claim or ""
            if not holder.startswith(f"{self.replica}:") and not self.cut_off():
                self._check_overdue(current, holder)
            raise AuthProviderUnavailable("another replica's refresh is overdue")
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise AuthProviderUnavailable(reason)
        wait = min(remaining, 0.5)
        if age is not None:
            wait = min(wait, self.overdue_seconds - age + 0.01)
        await self.store.wait_for_change(current.id, max(0.01, wait))

    async def _without_refresh_token(self, current: Session, slot: Slot, rejected_token: str | None) -> Session:
        if slot is not None:
            raise UpstreamTokenRefused(slot, f"No refresh token to obtain a token for upstream {slot!r}")
        if current.tokens.is_expired(self.clock()) or rejected_token is not None:
            await self.store.delete(current.id)
            raise Unauthenticated("The session has expired")
        return current

    async def _grant(self, current: Session, step: Slot) -> Session:
        """One grant at the IdP for ``step``'s token; the session as it must be written."""
        refresh_token = current.tokens.refresh_token
        dpop = DPoPKey.from_jwk(current.dpop_key) if current.dpop_key else None
        if step is None:
            assert refresh_token is not None
            tokens = await self.oidc.refresh(refresh_token, timeout=self.refresh_deadline, dpop=dpop)
            tokens.refresh_token = tokens.refresh_token or refresh_token
            tokens.id_token = tokens.id_token or current.tokens.id_token
            tokens.scope = tokens.scope or current.tokens.scope  # a refresh keeps the grant's scope
            return dataclasses.replace(current, tokens=tokens)
        target = self.targets[step]
        if target.exchange:
            issued = await self.oidc.exchange(
                current.tokens.access_token, target, timeout=self.refresh_deadline, dpop=dpop
            )
            return dataclasses.replace(current, upstream_tokens={**current.upstream_tokens, step: issued})
        assert refresh_token is not None
        issued = await self.oidc.refresh(refresh_token, timeout=self.refresh_deadline, target=target, dpop=dpop)
        # the rotated refresh token continues the session's one chain; the login token stays as it is
        chain = dataclasses.replace(current.tokens, refresh_token=issued.refresh_token or refresh_token)
        issued.refresh_token = None
        issued.id_token = None
        return dataclasses.replace(current, tokens=chain, upstream_tokens={**current.upstream_tokens, step: issued})

    async def _refresh_claimed(self, current: Session, holder: str, step: Slot) -> Session:
        label = "session" if step is None else step
        started = time.perf_counter()
        call_started = self.store.now()
        self._calls[holder] = call_started
        lease = asyncio.create_task(self._keep_claim(current.id, holder, call_started), name="bff-refresh-lease")
        self._leases.add(lease)
        lease.add_done_callback(self._leases.discard)
        keep_lease = False
        try:
            try:
                with span("bff.token_refresh", **{"enduser.id": current.sub, "bff.upstream": label}):
                    grant = self._grants[holder] = asyncio.ensure_future(self._grant(current, step))
                    try:
                        updated = await grant
                    except asyncio.CancelledError:
                        if grant.cancelled() and holder in self._abandoned:  # given up (`_keep_claim`)
                            raise AuthProviderUnavailable("this replica cannot reach the identity provider") from None
                        raise
            except InvalidGrant:
                self.metrics.token_refresh.labels("invalid_grant").inc()
                self.metrics.child(self.metrics.token_grants, label, "invalid_grant").inc()
                again = await self.store.get(current.id)
                if again is not None and again.version != current.version:
                    return again  # rotated by someone else meanwhile: theirs is the valid one
                log.info("refresh refused by the identity provider (%s token); session ended", label)
                await self.store.delete(current.id, session=current)
                raise Unauthenticated("The identity provider ended the session") from None
            except GrantRefused as exc:
                self.metrics.child(self.metrics.token_grants, label, "refused").inc()
                log.warning(
                    "the identity provider refused upstream %s's token (%s); check its settings", label, exc.error
                )
                self._back_off(current.id, step, refused=True)
                await self._release(current.id, holder)
                if step is None:
                    raise AuthProviderUnavailable(f"identity provider refused the refresh ({exc.error})") from None
                raise UpstreamTokenRefused(
                    step, f"The identity provider refused a token for upstream {step!r}"
                ) from None
            except AuthProviderUnavailable:
                self.metrics.token_refresh.labels("provider_error").inc()
                self.metrics.child(self.metrics.token_grants, label, "provider_error").inc()
                self._back_off(current.id, step)
                await self._release(current.id, holder)
                raise
            finally:
                self.metrics.token_refresh_duration.observe(time.perf_counter() - started)
                self._calls.pop(holder, None)
                self._grants.pop(holder, None)
                self._abandoned.discard(holder)
            self._cut_off_until = 0.0  # answered: our path to the IdP works
            self._spawn(self._note_answer(call_started))
            self.metrics.child(self.metrics.token_grants, label, "success").inc()
            for key in ((current.id, step), (current.id, None)):
                self._backoff.pop(key, None)
            # Write first: until the store has it, a dead replica here would lose the rotation.
            try:
                stored = await self.store.replace(updated, end_claim=holder)
            except StoreUnavailable:
                self.metrics.token_refresh.labels("write_deferred").inc()
                log.warning("session store unavailable after a rotation; keeping the new tokens and retrying the write")
                self._pending[current.id] = _Pending(current.version, updated.tokens, updated.upstream_tokens, holder)
                keep_lease = True  # the lease stays ours until the deferred write lands
                self._spawn(self._write_later(current, updated, holder, lease))
                return updated
            if stored is None:
                return await self._lost_write(current, updated.tokens)
            self.metrics.token_refresh.labels("success").inc()
            log.info(
                "access token refreshed for %s (session %s, token for %s), valid %ds",
                current.sub,
                self.store.crypto.fingerprint(current.id),
                "the session" if step is None else f"upstream {step}",
                int(_lifetime(self.tokens_of(updated, step))),
            )
            return stored
        finally:
            if not keep_lease:
                lease.cancel()

    async def _release(self, session_id: str, holder: str) -> None:
        with contextlib.suppress(StoreUnavailable):
            await self.store.release_refresh(session_id, holder)  # the call is over: others may try

    def _back_off(self, session_id: str, slot: Slot, *, refused: bool = False) -> None:
        now = time.monotonic()
        if len(self._backoff) > 10_000:  # a long outage over many sessions: keep only live entries
            self._backoff = {key: entry for key, entry in self._backoff.items() if entry[0] > now}
        self._backoff[(session_id, slot)] = (now + _BACKOFF_SECONDS, refused)

    async def _keep_claim(self, session_id: str, holder: str, call_started: float) -> None:
        """Renew our lease while the IdP call runs. If the call is overdue and another replica got an
        answer to a later call, our path to the IdP is broken: give the claim up so a peer refreshes,
        and take no more claims for a while."""
        interval = self.lease_seconds / 3
        renewed = time.monotonic()
        while True:
            overdue = holder in self._calls and self.store.now() - call_started > self.overdue_seconds
            # once overdue, look for a peer's evidence often (a Redis GET); renew at the usual pace
            await asyncio.sleep(min(interval, 0.25) if overdue else interval)
            if holder in self._calls and self.store.now() - call_started > self.overdue_seconds:
                try:
                    unused = await self.store.unused_said(session_id, holder)
                    answered = unused or await self.store.idp_answered_since(call_started, self.replica)
                except StoreUnavailable:
                    unused = answered = False
                if unused:  # a peer saw our refresh token unused at the IdP: our call never arrived
                    self._abandon(session_id, holder, call_started)
                    return
                if answered and not self.cut_off():
                    # the IdP answers others while our call hangs: take no new claims (keeping this
                    # one: its request may have arrived, and its answer must not be lost)
                    self._cut_off_until = time.monotonic() + self.refresh_deadline
                    log.warning("this replica's IdP calls hang while other replicas are answered; taking no claims")
            if time.monotonic() - renewed < interval * 0.9:
                continue
            renewed = time.monotonic()
            try:
                still_ours = await self.store.renew_refresh(session_id, holder, self.lease_seconds)
            except StoreUnavailable:
                continue
            if not still_ours:
                self.metrics.refresh_claims.labels("lost").inc()
                return

    def _abandon(self, session_id: str, holder: str, call_started: float) -> None:
        """Give up our hung call, whose refresh token a peer found unused at the IdP: the call first
        (its connection closed, so a path that heals does not deliver the old refresh token after a
        peer used it), then the claim; take no claims until the IdP answers us again (`_probe_self`)
        or the refresh deadline has passed."""
        self._abandoned.add(holder)
        self._cut_off_until = time.monotonic() + self.refresh_deadline
        self.metrics.refresh_claims.labels("abandoned").inc()
        log.warning(
            "this replica's refresh has hung for %.1f s while other replicas reach the identity provider; "
            "giving up its claim so a peer refreshes the session",
            self.store.now() - call_started,
        )
        grant = self._grants.get(holder)
        if grant is not None:
            grant.cancel()
        self._spawn(self._release(session_id, holder))  # not ours to cancel: the lease task ends now

    def _probe_self(self) -> None:
        """While cut off: does the IdP answer us again (promptly)? Then take claims again."""
        now = time.monotonic()
        if now < self._next_self_probe:
            return
        self._next_self_probe = now + 1.0

        async def probe() -> None:
            if await self.oidc.probe(timeout=self.overdue_seconds / 2):
                self._cut_off_until = 0.0
                log.info("the identity provider answers this replica again; taking refresh claims again")

        self._spawn(probe())

    def _check_overdue(self, current: Session, holder: str) -> None:
        """Another replica's refresh is overdue. Ask the IdP (introspection, RFC 7662) whether the refresh
        token that replica sent is still unused: if so, its call never arrived (its path to the IdP is
        broken, not the IdP slow), and we say so on its claim; it then closes its call and gives the
        claim up (`_keep_claim`), and the next request refreshes here. If the token was used, the IdP is
        answering that call late: its answer will be stored, and nobody may replay the token. Any
        prompt answer is also recorded as evidence that the IdP answers (`idp_answered_since`). Without
        introspection, a probe gives only that evidence. At most one check per claim per second."""
        now = time.monotonic()
        if now < self._checked.get(holder, 0.0):
            return
        if len(self._checked) > 10_000:
            self._checked = {key: until for key, until in self._checked.items() if until > now}
        self._checked[holder] = now + 1.0
        refresh_token = current.tokens.refresh_token

        async def check() -> None:
            started = self.store.now()
            unused = None
            if refresh_token:
                unused = await self.oidc.refresh_token_unused(refresh_token, timeout=self.overdue_seconds)
            if unused is None:
                if await self.oidc.probe(timeout=self.overdue_seconds / 2):
                    await self._note_answer(started)
                return
            await self._note_answer(started)
            if unused:
                with contextlib.suppress(StoreUnavailable):
                    if await self.store.mark_unused(current.id, holder):
                        log.info("an overdue refresh's token is still unused at the IdP: its holder may give it up")

        self._spawn(check())

    async def _note_answer(self, call_started: float) -> None:
        with contextlib.suppress(StoreUnavailable):
            await self.store.note_idp_answer(self.replica, call_started)

    async def _lost_write(self, current: Session, tokens: TokenSet) -> Session:
        """The record moved under our claim: ended (logout) or rewritten after our claim ran out."""
        latest = await self.store.get(current.id)
        if latest is None:
            # signed out while we refreshed: the rotated refresh token must not outlive the logout
            if tokens.refresh_token and tokens.refresh_token != current.tokens.refresh_token:
                await self.oidc.revoke(tokens.refresh_token)
            raise Unauthenticated("The session has ended")
        return latest

    async def _write_later(self, base: Session, updated: Session, holder: str, lease: asyncio.Task[None]) -> None:
        """Retry the write of a rotation until it lands, the record moves, or the session is over;
        the lease is renewed meanwhile (``lease``), so no peer replays the superseded refresh token."""
        delay = 0.1
        give_up = time.monotonic() + self.store.idle_seconds
        try:
            while time.monotonic() < give_up and base.id in self._pending:
                await asyncio.sleep(delay)
                delay = min(delay * 2, 1.0)
                try:
                    stored = await self.store.replace(dataclasses.replace(updated), end_claim=holder)
                    if stored is None:
                        self._pending.pop(base.id, None)
                        await self._lost_write(base, updated.tokens)
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
        finally:
            lease.cancel()

    def _spawn(self, work: Coroutine[Any, Any, None]) -> None:
        task = asyncio.create_task(work)
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    def _fallback(self, current: Session, slot: Slot, reason: str) -> Session:
        """IdP unavailable: keep using a still-valid token; otherwise fail, keeping the session."""
        tokens = self.tokens_of(current, slot)
        if tokens is not None and not tokens.is_expired(self.clock()):
            self.metrics.token_refresh.labels("stale_token_used").inc()
            log.warning("refresh failed (%s); using the current access token", reason)
            return current
        raise AuthProviderUnavailable()

    async def close(self) -> None:
        """Let deferred writes and in-flight rotations finish briefly (they hold tokens nobody else
        has), then stop what is left, before the store and the IdP client close under it."""
        pending = [*self._background, *self._inflight.values()]
        if pending:
            await asyncio.wait(pending, timeout=min(5.0, self.refresh_deadline))
        left = [*self._background, *self._inflight.values(), *self._leases]
        for task in left:
            task.cancel()
        await asyncio.gather(*left, return_exceptions=True)


def _refused_message(upstream: str) -> str:
    return f"The identity provider refused a token for upstream {upstream!r}"


def _lifetime(tokens: TokenSet | None) -> float:
    return 0.0 if tokens is None else tokens.expires_at - tokens.issued_at


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
