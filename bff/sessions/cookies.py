"""Set-Cookie values for the session and login-transaction cookies (framework-free strings)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal


@dataclass(frozen=True, slots=True)
class CookiePolicy:
    """``__Host-`` cookies (Secure, Path=/, no Domain) unless ``secure`` is off for plain-http tests."""

    name: str
    secure: bool
    samesite: Literal["strict", "lax"]
    max_age: int

    def set(self, value: str) -> str:
        return self._header(value, self.max_age)

    def clear(self) -> str:
        return self._header("", 0)

    def _header(self, value: str, max_age: int) -> str:
        parts = [f"{self.name}={value}", "Path=/", f"Max-Age={max_age}", "HttpOnly"]
        if self.secure:
            parts.append("Secure")
        parts.append(f"SameSite={self.samesite.capitalize()}")
        return "; ".join(parts)
