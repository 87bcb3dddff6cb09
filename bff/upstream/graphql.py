"""GraphQL upstreams: POST {query, variables}; an ``errors`` answer becomes `UpstreamError`."""

from __future__ import annotations

from typing import Any

from bff.errors import UpstreamError
from bff.upstream.base import UpstreamClient


class GraphQLClient(UpstreamClient):
    """Posts to the pooled client's own URL (no base_url: httpx would append a slash)."""

    def __init__(self, *args: Any, endpoint: str, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._endpoint = endpoint

    async def request(self, query: str, variables: dict[str, Any] | None = None, *, idempotent: bool = True) -> Any:
        """The whole decoded answer, ``data`` and ``errors`` both (a gateway places the errors
        itself: `bff.sources.delegate`); a mutation is sent with ``idempotent=False`` (never retried)."""
        response = await self._request(
            "POST", self._endpoint, json={"query": query, "variables": variables or {}}, idempotent=idempotent
        )
        return self._json(response)

    async def execute(self, query: str, variables: dict[str, Any] | None = None) -> dict[str, Any]:
        # queries are idempotent: a connect failure may be retried
        response = await self._request(
            "POST", self._endpoint, json={"query": query, "variables": variables or {}}, idempotent=True
        )
        body = self._json(response)
        if not isinstance(body, dict):
            raise UpstreamError(self.name, f"Upstream {self.name!r} sent a malformed answer")
        if body.get("errors"):
            # The upstream's own messages may describe its internals: they stay out of our answer.
            raise UpstreamError(self.name, f"Upstream {self.name!r} answered with errors")
        data = body.get("data")
        if not isinstance(data, dict):
            raise UpstreamError(self.name, f"Upstream {self.name!r} sent no data")
        return data
