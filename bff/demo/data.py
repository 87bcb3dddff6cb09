"""Deterministic demo data: the same user always has the same orders of the same products."""

from __future__ import annotations

import hashlib
from datetime import UTC, datetime, timedelta
from typing import Any

_NAMES = ["Aurora", "Basil", "Cedar", "Dune", "Ember", "Fjord", "Grove", "Harbor", "Iris", "Juniper"]
_THINGS = ["Lamp", "Mug", "Notebook", "Backpack", "Kettle", "Scarf", "Speaker", "Planter", "Clock", "Blanket"]

PRODUCTS: dict[str, dict[str, Any]] = {}
for i in range(1, 41):
    pid = f"p{i}"
    PRODUCTS[pid] = {
        "id": pid,
        "name": f"{_NAMES[i % len(_NAMES)]} {_THINGS[(i // len(_NAMES) + 3 * i) % len(_THINGS)]}",
        "priceCents": 500 + (i * 731) % 9500,
    }

KNOWN_USERS = {
    "alice": {"name": "Alice Example", "email": "alice@example.com"},
    "bob": {"name": "Bob Example", "email": "bob@example.com"},
}

#: the demo API's own scopes (beyond OpenID Connect's), which `bff demo` asks for at sign-in
API_SCOPES = ("orders:read", "orders:write")
#: the scopes (beyond OpenID Connect's) each demo user may be granted, as shell-style patterns of
#: scope names (`fnmatch`): whatever the sign-in asks for, the dev IdP grants only the scopes that
#: match (the token response's ``scope`` says what was granted). Three tiers that hold for any
#: schema's scopes (`bff demo --schema ... --scopes ...`): alice every scope asked for, bob the
#: read-only ones (``orders:read``, ``billing.read``, ``read:profile``, never ``orders:write``),
#: carol none.
USER_SCOPES: dict[str, tuple[str, ...]] = {
    "alice": ("*",),
    "bob": ("*:read", "*.read", "read:*"),
    "carol": (),
}


def user(sub: str) -> dict[str, str]:
    known = KNOWN_USERS.get(sub)
    if known is not None:
        return {"id": sub, **known}
    return {"id": sub, "name": sub.replace("-", " ").title() or "User", "email": f"{sub}@example.com"}


def _seed(*parts: str) -> int:
    return int.from_bytes(hashlib.sha256("/".join(parts).encode()).digest()[:8], "big")


def orders(user_id: str, limit: int) -> list[dict[str, Any]]:
    base = datetime(2026, 1, 1, tzinfo=UTC)
    result = []
    for n in range(min(limit, 5 + _seed(user_id) % 4)):
        seed = _seed(user_id, str(n))
        items = [
            {"productId": f"p{1 + (seed >> (8 * k)) % len(PRODUCTS)}", "quantity": 1 + (seed >> (4 * k)) % 3}
            for k in range(1 + seed % 3)
        ]
        placed = base + timedelta(days=n * 9 + seed % 7, minutes=seed % 1440)
        result.append({"id": f"o-{user_id}-{n + 1}", "placedAt": placed.isoformat(), "items": items})
    return result


def search(query: str, first: int) -> list[dict[str, Any]]:
    needle = query.strip().lower()
    hits = [p for p in PRODUCTS.values() if needle in p["name"].lower()]
    return hits[: max(0, first)]
