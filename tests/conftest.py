from __future__ import annotations

from collections import Counter
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from typing import Any

import httpx
import pytest

from bff.app import create_app
from bff.demo.upstreams import accounts_app, catalog_app
from bff.settings import Settings
from tests.support.servers import RedisCluster, RedisServer, serve, serve_all
from tests.support.sessions import store_session
from tests.support.tokens import TestIssuer

#: Files of few but long tests (20-60 s each in scripts/test's parallel phase on the 2-core machine),
#: mostly waiting on token lifetimes. Under ``--dist loadfile`` xdist hands whole files to its workers,
#: by default those with the most tests first, which left these to the end of the run, where one of them
#: kept its worker busy for up to 40 s after the others had finished. scripts/test passes
#: ``--no-loadscope-reorder`` and `pytest_collection_modifyitems` hands these out first, then every
#: other file as xdist would (the most tests first). They mostly wait, so running them side by side
#: costs the CPU-bound files little. Only the order of files changes; a file's tests keep theirs.
FIRST_FILES = (
    "tests/e2e/test_rolling_upgrade.py",
    "tests/e2e/test_faults.py",
    "tests/e2e/test_subscriptions.py",
    "tests/e2e/test_spa.py",
    "tests/e2e/test_hostage.py",
    "tests/e2e/test_refresh.py",
    "tests/e2e/test_subscriptions_upstream.py",
    "tests/e2e/test_upstream_tokens.py",
    "tests/demo/test_browser.py",
)


@pytest.hookimpl(trylast=True)  # after -m/-k have deselected
def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """`FIRST_FILES` first, in that order; then every other file, the most tests first (ties in
    collection order)."""
    files = [item.nodeid.partition("::")[0] for item in items]
    counts = Counter(files)
    first = {path: index for index, path in enumerate(FIRST_FILES)}
    order = {id(item): (first.get(path, len(first)), -counts[path]) for item, path in zip(items, files, strict=True)}
    items.sort(key=lambda item: order[id(item)])  # stable: a file's tests stay together, in their order


@pytest.fixture(scope="session")
def issuer() -> TestIssuer:
    return TestIssuer()


@dataclass
class Upstreams:
    accounts: Any
    catalog: Any
    accounts_url: str
    catalog_url: str

    def settings(self, **timeouts: float) -> dict[str, Any]:
        return {
            "accounts": {"url": self.accounts_url, "timeout_seconds": timeouts.get("accounts", 5)},
            "catalog": {"url": self.catalog_url, "timeout_seconds": timeouts.get("catalog", 5)},
        }


@pytest.fixture
def upstream_latency() -> float:
    return 0.0


@pytest.fixture
async def upstreams(issuer: TestIssuer, upstream_latency: float) -> AsyncIterator[Upstreams]:
    accounts = accounts_app(issuer.validator(), latency=upstream_latency)
    catalog = catalog_app(issuer.validator(), latency=upstream_latency)
    async with serve_all(accounts, catalog) as (accounts_url, catalog_url):
        yield Upstreams(accounts, catalog, accounts_url, f"{catalog_url}/graphql")


def make_settings(**overrides: Any) -> Settings:
    values: dict[str, Any] = {
        "public_url": "http://127.0.0.1:8000",
        "cookie_secure": False,
        "session_secret": "test-secret-0123456789",
    }
    values.update(overrides)
    return Settings(**values)


@dataclass
class Bff:
    app: Any
    url: str
    settings: Settings

    @property
    def resources(self) -> Any:
        return self.app.state.resources

    async def session_for(self, token: str, sub: str = "alice", ttl: float = 3600) -> str:
        """A stored session holding ``token``; returns the signed cookie value."""
        return await store_session(self.resources, token, sub=sub, ttl=ttl)

    def client(self, cookie: str | None = None, **kwargs: Any) -> httpx.AsyncClient:
        cookies = {self.settings.cookie_name: cookie} if cookie else None
        return httpx.AsyncClient(base_url=self.url, cookies=cookies, timeout=30, **kwargs)


@pytest.fixture
async def bff(upstreams: Upstreams) -> AsyncIterator[Bff]:
    settings = make_settings(upstreams=upstreams.settings())
    app = create_app(settings)
    async with serve(app) as url:
        yield Bff(app, url, settings)


@pytest.fixture(scope="session")
def redis_cluster() -> Iterator[RedisCluster]:
    """Three masters from the same redis-server binary, for the whole run."""
    cluster = RedisCluster()
    try:
        yield cluster.start()
    finally:
        cluster.cleanup()


@pytest.fixture(scope="session")
def redis_server() -> Iterator[RedisServer]:
    server = RedisServer()
    server.start()
    try:
        yield server
    finally:
        server.cleanup()
