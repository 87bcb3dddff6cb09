"""Login transactions kept in the browser: one encrypted, short-lived cookie per sign-in in flight.

``/auth/login`` writes nothing to the session store: the transaction (PKCE verifier, nonce,
``return_to``, a native app's hand-off details) is sealed with AES-GCM into a cookie whose name is
derived from the transaction's ``state`` (``bff_login_<tag>``). So:

- any number of sign-ins started in one browser (several tabs) complete, in any order: each
  callback finds its own cookie and clears only that one;
- a callback whose state this browser did not start (unknown, forged, or another browser's)
  finds no cookie: it is refused and nothing else changes;
- an anonymous flood of ``/auth/login`` costs the server nothing it keeps.

At most `MAX_IN_FLIGHT` transactions, of `MAX_TOTAL_BYTES` together, live in one browser (the
oldest are dropped when a new one starts; ``return_to`` is capped), so the Cookie header stays small.
"""

from __future__ import annotations

import base64
import binascii
import dataclasses
import hashlib
import hmac
import json
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from bff.errors import LoginError
from bff.sessions.cookies import CookiePolicy
from bff.sessions.crypto import DecryptError, SessionCrypto

MAX_IN_FLIGHT = 5
#: and at most this many bytes of them in the Cookie header (proxies limit one header line to ~8 KB)
MAX_TOTAL_BYTES = 4096
#: a cookie's name and value together must stay under the 4096 bytes every browser keeps
MAX_COOKIE_BYTES = 3800
_PURPOSE = b"bff login transaction v1\x00"
_TAG_LEN = 16
_CLOCK_SKEW = 60.0


@dataclass(frozen=True, slots=True)
class Transaction:
    """One sign-in in flight. ``native`` holds an app's redirect URI, challenge and state;
    ``acr_values`` and ``max_age`` what it asked of the IdP (checked against the ID token)."""

    state: str
    verifier: str
    nonce: str
    return_to: str
    created_at: float
    native: dict[str, str] | None = None
    acr_values: str | None = None
    max_age: int | None = None

    @classmethod
    def from_json(cls, raw: bytes) -> Transaction:
        data: Any = json.loads(raw)
        native = data.get("native")
        acr_values, max_age = data.get("acr_values"), data.get("max_age")  # absent before 0.3
        return cls(
            state=str(data["state"]),
            verifier=str(data["verifier"]),
            nonce=str(data["nonce"]),
            return_to=str(data["return_to"]),
            created_at=float(data["created_at"]),
            native={str(k): str(v) for k, v in native.items()} if isinstance(native, dict) else None,
            acr_values=str(acr_values) if acr_values else None,
            max_age=int(max_age) if max_age is not None else None,
        )

    def to_json(self) -> bytes:
        data = dataclasses.asdict(self)
        for name in ("acr_values", "max_age"):  # only when asked: the cookie stays as small as before
            if data[name] is None:
                del data[name]
        return json.dumps(data, separators=(",", ":")).encode()


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


class LoginTransactions:
    """Seals transactions into cookies and finds them again by state."""

    def __init__(self, crypto: SessionCrypto, policy: CookiePolicy, *, timeout: float) -> None:
        self.crypto = crypto
        self.policy = policy  # its name is the prefix: ``<name>_<tag>``
        self.timeout = timeout
        self.prefix = f"{policy.name}_"

    def cookie_name(self, state: str) -> str:
        tag = hashlib.sha256(_PURPOSE + state.encode()).hexdigest()[:_TAG_LEN]
        return f"{self.prefix}{tag}"

    def _cookie(self, name: str) -> CookiePolicy:
        return dataclasses.replace(self.policy, name=name)

    def _open(self, name: str, value: str) -> Transaction | None:
        try:
            plain = self.crypto.decrypt(_unb64(value), _PURPOSE + name.encode())
            return Transaction.from_json(plain)
        except (DecryptError, ValueError, TypeError, KeyError, AttributeError, binascii.Error):
            return None

    def begin(self, transaction: Transaction, cookies: Mapping[str, str]) -> list[str]:
        """``Set-Cookie`` values that start ``transaction``: its own cookie, plus clearing this
        browser's expired or unreadable login cookies and the oldest ones beyond `MAX_IN_FLIGHT`.
        Raises `LoginError` when the transaction would not fit in a cookie."""
        name = self.cookie_name(transaction.state)
        value = _b64(self.crypto.encrypt(transaction.to_json(), _PURPOSE + name.encode()))
        if len(name) + len(value) > MAX_COOKIE_BYTES:
            raise LoginError("this sign-in request is too large (redirect URI or state)")
        headers: list[str] = []
        live: list[tuple[float, str, int]] = []
        for other, raw in cookies.items():
            if not other.startswith(self.prefix) or other == name:
                continue
            found = self._open(other, raw)
            if found is None or self.expired(found, transaction.created_at):
                headers.append(self._cookie(other).clear())
            else:
                live.append((found.created_at, other, len(other) + len(raw) + 2))
        live.sort()
        total = len(name) + len(value) + sum(size for _, _, size in live)
        while live and (len(live) >= MAX_IN_FLIGHT or total > MAX_TOTAL_BYTES):
            _, oldest, size = live.pop(0)
            total -= size
            headers.append(self._cookie(oldest).clear())
        headers.append(self._cookie(name).set(value))
        return headers

    def find(self, state: str, cookies: Mapping[str, str]) -> Transaction | None:
        """The transaction of ``state`` if THIS browser started it (its cookie is here and opens
        under our keys with this very state), else None. Expired ones are returned: see `expired`."""
        name = self.cookie_name(state)
        raw = cookies.get(name)
        if not raw:
            return None
        found = self._open(name, raw)
        if found is None or not hmac.compare_digest(found.state.encode(), state.encode()):
            return None
        return found

    def expired(self, transaction: Transaction, now: float | None = None) -> bool:
        now = time.time() if now is None else now
        return not (transaction.created_at - _CLOCK_SKEW <= now <= transaction.created_at + self.timeout)

    def remaining(self, transaction: Transaction) -> float:
        return max(1.0, transaction.created_at + self.timeout - time.time())

    def clear(self, state: str) -> str:
        return self._cookie(self.cookie_name(state)).clear()
