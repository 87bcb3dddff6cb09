"""Server-side sessions: the model, the stores (memory, Redis), at-rest crypto and the cookie codec."""

from bff.sessions.crypto import SessionCrypto
from bff.sessions.models import Session, TokenSet
from bff.sessions.store import SessionStore

__all__ = ["Session", "SessionCrypto", "SessionStore", "TokenSet"]
