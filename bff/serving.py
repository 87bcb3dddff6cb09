"""Running the app under uvicorn so that shutdown is graceful for streams too.

uvicorn sends the lifespan shutdown (where `open_resources` ends the streams) only after every
connection has finished, up to ``timeout_graceful_shutdown``; an open subscription never finishes
by itself, so without help it waits out that timeout and is then cancelled: its client reads a
reset (an incomplete chunked body), not ``event: complete``. `Server` ends the app's streams as
soon as shutdown starts, before uvicorn waits for connections: each client gets ``complete`` and
the process exits at once. `run` is ``uvicorn.run`` with that server in the process and in every
``--workers`` process (the first ones, a respawned one and those of a SIGHUP restart).

Under plain ``uvicorn --factory bff.app:app_from_env`` (uvicorn's own server) the app's lifespan
does the same through `SignalsEndStreams`: it wraps the SIGTERM/SIGINT handlers uvicorn installed,
so that the streams end before uvicorn learns of the signal.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import socket
import threading
import time
from collections.abc import Callable, Iterator
from types import FrameType
from typing import Any

import uvicorn
from uvicorn.supervisors import multiprocess

log = logging.getLogger("bff")

#: how long streams get to send their ``complete`` when no graceful timeout is configured
DEFAULT_GRACE = 5.0


async def end_streams(state: dict[str, Any], grace: float) -> None:
    """End every stream of the app whose lifespan state is ``state`` (``complete`` for each client),
    refuse new ones, and wait up to ``grace`` seconds for them to go."""
    resources = state.get("resources")
    registry = getattr(resources, "streams", None)
    if registry is None:
        return
    count = len(registry)
    await registry.shutdown(grace)
    if count:
        log.info("ended %d open stream(s) for shutdown", count, extra={"streams": count, "left": len(registry)})


class Server(uvicorn.Server):
    """uvicorn's server, which ends the app's streams when shutdown starts (see the module's doc).

    The listening sockets close first, so no new connection arrives meanwhile; a stream asked for
    on a connection that is already open is refused while the registry is closing. The whole stop
    stays within ``timeout_graceful_shutdown``: what the streams take is deducted from the time
    uvicorn then waits for connections."""

    async def shutdown(self, sockets: list[socket.socket] | None = None) -> None:
        for server in self.servers:
            server.close()  # uvicorn closes them again: closing twice is harmless
        configured = self.config.timeout_graceful_shutdown
        grace = DEFAULT_GRACE if configured is None else configured
        started = time.monotonic()
        state = getattr(self.lifespan, "state", None) or {}
        if not self.force_exit:
            try:
                await end_streams(state, grace)
            except Exception:  # never let this stop the rest of the shutdown
                log.exception("ending the streams for shutdown failed")
        if configured is not None:
            self.config.timeout_graceful_shutdown = max(0, round(configured - (time.monotonic() - started)))
        await super().shutdown(sockets)


Handler = Callable[[int, FrameType | None], Any]


class SignalsEndStreams:
    """While installed, SIGTERM and SIGINT first end the app's streams (as `Server` does) and only
    then reach uvicorn's handler, which starts its shutdown.

    For a process run by plain uvicorn: `install` wraps the handlers only when they are those of
    a `uvicorn.Server` that is not our `Server` (which ends the streams itself, so nothing runs
    twice), and only in the main thread (the only one where signals can be handled). uvicorn's
    handler is called once the streams are gone, not at once: its shutdown would otherwise close
    every WebSocket with 1012 while the connection is still sending its ``complete`` and 1001
    (that wait is bounded by ``grace``). A second signal meanwhile reaches uvicorn at once, after
    the first: a second Ctrl+C forces the exit, as without the wrapper."""

    def __init__(self, state: dict[str, Any], grace: float = DEFAULT_GRACE) -> None:
        self.state = state
        self.grace = grace
        self._previous: dict[int, Handler] = {}
        self._loop: asyncio.AbstractEventLoop | None = None
        self._task: asyncio.Task[None] | None = None
        self._pending: int | None = None  # the signal held back while the streams end
        self._forwarded = False  # uvicorn has been told of a signal

    def install(self) -> None:
        if threading.current_thread() is not threading.main_thread():
            return
        self._loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            handler = signal.getsignal(sig)
            owner = getattr(handler, "__self__", None)
            if callable(handler) and isinstance(owner, uvicorn.Server) and not isinstance(owner, Server):
                self._previous[sig] = handler
                signal.signal(sig, self._handle)

    def uninstall(self) -> None:
        """Put uvicorn's handlers back (unless someone has replaced ours since). uvicorn's are
        kept: a handler of ours that someone restores later still passes signals on."""
        for sig, handler in self._previous.items():
            if signal.getsignal(sig) == self._handle:
                signal.signal(sig, handler)
        self._loop = None
        if self._task is not None and not self._task.done():
            self._task.cancel()

    def _handle(self, sig: int, frame: FrameType | None) -> None:
        # Runs in the main thread between two bytecodes, possibly in the middle of the event
        # loop's own code: the loop is only asked, thread-safely, to start ending the streams.
        loop = self._loop
        if self._pending is None and not self._forwarded and loop is not None and not loop.is_closed():
            self._pending = sig
            loop.call_soon_threadsafe(self._start)
            return
        # a second signal: uvicorn gets both, in order (a second Ctrl+C forces the exit)
        self._forward_pending()
        self._forward(sig, frame)

    def _start(self) -> None:
        if self._loop is None:  # uninstalled meanwhile
            self._forward_pending()
            return
        self._task = self._loop.create_task(self._end_streams_then_forward(), name="bff-shutdown")

    async def _end_streams_then_forward(self) -> None:
        try:
            await end_streams(self.state, self.grace)
        except Exception:  # never let this keep uvicorn from shutting down
            log.exception("ending the streams for shutdown failed")
        finally:
            self._forward_pending()

    def _forward_pending(self) -> None:
        sig, self._pending = self._pending, None
        if sig is not None:
            self._forward(sig, None)

    def _forward(self, sig: int, frame: FrameType | None) -> None:
        self._forwarded = True
        handler = self._previous.get(sig)
        if handler is not None:
            handler(sig, frame)


class _Worker(multiprocess.Process):
    """A ``--workers`` process that runs `Server` (pickled by reference into each spawned worker)."""

    @property
    def server(self) -> uvicorn.Server:
        if self._server is None:
            self._server = Server(config=self.config)
        return self._server


@contextlib.contextmanager
def _workers_run_our_server() -> Iterator[None]:
    # uvicorn's supervisor builds its workers from the module's ``Process`` in three places (start,
    # respawn, SIGHUP restart) and offers no parameter for it: swap it while the supervisor runs
    original = multiprocess.Process
    multiprocess.Process = _Worker  # type: ignore[misc]
    try:
        yield
    finally:
        multiprocess.Process = original  # type: ignore[misc]


def run(config: uvicorn.Config) -> bool:
    """``uvicorn.run`` for ``config`` with `Server`; False when a single process failed to start
    (uvicorn's exit status for that is 3)."""
    server = Server(config=config)
    try:
        if config.workers > 1:
            if not isinstance(config.app, str):
                raise ValueError("several workers need the app as an import string")
            sock = config.bind_socket()
            with _workers_run_our_server():
                multiprocess.Multiprocess(config, sockets=[sock]).run()
            return True
        server.run()
    except KeyboardInterrupt:
        pass
    finally:
        if config.uds and os.path.exists(config.uds):
            os.remove(config.uds)
    return server.started  # uvicorn has logged why when it did not
