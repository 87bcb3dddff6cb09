"""Who may open a stream: the registry's per-session and per-process limits, plus the per-client
ones of issue 24, so that no anonymous client can take the slots signed-in users need.

`ClientStreamRegistry` is the process's `StreamRegistry` with two more limits on streams that have
no session (anonymous ones, which nothing else attributes to anybody):

- together they hold at most ``anonymous_share`` of ``per_process``: the rest of the budget is
  always left to signed-in users, whatever anonymous clients do;
- one client address holds at most ``anonymous_per_address`` of them. An IPv6 address counts by its
  /64 (one host usually has a whole /64). Behind a proxy, the address is the one uvicorn's
  ``--proxy-headers`` takes from ``X-Forwarded-For`` for the proxies ``--forwarded-allow-ips`` trusts.

A signed-in stream is limited per session (``BFF_STREAMS_PER_SESSION``) and by the process budget,
never per address: many users may share one address (a NAT, a proxy that is not trusted). The limit
per WebSocket connection is the transport's (`bff.graphql.transport.websocket`).
"""

from __future__ import annotations

import ipaddress

from bff.errors import StreamLimitExceeded
from bff.metrics import Metrics
from bff.sessions.store import SessionStore
from bff.sessions.streams import Stream, StreamRegistry


def address_key(host: str | None) -> str:
    """The key an address is counted under: the address itself, an IPv6 one by its /64."""
    if not host:
        return "unknown"
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return host[:64]  # a unix socket path or a proxy's odd value: counted as it is
    if isinstance(address, ipaddress.IPv6Address):
        if address.ipv4_mapped is not None:
            return str(address.ipv4_mapped)
        return str(ipaddress.IPv6Network((address, 64), strict=False))
    return str(address)


class ClientStreamRegistry(StreamRegistry):
    """A `StreamRegistry` that also limits the streams without a session (see the module's doc)."""

    def __init__(
        self,
        store: SessionStore,
        metrics: Metrics,
        *,
        per_session: int,
        per_process: int,
        anonymous_share: float = 0.5,
        anonymous_per_address: int = 20,
        keep_alive: bool = False,
        recheck_seconds: float = 30.0,
    ) -> None:
        super().__init__(
            store,
            metrics,
            per_session=per_session,
            per_process=per_process,
            keep_alive=keep_alive,
            recheck_seconds=recheck_seconds,
        )
        self.anonymous_limit = max(1, int(per_process * anonymous_share))
        self.anonymous_per_address = anonymous_per_address
        self._anonymous: dict[Stream, str] = {}  # open anonymous streams, by their address key
        self._by_address: dict[str, int] = {}

    @property
    def anonymous(self) -> int:
        return len(self._anonymous)

    def open(self, session_id: str | None, client: str | None = None) -> Stream:
        """Register a stream for ``session_id`` (None: anonymous) from the address ``client``;
        raises `StreamLimitExceeded` (or `ShuttingDown`) as `StreamRegistry.open` does."""
        if session_id or self.closing:
            return super().open(session_id)
        key = address_key(client)
        if len(self._anonymous) >= self.anonymous_limit:
            self.metrics.streams_refused.labels("anonymous").inc()
            raise StreamLimitExceeded(
                f"streams without a session are limited to {self.anonymous_limit} on this server; sign in for more"
            )
        if self._by_address.get(key, 0) >= self.anonymous_per_address:
            self.metrics.streams_refused.labels("anonymous_per_address").inc()
            raise StreamLimitExceeded(
                f"this address already holds its maximum of {self.anonymous_per_address} streams without a session"
            )
        stream = super().open(None)
        self._anonymous[stream] = key
        self._by_address[key] = self._by_address.get(key, 0) + 1
        self.metrics.streams_open_anonymous.inc()
        return stream

    def close(self, stream: Stream, reason: str) -> None:
        super().close(stream, reason)
        key = self._anonymous.pop(stream, None)
        if key is None:
            return
        self.metrics.streams_open_anonymous.dec()
        left = self._by_address[key] - 1
        if left:
            self._by_address[key] = left
        else:
            del self._by_address[key]
