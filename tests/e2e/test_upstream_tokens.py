"""Tokens per upstream against the real oidc-provider with RFC 8707 resource indicators and rotating
refresh tokens (reuse detection on), two upstreams that each accept only tokens issued for their own
audience (`ResourceGuard`, checking ``aud`` by introspection), real Redis and two replicas."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest

from bff.app import create_app
from bff.demo.tokens import IntrospectionValidator
from bff.demo.upstreams import accounts_app, catalog_app
from tests.conftest import Bff, make_settings
from tests.support.browser import signed_in_cookie
from tests.support.resource_server import ResourceGuard
from tests.support.servers import OIDCProvider, RedisServer, free_port, serve

ACCOUNTS = "http://accounts.test"
CATALOG = "http://catalog.test"
ACCESS_TTL = 8  # refreshed at half-life (4 s)
VIEWER = {"query": "{ viewer { id name orders(first: 2) { id items { quantity product { id name } } } } }"}


class Fleet:
    def __init__(self, idp: OIDCProvider, ports: list[int], urls: dict[str, str], guards: dict[str, ResourceGuard]):
        self.idp, self.ports, self.urls, self.guards = idp, ports, urls, guards

    def upstreams(self, **overrides: dict[str, Any]) -> dict[str, Any]:
        settings = {
            "accounts": {"url": self.urls["accounts"], "resource": ACCOUNTS},
            "catalog": {"url": self.urls["catalog"], "resource": CATALOG},
        }
        for name, values in overrides.items():
            settings[name] = {"url": self.urls[name], **values}
        return settings

    @contextlib.asynccontextmanager
    async def bff(self, index: int = 0, schema: Any = None, **overrides: Any) -> AsyncIterator[Bff]:
        port = self.ports[index]
        values: dict[str, Any] = {
            "public_url": f"http://127.0.0.1:{port}",
            "oidc_issuer": self.idp.issuer,
            "oidc_client_id": "bff",
            "oidc_client_secret": "bff-secret",
            "oidc_scopes": "openid profile email offline_access api",
            "oidc_timeout_seconds": 2,
            "upstreams": self.upstreams(),
        }
        values.update(overrides)
        settings = make_settings(**values)
        app = create_app(settings, schema=schema)
        async with serve(app, port) as url:
            yield Bff(app, url, settings)

    def grants(self) -> dict[str, int]:
        return self.idp.refresh_grants_by_resource()

    def wrong_audience(self) -> int:
        return sum(guard.stats.wrong_audience for guard in self.guards.values())


@pytest.fixture
def idp_env() -> dict[str, str]:
    return {}


@pytest.fixture
def guard_options() -> dict[str, Any]:
    return {}


@pytest.fixture
def access_ttl() -> int:
    """The IdP's access-token lifetime; a test that must finish inside one half-life on a loaded CI
    machine asks for a longer one."""
    return ACCESS_TTL


@pytest.fixture
async def fleet(idp_env: dict[str, str], guard_options: dict[str, Any], access_ttl: int) -> AsyncIterator[Fleet]:
    ports = [free_port(), free_port()]
    idp = OIDCProvider(
        redirect_uris=[f"http://127.0.0.1:{p}/auth/callback" for p in ports],
        access_ttl=access_ttl,
        resources=f"{ACCOUNTS},{CATALOG}",
        **idp_env,
    ).start()
    validator = IntrospectionValidator(idp.issuer, "resource-server", "resource-secret")
    guards = {
        "accounts": ResourceGuard(accounts_app(validator), issuer=idp.issuer, audience=ACCOUNTS, **guard_options),
        "catalog": ResourceGuard(catalog_app(validator), issuer=idp.issuer, audience=CATALOG, **guard_options),
    }
    try:
        async with serve(guards["accounts"]) as accounts_url, serve(guards["catalog"]) as catalog_url:
            yield Fleet(idp, ports, {"accounts": accounts_url, "catalog": f"{catalog_url}/graphql"}, guards)
    finally:
        for guard in guards.values():
            await guard.aclose()
        await validator.http.aclose()
        idp.stop()


def _assert_viewer(response: httpx.Response) -> None:
    assert response.status_code == 200, response.text
    body = response.json()
    assert "errors" not in body, body
    assert body["data"]["viewer"]["id"] == "alice"
    assert body["data"]["viewer"]["orders"][0]["items"][0]["product"]["name"]


async def test_each_upstream_gets_a_token_for_its_own_audience(fleet: Fleet) -> None:
    async with fleet.bff() as bff:
        cookie = await signed_in_cookie(bff)
        before = fleet.grants()
        async with bff.client(cookie) as client:
            for _ in range(3):
                _assert_viewer(await client.post("/graphql", json=VIEWER))
        after = fleet.grants()
        # one grant per audience, once; the session's own login token is not refreshed (nothing uses it)
        assert after.get(ACCOUNTS, 0) - before.get(ACCOUNTS, 0) == 1
        assert after.get(CATALOG, 0) - before.get(CATALOG, 0) == 1
        assert after.get("", 0) == before.get("", 0)
        assert fleet.wrong_audience() == 0
        assert fleet.guards["accounts"].stats.accepted >= 3 and fleet.guards["catalog"].stats.accepted >= 3


async def test_without_a_resource_the_audience_bound_upstream_refuses(fleet: Fleet) -> None:
    """The control: the catalog given the session's token (no RESOURCE) is refused by its guard, and
    only its fields fail; the accounts fields, with their own token, still answer."""
    async with fleet.bff(upstreams=fleet.upstreams(catalog={})) as bff:
        cookie = await signed_in_cookie(bff)
        async with bff.client(cookie) as client:
            body = (await client.post("/graphql", json=VIEWER)).json()
        assert body["data"]["viewer"]["id"] == "alice"
        codes = {(e["extensions"]["code"], e["extensions"].get("upstream")) for e in body["errors"]}
        assert codes == {("UPSTREAM_UNAUTHORIZED", "catalog")}
        assert fleet.guards["catalog"].stats.wrong_audience >= 1
        assert fleet.guards["accounts"].stats.wrong_audience == 0


async def test_storm_across_replicas_one_grant_per_audience_per_rotation(
    fleet: Fleet, redis_server: RedisServer
) -> None:
    shared = {"session_store": redis_server.url, "session_secret": "shared-secret-for-upstream-tokens"}
    async with fleet.bff(0, **shared) as one, fleet.bff(1, **shared) as two:
        cookie = await signed_in_cookie(one)
        async with one.client(cookie) as a, two.client(cookie) as b:
            _assert_viewer(await a.post("/graphql", json=VIEWER))  # first tokens per audience
            first = fleet.grants()
            await asyncio.sleep(ACCESS_TTL / 2 + 0.3)  # both upstream tokens are now due
            responses = await asyncio.gather(*((a, b)[i % 2].post("/graphql", json=VIEWER) for i in range(40)))
            for response in responses:
                _assert_viewer(response)
            await asyncio.sleep(0.5)  # background refreshes land
        grants = fleet.grants()
        assert grants.get(ACCOUNTS, 0) - first.get(ACCOUNTS, 0) == 1
        assert grants.get(CATALOG, 0) - first.get(CATALOG, 0) == 1
        stats = fleet.idp.stats()
        assert stats["refreshErrors"] == 0 and stats["refreshReuse"] == 0
        assert fleet.wrong_audience() == 0


@pytest.mark.parametrize("access_ttl", [60])  # 96 requests take 1-2 s here, up to 9 s on a loaded CI machine
async def test_twelve_sessions_eight_requests_exactly_one_grant_per_audience_each(
    fleet: Fleet, redis_server: RedisServer, access_ttl: int
) -> None:
    shared = {"session_store": redis_server.url, "session_secret": "shared-secret-for-upstream-tokens"}
    async with fleet.bff(0, **shared) as one, fleet.bff(1, **shared) as two:
        cookies = [await signed_in_cookie(one, user=("alice", "bob")[i % 2]) for i in range(12)]
        before = fleet.grants()
        started = time.monotonic()

        async def use(index: int) -> None:
            replicas = (one, two)
            async with replicas[0].client(cookies[index]) as a, replicas[1].client(cookies[index]) as b:
                answers = await asyncio.gather(*((a, b)[i % 2].post("/graphql", json=VIEWER) for i in range(8)))
            for answer in answers:
                assert answer.status_code == 200 and "errors" not in answer.json(), answer.text

        await asyncio.gather(*(use(i) for i in range(12)))
        assert time.monotonic() - started < access_ttl / 2, "took past half-life: a rotation would count"
        after = fleet.grants()
        assert after.get(ACCOUNTS, 0) - before.get(ACCOUNTS, 0) == 12
        assert after.get(CATALOG, 0) - before.get(CATALOG, 0) == 12
        assert after.get("", 0) == before.get("", 0)
        assert fleet.idp.stats()["refreshReuse"] == 0


@pytest.mark.parametrize("idp_env", [{"token_exchange": "1"}])
async def test_a_token_exchange_upstream(fleet: Fleet) -> None:
    upstreams = fleet.upstreams(catalog={"resource": CATALOG, "token_exchange": True})
    async with fleet.bff(upstreams=upstreams) as bff:
        cookie = await signed_in_cookie(bff)
        async with bff.client(cookie) as client:
            for _ in range(2):
                _assert_viewer(await client.post("/graphql", json=VIEWER))
        stats = fleet.idp.stats()
        assert stats["exchangeGrants"] == 1
        assert fleet.grants().get(CATALOG, 0) == 0  # the catalog's token came by exchange, not refresh
        assert fleet.wrong_audience() == 0


@pytest.mark.parametrize("idp_env", [{"dpop_nonce": "1"}])
@pytest.mark.parametrize("guard_options", [{"require_dpop": True, "use_nonce": True}])
async def test_dpop_bound_tokens_work_with_a_proof_and_are_useless_without(fleet: Fleet) -> None:
    """BFF_OIDC_DPOP=true against oidc-provider's DPoP (nonces required) and upstreams that require
    DPoP-bound tokens, their own nonces, and a proof matching cnf.jkt: every call is accepted, across a
    rotation; the same token replayed without the session's key is refused."""
    async with fleet.bff(oidc_dpop=True) as bff:
        cookie = await signed_in_cookie(bff)
        async with bff.client(cookie) as client:
            _assert_viewer(await client.post("/graphql", json=VIEWER))
            await asyncio.sleep(ACCESS_TTL / 2 + 0.3)  # the upstream tokens are due: DPoP refresh grants
            _assert_viewer(await client.post("/graphql", json=VIEWER))
            await asyncio.sleep(0.5)
            _assert_viewer(await client.post("/graphql", json=VIEWER))
        for guard in fleet.guards.values():
            assert guard.stats.accepted >= 3
            assert (guard.stats.missing_proof, guard.stats.bad_proof, guard.stats.wrong_audience) == (0, 0, 0)
            assert guard.stats.nonce_challenges >= 1  # the nonce retry was exercised
        session = await bff.resources.store.get(bff.resources.crypto.unsign(cookie))
        assert session.dpop_key is not None
        stolen = session.upstream_tokens["accounts"]
        assert stolen.token_type.lower() == "dpop"
        assert fleet.grants().get(ACCOUNTS, 0) >= 2  # a rotation happened, with proofs
        assert fleet.idp.stats()["refreshReuse"] == 0
        async with httpx.AsyncClient(base_url=fleet.urls["accounts"]) as thief:
            for scheme in ("Bearer", "DPoP"):
                refused = await thief.get("/me", headers={"Authorization": f"{scheme} {stolen.access_token}"})
                assert refused.status_code == 401
        assert fleet.guards["accounts"].stats.missing_proof == 2


async def test_declarative_sources_call_with_each_upstreams_own_token(fleet: Fleet) -> None:
    """The demo graph from the accounts service's OpenAPI document and the catalog's SDL
    (`bff.demo.declarative`): each source's calls carry the token for its own audience."""
    from bff.demo.declarative import schema

    query = {"query": "{ me { id orders { id items { quantity product { name } } } } }"}
    async with fleet.bff(schema=schema) as bff:
        cookie = await signed_in_cookie(bff)
        before = fleet.grants()
        async with bff.client(cookie) as client:
            for _ in range(2):
                answer = (await client.post("/graphql", json=query)).json()
                assert "errors" not in answer, answer
                assert answer["data"]["me"]["id"] == "alice"
                assert answer["data"]["me"]["orders"][0]["items"][0]["product"]["name"]
        after = fleet.grants()
        assert after.get(ACCOUNTS, 0) - before.get(ACCOUNTS, 0) == 1
        assert after.get(CATALOG, 0) - before.get(CATALOG, 0) == 1
        assert fleet.wrong_audience() == 0
        assert fleet.guards["accounts"].stats.accepted >= 4 and fleet.guards["catalog"].stats.accepted >= 2
