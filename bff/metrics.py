"""Prometheus metrics, one registry per app (no module-level collectors, so apps and tests don't clash)."""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.metrics import MetricWrapperBase

_GRAPHQL_NAME = re.compile(r"[_A-Za-z][_0-9A-Za-z]{0,63}")
MAX_NAME_CHARS = 64

_LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)


@dataclass
class Metrics:
    registry: CollectorRegistry = field(default_factory=CollectorRegistry)

    _children: dict[tuple[int, tuple[str, ...]], Any] = field(default_factory=dict, repr=False)

    def child(self, metric: MetricWrapperBase, *values: str) -> Any:
        """``metric.labels(*values)``, remembered: prometheus-client takes a lock and builds a key
        on every ``labels`` call, which the hot paths make several times per request. Only for
        bounded label values (statuses, routes, upstream names, admitted operation labels)."""
        key = (id(metric), values)
        found = self._children.get(key)
        if found is None:
            found = self._children[key] = metric.labels(*values)
        return found

    def __post_init__(self) -> None:
        r = self.registry
        self.token_refresh = Counter(
            "bff_token_refresh",
            "Token refresh attempts by outcome (success, coalesced, invalid_grant, provider_error, "
            "stale_token_used, wait_timeout, write_deferred)",
            ["outcome"],
            registry=r,
        )
        self.token_grants = Counter(
            "bff_token_grants",
            "Grants at the IdP by the token they were for (upstream: the upstream's own token, or "
            "'session' for the session's) and outcome (success, invalid_grant, refused, provider_error)",
            ["upstream", "outcome"],
            registry=r,
        )
        self.refresh_claims = Counter(
            "bff_refresh_claims",
            "Refresh claims by event: overdue (a request failed fast on another holder's overdue refresh), "
            "abandoned (this replica's IdP call hung while peers reached the IdP: claim released), "
            "taken_over (an overdue claim taken inside the IdP's reuse interval), lost (lease not renewed)",
            ["event"],
            registry=r,
        )
        self.token_refresh_duration = Histogram(
            "bff_token_refresh_duration_seconds",
            "Latency of refresh_token grants at the IdP",
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )
        self.upstream_duration = Histogram(
            "bff_upstream_request_duration_seconds",
            "Upstream calls by upstream and status (status 'error' or 'timeout' without answer)",
            ["upstream", "status"],
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )
        self.http_requests = Histogram(
            "bff_http_request_duration_seconds",
            "HTTP requests served by the BFF",
            ["method", "route", "status"],
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )
        self.graphql_operations = Counter(
            "bff_graphql_operations",
            "GraphQL operations by name and outcome",
            ["operation", "outcome"],
            registry=r,
        )
        self.graphql_compiled = Counter(
            "bff_graphql_compiled_plan",
            "Cached, validated documents by execution path: 'compiled', or 'fallback' to graphql-core with "
            "the reason (mutation, subscription, directives, abstract_type, introspection, ...)",
            ["outcome", "reason"],
            registry=r,
        )
        self.session_store_duration = Histogram(
            "bff_session_store_duration_seconds",
            "Session store reads and writes",
            ["op"],
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )
        self.logins = Counter("bff_logins", "Completed and failed sign-ins", ["outcome"], registry=r)
        self.streams_open = Gauge("bff_streams_open", "Open subscription streams", registry=r)
        self.stream_events = Counter("bff_stream_events", "Events sent on subscription streams", registry=r)
        self.streams_ended = Counter(
            "bff_streams_ended", "Subscription streams ended, by reason", ["reason"], registry=r
        )
        self.streams_refused = Counter(
            "bff_streams_refused",
            "Subscription streams refused by a limit (per_process, per_session, per_connection, anonymous, "
            "anonymous_per_address)",
            ["limit"],
            registry=r,
        )
        self.streams_open_anonymous = Gauge(
            "bff_streams_open_anonymous", "Open subscription streams without a session", registry=r
        )
        self.connections_aborted = Counter(
            "bff_connections_aborted",
            "Client connections aborted by the server, by reason (write_stall: the client took nothing "
            "for BFF_WRITE_TIMEOUT_SECONDS)",
            ["reason"],
            registry=r,
        )
        self.gc_pause = Histogram(
            "bff_gc_pause_seconds",
            "Pauses of the cyclic garbage collector (the whole process stops), by generation",
            ["generation"],
            buckets=(0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 1.0),
            registry=r,
        )
        # exported at 0 from the start, so dashboards and alerts see every outcome
        for outcome in (
            "success",
            "coalesced",
            "invalid_grant",
            "provider_error",
            "stale_token_used",
            "wait_timeout",
            "write_deferred",
            "overdue",
        ):
            self.token_refresh.labels(outcome)
        for event in ("overdue", "abandoned", "taken_over", "lost"):
            self.refresh_claims.labels(event)
        for limit in ("per_process", "per_session", "per_connection", "anonymous", "anonymous_per_address"):
            self.streams_refused.labels(limit)
        self.connections_aborted.labels("write_stall")


def loggable_name(name: str | None) -> str | None:
    """A client-chosen name cut to a size fit for a log line."""
    if name is None or len(name) <= MAX_NAME_CHARS:
        return name
    return name[:MAX_NAME_CHARS] + "…"


class OperationLabels:
    """Which GraphQL operation names may become metric labels, so that clients cannot grow the
    series without bound nor crowd out the real operations.

    Only a valid GraphQL name of at most 64 characters is ever a label. Pinned names (the
    operations of the trusted-documents manifest) always are. Any other name is admitted when it
    ran for a signed-in user, up to ``capacity`` names, and is then kept: anonymous clients never
    admit a name, whatever they send, and an admitted name is never evicted. A name that is not a
    label counts as "other"; a request without one as "anonymous"."""

    def __init__(self, pinned: Iterable[str] = (), *, capacity: int = 200) -> None:
        self.pinned = frozenset(name for name in pinned if _GRAPHQL_NAME.fullmatch(name))
        self.capacity = capacity
        self._admitted: set[str] = set()

    def label(self, name: str | None, *, admit: bool = False) -> str:
        if name is None:
            return "anonymous"
        if name in self.pinned or name in self._admitted:
            return name
        if admit and len(self._admitted) < self.capacity and _GRAPHQL_NAME.fullmatch(name):
            self._admitted.add(name)
            return name
        return "other"
