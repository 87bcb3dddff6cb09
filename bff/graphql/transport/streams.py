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
from collections.abc import AsyncGenerator, Callable
from typing import Any, Literal, Protocol

import orjson
from graphql import GraphQLError
from starlette.responses import Response
from strawberry.exceptions import MissingQueryError
from strawberry.http.streaming import MultipartSubscriptionTransport
from strawberry.schema.exceptions import CannotGetOperationTypeError
from strawberry.types.execution import PreExecutionError
from strawberry.types.graphql import OperationType

from bff.errors import error_entry
from bff.graphql.context import Context
from bff.graphql.errors import result_body, to_graphql_error
from bff.graphql.execution.direct import DirectExecution
from bff.resources import Resources
from bff.sessions.streams import Stream
from bff.tasks import retrieve
from bff.timers import Timer

EVENT_STREAM = "text/event-stream"
#: the ASGI scope extension by which `bff.protocols` says when the client goes: called with a
#: callback (or None to stop), it calls it once if the connection is lost
CONNECTION_LOST = "bff.connection_lost"
#: a stream may run any operation: a query or mutation is one result, then complete
ALL_OPERATIONS = (OperationType.QUERY, OperationType.MUTATION, OperationType.SUBSCRIPTION)
SESSION_ENDED = error_entry("The session has ended", "UNAUTHENTICATED")

log = logging.getLogger("bff.graphql")

#: what `stream_results` yields: a result to send, or the errors of a document that never ran
Item = tuple[Literal["next", "error"], Any]


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
    direct: DirectExecution | None = None,
) -> AsyncGenerator[Item, None]:
    """Run one operation for a transport: ``("next", payload)`` per result; ``("error", errors)``
    once, and nothing after, for a document that never ran (syntax, validation, limits).

    Ends when the operation does, when a result says UNAUTHENTICATED, after
    ``stream_max_seconds``, or when ``stream`` is ended by the registry (logout on any replica,
    shutdown); a session that ended yields the ``SESSION_ENDED`` error first. Either way the
    stream is closed in the registry with its reason (`Stream.reason`), which the transport reads
    afterwards to choose how to close.

    The next result is awaited in the caller's own task, with no task, future or timer per event:
    an open stream is mostly waiting, and those were much of its memory and of the CPU of an
    event (BENCHMARKS.md, "Streams"). Ending the stream (`Stream.end`: the registry, or the one
    timer of its lifetime, ``max_duration``) cuts that wait short through ``Stream.interrupt``
    (`_Interrupt`): the operation's source sees a cancellation, as under a timeout; a
    cancellation of the task itself still propagates.

    A cached, valid subscription runs on ``direct`` (its compiled plan, `DirectExecution.subscribe`)
    when compiled execution is on; anything else on ``schema.stream``."""
    registry = resources.streams
    assert registry is not None
    metrics = resources.metrics
    reason = "complete"
    source: Any = None
    loop = asyncio.get_running_loop()
    # the stream's one deadline: its maximum lifetime ends it as the registry would
    lifetime = registry.timers.call_at(loop.time() + resources.streaming.max_seconds, stream.end, "max_duration")
    interrupt = stream.interrupt = _Interrupt()
    first = True
    try:
        if direct is not None and resources.requests.compiled_execution:
            source = await direct.subscribe(
                document, variables, context, operation_name, ALL_OPERATIONS, metrics=metrics
            )
        if source is None:
            source = await schema.stream(
                document,
                variable_values=variables,
                context_value=context,
                operation_name=operation_name,
                allowed_operation_types=ALL_OPERATIONS,
            )
        while True:
            if stream.reason is not None:  # ended: by the registry, or its lifetime is over
                reason = stream.reason
                if reason == "session_ended":
                    metrics.stream_events.inc()
                    yield "next", {"errors": [SESSION_ENDED]}
                break
            # each event is a request of its own: the session read again (its token refreshed
            # through the shared single flight if due), new clients and DataLoaders (no
            # answers cached from an earlier event), a new upstream deadline
            context.renew()
            interrupt.arm()
            try:
                result = await anext(source)
            except StopAsyncIteration:
                if interrupt.done():
                    continue
                break
            except asyncio.CancelledError:
                if not interrupt.done() or interrupt.cancelled_elsewhere():
                    raise  # not (only) ours: the task itself is cancelled
                continue
            except Exception as exc:
                if interrupt.done():
                    continue
                refused = _refusal(exc, context) if first else None
                if refused is None:
                    raise
                metrics.stream_events.inc()
                yield "error", refused
                break
            if interrupt.done():
                continue  # a result that came with the interruption is dropped
            metrics.stream_events.inc()
            if first and isinstance(result, PreExecutionError):
                yield "error", _pre_execution_errors(result, context)
                break
            body, unauthenticated = result_payload(result, context)
            first = False
            del result  # nothing of this event is held while the next is awaited
            yield "next", body
            del body
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
        lifetime.cancel()
        stream.interrupt = None
        if source is not None:
            with contextlib.suppress(Exception):
                await source.aclose()
        registry.close(stream, reason)


