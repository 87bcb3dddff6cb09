"""Clients for upstream services (REST and GraphQL). They know tokens only through `TokenSource`."""

from bff.upstream.base import RejectionCooldown, TokenSource, UpstreamClient
from bff.upstream.graphql import GraphQLClient
from bff.upstream.rest import RestClient
from bff.upstream.sse import Backoff, UpstreamEvent, follow

__all__ = [
    "Backoff",
    "GraphQLClient",
    "RejectionCooldown",
    "RestClient",
    "TokenSource",
    "UpstreamClient",
    "UpstreamEvent",
    "follow",
]
