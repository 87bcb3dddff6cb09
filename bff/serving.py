"""Running the app under uvicorn so that shutdown is graceful for streams too.

uvicorn sends the lifespan shutdown (where `open_resources` ends the streams) only after every
connection has finished, up to ``timeout_graceful_shutdown``; an open subscription never finishes
by itself, so without help it waits out that timeout and is then cancelled: its client reads a
reset (an incomplete chunked body), not ``event: complete``. `Server` ends the app's streams as
soon as shutdown starts, before uvicorn waits for connections: each client gets ``complete`` and
the process exits at once. `run` is ``uvicorn.run`` with that server in the process and in every
``--workers`` process (the first ones, a respawned one and those of a SIGHUP restart).
"""

from __future__ import annotations

import contextlib
import logging
import os
import socket
import time
from collections.abc import Iterator
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
