"""Subscriptions on ``/graphql``: the stream loop both transports share (`stream_results`) and the
SSE transport (the WebSocket one, ``graphql-transport-ws``, is `bff.graphql.transport.websocket`).

GraphQL over SSE is the graphql-sse protocol, "distinct connections" mode: ``POST /graphql`` with
``Accept: text/event-stream`` and the usual JSON body answers ``200 text/event-stream`` with
``event: next`` (one execution result each) and a final ``event: complete``.

A stream is registered with the session's `StreamRegistry` before it starts (limits), ends when its
session ends on any replica (an ``UNAUTHENTICATED`` error, then complete), when the IdP refuses a
refresh (same), after ``stream_max_seconds`` and on shutdown (complete). Over SSE, comment lines
keep idle connections alive every ``stream_heartbeat_seconds``; over WebSocket, server pings do.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncGenerator, AsyncIterator, Callable
from typing import Any, Literal, Protocol

import orjson
from graphql import GraphQLError
from starlette.responses import StreamingResponse
from strawberry.exceptions import MissingQueryError
from strawberry.http.streaming import MultipartSubscriptionTransport
from strawberry.schema.exceptions import CannotGetOperationTypeError
from strawberry.types.execution import PreExecutionError
from strawberry.types.graphql import OperationType

from bff.errors import error_entry
from bff.graphql.context import Context
from bff.graphql.errors import result_body, to_graphql_error
from bff.resources import Resources
from bff.sessions.streams import Stream

EVENT_STREAM = "text/event-stream"
#: a stream may run any operation: a query or mutation is one result, then complete
ALL_OPERATIONS = (OperationType.QUERY, OperationType.MUTATION, OperationType.SUBSCRIPTION)
SESSION_ENDED = error_entry("The session has ended", "UNAUTHENTICATED")

log = logging.getLogger("bff.graphql")

#: what `stream_results` yields: a result to send, the errors of a document that never ran, or
#: a quiet ``heartbeat`` interval gone by
Item = tuple[Literal["next", "error", "heartbeat"], Any]


def wants_event_stream(accept: str | None) -> bool:
    return bool(accept) and any(
        part.split(";")[0].strip().lower() == EVENT_STREAM for part in (accept or "").split(",")
    )


#: codes that end a stream when the subscription field itself (a path of one) fails with them:
#: the user may no longer see it (a scope lost at a refresh, checked again at every event)
_DENIED_AT_ROOT = frozenset({"FORBIDDEN", "STEP_UP_REQUIRED"})


def result_payload(result: Any, context: Context) -> tuple[dict[str, Any], bool]:
    """The payload of one result (the body HTTP would answer), and whether it ends the stream: the
    session is gone, or the subscription field is denied (`bff.graphql.authorization`)."""
    body, _ = result_body(result, context.request_id)
    ends = False
    for error in body.get("errors", ()):
        code = (error.get("extensions") or {}).get("code")
        if code == "UNAUTHENTICATED" or (code in _DENIED_AT_ROOT and len(error.get("path") or ()) <= 1):
            ends = True
    return body, ends


async def stream_results(
    schema: Any,
    resources: Resources,
    context: Context,
    stream: Stream,
    document: str,
    variables: dict[str, Any] | None,
    operation_name: str | None,
    *,
    heartbeat: float | None,
) -> AsyncGenerator[Item, None]:
    """Run one operation for a transport: ``("next", payload)`` per result; ``("error", errors)``
    once, and nothing after, for a document that never ran (syntax, validation, limits);
    ``("heartbeat", None)`` after ``heartbeat`` seconds without a result (None: never).

    Ends when the operation does, when a result says UNAUTHENTICATED, after
    ``stream_max_seconds``, or when ``stream`` is ended by the registry (logout on any replica,
    shutdown); a session that ended yields the ``SESSION_ENDED`` error first. Either way the
    stream is closed in the registry with its reason (`Stream.reason`), which the transport reads
    afterwards to choose how to close."""
    policy = resources.streaming
    registry = resources.streams
    assert registry is not None
    metrics = resources.metrics
    reason = "complete"
    source: Any = None
    pending: asyncio.Task[Any] | None = None
    ended = asyncio.ensure_future(stream.ended.wait())
    loop = asyncio.get_running_loop()
    until = loop.time() + policy.max_seconds
    first = True
    try:
        source = await schema.stream(
            document,
            variable_values=variables,
            context_value=context,
            operation_name=operation_name,
            allowed_operation_types=ALL_OPERATIONS,
        )
        while True:
            if pending is None:
                # each event is a request of its own: the session read again (its token refreshed
                # through the shared single flight if due), new clients and DataLoaders (no
                # answers cached from an earlier event), a new upstream deadline
                context.renew()
                pending = asyncio.ensure_future(anext(source))
            left = until - loop.time()
            if left <= 0:
                reason = "max_duration"
                break
            done, _ = await asyncio.wait(
                {pending, ended},
                timeout=left if heartbeat is None else min(heartbeat, left),
                return_when=asyncio.FIRST_COMPLETED,
            )
            if ended in done:
                reason = stream.reason or "session_ended"
                if reason == "session_ended":
                    metrics.stream_events.inc()
                    yield "next", {"errors": [SESSION_ENDED]}
                break
            if pending not in done:
                yield "heartbeat", None
                continue
            task, pending = pending, None
            try:
                result = task.result()
            except StopAsyncIteration:
                break
            except Exception as exc:
                refused = _refusal(exc, context) if first else None
                if refused is None:
                    raise
                metrics.stream_events.inc()
                yield "error", refused
                break
            metrics.stream_events.inc()
            if first and isinstance(result, PreExecutionError):
                yield "error", _pre_execution_errors(result, context)
                break
            body, unauthenticated = result_payload(result, context)
            first = False
            yield "next", body
            if unauthenticated:
                reason = "unauthenticated"
                break
    except (asyncio.CancelledError, GeneratorExit):
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


def _pre_execution_errors(result: PreExecutionError, context: Context) -> list[dict[str, Any]]:
    """The errors of a document that never ran; Strawberry wraps its operation-selection errors
    (which the HTTP handler answers 400) in GraphQL errors that would otherwise be masked."""
    formatted = []
    for error in result.errors or []:
        original = error.original_error
        refused = _refusal(original, context) if isinstance(original, Exception) else None
        formatted.extend(refused or [dict(to_graphql_error(error, context.request_id).formatted)])
    return formatted


def _refusal(exc: Exception, context: Context) -> list[dict[str, Any]] | None:
    """The errors of a document refused before execution by raising, as the HTTP handler answers
    them (the document gate raises from its parse hook, which Strawberry's stream does not catch)."""
    if isinstance(exc, GraphQLError):
        return [dict(to_graphql_error(exc, context.request_id).formatted)]
    if isinstance(exc, CannotGetOperationTypeError):
        return [error_entry(exc.as_http_error_reason(), "BAD_REQUEST")]
    if isinstance(exc, MissingQueryError):
        return [error_entry("the request has no query", "BAD_REQUEST")]
    return None


def _event(name: str, data: Any = None) -> bytes:
    payload = b"" if data is None else orjson.dumps(data)
    return b"event: " + name.encode() + b"\ndata: " + payload + b"\n\n"


class Framing(Protocol):
    """How one HTTP streaming transport writes what `stream_results` yields."""

    media_type: str

    def opening(self) -> bytes: ...
    def next(self, payload: dict[str, Any]) -> bytes: ...
    def errors(self, errors: list[dict[str, Any]]) -> bytes: ...
    def heartbeat(self) -> bytes: ...
    def complete(self) -> bytes: ...


class SSEFraming:
    """graphql-sse, distinct connections: ``next`` and ``complete`` events, comment heartbeats."""

    media_type = EVENT_STREAM

    def opening(self) -> bytes:
        return b": open\n\n"

    def next(self, payload: dict[str, Any]) -> bytes:
        return _event("next", payload)

    def errors(self, errors: list[dict[str, Any]]) -> bytes:  # graphql-sse has no error event
        return _event("next", {"errors": errors})

    def heartbeat(self) -> bytes:
        return b": keep-alive\n\n"

    def complete(self) -> bytes:
        return _event("complete")


class MultipartFraming:
    """Apollo's multipart HTTP subscriptions (what Apollo Client's HttpLink and Apollo Kotlin/iOS
    speak): ``multipart/mixed`` parts of ``{"payload": result}``, ``{}`` as heartbeat (one at once,
    so the client sees the subscription is live), the closing boundary at the end. The part
    encoding is Strawberry's `MultipartSubscriptionTransport`."""

    media_type = 'multipart/mixed; boundary="graphql"; subscriptionSpec="1.0"'

    def __init__(self) -> None:
        self.transport = MultipartSubscriptionTransport()

    def _part(self, value: object) -> bytes:
        return self.transport.encode_multipart_data(value, lambda data: orjson.dumps(data).decode()).encode()

    def opening(self) -> bytes:
        return b"--graphql" + self._part({})

    def next(self, payload: dict[str, Any]) -> bytes:
        return self._part({"payload": payload})

    def errors(self, errors: list[dict[str, Any]]) -> bytes:
        return self._part({"payload": {"errors": errors}})

    def heartbeat(self) -> bytes:
        return self._part({})

    def complete(self) -> bytes:
        return b"--\r\n"  # the last part ended with "--graphql": this makes it the closing boundary


def wants_multipart(accept: str | None) -> bool:
    # every GraphQL POST asks: the substring test keeps the parse off the common path
    if accept is None or "multipart/mixed" not in accept.lower():
        return False
    return MultipartSubscriptionTransport().accepts(accept)


class _ClientStalled(Exception):
    """The client took nothing of a write for the stall bound."""


class _ClosingStreamingResponse(StreamingResponse):
    """Closes its body however the response ends: a client that goes away while a write is
    pending leaves the body generator suspended at a ``yield``, its stream registered (and its
    upstream stream open) until the generator is garbage-collected. ``on_close`` runs last, also
    when the body never started (the client left before the headers went out).

    A write the client does not take within ``stall_seconds`` ends the response (issue 24). The
    server's protocol aborts such a connection sooner (`bff.protocols`, ``BFF_WRITE_TIMEOUT_SECONDS``);
    this bound frees the stream's slot on a server that lacks that deadline."""

    def __init__(self, content: Any, *, on_close: Callable[[], None], stall_seconds: float, **kwargs: Any) -> None:
        super().__init__(content, **kwargs)
        self.on_close = on_close
        self.stall_seconds = stall_seconds

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        async def send_in_time(message: Any) -> None:
            try:
                async with asyncio.timeout(self.stall_seconds):
                    await send(message)
            except TimeoutError:
                raise _ClientStalled from None

        try:
            await super().__call__(scope, receive, send_in_time)
        except _ClientStalled:
            log.warning("a streaming client took nothing for %.0f s: its stream ended", self.stall_seconds)
        finally:
            close = getattr(self.body_iterator, "aclose", None)
            if close is not None:
                with contextlib.suppress(Exception):
                    await close()
            self.on_close()


class EventStream:
    """Runs one operation as a streamed HTTP answer (SSE or multipart, by its `Framing`)."""

    def __init__(
        self, schema: Any, resources: Resources, context: Context, stream: Stream, framing: Framing | None = None
    ) -> None:
        self.schema = schema
        self.resources = resources
        self.context = context
        self.stream = stream
        self.framing: Framing = framing or SSEFraming()

    def response(
        self, document: str, variables: dict[str, Any] | None, operation_name: str | None, headers: dict[str, str]
    ) -> StreamingResponse:
        registry, stream = self.resources.streams, self.stream
        assert registry is not None
        return _ClosingStreamingResponse(
            self._events(document, variables, operation_name),
            on_close=lambda: registry.close(stream, "client_closed"),  # a no-op once it was closed
            stall_seconds=self.resources.streaming.stall_seconds,
            media_type=self.framing.media_type,
            headers={**headers, "X-Accel-Buffering": "no", "Connection": "keep-alive"},
        )

    async def _events(
        self, document: str, variables: dict[str, Any] | None, operation_name: str | None
    ) -> AsyncIterator[bytes]:
        framing = self.framing
        yield framing.opening()
        results = stream_results(
            self.schema,
            self.resources,
            self.context,
            self.stream,
            document,
            variables,
            operation_name,
            heartbeat=self.resources.streaming.heartbeat_seconds,
        )
        async with contextlib.aclosing(results):
            async for kind, payload in results:
                if kind == "heartbeat":
                    yield framing.heartbeat()
                elif kind == "error":
                    yield framing.errors(payload)
                else:
                    yield framing.next(payload)
        yield framing.complete()
