"""Declarative sources: a team's REST and GraphQL services on the graph from their own descriptions,
with no resolver written by hand::

    from bff import build_schema
    from bff import sources

    schema = build_schema(sources=[sources.openapi("accounts", spec="accounts.yaml")])

or, with no code at all, ``BFF_UPSTREAMS__ACCOUNTS__URL`` and ``BFF_UPSTREAMS__ACCOUNTS__OPENAPI``.
Every call goes through the upstream client of that name (the session's token for it, its audience
or DPoP, the request deadline, the breaker, partial errors). ``bff sources generate`` writes the same
code as a module a team can take over."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterable, Mapping
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from bff.auth.oidc import OIDCClient
from bff.settings import Settings, UpstreamSettings
from bff.sources.graphql import GraphQLSource, graphql
from bff.sources.links import Link, link, read_links
from bff.sources.mount import SourceError
from bff.sources.openapi import OpenAPISource

__all__ = [
    "GraphQLSource",
    "Link",
    "OpenAPISource",
    "SourceError",
    "from_settings",
    "graphql",
    "link",
    "openapi",
    "read_links",
]


def openapi(
    name: str,
    spec: str | Mapping[str, Any],
    *,
    prefix: str = "",
    include: Iterable[str] = (),
    exclude: Iterable[str] = (),
    names: Mapping[str, str] | None = None,
    authorize: Mapping[str, Any] | None = None,
) -> OpenAPISource:
    """The operations of an OpenAPI document (a path, an http(s) URL or the parsed document) as
    fields: GET as Query fields, other methods as Mutation fields, each named by its
    ``operationId`` as written (``names`` renames some; ``prefix`` is put before every one).
    ``include``/``exclude`` choose operations by ``operationId`` or tag. ``name`` is the upstream
    the calls go to (``BFF_UPSTREAMS__<NAME>__URL`` and its token settings). ``authorize`` puts
    authorization directives on fields (by field name, operationId or ``"*"``): ``"authenticated"``
    or the scopes ``[["orders:write"]]`` (`bff.RequiresScopes`'s semantics); a denied field makes no
    upstream call."""
    return OpenAPISource(name, spec, prefix, tuple(include), tuple(exclude), dict(names or {}), dict(authorize or {}))


def from_settings(settings: Settings) -> list[Any]:
    """The sources ``BFF_UPSTREAMS__<NAME>__OPENAPI`` (and ``__GRAPHQL``) configure, by name."""
    found: list[Any] = []
    for name, upstream in sorted(settings.upstreams.items()):
        if upstream.graphql:
            found.append(GraphQLSource(name, upstream.graphql, prefix=upstream.prefix, endpoint=upstream.url))
        if upstream.openapi:
            found.append(
                OpenAPISource(
                    name,
                    upstream.openapi,
                    upstream.prefix,
                    tuple(upstream.include),
                    tuple(upstream.exclude),
                )
            )
    if found and settings.source_links:
        found.extend(read_links(settings.source_links))
    return found


def client_credentials(settings: Settings, upstream: UpstreamSettings) -> Callable[[], str | None] | None:
    """The BFF's own token for ``upstream`` (`OIDCClient.client_credentials`, with the upstream's
    resource, audience and scopes), for reading a source that wants one at start. The schema is built
    before the server's event loop runs, or inside one (a test, an embedding app), so the grant runs
    in a thread of its own. None without an IdP; a refusal is None too (the caller says what to do)."""
    if not (settings.oidc_issuer and settings.oidc_client_id and settings.oidc_client_secret):
        return None
    issuer, client_id = settings.oidc_issuer, settings.oidc_client_id
    secret = settings.oidc_client_secret.get_secret_value()

    async def grant() -> str | None:
        client = OIDCClient(
            issuer=issuer,
            client_id=client_id,
            client_secret=secret,
            auth_method=settings.oidc_client_auth_method,
            timeout=settings.oidc_timeout_seconds,
        )
        try:
            tokens = await client.client_credentials(
                upstream.scopes, resource=upstream.resource, audience=upstream.audience
            )
        except Exception:  # best effort: without it the introspection's refusal is reported as it is
            return None
        finally:
            await client.aclose()
        return tokens.access_token

    def token() -> str | None:
        with ThreadPoolExecutor(1) as pool:
            return pool.submit(asyncio.run, grant()).result()

    return token
