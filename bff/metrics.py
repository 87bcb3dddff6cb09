"""Prometheus metrics, one registry per app (no module-level collectors, so apps and tests don't clash)."""

from __future__ import annotations

from dataclasses import dataclass, field

from prometheus_client import CollectorRegistry, Counter, Histogram

_LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)


@dataclass
class Metrics:
    registry: CollectorRegistry = field(default_factory=CollectorRegistry)

    def __post_init__(self) -> None:
        r = self.registry
        self.token_refresh = Counter(
            "bff_token_refresh",
            "Token refresh attempts by outcome (success, coalesced, invalid_grant, provider_error, "
            "stale_token_used, wait_timeout, write_deferred)",
            ["outcome"],
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
        self.session_store_duration = Histogram(
            "bff_session_store_duration_seconds",
            "Session store reads and writes",
            ["op"],
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )
        self.logins = Counter("bff_logins", "Completed and failed sign-ins", ["outcome"], registry=r)
        # exported at 0 from the start, so dashboards and alerts see every outcome
        for outcome in (
            "success",
            "coalesced",
            "invalid_grant",
            "provider_error",
            "stale_token_used",
            "wait_timeout",
            "write_deferred",
        ):
            self.token_refresh.labels(outcome)
