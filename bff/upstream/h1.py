"""Upstream requests over a small HTTP/1.1 keep-alive pool of our own: asyncio protocols on the
running loop, httptools (llhttp, the parser uvicorn uses) for the answers.

Why by hand: aiohttp's ``ClientSession._request`` builds, per call, a request object, a response
object, a stream reader, a payload writer, a timer context, trace hooks and header multidicts; on the
viewer query (three upstream calls) that was ~25 % of the worker's CPU (py-spy, issue 26). What the BFF
needs of an upstream exchange is narrow: a request with a small body, the whole answer in memory, a
deadline, a pool. This does that and nothing more: one future, one timer handle and one parser per
connection, the answer parsed in C. aiohttp stays for what is not narrow: streamed answers (SSE,
`AiohttpUpstream.stream`). The behaviour callers see is aiohttp's, on purpose (the tests run both):

* the same exceptions (httpx's: ``ConnectError``, ``ConnectTimeout``, ``ReadTimeout``,
  ``RequestError``), so the one error mapping of `UpstreamClient` stays;
* a request sent on a reused connection that the server closed before answering is sent once more
  on a new one, for idempotent methods only (RFC 9112 section 9.3.1; aiohttp does the same);
* ``Accept-Encoding: gzip, deflate`` and answers decompressed; no redirects followed; no
  environment proxies; at most ``max_connections`` connections per upstream, further requests
  wait for one.
"""

from __future__ import annotations

import asyncio
import collections
import re
import ssl
import string
import time
import zlib
from collections.abc import Mapping
from typing import Any
from urllib.parse import quote, quote_plus, urlencode, urlsplit

import httptools
import httpx
import orjson
from multidict import CIMultiDict

from bff.upstream.aio import AiohttpUpstream, UpstreamResponse

#: RFC 9110 section 9.2.2
IDEMPOTENT = frozenset({"GET", "HEAD", "OPTIONS", "TRACE", "PUT", "DELETE"})
#: an idle connection older than this is closed rather than reused: under the keep-alive timeout of
#: the usual servers (uvicorn, Node and Apache close after 5 s), so that a request is not sent on a
#: connection the server is closing at that moment (a POST could not be sent again). aiohttp's 15 s
#: raced uvicorn's 5 s: a burst of 64 requests reusing connections idle for ~5 s failed together
#: (scripts/bench.py, issue 26) and opened the upstream's breaker. A server's own
#: ``Keep-Alive: timeout=N`` lowers it for its connections.
IDLE_SECONDS = 4.0
#: characters left as they are in a path or query (what is already escaped stays escaped)
_PATH_SAFE = "/%:@!$&'()*+,;=-._~"
_QUERY_SAFE = _PATH_SAFE + "?"
#: escapes yarl decodes (its requoting, as aiohttp sent URLs): unreserved characters, ``!$'()*,``
#: and, in a path, ``@:``, in a query ``?/:@``
_UNRESERVED = frozenset(string.ascii_letters + string.digits + "-._~!$'()*,")
_PATH_DECODED = _UNRESERVED | frozenset("@:")
_QUERY_DECODED = _UNRESERVED | frozenset("?/:@")
_ESCAPE = re.compile(r"%([0-9A-Fa-f]{2})")
#: what stays as it is in a parameter's name or value (yarl's, as aiohttp sends them: delimiters such as
#: ``,`` of a form-style list stay literal, ``&=+;`` are escaped, a space is ``+``)
_PARAM_SAFE = "?/:@!$'()*,"
#: URLs whose escaped form is remembered, per upstream
_MAX_TARGETS = 1024


class _Closed(Exception):
    """The connection ended before a whole answer (``fresh``: not one byte of it had arrived)."""

    def __init__(self, fresh: bool) -> None:
        super().__init__("the upstream closed the connection before answering")
        self.fresh = fresh


