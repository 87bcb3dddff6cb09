"""Server-Sent Events from upstreams: one stream read as typed events (`read_events`, which
`RestClient.events` uses), and `follow`, which keeps a subscription going across the streams'
ends by reconnecting with ``Last-Event-ID``.

Parsing is httpx-sse's (the WHATWG event-stream rules); this module adds JSON data, the error tree
and the reconnection policy. Errors, as everywhere in `bff.upstream`::

    UpstreamError            the stream could not be opened, broke, is not an event stream, or an
    │                        event's data is not JSON
    ├── UpstreamTimeout      nothing came for ``idle_timeout`` seconds
    └── UpstreamUnauthorized the upstream refused a freshly refreshed token too
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
from collections.abc import AsyncGenerator, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import httpx
import orjson
from httpx_sse import EventSource, SSEError

from bff.errors import UpstreamError, UpstreamUnauthorized

if TYPE_CHECKING:
    from bff.upstream.base import UpstreamClient

log = logging.getLogger("bff")


@dataclass(frozen=True, slots=True)
class UpstreamEvent:
    """One event of an upstream's stream."""

    #: the ``event:`` field; "message" when the upstream named none (as browsers' EventSource does)
    event: str
    #: the ``data:`` field parsed as JSON
    data: Any
    #: the last ``id:`` the upstream sent (what a reconnection sends as ``Last-Event-ID``), if any
    id: str | None = None


async def read_events(upstream: UpstreamClient, response: httpx.Response) -> AsyncGenerator[UpstreamEvent, None]:
    """The events of an open ``text/event-stream`` answer, until the upstream ends it. Blocks
    without data (an id or retry alone, comments) are not events, as in browsers."""
    stream = EventSource(response).aiter_sse()
    async with contextlib.aclosing(stream):
        while True:
            try:
                with upstream._translated():
                    try:
                        sse = await anext(stream)
                    except SSEError:  # an httpx.TransportError to httpx-sse: told apart here
                        message = f"Upstream {upstream.name!r} answered no event stream"
                        raise _Malformed(upstream.name, message) from None
            except StopAsyncIteration:
                return
            if not sse.data:
                continue
            try:
                data = orjson.loads(sse.data)
            except orjson.JSONDecodeError:
                raise _Malformed(upstream.name, f"Upstream {upstream.name!r} sent an event that is not JSON") from None
            yield UpstreamEvent(event=sse.event or "message", data=data, id=sse.id or None)


class _Malformed(UpstreamError):
    """An answer that reconnecting would only fetch again (no event stream, an event that is not JSON)."""


def _final(exc: Exception) -> bool:
    """Whether reconnecting cannot help: a malformed stream, or a refusal of the request itself
    (4xx but 408 and 429: a missing resource, a forbidden one, a bad path)."""
    if isinstance(exc, _Malformed):
        return True
    status = getattr(exc, "status", None)
    return isinstance(exc, UpstreamError) and status is not None and 400 <= status < 500 and status not in (408, 429)


@dataclass(frozen=True, slots=True)
class Backoff:
    """Waits between reconnections: ``initial`` after a stream that delivered events ended (the
    upstream closed it: a token expired, a restart), doubling up to ``maximum`` while attempts
    fail or deliver nothing; each wait jittered by up to a quarter so that streams do not
    reconnect in step after an upstream restart."""

    initial: float = 0.1
    maximum: float = 5.0

    def delay(self, failures: int) -> float:
        base = min(self.maximum, self.initial * 2.0 ** max(failures - 1, 0))  # 1: initial
        return base * (1 + random.random() / 4)  # noqa: S311 - jitter, not a secret


async def follow(
    connect: Callable[[str | None], AsyncGenerator[UpstreamEvent, None]],
    *,
    name: str,
    retry_on: tuple[type[Exception], ...] = (UpstreamError,),
    backoff: Backoff = Backoff(),
) -> AsyncGenerator[UpstreamEvent, None]:
    """The events of ``connect(last_event_id)`` (one stream each), reconnecting for ever: after
    the upstream ends a stream, and after a ``retry_on`` error (outage, timeout, 5xx), with
    `Backoff`. Each reconnection sends the last event id seen, so an upstream that honours
    ``Last-Event-ID`` resumes where the previous stream stopped. `UpstreamUnauthorized` (a fresh
    token refused too), a refusal of the request (4xx but 408/429), a malformed stream and any
    error not in ``retry_on`` (`Unauthenticated`) end it."""
    last_id: str | None = None
    failures = 0
    while True:
        try:
            async with contextlib.aclosing(connect(last_id)) as events:
                async for event in events:
                    failures = 0
                    if event.id is not None:
                        last_id = event.id
                    yield event
            log.info("upstream %s ended its stream; reconnecting", name)
        except UpstreamUnauthorized:
            raise
        except retry_on as exc:
            if _final(exc):
                raise
            log.info("upstream %s stream failed (%s); reconnecting", name, type(exc).__name__)
        failures += 1
        await asyncio.sleep(backoff.delay(failures))
