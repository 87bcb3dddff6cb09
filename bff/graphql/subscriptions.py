"""Subscriptions over Server-Sent Events on ``/graphql`` (the graphql-sse protocol, "distinct
connections" mode): ``POST /graphql`` with ``Accept: text/event-stream`` and the usual JSON body
answers ``200 text/event-stream`` with ``event: next`` (one execution result each) and a final
``event: complete``.

A stream is registered with the session's `StreamRegistry` before it starts (limits), ends when its
session ends on any replica (an ``UNAUTHENTICATED`` error event, then ``complete``), when the IdP
refuses a refresh (same), after ``stream_max_seconds`` and on shutdown (``complete``). Comment lines
keep idle connections alive every ``stream_heartbeat_seconds``.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from typing import Any

import orjson
from starlette.responses import StreamingResponse
from strawberry.types.graphql import OperationType

from bff.graphql.context import Context
from bff.graphql.errors import to_graphql_error
from bff.resources import Resources
from bff.sessions.streams import Stream

EVENT_STREAM = "text/event-stream"
_ALL = (OperationType.QUERY, OperationType.MUTATION, OperationType.SUBSCRIPTION)
SESSION_ENDED = {"message": "The session has ended", "extensions": {"code": "UNAUTHENTICATED"}}


def wants_event_stream(accept: str | None) -> bool:
    return bool(accept) and any(
        part.split(";")[0].strip().lower() == EVENT_STREAM for part in (accept or "").split(",")
    )


def _event(name: str, data: Any = None) -> bytes:
    payload = b"" if data is None else orjson.dumps(data)
    return b"event: " + name.encode() + b"\ndata: " + payload + b"\n\n"


def _formatted(result: Any, context: Context) -> tuple[dict[str, Any], bool]:
    """The event payload of one result, and whether it says the session is gone."""
    body: dict[str, Any] = {}
    data = getattr(result, "data", None)
    if data is not None or not getattr(result, "errors", None):
        body["data"] = data
    unauthenticated = False
    errors = getattr(result, "errors", None)
    if errors:
        formatted = []
        for error in errors:
            mapped = to_graphql_error(error, context.request_id)
            item = mapped.formatted
            if (item.get("extensions") or {}).get("code") == "UNAUTHENTICATED":
                unauthenticated = True
            formatted.append(item)
        body["errors"] = formatted
    extensions = getattr(result, "extensions", None)
    if extensions:
        body["extensions"] = extensions
    return body, unauthenticated


class EventStream:
    """Runs one operation as a stream of SSE events."""

    def __init__(self, schema: Any, resources: Resources, context: Context, stream: Stream) -> None:
        self.schema = schema
        self.resources = resources
        self.context = context
        self.stream = stream

    def response(
        self, document: str, variables: dict[str, Any] | None, operation_name: str | None, headers: dict[str, str]
    ) -> StreamingResponse:
        return StreamingResponse(
            self._events(document, variables, operation_name),
            media_type=EVENT_STREAM,
            headers={**headers, "X-Accel-Buffering": "no", "Connection": "keep-alive"},
        )

    async def _events(
        self, document: str, variables: dict[str, Any] | None, operation_name: str | None
    ) -> AsyncIterator[bytes]:
        settings = self.resources.settings
        registry = self.resources.streams
        assert registry is not None
        metrics = self.resources.metrics
        stream = self.stream
        reason = "complete"
        source: Any = None
        pending: asyncio.Task[Any] | None = None
        ended = asyncio.ensure_future(stream.ended.wait())
        loop = asyncio.get_running_loop()
        until = loop.time() + settings.stream_max_seconds
        try:
            yield b": open\n\n"
            source = await self.schema.stream(
                document,
                variable_values=variables,
                context_value=self.context,
                operation_name=operation_name,
                allowed_operation_types=_ALL,
            )
            while True:
                if pending is None:
                    pending = asyncio.ensure_future(anext(source))
                left = until - loop.time()
                if left <= 0:
                    reason = "max_duration"
                    break
                done, _ = await asyncio.wait(
                    {pending, ended},
                    timeout=min(settings.stream_heartbeat_seconds, left),
                    return_when=asyncio.FIRST_COMPLETED,
                )
                if ended in done:
                    reason = stream.reason or "session_ended"
                    if reason == "session_ended":
                        yield _event("next", {"errors": [SESSION_ENDED]})
                        metrics.stream_events.inc()
                    break
                if pending not in done:
                    yield b": keep-alive\n\n"
                    continue
                task, pending = pending, None
                try:
                    result = task.result()
                except StopAsyncIteration:
                    break
                body, unauthenticated = _formatted(result, self.context)
                yield _event("next", body)
                metrics.stream_events.inc()
                if unauthenticated:
                    reason = "unauthenticated"
                    break
            yield _event("complete")
        except asyncio.CancelledError:
            reason = "client_closed"
            raise
        except Exception:
            reason = "error"
            raise
        finally:
            ended.cancel()
            if pending is not None and not pending.done():
                pending.cancel()
                with contextlib.suppress(BaseException):
                    await pending
            if source is not None:
                with contextlib.suppress(Exception):
                    await source.aclose()
            registry.close(stream, reason)