class _Connection(asyncio.Protocol):
    """One keep-alive connection: at most one exchange at a time."""

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.parser = httptools.HttpResponseParser(self)
        self.waiter: asyncio.Future[None] | None = None
        self.closed = False
        self.idle_since = 0.0
        self.idle_limit = IDLE_SECONDS  # lowered by the server's Keep-Alive header
        self.head = False  # the exchange is a HEAD request: its answer has no body, whatever it says
        self._reset()

    def _reset(self) -> None:
        self.status = 0
        self.headers: list[tuple[bytes, bytes]] = []
        self.body: list[bytes] = []
        self.received = False
        self.headers_done = False
        self.complete = False
        self.delimited = False  # Content-Length or chunked: else the body ends with the connection
        self.keep_alive = False

    # asyncio.Protocol

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        if self.waiter is None or self.waiter.done():  # bytes nobody asked for: the state is unknown
            self.close()
            return
        self.received = True
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserError as exc:
            self._fail(httpx.RemoteProtocolError(f"malformed answer: {exc}"))
            self.close()

    def eof_received(self) -> bool:
        self.closed = True
        self._ended()
        return False  # let the transport close

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self._ended()

    def _ended(self) -> None:
        if self.complete or self.waiter is None or self.waiter.done():
            return
        if self.headers_done and not self.delimited:
            self.complete = True  # an answer without a length ends with its connection
            self.waiter.set_result(None)
        else:
            self._fail(_Closed(fresh=not self.received))

    def _fail(self, exc: BaseException) -> None:
        if self.waiter is not None and not self.waiter.done():
            self.waiter.set_exception(exc)

    # httptools callbacks

    def on_header(self, name: bytes, value: bytes) -> None:
        self.headers.append((name, value))
        lowered = name.lower()
        if lowered == b"content-length" or (lowered == b"transfer-encoding" and b"chunked" in value.lower()):
            self.delimited = True

    def on_headers_complete(self) -> None:
        self.status = self.parser.get_status_code()
        self.keep_alive = self.parser.should_keep_alive()  # llhttp knows it only until the message ends
        self.headers_done = True
        if self.head and self.status >= 200:
            self.complete = True  # the parser would wait for the body its Content-Length announces
            self.closed = True  # and would then read the next answer as that body: not reused
            if self.waiter is not None and not self.waiter.done():
                self.waiter.set_result(None)

    def on_body(self, body: bytes) -> None:
        self.body.append(body)

    def on_message_complete(self) -> None:
        if self.status < 200:  # an interim answer (100 Continue, 103 Early Hints): the real one follows
            self._reset()
            self.received = True
            return
        self.complete = True
        if self.waiter is not None and not self.waiter.done():
            self.waiter.set_result(None)

    # the exchange

    def exchange(self, payload: bytes, loop: asyncio.AbstractEventLoop, *, head: bool) -> asyncio.Future[None]:
        """Send ``payload``; the future completes with the whole answer in this connection's state."""
        self._reset()
        self.head = head
        self.waiter = loop.create_future()
        assert self.transport is not None
        self.transport.write(payload)
        return self.waiter

    def expire(self) -> None:
        """The exchange's deadline passed: it fails, and the connection goes (a late answer to
        it would be read as the answer to the next request)."""
        if self.waiter is not None and not self.waiter.done():
            self.waiter.set_exception(TimeoutError())
            self.close()

    def reusable(self) -> bool:
        return not self.closed and self.complete and self.keep_alive

    def close(self) -> None:
        self.closed = True
        if self.transport is not None:
            self.transport.close()


class _Pool:
    """The connections to one origin (scheme, host, port)."""

    def __init__(self, scheme: str, host: str, port: int) -> None:
        self.scheme = scheme
        self.host = host
        self.port = port
        self.idle: collections.deque[_Connection] = collections.deque()

    def take(self, now: float) -> _Connection | None:
        """The most recently used live idle connection (older ones time out at the server first)."""
        while self.idle:
            connection = self.idle.pop()
            transport = connection.transport
            fresh = transport is not None and not transport.is_closing()
            if fresh and not connection.closed and now - connection.idle_since < connection.idle_limit:
                return connection
            connection.close()
        return None

    def close(self) -> None:
        while self.idle:
            self.idle.pop().close()