class _Interrupt:
    """`Stream.interrupt` of a stream whose results `stream_results` awaits in its transport's
    own task: while it waits (`arm` to `done`), ending the stream cancels that wait, and `done`
    tells this cancellation apart from any other (`Task.uncancel`, as `asyncio.Timeout` does).
    One per stream: no timer, task or future per event."""

    __slots__ = ("fired", "task", "waiting")

    def __init__(self) -> None:
        self.task: asyncio.Task[Any] | None = None
        self.waiting = False
        self.fired = False

    def __call__(self) -> None:
        if self.waiting and not self.fired and self.task is not None:
            self.fired = True
            self.task.cancel()

    def arm(self) -> None:
        self.task = asyncio.current_task()
        self.waiting = True

    def done(self) -> bool:
        """The wait is over: whether the stream's end cut it short (its cancellation is then
        withdrawn; ``task.cancelling()`` still counts any other)."""
        self.waiting = False
        if not self.fired:
            return False
        self.fired = False
        assert self.task is not None
        self.task.uncancel()
        return True

    def cancelled_elsewhere(self) -> bool:
        """Whether the task has a cancellation pending that is not the interrupt's."""
        return self.task is not None and self.task.cancelling() > 0


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


class _StreamResponse(Response):
    """A streamed answer as a plain ASGI response: one task writes the results while the
    connection's own task listens for the client going away (then the writer is cancelled),
    writes a heartbeat whenever nothing was written for ``heartbeat_seconds``, and ends the
    response when a write has been under way for ``stall_seconds``. This is what Starlette's
    `StreamingResponse` does, without its anyio task group, cancel scope and wrappers, and with
    no timer per write: the memory and the CPU per open stream (BENCHMARKS.md).

    The operation's results (`stream_results`) are closed however the response ends: a client
    that goes away while a write is pending would otherwise leave them suspended, the stream
    registered (and its upstream stream open) until they are garbage-collected. The stream is
    closed in the registry last (a no-op when `stream_results` did), also when the results never
    started (the client left before the headers went out).

    A write the client does not take within ``stall_seconds`` ends the response (issue 24). The
    server's protocol aborts such a connection sooner (`bff.protocols`, ``BFF_WRITE_TIMEOUT_SECONDS``);
    this bound frees the stream's slot on a server that lacks that deadline."""

    def __init__(
        self,
        events: EventStream,
        operation: tuple[str, dict[str, Any] | None, str | None],
        *,
        headers: dict[str, str],
    ) -> None:
        self.status_code = 200
        self.media_type = events.framing.media_type
        self.background = None
        self.events = events
        self.operation = operation
        self._lock = asyncio.Lock()  # one write at a time: the writer's, or a heartbeat
        self._written = 0.0  # loop time of the end of the last write
        self._sending: float | None = None  # loop time at which the write under way began
        self._complete = False  # the last write has begun: no heartbeat may follow it
        self._wake: _Interrupt | None = None  # cuts the listener's wait, or the writing, short
        self._send: Any = None  # `_write_alone`: the send of the heartbeats
        self._beat_at: Timer | None = None  # `_write_alone`: the next heartbeat's deadline
        self.init_headers(headers)

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        watch = (scope.get("extensions") or {}).get(CONNECTION_LOST)
        if watch is not None:
            await self._write_alone(watch, send)
        else:
            await self._listen_and_write(receive, send)

    async def _write_alone(self, watch: Callable[[Callable[[], None] | None], None], send: Any) -> None:
        """Under `bff.protocols` (``bff serve``), which says when the client goes (``watch``:
        `CONNECTION_LOST`) and aborts a connection whose client stops reading for the write
        timeout: the results are written in the connection's own task, with no listener beside it
        (a task, its wait for the client and its frames: ~1.7 KiB of an open stream, issue 26
        part 4); a heartbeat due is written by a short task of its own."""
        loop = asyncio.get_running_loop()
        registry = self.events.resources.streams
        assert registry is not None
        gone = self._wake = _Interrupt()
        gone.arm()
        watch(gone)
        self._written = loop.time()
        self._send = send
        self._beat_at = registry.timers.call_at(
            self._written + self.events.resources.streaming.heartbeat_seconds, _StreamResponse._beat, self
        )
        try:
            await self._write_all(send)
        except asyncio.CancelledError:
            if not gone.done() or gone.cancelled_elsewhere():
                raise
            # the client went away: its stream is closed below
        else:
            gone.done()
        finally:
            watch(None)
            self._complete = True  # nothing more, a heartbeat included
            if self._beat_at is not None:
                self._beat_at.cancel()
            self._send = None
            registry.close(self.events.stream, "client_closed")  # a no-op once it was closed

    def _beat(self) -> None:
        """The heartbeat's deadline (`_write_alone`): a heartbeat when nothing was written for
        ``heartbeat_seconds`` and no write is under way, then the next deadline."""
        self._beat_at = None
        send = self._send
        if self._complete or send is None:
            return
        loop = asyncio.get_running_loop()
        registry = self.events.resources.streams
        assert registry is not None
        heartbeat = self.events.resources.streaming.heartbeat_seconds
        now = loop.time()
        due = self._written + heartbeat
        if self._sending is not None:  # a write is under way: no heartbeat is needed
            due = now + heartbeat
        elif now >= due - 0.001:
            beating = loop.create_task(self._write(send, self.events.framing.heartbeat()), name="bff-heartbeat")
            beating.add_done_callback(retrieve)  # a write to a client that went is nothing to report
            self._written = now  # the next one a period from now, also if this one is slow
            due = now + heartbeat
        self._beat_at = registry.timers.call_at(due, _StreamResponse._beat, self)

    async def _listen_and_write(self, receive: Any, send: Any) -> None:
        """Under another server: the connection's task listens for the client going away (and
        then cancels the writer), writes a heartbeat when one is due and ends a write that has not
        gone within ``stall_seconds``, while a task of its own writes the results."""
        loop = asyncio.get_running_loop()
        policy = self.events.resources.streaming
        heartbeat, stall = policy.heartbeat_seconds, policy.stall_seconds
        registry = self.events.resources.streams
        assert registry is not None
        self._written = loop.time()
        wake_up = self._wake = _Interrupt()
        writer = loop.create_task(self._write_all(send), name="bff-stream")
        writer.add_done_callback(self._writer_done)
        try:
            while not writer.done():
                now, sending = loop.time(), self._sending
                if sending is not None:  # a write is under way: no heartbeat is needed
                    if now - sending >= stall:
                        raise _ClientStalled
                    wake = sending + stall
                elif now >= self._written + heartbeat:
                    await self._write(send, self.events.framing.heartbeat(), bound=stall)
                    continue
                else:  # the next heartbeat, or at the latest when a write begun meanwhile would stall
                    wake = min(self._written + heartbeat, now + stall)
                # the wait for the client is cut short at ``wake`` (or when the writer is done) by
                # cancelling it, as a timeout would, through a deadline of the registry's `Timers`
                # rather than a loop timer of its own (issue 26, part 4)
                timer = registry.timers.call_at(wake, _Interrupt.__call__, wake_up)
                wake_up.arm()
                try:
                    message = await receive()
                except asyncio.CancelledError:
                    if not wake_up.done() or wake_up.cancelled_elsewhere():
                        raise
                    continue
                finally:
                    timer.cancel()
                    wake_up.waiting = False  # also when receive() raised: the writer's end cancels nothing
                wake_up.done()  # it did not fire: the wait ended first
                if message["type"] == "http.disconnect":
                    break
        except _ClientStalled:
            log.warning("a streaming client took nothing for %.0f s: its stream ended", stall)
        finally:
            if not writer.done():
                writer.cancel()
            await asyncio.wait({writer})
            registry.close(self.events.stream, "client_closed")  # a no-op once it was closed
        if not writer.cancelled() and writer.exception() is not None:
            raise writer.exception()  # type: ignore[misc]

    def _writer_done(self, _: object) -> None:
        if self._wake is not None:
            self._wake()

    async def _write_all(self, send: Any) -> None:
        events, framing = self.events, self.events.framing
        await self._write(send, framing.opening(), start=True)
        results = stream_results(
            events.schema, events.resources, events.context, events.stream, *self.operation, direct=events.direct
        )
        async with contextlib.aclosing(results):
            async for kind, payload in results:
                chunk = framing.errors(payload) if kind == "error" else framing.next(payload)
                del payload  # not held while the next result is awaited
                await self._write(send, chunk)
                del chunk
        await self._write(send, framing.complete(), more=False)

    async def _write(
        self, send: Any, chunk: bytes, *, start: bool = False, more: bool = True, bound: float | None = None
    ) -> None:
        """Write ``chunk`` (after the response's start, with ``start``); ``more=False`` ends the
        response; ``bound`` (the listener's heartbeats, which nobody else watches): raise
        `_ClientStalled` when the write has not gone within that many seconds."""
        async with self._lock:
            if self._complete:
                return
            self._complete = not more
            loop = asyncio.get_running_loop()
            self._sending = loop.time()
            message = {"type": "http.response.body", "body": chunk, "more_body": more}
            try:
                if start:
                    await send({"type": "http.response.start", "status": 200, "headers": self.raw_headers})
                    self.raw_headers.clear()  # sent: not kept for the stream's lifetime
                if bound is None:
                    await send(message)
                else:
                    try:
                        async with asyncio.timeout(bound):
                            await send(message)
                    except TimeoutError:
                        raise _ClientStalled from None
            finally:
                self._sending = None
            self._written = loop.time()


class EventStream:
    """Runs one operation as a streamed HTTP answer (SSE or multipart, by its `Framing`)."""

    __slots__ = ("context", "direct", "framing", "resources", "schema", "stream")

    def __init__(
        self,
        schema: Any,
        resources: Resources,
        context: Context,
        stream: Stream,
        framing: Framing | None = None,
        direct: DirectExecution | None = None,
    ) -> None:
        self.schema = schema
        self.direct = direct
        self.resources = resources
        self.context = context
        self.stream = stream
        self.framing: Framing = framing or SSEFraming()

    def response(
        self, document: str, variables: dict[str, Any] | None, operation_name: str | None, headers: dict[str, str]
    ) -> Response:
        return _StreamResponse(
            self,
            (document, variables, operation_name),
            headers={**headers, "X-Accel-Buffering": "no", "Connection": "keep-alive"},
        )
