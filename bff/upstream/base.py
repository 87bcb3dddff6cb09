"""The shared part of upstream clients: bearer tokens, one 401 retry, error mapping, metrics.

Transport and status errors are translated to the `bff.errors` tree in ONE place
(`UpstreamClient._send`), after httpx's `map_httpcore_exceptions`.
"""

from __future__ import annotations

import time
from typing import Any, Protocol

import httpx

from bff.errors import Unauthenticated, UpstreamError, UpstreamTimeout, UpstreamUnauthorized
from bff.metrics import Metrics


class TokenSource(Protocol):
    """What an upstream client asks for a bearer token (the GraphQL context implements it)."""

    async def access_token(self) -> str:
        """The current, fresh access token; raises `Unauthenticated` without a session."""
        ...

    async def refreshed_access_token(self, rejected: str) -> str:
        """A new token after an upstream refused ``rejected`` (forces one refresh)."""
        ...


class UpstreamClient:
    """One upstream, for one GraphQL request; cheap to build over an app-wide pooled client."""

    def __init__(
        self,
        name: str,
        http: httpx.AsyncClient,
        tokens: TokenSource | None,
        metrics: Metrics | None = None,
    ) -> None:
        self.name = name
        self.http = http
        self.tokens = tokens
        self.metrics = metrics

    async def request(self, method: str, url: str, **kwargs: Any) -> httpx.Response:
        """Send with the user's bearer token; on 401 refresh once and retry once."""
        if self.tokens is None:
            return await self._send(method, url, None, **kwargs)
        token = await self.tokens.access_token()
        try:
            return await self._send(method, url, token, **kwargs)
        except UpstreamUnauthorized:
            token = await self.tokens.refreshed_access_token(token)
        try:
            return await self._send(method, url, token, **kwargs)
        except UpstreamUnauthorized:
            raise Unauthenticated(f"Upstream {self.name!r} refused the session's token") from None

    async def _send(self, method: str, url: str, token: str | None, **kwargs: Any) -> httpx.Response:
        headers = dict(kwargs.pop("headers", None) or {})
        if token is not None:
            headers["Authorization"] = f"Bearer {token}"
        started = time.perf_counter()
        status = "error"
        try:
            response = await self.http.request(method, url, headers=headers, **kwargs)
            status = str(response.status_code)
        except httpx.TimeoutException as exc:
            status = "timeout"
            raise UpstreamTimeout(self.name, f"Upstream {self.name!r} timed out") from exc
        except httpx.HTTPError as exc:
            raise UpstreamError(self.name, f"Upstream {self.name!r} is unreachable ({type(exc).__name__})") from exc
        finally:
            if self.metrics is not None:
                self.metrics.upstream_duration.labels(self.name, status).observe(time.perf_counter() - started)
        if response.status_code == 401:
            raise UpstreamUnauthorized(self.name, status=401)
        if response.status_code >= 400:
            raise UpstreamError(
                self.name,
                f"Upstream {self.name!r} answered HTTP {response.status_code}",
                status=response.status_code,
            )
        return response

    def json(self, response: httpx.Response) -> Any:
        try:
            return response.json()
        except ValueError:
            raise UpstreamError(self.name, f"Upstream {self.name!r} sent invalid JSON") from None