class H1Upstream(AiohttpUpstream):
    """`AiohttpUpstream` whose plain requests (`request`, `get`) go through `_Pool`; streamed
    answers (`stream`) stay on aiohttp's session."""

    def __init__(self, base_url: str, *, timeout: float, max_connections: int) -> None:
        super().__init__(base_url, timeout=timeout, max_connections=max_connections)
        self._pools: dict[tuple[str, str, int], _Pool] = {}
        self._slots = asyncio.Semaphore(max_connections)
        self._ssl: ssl.SSLContext | None = None
        base = urlsplit(self.base_url)
        self._base_pool = self._pool(base.scheme, base.hostname or "", base.port)
        self._base_path = base.path.rstrip("/")
        self._base_host = base.netloc.rpartition("@")[2].encode("idna").decode("ascii")
        self._targets: dict[str, tuple[_Pool, str, str]] = {}

    def _pool(self, scheme: str, host: str, port: int | None) -> _Pool:
        if scheme not in ("http", "https") or not host:
            raise httpx.UnsupportedProtocol(f"not an http(s) URL: {scheme}://{host}")
        port = port or (443 if scheme == "https" else 80)
        key = (scheme, host, port)
        pool = self._pools.get(key)
        if pool is None:
            pool = self._pools[key] = _Pool(scheme, host, port)
        return pool

    def _target(self, url: str, params: Mapping[str, Any] | None) -> tuple[_Pool, str, str]:
        """Where ``url`` goes: the pool, the Host header and the request target (path and query).
        The escaped form of each URL is remembered (resolvers call the same few paths again and
        again; a full table is emptied, not managed)."""
        known = self._targets.get(url)
        if known is None:
            known = self._split(url)
            if len(self._targets) >= _MAX_TARGETS:
                self._targets.clear()
            self._targets[url] = known
        pool, host, target = known
        if params:
            encoded = urlencode(
                {key: str(value) for key, value in params.items()}, safe=_PARAM_SAFE, quote_via=quote_plus
            )
            target = f"{target}{'&' if '?' in target else '?'}{encoded}"
        return pool, host, target

    def _split(self, url: str) -> tuple[_Pool, str, str]:
        if url.startswith(("http://", "https://")):
            parts = urlsplit(url)
            pool = self._pool(parts.scheme, parts.hostname or "", parts.port)
            host = parts.netloc.rpartition("@")[2].encode("idna").decode("ascii")
            path, query = parts.path or "/", parts.query
        else:
            pool, host = self._base_pool, self._base_host
            relative = url.lstrip("/")
            path = f"{self._base_path}/{relative}" if relative else self._base_path or "/"
            path, _, query = path.partition("?")
        target = _requoted(quote(path, safe=_PATH_SAFE), _PATH_DECODED)
        if "/." in target:
            target = _without_dot_segments(target)
        if query:
            target = f"{target}?{_requoted(quote(query, safe=_QUERY_SAFE), _QUERY_DECODED)}"
        return pool, host, target

    async def _connect(self, pool: _Pool, seconds: float, url: str) -> _Connection:
        loop = asyncio.get_running_loop()
        context: ssl.SSLContext | None = None
        if pool.scheme == "https":
            if self._ssl is None:
                self._ssl = ssl.create_default_context()
            context = self._ssl
        try:
            async with asyncio.timeout(seconds):
                _, connection = await loop.create_connection(_Connection, pool.host, pool.port, ssl=context)
        except TimeoutError:
            raise httpx.ConnectTimeout(f"connect timed out: {url}") from None
        except OSError as exc:  # refused, unreachable, DNS, TLS (ssl.SSLError is an OSError)
            raise httpx.ConnectError(f"cannot connect: {url}") from exc
        return connection

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
        seconds = timeout if timeout is not None else self.timeout.read or 300.0
        pool, host, target = self._target(url, params)
        body = orjson.dumps(json) if json is not None else content
        head = [f"{method} {target} HTTP/1.1\r\nHost: {host}\r\n"]
        given: set[str] = set()
        if headers:
            for name, value in headers.items():
                # CR, LF and NUL written out, not any() over a tuple: a generator per header (and
                # `in` is memchr-fast: a regex scanned a 1 KB token character by character)
                if (
                    "\r" in value
                    or "\n" in value
                    or "\0" in value
                    or ":" in name
                    or "\r" in name
                    or "\n" in name
                    or "\0" in name
                ):
                    raise httpx.RequestError(f"invalid header {name!r}: {url}")
                head.append(f"{name}: {value}\r\n")
                given.add(name.lower())
        if json is not None and "content-type" not in given:
            head.append("Content-Type: application/json\r\n")
        if "accept" not in given:
            head.append("Accept: */*\r\n")
        if "accept-encoding" not in given:
            head.append("Accept-Encoding: gzip, deflate\r\n")
        if "user-agent" not in given:
            head.append("User-Agent: bff\r\n")
        if body is not None or method in ("POST", "PUT", "PATCH"):
            head.append(f"Content-Length: {len(body or b'')}\r\n")
        head.append("\r\n")
        try:
            payload = "".join(head).encode("latin-1") + (body or b"")
        except UnicodeEncodeError:
            raise httpx.RequestError(f"a header is not Latin-1: {url}") from None
        loop = asyncio.get_running_loop()
        deadline = loop.time() + seconds
        if self._slots.locked():  # every connection is busy: wait for one, within the deadline
            try:
                async with asyncio.timeout_at(deadline):
                    await self._slots.acquire()
            except TimeoutError:
                raise httpx.ReadTimeout(f"timed out waiting for a connection: {url}") from None
        else:
            await self._slots.acquire()  # at once
        try:
            return await self._exchange(pool, payload, method, url, deadline, loop)
        finally:
            self._slots.release()

    async def _exchange(
        self, pool: _Pool, payload: bytes, method: str, url: str, deadline: float, loop: asyncio.AbstractEventLoop
    ) -> UpstreamResponse:
        connection = pool.take(time.monotonic())
        retry = method in IDEMPOTENT and connection is not None
        while True:
            if connection is None:
                connection = await self._connect(pool, deadline - loop.time(), url)
            # the deadline as one timer on the exchange's own future (no asyncio.timeout object per call)
            waiter = connection.exchange(payload, loop, head=method == "HEAD")
            timer = loop.call_at(deadline, connection.expire)
            try:
                await waiter
            except _Closed as closed:
                connection.close()
                if retry and closed.fresh:  # a stale keep-alive connection: nothing reached the upstream
                    retry, connection = False, None
                    continue
                raise httpx.RequestError(f"ServerDisconnectedError: {url}") from None
            except TimeoutError:
                raise httpx.ReadTimeout(f"timed out: {url}") from None
            except BaseException:  # cancelled, malformed: the connection's state is unknown
                connection.close()
                raise
            finally:
                timer.cancel()
            return self._answer(connection, pool, url)

    def _answer(self, connection: _Connection, pool: _Pool, url: str) -> UpstreamResponse:
        headers: CIMultiDict[str] = CIMultiDict()
        encoding = b""
        for name, value in connection.headers:
            lowered = name.lower()
            if lowered == b"content-encoding":
                encoding = value.strip().lower()
            elif lowered == b"keep-alive":
                connection.idle_limit = _idle_limit(value)
            headers.add(name.decode("latin-1"), value.decode("latin-1"))
        content = b"".join(connection.body)
        status = connection.status
        if connection.reusable():
            connection.idle_since = time.monotonic()
            pool.idle.append(connection)
        else:
            connection.close()
        if encoding in (b"gzip", b"x-gzip", b"deflate") and content:
            try:
                content = _decompress(content, encoding)
            except zlib.error:
                raise httpx.DecodingError(f"cannot decode the {encoding.decode()} answer: {url}") from None
        return UpstreamResponse(status, headers, content)

    async def aclose(self) -> None:
        for pool in self._pools.values():
            pool.close()
        await super().aclose()


