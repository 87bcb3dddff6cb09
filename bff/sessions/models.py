"""The session record and the token set it holds. Plain data; (de)serialised as JSON."""

from __future__ import annotations

import base64
import dataclasses
import functools
import json
import secrets
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any, Literal


@dataclass(slots=True)
class TokenSet:
    """What the IdP gave us. Never leaves the server."""

    access_token: str
    expires_at: float
    issued_at: float
    refresh_token: str | None = None
    id_token: str | None = None
    token_type: str = "Bearer"
    #: the scopes granted (the token response's ``scope``); kept in the record's extras, which 0.2
    #: neither reads nor drops, because 0.2 refuses a token set with keys it does not know
    scope: str | None = None

    def __repr__(self) -> str:  # never print tokens
        return f"TokenSet(expires_at={self.expires_at:.0f}, refresh_token={'yes' if self.refresh_token else 'no'})"

    def seconds_left(self, now: float) -> float:
        return self.expires_at - now

    def is_expired(self, now: float) -> bool:
        return now >= self.expires_at

    def needs_refresh(self, now: float, buffer_seconds: float) -> bool:
        """Refresh inside the buffer; a token whose whole life is under twice the buffer refreshes at
        half-life instead, so a 60-second token is not refreshed on every request."""
        lifetime = self.expires_at - self.issued_at
        threshold = lifetime / 2 if lifetime < 2 * buffer_seconds else buffer_seconds
        return self.seconds_left(now) <= threshold


@dataclass(frozen=True, slots=True)
class User:
    """The signed-in user as resolvers see it (`Context.user`): who, and the profile claims kept at
    sign-in. No token, no session id: nothing here can call an upstream or forge a cookie."""

    sub: str
    name: str | None = None
    email: str | None = None
    claims: Mapping[str, Any] = field(default_factory=lambda: MappingProxyType({}))
    #: the scopes the session's access token was granted
    scopes: frozenset[str] = frozenset()

    @property
    def acr(self) -> str | None:
        """The Authentication Context Class the IdP reported at the last sign-in (ID token ``acr``)."""
        value = self.claims.get("acr")
        return value if isinstance(value, str) else None

    @property
    def amr(self) -> tuple[str, ...]:
        """The authentication methods of the last sign-in (ID token ``amr``), e.g. ``("pwd", "otp")``."""
        value = self.claims.get("amr")
        return tuple(str(v) for v in value) if isinstance(value, list | tuple) else ()

    @property
    def auth_time(self) -> float | None:
        """When the user last actively signed in (ID token ``auth_time``, seconds since the epoch)."""
        value = self.claims.get("auth_time")
        return float(value) if isinstance(value, int | float) and not isinstance(value, bool) else None

    @classmethod
    def of(cls, session: Session, *, scopes_claim: str | None = None) -> User:
        """``scopes_claim`` (``BFF_SCOPES_CLAIM``): the scopes are that claim of the access token (a
        JWT) or else of the ID token, for IdPs that put them there (``scp``, ``permissions``)."""
        claims = MappingProxyType(dict(session.claims))
        granted = session.tokens.scope
        if scopes_claim:
            granted = _claimed_scopes(session.tokens, scopes_claim)
        scopes = frozenset(granted.split()) if granted else frozenset()
        return cls(sub=session.sub, name=claims.get("name"), email=claims.get("email"), claims=claims, scopes=scopes)


@functools.lru_cache(maxsize=1024)
def _jwt_claim(token: str, claim: str) -> str | None:
    """A claim of a JWT's payload as space-separated words (None: not a JWT, or no such claim).
    Unverified on purpose: the token came to us from the IdP's token endpoint, over TLS, in answer
    to our own authenticated request; its signature is for the resource servers. Cached per token:
    read on every request."""
    parts = token.split(".")
    if len(parts) != 3:
        return None
    try:
        payload = json.loads(base64.urlsafe_b64decode(parts[1] + "=" * (-len(parts[1]) % 4)))
    except (ValueError, TypeError):
        return None
    value = payload.get(claim) if isinstance(payload, dict) else None
    if isinstance(value, str):
        return value
    if isinstance(value, list):
        return " ".join(str(item) for item in value if isinstance(item, str))
    return None


def _claimed_scopes(tokens: TokenSet, claim: str) -> str | None:
    for token in (tokens.access_token, tokens.id_token):
        if token:
            found = _jwt_claim(token, claim)
            if found is not None:
                return found
    return None


