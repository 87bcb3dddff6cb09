"""The HTTP transport of upstream clients: aiohttp's connection pool behind httpx's API.

httpcore's pool costs more CPU per upstream call than the rest of a small GraphQL request
together (py-spy on `scripts/bench.py` runs: 56% of the BFF's samples); aiohttp's does not.
httpx-aiohttp provides the transport; we correct one mapping of its exceptions."""

from __future__ import annotations

import aiohttp
import httpx
from httpx_aiohttp import AiohttpTransport


class UpstreamTransport(AiohttpTransport):
    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        try:
            response: httpx.Response = await super().handle_async_request(request)
        except httpx.ConnectTimeout as exc:
            # httpx-aiohttp 0.2 maps a refused connection (ClientConnectorError) to ConnectTimeout
            # (it prefers the mapping of the parent class): a refused connection is no timeout.
            cause = exc.__cause__
            if isinstance(cause, aiohttp.ClientConnectorError) and not isinstance(cause, TimeoutError):
                raise httpx.ConnectError(str(exc), request=request) from cause
            raise
        return response
