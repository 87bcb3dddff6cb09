"""bff: a Backend-for-Frontend that owns the OIDC login and token refresh server-side."""

__version__ = "0.1.0"
