"""uvicorn's own HTTP and WebSocket protocols, with a deadline on every write (issue 24).

uvicorn writes a response (or a WebSocket message) into the connection's transport and, once the
transport's buffer is over its high-water mark, waits until the client takes some of it: with no
deadline. A client that stops reading therefore keeps whatever the write holds (the task, its
stream slots, the buffered bytes) for as long as it keeps its socket open, and a graceful close
(``transport.close()``, which first waits for the buffer to drain) never completes either, at
shutdown included. ASGI gives an application no way to abort a connection, and uvicorn has no
write timeout, so the deadline lives here, in asyncio's own flow-control callbacks (written by
hand: uvicorn offers no hook for it, and asyncio's ``pause_writing``/``resume_writing`` are the
public protocol interface every uvicorn protocol implements):

- the transport's high-water mark is 0: the protocol is paused as soon as the kernel's socket
  buffer refuses bytes (the client has stopped taking them), and resumed once everything went;
- paused for longer than ``BFF_WRITE_TIMEOUT_SECONDS``, the connection is aborted
  (``transport.abort()``: a graceful close would wait for the same bytes); uvicorn sees the
  connection lost, the application's pending write returns (HTTP) or fails (WebSocket) at once, and
  every stream the connection held is closed (``bff_connections_aborted_total{reason="write_stall"}``).

A client on a slow link is not a stalled one: the deadline runs only while the kernel takes nothing
at all from a full buffer, and restarts whenever it took everything.

`bff serve` and `bff demo` run these (with `uvicorn_options`); under plain uvicorn pass
``--http bff.protocols:HTTPProtocol --ws bff.protocols:WebSocketProtocol`` and the WebSocket size
flags `uvicorn_options` names (README, "Limits per client").
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Any

from uvicorn.protocols.http.h11_impl import H11Protocol as _H11Protocol
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol as _HttpToolsProtocol
from uvicorn.protocols.websockets.websockets_sansio_impl import WebSocketsSansIOProtocol

from bff.graphql.transport.streams import CONNECTION_LOST

log = logging.getLogger("bff")

#: seconds a write may stall when the app's settings are not reachable (no lifespan)
DEFAULT_WRITE_TIMEOUT = 10.0


def uvicorn_options(max_message_bytes: int) -> dict[str, Any]:
    """The `uvicorn.Config` arguments every ``bff`` server runs with: these protocols, and
    WebSocket messages bounded before they are buffered (``ws_max_size``: a larger frame is refused
    with 1009 from its header, before its payload is read) and never compressed (permessage-deflate
    would inflate up to that size in memory for every frame, from a few KB on the wire)."""
    return {
        "http": "bff.protocols:HTTPProtocol",
        "ws": "bff.protocols:WebSocketProtocol",
        "ws_max_size": max_message_bytes,
        "ws_per_message_deflate": False,
        "server_header": False,  # no "server: uvicorn" on every answer: it tells clients nothing they need
    }


def uvicorn_flags(max_message_bytes: int) -> list[str]:
    """`uvicorn_options` as ``uvicorn`` command-line flags (``uvicorn --factory bff.app:app_from_env``
    with these serves as ``bff serve`` does; ``max_message_bytes`` is ``BFF_MAX_BODY_BYTES``)."""
    options = uvicorn_options(max_message_bytes)
    return [
        "--http",
        options["http"],
        "--ws",
        options["ws"],
        "--ws-max-size",
        str(options["ws_max_size"]),
        "--ws-per-message-deflate",
        str(options["ws_per_message_deflate"]).lower(),
    ]


class _WriteDeadline(asyncio.Protocol):
    """The deadline, mixed into a uvicorn protocol (see the module's doc). uvicorn's protocols keep
    ``transport`` and ``app_state`` (the lifespan state, where the app's `Resources` are)."""

    transport: asyncio.Transport
    app_state: dict[str, Any]
    _stalled: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(transport)
        if isinstance(transport, asyncio.WriteTransport):
            # paused as soon as anything is left unsent: the deadline then measures the client
            transport.set_write_buffer_limits(high=0)

    def pause_writing(self) -> None:
        super().pause_writing()
        if self._stalled is None:
            timeout = _setting(self.app_state, "write_timeout_seconds", DEFAULT_WRITE_TIMEOUT)
            self._stalled = asyncio.get_running_loop().call_later(timeout, self._abort)

    def resume_writing(self) -> None:
        self._disarm()
        super().resume_writing()

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        super().connection_lost(exc)

    def _disarm(self) -> None:
        if self._stalled is not None:
            self._stalled.cancel()
            self._stalled = None

    def _abort(self) -> None:
        self._stalled = None
        transport = self.transport
        if transport is None or (transport.is_closing() and transport.get_write_buffer_size() == 0):
            return
        if transport.get_protocol() is not self:
            return  # upgraded to a WebSocket meanwhile: that protocol has its own deadline
        resources = self.app_state.get("resources")
        metrics = getattr(resources, "metrics", None)
        if metrics is not None:
            metrics.connections_aborted.labels("write_stall").inc()
        peer = transport.get_extra_info("peername")
        log.info(
            "aborted a connection whose client took nothing for the write timeout",
            extra={"client": str(peer[0]) if isinstance(peer, tuple) and peer else None},
        )
        transport.abort()


def _setting(app_state: dict[str, Any], name: str, default: float) -> float:
    settings = getattr(app_state.get("resources"), "settings", None)
    value = getattr(settings, name, None)
    return float(value) if isinstance(value, int | float) else default


class _HeadJoined:
    """The transport as one response's cycle sees it: its first write (the status line and headers,
    which uvicorn writes on ``http.response.start``) is held until the next write (the body, in the
    same step for an ordinary answer), and both go out in one ``writelines``: one system call per
    answer instead of two (the header write was ~3 % of a worker's CPU, issue 26). A held head with
    nothing after it in the same loop iteration (a stream waiting for its first event) is written
    at the next iteration; order is kept whatever happens, and closing writes it first."""

    __slots__ = ("_handle", "_held", "_loop", "_started", "transport")

    def __init__(self, transport: asyncio.Transport, loop: asyncio.AbstractEventLoop) -> None:
        self.transport = transport
        self._loop = loop
        self._held: bytes | None = None
        self._handle: asyncio.Handle | None = None
        self._started = False

    def write(self, data: bytes) -> None:
        if not self._started:
            self._started = True
            self._held = data
            self._handle = self._loop.call_soon(self.flush)
            return
        held = self._held
        if held is None:
            self.transport.write(data)
            return
        self._held = None
        if self._handle is not None:
            self._handle.cancel()
        self.transport.writelines((held, data))

    def flush(self) -> None:
        held, self._held = self._held, None
        if held is not None and not self.transport.is_closing():
            self.transport.write(held)

    def close(self) -> None:
        self.flush()
        self.transport.close()

    def is_closing(self) -> bool:
        return self.transport.is_closing()


class _LeanEvent(asyncio.Event):
    """An `asyncio.Event` whose waiters are a list: asyncio's is a deque, which allocates room for
    64 waiters at once (~760 B), and uvicorn holds two events per open connection, each with one
    waiter at most (the request's ``receive``, a paused write). `asyncio.Event` only appends,
    iterates and removes its waiters, which a list does alike. Part of an open stream's memory
    (issue 26, part 4)."""

    def __init__(self, value: bool = False) -> None:
        super().__init__()
        self._waiters: Any = []
        if value:
            self.set()


class _Pipeline(list[Any]):
    """uvicorn's queue of pipelined requests (``appendleft``, ``pop``, truth) as a list, for the
    same reason: most connections never pipeline, and an empty deque is ~760 B."""

    def appendleft(self, item: Any) -> None:
        self.insert(0, item)


class HttpToolsProtocol(_WriteDeadline, _HttpToolsProtocol):
    """uvicorn's httptools protocol (its default) with the write deadline, each answer's head and
    body written together (`_HeadJoined`), and its per-connection events and pipeline queue
    lighter (`_LeanEvent`, `_Pipeline`)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.pipeline = _Pipeline()  # type: ignore[assignment]

    # The callback is kept on the request's cycle, not on the protocol: the protocol already has
    # about the 30 attributes a CPython instance dict shares its keys for, and one more gave each
    # connection a dict of its own (~1.5 KiB).
    def _watch_lost(self, callback: Callable[[], None] | None) -> None:
        """`CONNECTION_LOST`: ``callback`` is called once if the connection is lost (None: not),
        soon if it is lost already (the client left while the answer was being prepared)."""
        cycle = self.cycle
        if callback is not None and (cycle is None or cycle.disconnected or self.transport.is_closing()):
            self.loop.call_soon(callback)
            return
        if cycle is not None:
            cycle.bff_lost = callback  # type: ignore[attr-defined]

    def connection_lost(self, exc: Exception | None) -> None:
        cycle = self.cycle
        super().connection_lost(exc)
        lost = getattr(cycle, "bff_lost", None)
        if lost is not None:
            cycle.bff_lost = None  # type: ignore[attr-defined]
            lost()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(transport)
        flow = getattr(self, "flow", None)
        writable = getattr(flow, "_is_writable_event", None)
        if isinstance(writable, asyncio.Event) and not isinstance(writable, _LeanEvent):
            flow._is_writable_event = _LeanEvent(writable.is_set())  # type: ignore[union-attr]

    def on_headers_complete(self) -> None:
        super().on_headers_complete()
        cycle = getattr(self, "cycle", None)
        # uvicorn has just made the request's cycle (its task has not run yet): it writes through this
        if cycle is not None and cycle.transport is self.transport:
            cycle.transport = _HeadJoined(self.transport, self.loop)
            if type(cycle.message_event) is asyncio.Event:  # nobody waits on it yet
                cycle.message_event = _LeanEvent(cycle.message_event.is_set())
            # a streamed answer learns from here that its client went, without listening for it
            cycle.scope.setdefault("extensions", {})[CONNECTION_LOST] = self._watch_lost


class H11Protocol(_WriteDeadline, _H11Protocol):
    """uvicorn's h11 protocol with the write deadline."""


#: what ``--http auto`` would pick: httptools (installed with ``uvicorn[standard]``)
HTTPProtocol = HttpToolsProtocol


class WebSocketProtocol(_WriteDeadline, WebSocketsSansIOProtocol):
    """uvicorn's WebSocket protocol (``websockets-sansio``, its default) with the write deadline."""
