"""End-to-end fixtures: the real oidc-provider, demo upstreams that introspect its tokens, BFFs."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest

from bff.app import create_app
from bff.demo.tokens import IntrospectionValidator
from bff.demo.upstreams import accounts_app, catalog_app
from tests.conftest import Bff, Upstreams, make_settings
from tests.support.servers import OIDCProvider, free_port, serve, serve_all


@dataclass
class Stack:
    idp: OIDCProvider
    upstreams: Upstreams
    ports: list[int]
    start_bff: Callable[..., Any] = field(repr=False)
    validator: IntrospectionValidator | None = field(default=None, repr=False)


@pytest.fixture
def idp_options() -> dict[str, Any]:
    return {"access_ttl": 60}


@pytest.fixture
def bff_ports() -> list[int]:
    return [free_port(), free_port()]


@pytest.fixture
def backchannel_logout_uri(bff_ports: list[int]) -> str:
    """Where the IdP sends logout tokens (a test may put a recorder there instead)."""
    return f"http://127.0.0.1:{bff_ports[0]}/auth/backchannel-logout"


@pytest.fixture
def idp(idp_options: dict[str, Any], bff_ports: list[int], backchannel_logout_uri: str) -> Iterator[OIDCProvider]:
    options = dict(idp_options)
    provider = OIDCProvider(
        redirect_uris=[f"http://127.0.0.1:{p}/auth/callback" for p in bff_ports],
        backchannel_logout_uri=backchannel_logout_uri,
        **{k: str(v) for k, v in options.items()},
    )
    provider.start()
    try:
        yield provider
    finally:
        provider.stop()


@pytest.fixture
async def stack(idp: OIDCProvider, bff_ports: list[int]) -> AsyncIterator[Stack]:
    validator = IntrospectionValidator(idp.issuer, "resource-server", "resource-secret")
    accounts, catalog = accounts_app(validator), catalog_app(validator)
    async with serve_all(accounts, catalog) as (accounts_url, catalog_url):
        upstreams = Upstreams(accounts, catalog, accounts_url, f"{catalog_url}/graphql")

        @contextlib.asynccontextmanager
        async def start_bff(index: int = 0, **overrides: Any) -> AsyncIterator[Bff]:
            port = bff_ports[index]
            values: dict[str, Any] = {
                "public_url": f"http://127.0.0.1:{port}",
                "oidc_issuer": idp.issuer,
                "oidc_client_id": "bff",
                "oidc_client_secret": "bff-secret",
                "oidc_timeout_seconds": 2,
                "upstreams": upstreams.settings(),
            }
            transports = overrides.pop("transports", None)
            values.update(overrides)
            settings = make_settings(**values)
            app = create_app(settings, transports=transports)
            async with serve(app, port) as url:
                yield Bff(app, url, settings)

        yield Stack(idp, upstreams, bff_ports, start_bff, validator)
        await validator.http.aclose()