def _idle_limit(keep_alive: bytes) -> float:
    """How long a connection may idle, by a ``Keep-Alive: timeout=N, max=M`` header: a second
    under N (never more than `IDLE_SECONDS`)."""
    for part in keep_alive.split(b","):
        name, _, value = part.strip().partition(b"=")
        if name.strip().lower() == b"timeout" and value.strip().isdigit():
            return max(0.0, min(IDLE_SECONDS, int(value.strip()) - 1.0))
    return IDLE_SECONDS


def _without_dot_segments(path: str) -> str:
    """RFC 3986 section 5.2.4 (as yarl normalises a path, so as aiohttp sent it): ``/a/./b`` is
    ``/a/b``, ``/a/b/../c`` is ``/a/c``, never above the root."""
    kept: list[str] = []
    segments = path.split("/")
    for index, segment in enumerate(segments):
        last = index == len(segments) - 1
        if segment == ".":
            if last:
                kept.append("")
        elif segment == "..":
            if len(kept) > 1:
                kept.pop()
            if last:
                kept.append("")
        else:
            kept.append(segment)
    return "/".join(kept) or "/"


def _requoted(text: str, decoded: frozenset[str]) -> str:
    """``text`` with each escape of a character in ``decoded`` replaced by the character: the
    normal form yarl gives a URL (``p%2Cq`` is sent as ``p,q``, ``%3A`` as ``:``), so that an
    upstream sees the request target aiohttp sent before; escapes of delimiters (``&=+;`` in a
    query, ``/`` in a path) and of anything else stay."""
    if "%" not in text:
        return text
    return _ESCAPE.sub(lambda m: chr(int(m[1], 16)) if chr(int(m[1], 16)) in decoded else m[0].upper(), text)


def _decompress(content: bytes, encoding: bytes) -> bytes:
    if encoding == b"deflate":
        try:
            return zlib.decompress(content)  # zlib-wrapped, as RFC 9110 says
        except zlib.error:
            return zlib.decompress(content, -zlib.MAX_WBITS)  # raw deflate, as some servers send it
    return zlib.decompress(content, 16 + zlib.MAX_WBITS)
