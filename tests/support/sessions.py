"""A stored session for tests that need a signed-in user without going through an IdP."""

from __future__ import annotations

import time
from typing import Any

from bff.sessions.models import Session, TokenSet


async def store_session(
    resources: Any,
    access_token: str,
    *,
    sub: str = "alice",
    ttl: float = 3600,
    lifetime: float | None = None,
    refresh_token: str | None = "r",
    scope: str | None = None,
) -> str:
    """Create a session holding ``access_token`` (valid ``ttl`` more seconds, issued ``lifetime``
    seconds before it expires); returns the signed cookie value."""
    now = time.time()
    session = Session(
        id=Session.new_id(),
        sub=sub,
        tokens=TokenSet(
            access_token=access_token,
            expires_at=now + ttl,
            issued_at=now + ttl - (lifetime if lifetime is not None else ttl),
            refresh_token=refresh_token,
            scope=scope,
        ),
        created_at=now,
        last_seen=now,
        claims={"name": sub.title(), "email": f"{sub}@example.com"},
    )
    await resources.store.create(session)
    return str(resources.crypto.sign(session.id))
