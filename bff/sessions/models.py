"""The session record and the token set it holds. Plain data; (de)serialised as JSON."""

from __future__ import annotations

import dataclasses
import json
import secrets
from dataclasses import dataclass, field
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

    @staticmethod
    def new_id() -> str:
        """256 random bits, URL-safe."""
        return secrets.token_urlsafe(32)

    @property
    def user(self) -> dict[str, Any]:
        return {"sub": self.sub, "name": self.claims.get("name"), "email": self.claims.get("email")}

    def to_json(self) -> bytes:
        data = dataclasses.asdict(self)
        data.pop("version")
        data.pop("refresh_claim")
        return json.dumps(data, separators=(",", ":")).encode()

    @classmethod
    def from_json(cls, raw: bytes, version: int) -> Session:
        data = json.loads(raw)
        data["tokens"] = TokenSet(**data["tokens"])
        return cls(**data, version=version)

    def __repr__(self) -> str:  # never print tokens
        return f"Session(sub={self.sub!r}, version={self.version}, kind={self.kind!r})"
