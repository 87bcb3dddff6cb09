"""GraphQL over WebSocket on ``/graphql``: the ``graphql-transport-ws`` protocol (the one the
``graphql-ws`` npm client speaks), with the same semantics as the SSE transport: every operation
is a `Stream` of the session's `StreamRegistry` run by `stream_results`.

Written here rather than with Strawberry's handler (``BaseGraphQLTransportWSHandler``): that one
needs Strawberry's view classes around our hand-written HTTP handler, closes the whole connection
(4400) on a syntax error instead of answering that operation with ``error``, and has no place for
what a stream needs here (persisted documents, the registry's limits and its per-stream end on
logout or shutdown, one context per operation, server pings). The protocol itself is small.

Authentication happens once, at connect: the session cookie or ``Authorization: Session <handle>``
on the upgrade request, or, for clients that cannot set headers, ``{"authorization": "Session
<handle>"}`` in the ``connection_init`` payload. A credential that names no live session makes an
anonymous connection (a cookie is then cleared in the 101 answer), as over HTTP. The Origin rule
is checked before the upgrade, by `bff.web.middleware.CSRFMiddleware`.

Per connection (issue 24): at most ``BFF_STREAMS_PER_CONNECTION`` operations run at once (one more
is an ``error`` with ``TOO_MANY_STREAMS``, the connection kept), each a stream of the registry with
its per-session, per-process and anonymous limits (`bff.admission`); an operation id is at most
``MAX_ID_CHARS`` characters (it is echoed in every message of the operation). A message is at most
``BFF_MAX_BODY_BYTES`` bytes of UTF-8: the server refuses a larger frame from its header, before
buffering it (``ws_max_size``, `bff.protocols.uvicorn_options`), and this handler checks again. A
client that takes nothing of what is written to it for ``BFF_WRITE_TIMEOUT_SECONDS`` is aborted by
the server's protocol (`bff.protocols`); should the server not have that deadline, a send that
stalls twice as long ends every operation of the connection here, so its slots are freed anyway.

Close codes: 4400 malformed message, 4401 subscribe before ``connection_ack`` and also when the
connection's session has ended (after each of its operations got the ``UNAUTHENTICATED`` error and
``complete``; graphql-ws clients do not retry 4401), 4406 subprotocol not offered, 4408 no
``connection_init`` in time, 4409 duplicate operation id, 4429 second ``connection_init``, 1001 on
shutdown (after ``complete`` for every operation, and an ``error`` with ``SHUTTING_DOWN`` for a
``subscribe`` that arrives meanwhile; clients reconnect, elsewhere), 1009 message larger than
``BFF_MAX_BODY_BYTES``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import uuid
from typing import Any

import orjson
from starlette.websockets import WebSocket, WebSocketDisconnect

from bff.errors import RequestRefused, StoreUnavailable, StreamLimitExceeded, error_entry
from bff.graphql.context import Context
from bff.graphql.execution.direct import DirectExecution
from bff.graphql.transport.request import DocumentSource, GraphQLRequest
from bff.graphql.transport.streams import stream_results
from bff.resources import Resources
from bff.sessions.streams import Stream

PROTOCOL = "graphql-transport-ws"
#: seconds a client has after the upgrade to send ``connection_init`` (graphql-ws's default is 3)
CONNECTION_INIT_SECONDS = 10.0
#: seconds the other operations of a connection get to send their own last messages before it closes
_LAST_WORDS_SECONDS = 1.0
#: the longest operation id accepted (graphql-ws sends UUIDs): each message of the operation echoes it
MAX_ID_CHARS = 256

log = logging.getLogger("bff.graphql")


class GraphQLWebSocketHandler:
    """One instance per app; `handle` serves each WebSocket connection to ``/graphql``."""

    def __init__(
        self,
        schema: Any,
        documents: DocumentSource,
        *,
        max_message_bytes: int,
        direct: DirectExecution | None = None,
    ) -> None:
        self.schema = schema
        self.documents = documents  # persisted documents are resolved as over HTTP
        self.direct = direct  # the compiled path for subscriptions, shared with HTTP
        self.max_message_bytes = max_message_bytes

    async def handle(self, websocket: WebSocket) -> None:
        if PROTOCOL not in websocket.scope.get("subprotocols", ()):
            # as graphql-ws's own server does: a close code says why, a refused upgrade would not
            await websocket.accept()
            await websocket.close(4406, "Subprotocol not acceptable")
            return
        await _Connection(self, websocket).serve()


class _Operation:
    __slots__ = ("stream", "task")

    def __init__(self, stream: Stream, task: asyncio.Task[None]) -> None:
        self.stream = stream
        self.task = task


class _Connection:
    """The state of one connection: its session, its operations by id, its background tasks."""

    def __init__(self, handler: GraphQLWebSocketHandler, websocket: WebSocket) -> None:
        self.handler = handler
        self.websocket = websocket
        self.resources: Resources = websocket.state.resources
        self.request_id = uuid.uuid4().hex
        self.session_id: str | None = None
        self.header_auth = False  # the upgrade carried Authorization: Session, which wins over the init payload
        self.params: dict[str, Any] = {}
        self.init_received = False
        self.acknowledged = False
        self.closing = False  # no new operations: the connection is about to close
        self.closed = False
        self.held = False  # counted by the registry until the close is sent
        self.operations: dict[str, _Operation] = {}
        self.background: list[asyncio.Task[None]] = []
        self._send_lock = asyncio.Lock()
        client = websocket.client
        self.address = client.host if client else None
        policy = self.resources.streaming
        self.max_operations = policy.per_connection
        # the protocol aborts a stalled connection after the write timeout (bff.protocols); this
        # later bound (twice it) frees the slots even on a server without it
        self.stall_seconds = policy.stall_seconds

    # connection --------------------------------------------------------------------------------
    async def serve(self) -> None:
        websocket = self.websocket
        authorization = websocket.headers.get("authorization")
        self.header_auth = (authorization or "").lower().startswith("session ")
        credentials = self.resources.session_credentials(authorization, websocket.cookies)
        self.session_id = await self._live(credentials.session_id)
        headers: list[tuple[bytes, bytes]] = []
        if credentials.from_cookie and credentials.presented and self.session_id is None:
            # a cookie that names no live session is cleared wherever it is read
            headers.append((b"set-cookie", self.resources.session_cookie.clear().encode()))
        registry = self.resources.streams
        assert registry is not None
        await websocket.accept(subprotocol=PROTOCOL, headers=headers)
        registry.hold()  # shutdown waits for our 1001
        self.held = True
        self.background.append(asyncio.create_task(self._init_timeout(), name="bff-ws-init"))
        self.background.append(asyncio.create_task(self._on_drain(registry.draining), name="bff-ws-drain"))
        try:
            while True:
                message = await websocket.receive()
                if message["type"] == "websocket.disconnect":
                    break
                if not self.closed:
                    await self._receive(message)
        except WebSocketDisconnect:
            pass
        finally:
            self.closed = True
            tasks = [*self.background, *(operation.task for operation in self.operations.values())]
            for task in tasks:
                task.cancel()
            for task in tasks:
                with contextlib.suppress(BaseException):
                    await task
            self._release()

    def _release(self) -> None:
        if self.held and self.resources.streams is not None:
            self.held = False
            self.resources.streams.release()

    async def _live(self, session_id: str | None) -> str | None:
        """The id of a live session, or None: the credential is checked at connect time."""
        if not session_id:
            return None
        try:
            session = await self.resources.store.get(session_id, touch=True)
        except StoreUnavailable:
            return session_id  # an outage concludes nothing: each operation finds out for itself
        return session_id if session is not None else None

    async def _init_timeout(self) -> None:
        await asyncio.sleep(CONNECTION_INIT_SECONDS)
        if not self.init_received:
            await self._close(4408, "Connection initialisation timeout")

    async def _on_drain(self, draining: asyncio.Event) -> None:
        await draining.wait()  # the registry has ended every stream with "shutdown"
        await self._end(1001, "Server shutting down")

    async def _heartbeat(self) -> None:
        interval = self.resources.streaming.heartbeat_seconds
        while not self.closed:
            await asyncio.sleep(interval)
            await self._send({"type": "ping"})

    async def _send(self, message: dict[str, Any]) -> None:
        if self.closed:
            return
        async with self._send_lock:
            if self.closed:
                return
            try:
                async with asyncio.timeout(self.stall_seconds):
                    await self.websocket.send_text(orjson.dumps(message).decode())
            except TimeoutError:
                self._stalled()
            except (WebSocketDisconnect, RuntimeError, OSError):
                self.closed = True  # the client is gone; the receive loop finds out too

    def _stalled(self) -> None:
        """The client has taken nothing for ``stall_seconds``: every operation ends (its slot is
        freed) and nothing more is read from or written to the connection."""
        self.closed = True
        me = asyncio.current_task()
        for operation in self.operations.values():
            if operation.task is not me:
                operation.task.cancel()
        self._release()  # nothing more will be said on it: shutdown need not wait for it
        log.warning("a WebSocket client took nothing for %.0f s: its operations ended", self.stall_seconds)

    async def _close(self, code: int, reason: str) -> None:
        if self.closed:
            return
        self.closed = True
        # a close reason is at most 123 bytes of UTF-8 (it may echo what the client sent)
        reason = reason.encode()[:123].decode(errors="ignore")
        with contextlib.suppress(Exception):  # the client may be gone, or the frame refused: closed either way
            await self.websocket.close(code, reason)
        self._release()

    async def _end(self, code: int, reason: str, stream_reason: str | None = None) -> None:
        """Close the connection once its operations have said their last word (``complete``, or
        the ``UNAUTHENTICATED`` error then ``complete``): each is ended with ``stream_reason``."""
        if self.closing:
            return
        self.closing = True
        me = asyncio.current_task()
        others = [operation for operation in self.operations.values() if operation.task is not me]
        for operation in others:
            if stream_reason is not None:
                operation.stream.end(stream_reason)
        if others:
            await asyncio.wait([operation.task for operation in others], timeout=_LAST_WORDS_SECONDS)
        await self._close(code, reason)

    # messages ----------------------------------------------------------------------------------
    async def _receive(self, message: Any) -> None:
        text = message.get("text")
        if text is None:
            await self._close(4400, "WebSocket message type must be text")
            return
        limit = self.handler.max_message_bytes
        # bytes of UTF-8, not characters (a character is up to 4 bytes): counted only when it matters
        if len(text) > limit or (len(text) * 4 > limit and len(text.encode()) > limit):
            await self._close(1009, f"Messages are limited to {limit} bytes")
            return
        try:
            data = orjson.loads(text)
        except orjson.JSONDecodeError:
            await self._close(4400, "WebSocket message must be valid JSON")
            return
        kind = data.get("type") if isinstance(data, dict) else None
        if kind == "connection_init":
            await self._connection_init(data)
        elif kind == "ping":
            await self._send({"type": "pong"})
        elif kind == "pong":
            pass
        elif kind == "subscribe":
            await self._subscribe(data)
        elif kind == "complete":
            operation = self.operations.pop(data["id"], None) if isinstance(data.get("id"), str) else None
            if operation is not None:
                operation.task.cancel()  # the client asked: no complete back
        else:
            await self._close(4400, "Invalid message" if kind is None else f"Unknown message type: {kind}")

    async def _connection_init(self, data: dict[str, Any]) -> None:
        if self.init_received:
            await self._close(4429, "Too many initialisation requests")
            return
        self.init_received = True
        payload = data.get("payload")
        if payload is None:
            payload = {}
        authorization = payload.get("authorization") if isinstance(payload, dict) else None
        if not isinstance(payload, dict) or (authorization is not None and not isinstance(authorization, str)):
            await self._close(4400, "Invalid connection_init payload")
            return
        self.params = payload
        if authorization is not None and not self.header_auth:
            credentials = self.resources.session_credentials(authorization, {})
            if credentials.presented or self.session_id is None:
                self.session_id = await self._live(credentials.session_id)
        await self._send({"type": "connection_ack"})
        self.acknowledged = True
        self.background.append(asyncio.create_task(self._heartbeat(), name="bff-ws-heartbeat"))

    async def _subscribe(self, data: dict[str, Any]) -> None:
        if not self.acknowledged:
            await self._close(4401, "Unauthorized")
            return
        operation_id, payload = data.get("id"), data.get("payload")
        if (
            not isinstance(operation_id, str)
            or not operation_id
            or len(operation_id) > MAX_ID_CHARS
            or not isinstance(payload, dict)
        ):
            await self._close(4400, "Invalid subscribe message")
            return
        if operation_id in self.operations:
            await self._close(4409, f"Subscriber for {operation_id[:64]} already exists")
            return
        registry = self.resources.streams
        assert registry is not None
        if self.closing and not registry.closing:
            return  # the session has ended: the connection closes with 4401 in a moment
        try:
            if len(self.operations) >= self.max_operations and not registry.closing:
                self.resources.metrics.streams_refused.labels("per_connection").inc()
                raise StreamLimitExceeded(
                    f"this connection already runs its maximum of {self.max_operations} operations"
                )
            operation = GraphQLRequest.of(payload)
            document = await self.handler.documents.document(operation)
            # refused with SHUTTING_DOWN once shutdown has begun: the 1001 close follows
            stream = registry.open(self.session_id, self.address)
        except RequestRefused as exc:  # StreamLimitExceeded and ShuttingDown among them
            code = exc.code
            await self._send({"id": operation_id, "type": "error", "payload": [_error(str(exc), code)]})
            return
        context = Context(
            self.resources,
            self.session_id,
            cookie=None,
            request_id=self.request_id,
            connection=self.websocket,
            connection_params=self.params,
        )
        context.touch = self.resources.streaming.keeps_session_alive
        task = asyncio.create_task(
            self._run(operation_id, stream, context, document, operation), name="bff-ws-operation"
        )
        # a task cancelled before it ever ran (subscribe and complete, or a disconnect, in one read)
        # never enters _run's finally: the registry must still forget its stream
        task.add_done_callback(lambda _: registry.close(stream, "client_closed"))
        self.operations[operation_id] = _Operation(stream, task)

    async def _run(
        self,
        operation_id: str,
        stream: Stream,
        context: Context,
        document: str,
        operation: GraphQLRequest,
    ) -> None:
        """One operation: ``next`` per result, then ``complete``; ``error`` (and nothing else) for a
        document that never ran or a failure of the server."""
        results = stream_results(
            self.handler.schema,
            self.resources,
            context,
            stream,
            document,
            operation.variables,
            operation.operation_name,
            direct=self.handler.direct,
        )
        last: dict[str, Any] = {"id": operation_id, "type": "complete"}
        try:
            async with contextlib.aclosing(results):
                async for kind, payload in results:
                    if kind == "error":
                        last = {"id": operation_id, "type": "error", "payload": payload}
                    elif kind == "next":
                        await self._send({"id": operation_id, "type": "next", "payload": payload})
                        if self.closed:
                            break  # the client is gone, or took nothing (`_stalled`): its stream ends
        except Exception:
            log.exception("subscription failed", extra={"request_id": self.request_id})
            last = {"id": operation_id, "type": "error", "payload": [_error("Internal server error")]}
        finally:
            # the id is free again once its last message is out
            mine = self.operations.get(operation_id)
            if mine is not None and mine.task is asyncio.current_task():
                del self.operations[operation_id]
        await self._send(last)
        if stream.reason == "shutdown":
            await self._end(1001, "Server shutting down")
        elif stream.reason == "session_ended" or (stream.reason == "unauthenticated" and self.session_id):
            # a signed-in connection whose session is gone: every operation is told, then the
            # connection closes with a code that graphql-ws clients do not retry
            await self._end(4401, "Unauthorized", stream_reason="session_ended")


def _error(message: str, code: str = "INTERNAL_SERVER_ERROR") -> dict[str, Any]:
    return error_entry(message, code)