#: the record format this release writes. Format 1 (0.1, 0.2): the session JSON alone. Format 2 (0.3):
#: the same JSON, which 0.2 still reads, plus an "extras" document beside it (per-upstream tokens, the
#: DPoP key) that 0.2 never reads and leaves in place when it writes. A record without extras is
#: format 1 and is read as such. Readers ignore keys they do not know, so the next format can add some.
RECORD_FORMAT = 2
#: the longest client label a record keeps (`Session.client`)
MAX_CLIENT_LABEL = 64


@dataclass(slots=True)
class Session:
    """One signed-in user on one device. ``version`` moves on every write (compare-and-set)."""

    id: str
    sub: str
    tokens: TokenSet
    created_at: float
    last_seen: float
    claims: dict[str, Any] = field(default_factory=dict)
    sid: str | None = None
    kind: Literal["browser", "native"] = "browser"
    version: int = 1
    #: who holds the refresh claim (kept in clear beside the record, not inside it)
    refresh_claim: str | None = None
    #: each upstream's own access token (RFC 8707 resources, scopes, audiences, token exchange), by
    #: upstream name; the refresh token is the session's one chain, in ``tokens``
    upstream_tokens: dict[str, TokenSet] = field(default_factory=dict)
    #: the session's DPoP key pair (a private JWK), when tokens are sender-constrained
    dpop_key: dict[str, Any] | None = None
    #: a short label of the client it was signed in from ("Firefox on Linux", "native app"), for
    #: the user's list of their sessions; never the raw User-Agent
    client: str | None = None

    @staticmethod
    def new_id() -> str:
        """256 random bits, URL-safe."""
        return secrets.token_urlsafe(32)

    @property
    def user(self) -> dict[str, Any]:
        return {"sub": self.sub, "name": self.claims.get("name"), "email": self.claims.get("email")}

    def to_json(self) -> bytes:
        """The format-1 part: exactly the keys 0.2 knows (it refuses a record with others)."""
        data = {name: getattr(self, name) for name in _FORMAT1_KEYS}
        data["tokens"] = _token_dict(self.tokens, _FORMAT1_TOKEN_KEYS)
        return json.dumps(data, separators=(",", ":")).encode()

    def extras_json(self) -> bytes | None:
        """The format-2 part, or None when there is nothing beyond format 1."""
        if not self.upstream_tokens and self.dpop_key is None and self.tokens.scope is None and self.client is None:
            return None
        data: dict[str, Any] = {
            "format": RECORD_FORMAT,
            "upstream_tokens": {name: _token_dict(tokens) for name, tokens in self.upstream_tokens.items()},
        }
        if self.dpop_key is not None:
            data["dpop_key"] = self.dpop_key
        if self.tokens.scope is not None:
            data["scope"] = self.tokens.scope
        if self.client is not None:
            data["client"] = self.client[:MAX_CLIENT_LABEL]
        return json.dumps(data, separators=(",", ":")).encode()

    @classmethod
    def from_json(cls, raw: bytes, version: int, extras: bytes | None = None) -> Session:
        data = json.loads(raw)
        known = {name: data[name] for name in _FORMAT1_KEYS if name in data}
        known["tokens"] = _token_set(data["tokens"])
        session = cls(**known, version=version)
        if extras:
            more = json.loads(extras)
            session.upstream_tokens = {
                str(name): _token_set(tokens) for name, tokens in (more.get("upstream_tokens") or {}).items()
            }
            key = more.get("dpop_key")
            session.dpop_key = key if isinstance(key, dict) else None
            scope = more.get("scope")
            session.tokens.scope = scope if isinstance(scope, str) else None
            client = more.get("client")
            session.client = client[:MAX_CLIENT_LABEL] if isinstance(client, str) else None
        return session

    def __repr__(self) -> str:  # never print tokens
        return f"Session(sub={self.sub!r}, version={self.version}, kind={self.kind!r})"


_FORMAT1_KEYS = ("id", "sub", "tokens", "created_at", "last_seen", "claims", "sid", "kind")
_TOKEN_KEYS = tuple(f.name for f in dataclasses.fields(TokenSet))
_FORMAT1_TOKEN_KEYS = tuple(name for name in _TOKEN_KEYS if name != "scope")


def _token_dict(tokens: TokenSet, keys: tuple[str, ...] = _TOKEN_KEYS) -> dict[str, Any]:
    return {name: getattr(tokens, name) for name in keys}


def _token_set(data: dict[str, Any]) -> TokenSet:
    return TokenSet(**{name: data[name] for name in _TOKEN_KEYS if name in data})
