"""Upstream HTTP on aiohttp directly, behind the small part of httpx's client API that
`UpstreamClient` uses (``request``, ``get``, ``timeout``, ``aclose``).

Why by hand: httpx's client machinery (Request/Response objects, URL merging, header and cookie
handling, event hooks) cost more CPU per upstream call than aiohttp's own request (profile in
issue 15: httpx 10.7 % of the BFF's CPU on the viewer query, its aiohttp transport adapter 0.7 %).
This keeps aiohttp's pool and nothing else. aiohttp's exceptions are translated here to httpx's,
so the one error mapping of upstream calls (`UpstreamClient._send`) stays as it is; httpx remains
the test seam (respx, ``MockTransport``) and the path used when OpenTelemetry is on (its
instrumentation is httpx's).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Iterator, Mapping
from typing import Any

import aiohttp
import httpx
import orjson


@contextlib.contextmanager
def _translated(url: str) -> Iterator[None]:
    """aiohttp's exceptions as httpx's, for reading streams (`AiohttpUpstream.request` calls
    `_translate` itself: a context manager per upstream call costs a generator and a cycle)."""
    try:
        yield
    except _FAILURES as exc:
        raise _translate(exc, url) from exc


#: what aiohttp raises for a failed exchange (ValueError: a malformed answer)
_FAILURES = (aiohttp.ClientError, TimeoutError, asyncio.IncompleteReadError, ValueError)


def _translate(exc: BaseException, url: str) -> httpx.HTTPError:
    if isinstance(exc, aiohttp.ConnectionTimeoutError):
        return httpx.ConnectTimeout(f"connect timed out: {url}")
    if isinstance(exc, aiohttp.ServerTimeoutError | TimeoutError):  # TimeoutError: the total timeout
        return httpx.ReadTimeout(f"timed out: {url}")
    if isinstance(exc, aiohttp.ClientConnectorError):
        return httpx.ConnectError(f"cannot connect: {url}")
    return httpx.RequestError(f"{type(exc).__name__}: {url}")


class _Body(httpx.AsyncByteStream):
    """A streamed body: each chunk as soon as it arrives (never buffered to a size)."""

    def __init__(self, response: aiohttp.ClientResponse, url: str) -> None:
        self.response = response
        self.url = url

    async def __aiter__(self) -> AsyncIterator[bytes]:
        while True:
            with _translated(self.url):
                chunk = await self.response.content.readany()
            if not chunk:
                return
            yield chunk

    async def aclose(self) -> None:
        # a stream left before its end cannot go back to the pool: its connection is closed
        self.response.close()


class UpstreamResponse:
    """What callers read of an answer: status, headers, body, ``json()``."""

    __slots__ = ("content", "headers", "status_code")

    def __init__(self, status_code: int, headers: Mapping[str, str], content: bytes) -> None:
        self.status_code = status_code
        self.headers = headers
        self.content = content

    def json(self) -> Any:
        """Raises ValueError on a body that is not JSON (orjson's error is one)."""
        return orjson.loads(self.content)

    @property
    def text(self) -> str:
        return self.content.decode("utf-8", errors="replace")


class AiohttpUpstream:
    """One pooled aiohttp session per upstream for the whole process (created on first use, in the
    running loop)."""

    def __init__(self, base_url: str, *, timeout: float, max_connections: int) -> None:
        self.base_url = base_url.rstrip("/")
        self.timeout = httpx.Timeout(timeout)
        self._limit = max_connections
        self._session: aiohttp.ClientSession | None = None

    def _client(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            connector = aiohttp.TCPConnector(limit=self._limit, limit_per_host=self._limit, ttl_dns_cache=300)
            self._session = aiohttp.ClientSession(
                connector=connector,
                trust_env=False,
                auto_decompress=True,
                json_serialize=lambda value: orjson.dumps(value).decode(),
                timeout=aiohttp.ClientTimeout(total=self.timeout.read),
            )
        return self._session

    def absolute_url(self, url: str) -> str:
        """Where a request for ``url`` goes (relative URLs are under the base URL)."""
        return self._url(url)

    def _url(self, url: str) -> str:
        if url.startswith(("http://", "https://")):
            return url
        if not url:
            return self.base_url
        return f"{self.base_url}/{url.lstrip('/')}"

    async def request(
        self,
        method: str,
        url: str,
        *,
        headers: Mapping[str, str] | None = None,
        params: Mapping[str, Any] | None = None,
        json: Any = None,
        content: bytes | None = None,
        timeout: float | None = None,
    ) -> UpstreamResponse:
        """Raises httpx's ``ConnectError``, ``ConnectTimeout``, ``ReadTimeout`` or ``RequestError``.
        ``timeout``: seconds for the whole exchange (None: the upstream's configured timeout)."""
        send_headers = dict(headers or {})
        data = content
        if json is not None:
            data = orjson.dumps(json)
            send_headers.setdefault("Content-Type", "application/json")
        query = {k: str(v) for k, v in params.items()} if params else None
        options: dict[str, Any] = {}
        if timeout is not None:  # else the session's own (the upstream's configured timeout)
            options["timeout"] = aiohttp.ClientTimeout(total=timeout)
        try:
            async with self._client().request(
                method,
                self._url(url),
                headers=send_headers,
                params=query,
                data=data,
                allow_redirects=False,
                **options,
            ) as response:
                body = await response.read()
                return UpstreamResponse(response.status, response.headers, body)
        except _FAILURES as exc:
            raise _translate(exc, url) from exc

    @contextlib.asynccontextmanager
    async def stream(
        self,
        method: str,
        url: str,
        *,
        headers: Mapping[str, str] | None = None,
        params: Mapping[str, Any] | None = None,
        timeout: httpx.Timeout | None = None,
    ) -> AsyncIterator[httpx.Response]:
        """An answer whose body is read as it arrives (``aiter_bytes``, ``aiter_lines``), as
        httpx's ``AsyncClient.stream`` gives it. ``timeout.connect`` bounds connecting,
        ``timeout.read`` each wait for more of the body; there is no total. Raises httpx's
        exceptions, while opening and while reading."""
        timeout = timeout or self.timeout
        options = aiohttp.ClientTimeout(total=None, sock_connect=timeout.connect, sock_read=timeout.read)
        query = {k: str(v) for k, v in params.items()} if params else None
        async with contextlib.AsyncExitStack() as opened:
            with _translated(url):
                answer = await opened.enter_async_context(
                    self._client().request(
                        method,
                        self._url(url),
                        headers=dict(headers or {}),
                        params=query,
                        allow_redirects=False,
                        auto_decompress=False,  # httpx decodes, as its Content-Encoding says
                        timeout=options,
                    )
                )
            response = httpx.Response(
                answer.status,
                headers=answer.raw_headers,
                stream=_Body(answer, url),
                request=httpx.Request(method, self._url(url)),
            )
            try:
                yield response
            finally:
                await response.aclose()

    async def get(self, url: str, *, timeout: float | None = None) -> UpstreamResponse:
        return await self.request("GET", url, timeout=timeout)

    async def aclose(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None
