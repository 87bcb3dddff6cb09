"""REST upstreams: JSON over HTTP, with identical GETs of one GraphQL request sent once."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncGenerator, Mapping
from typing import Any

from bff.upstream.base import UpstreamClient
from bff.upstream.sse import UpstreamEvent, read_events

#: reads: a connect failure may be retried (a source's mutations never are, PUT and DELETE included:
#: a team's service may not honour HTTP's idempotence)
_READS = frozenset({"GET", "HEAD", "OPTIONS"})


class RestClient(UpstreamClient):
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._gets: dict[tuple[str, tuple[tuple[str, str], ...]], asyncio.Future[Any]] = {}

    async def get_json(self, path: str, params: dict[str, Any] | None = None) -> Any:
        """GET and decode; a second identical GET in the same request shares the first's answer.

        The first caller sends it in its own task and publishes the outcome in a future the others
        await (shielded): no task per GET, no loop iteration before it starts (issue 26: the task
        and shield were ~3 % of a worker's CPU on the viewer query). If that caller is cancelled
        (a sibling's null propagation, a client gone), a caller still waiting sends it itself."""
        key = (path, tuple(sorted((k, str(v)) for k, v in (params or {}).items())))
        shared = self._gets.get(key)
        if shared is not None:
            try:
                return await asyncio.shield(shared)
            except asyncio.CancelledError:
                task = asyncio.current_task()
                if not shared.cancelled() or (task is not None and task.cancelling()):
                    raise  # this caller was cancelled, not the one sending the GET
                if self._gets.get(key) is shared:
                    del self._gets[key]
                return await self.get_json(path, params)
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._gets[key] = future
        try:
            result = await self._get(path, params)
        except asyncio.CancelledError:
            future.cancel()
            if self._gets.get(key) is future:
                del self._gets[key]  # a later caller sends it again
            raise
        except BaseException as exc:
            future.set_exception(exc)
            future.exception()  # seen: with nobody else waiting, asyncio would log it as lost
            raise
        future.set_result(result)
        return result

    async def _get(self, path: str, params: dict[str, Any] | None) -> Any:
        return self._json(await self._request("GET", path, params=params))

    async def post_json(self, path: str, body: Any, *, idempotent: bool = False) -> Any:
        """POST and decode. Not retried on a connect failure unless the caller says the call is
        idempotent (the upstream would do the same thing twice harmlessly)."""
        return self._json(await self._request("POST", path, json=body, idempotent=idempotent))

    async def put_json(self, path: str, body: Any, *, idempotent: bool = True) -> Any:
        """PUT and decode; idempotent by HTTP's definition, so a connect failure is retried once."""
        return self._json(await self._request("PUT", path, json=body, idempotent=idempotent))

    async def call_json(
        self,
        method: str,
        path: str,
        *,
        body: Any = None,
        has_body: bool = False,
        headers: Mapping[str, str] | None = None,
    ) -> Any:
        """Any method, for the declarative sources (`bff.sources`): a GET without headers of its
        own is shared like `get_json`; only reads are retried on a connect failure, never a
        mutation. An empty answer (204) is None."""
        method = method.upper()
        if method == "GET" and not headers and not has_body:
            return await self.get_json(path)
        kwargs: dict[str, Any] = {"idempotent": method in _READS}
        if headers:
            kwargs["headers"] = dict(headers)
        if has_body:
            kwargs["json"] = body
        response = await self._request(method, path, **kwargs)
        if not response.content:
            return None
        return self._json(response)

    async def events(
        self,
        path: str,
        params: dict[str, Any] | None = None,
        *,
        last_event_id: str | None = None,
        idle_timeout: float | None = 60.0,
    ) -> AsyncGenerator[UpstreamEvent, None]:
        """``GET path`` as Server-Sent Events, each event's data parsed as JSON, until the upstream
        ends the stream (one connection: `bff.upstream.sse.follow` reconnects). Opening it is like
        any GET (the token, one refresh on 401, the deadline); ``idle_timeout`` bounds the wait for
        each next byte (upstreams send comments to keep an idle stream alive)."""
        headers = {"Accept": "text/event-stream", "Cache-Control": "no-store"}
        if last_event_id is not None:
            headers["Last-Event-ID"] = last_event_id
        async with self._stream("GET", path, params=params, headers=headers, idle_timeout=idle_timeout) as response:
            async for event in read_events(self, response):
                yield event
