"""The e2e IdP's opt-in features for tokens per upstream, and `ResourceGuard`, without the BFF.

A small OAuth client of its own (authorization code + PKCE, the IdP's devInteractions forms, a
redirect_uri on a port nobody listens on: the callback is answered by a mock transport) drives the
real oidc-provider, so these tests pin what the BFF will rely on: RFC 8707 resource indicators at
sign-in and refresh, refresh-token rotation and reuse detection, DPoP-bound tokens (RFC 9449, with
and without server nonces) and RFC 8693 token exchange; and that `ResourceGuard` tells the right
token from the wrong one.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import json
import secrets
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest
from joserfc import jws
from joserfc.jwk import ECKey

from bff.demo.tokens import IntrospectionValidator
from bff.demo.upstreams import accounts_app, catalog_app
from tests.support.browser import sign_in_at_idp
from tests.support.resource_server import ResourceGuard, access_token_hash
from tests.support.servers import OIDCProvider, free_port, serve

ACCOUNTS = "http://accounts.test"
CATALOG = "http://catalog.test"
#: what the BFF asks for at sign-in when it wants tokens per upstream ('api': the resources' scope)
SCOPE = "openid profile email offline_access api"
BFF_AUTH = ("bff", "bff-secret")
ACCESS_TTL = 60
TOKEN_EXCHANGE = "urn:ietf:params:oauth:grant-type:token-exchange"
ACCESS_TOKEN_TYPE = "urn:ietf:params:oauth:token-type:access_token"
VIEWER_PRODUCTS = {"query": "{ productsByIds(ids: []) { id } }"}


@dataclass
class DPoPKey:
    """A client's DPoP key pair and proofs made with it (RFC 9449 section 4)."""

    key: ECKey = field(default_factory=lambda: ECKey.generate_key("P-256"))

    @property
    def thumbprint(self) -> str:
        return self.key.thumbprint()

    def proof(
        self,
        method: str,
        url: str,
        *,
        token: str | None = None,
        nonce: str | None = None,
        iat: float | None = None,
    ) -> str:
        claims: dict[str, Any] = {
            "htm": method,
            "htu": url,
            "iat": int(time.time() if iat is None else iat),
            "jti": secrets.token_urlsafe(16),
        }
        if token is not None:
            claims["ath"] = access_token_hash(token)
        if nonce is not None:
            claims["nonce"] = nonce
        header = {"typ": "dpop+jwt", "alg": "ES256", "jwk": self.key.as_dict(private=False)}
        return jws.serialize_compact(header, json.dumps(claims).encode(), self.key, algorithms=["ES256"])


@dataclass
class Client:
    """The bff client of the IdP, played by the test: sign-in and token endpoint requests."""

    idp: OIDCProvider
    redirect_uri: str
    http: httpx.AsyncClient
    verifier: str = ""  # the PKCE verifier of the last `authorize`

    @property
    def token_url(self) -> str:
        return f"{self.idp.issuer}/token"

    async def token(
        self, data: dict[str, str], dpop: DPoPKey | None = None, nonce: str | None = None
    ) -> httpx.Response:
        """One token endpoint request (client_secret_basic), with a DPoP proof when ``dpop``."""
        headers = {"DPoP": dpop.proof("POST", self.token_url, nonce=nonce)} if dpop else {}
        return await self.http.post(self.token_url, data=data, auth=BFF_AUTH, headers=headers)

    async def token_with_nonce(self, data: dict[str, str], dpop: DPoPKey) -> httpx.Response:
        """A DPoP token request that takes the IdP's ``use_dpop_nonce`` answer and retries once."""
        response = await self.token(data, dpop)
        if response.status_code == 400 and response.json().get("error") == "use_dpop_nonce":
            response = await self.token(data, dpop, nonce=response.headers["dpop-nonce"])
        return response

    async def authorize(
        self, *, resources: tuple[str, ...] = (), scope: str = SCOPE, user: str = "alice"
    ) -> dict[str, str]:
        """Sign ``user`` in through the IdP's forms; the redirect's query (code or error) as a dict."""
        seen: list[httpx.URL] = []

        def callback(request: httpx.Request) -> httpx.Response:
            seen.append(request.url)
            return httpx.Response(200, text="back at the client")

        origin = "{0.scheme}://{0.netloc}".format(urlsplit(self.redirect_uri))
        self.verifier = secrets.token_urlsafe(48)
        challenge = base64.urlsafe_b64encode(hashlib.sha256(self.verifier.encode()).digest()).rstrip(b"=").decode()
        params: list[tuple[str, str | int | float | bool | None]] = [
            ("client_id", "bff"),
            ("response_type", "code"),
            ("redirect_uri", self.redirect_uri),
            ("scope", scope),
            ("state", secrets.token_urlsafe(8)),
            ("code_challenge", challenge),
            ("code_challenge_method", "S256"),
            ("prompt", "consent"),  # OIDC Core 11: offline_access (a refresh token) needs it, as the BFF sends
            *(("resource", resource) for resource in resources),
        ]
        mounts = {origin: httpx.MockTransport(callback)}
        async with httpx.AsyncClient(mounts=mounts, timeout=10) as browser:
            start = await browser.get(f"{self.idp.issuer}/auth", params=params)
            await sign_in_at_idp(browser, start, user)
        assert seen, "the IdP never sent the browser back"
        return {k: v[0] for k, v in parse_qs(seen[-1].query.decode()).items()}

    async def sign_in(
        self, *, resources: tuple[str, ...] = (ACCOUNTS, CATALOG), dpop: DPoPKey | None = None, **token: str
    ) -> dict[str, Any]:
        """Authorization code + PKCE; the token response (``token``: extra token request params)."""
        query = await self.authorize(resources=resources)
        assert "code" in query, query
        data = {
            "grant_type": "authorization_code",
            "code": query["code"],
            "redirect_uri": self.redirect_uri,
            "code_verifier": self.verifier,
            **token,
        }
        response = await (self.token_with_nonce(data, dpop) if dpop else self.token(data))
        assert response.status_code == 200, response.text
        body: dict[str, Any] = response.json()
        return body

    async def refresh(
        self, refresh_token: str, resource: str | None = None, dpop: DPoPKey | None = None
    ) -> httpx.Response:
        data = {"grant_type": "refresh_token", "refresh_token": refresh_token}
        if resource is not None:
            data["resource"] = resource
        return await (self.token_with_nonce(data, dpop) if dpop else self.token(data))

    async def exchange(self, subject_token: str, dpop: DPoPKey | None = None, **params: str) -> httpx.Response:
        data = {
            "grant_type": TOKEN_EXCHANGE,
            "subject_token": subject_token,
            "subject_token_type": ACCESS_TOKEN_TYPE,
            **params,
        }
        return await (self.token_with_nonce(data, dpop) if dpop else self.token(data))

    async def introspect(self, token: str) -> dict[str, Any]:
        response = await self.http.post(
            f"{self.idp.issuer}/token/introspection",
            data={"token": token},
            auth=("resource-server", "resource-secret"),
        )
        body: dict[str, Any] = response.json()
        return body

    async def userinfo(self, token: str, scheme: str = "Bearer", dpop: DPoPKey | None = None) -> httpx.Response:
        url = f"{self.idp.issuer}/me"
        headers = {"Authorization": f"{scheme} {token}"}
        if dpop:
            headers["DPoP"] = dpop.proof("GET", url, token=token)
        return await self.http.get(url, headers=headers)


def start_idp(**options: str) -> OIDCProvider:
    redirect_uri = f"http://127.0.0.1:{free_port()}/callback"  # a port nobody listens on
    idp = OIDCProvider(redirect_uris=[redirect_uri], access_ttl=ACCESS_TTL, **options)
    idp.redirect_uri = redirect_uri  # type: ignore[attr-defined]
    return idp.start()


@contextlib.contextmanager
def running_idp(**options: str) -> Iterator[OIDCProvider]:
    idp = start_idp(**options)
    try:
        yield idp
    finally:
        idp.stop()


@pytest.fixture(scope="module")
def features_idp() -> Iterator[OIDCProvider]:
    """One IdP with resources, DPoP (no nonce) and token exchange, shared by the module's tests:
    each test signs in afresh and reads stats as deltas."""
    with running_idp(resources=f"{ACCOUNTS},{CATALOG}", dpop="1", token_exchange="1") as idp:
        yield idp


@contextlib.asynccontextmanager
async def client_of(idp: OIDCProvider) -> AsyncIterator[Client]:
    async with httpx.AsyncClient(timeout=10) as http:
        yield Client(idp, idp.redirect_uri, http)  # type: ignore[attr-defined]


@pytest.fixture
async def client(features_idp: OIDCProvider) -> AsyncIterator[Client]:
    async with client_of(features_idp) as c:
        yield c


@dataclass
class Guarded:
    """A demo upstream behind a `ResourceGuard`, served on a real port."""

    guard: ResourceGuard
    app: Any  # the demo upstream behind the guard (its ``state.stats`` count what got through)
    url: str

    async def call(
        self, token: str | None, scheme: str = "Bearer", dpop: DPoPKey | None = None, **proof: Any
    ) -> httpx.Response:
        """GET /me (accounts) or POST /graphql (catalog), as the BFF would call the upstream."""
        catalog = self.url.endswith("/graphql")
        method, url = ("POST", self.url) if catalog else ("GET", f"{self.url}/me")
        headers = {"Authorization": f"{scheme} {token}"} if token is not None else {}
        if dpop is not None and token is not None:
            headers["DPoP"] = dpop.proof(method, url, token=token, **proof)
        async with httpx.AsyncClient(timeout=10) as http:
            return await http.request(method, url, headers=headers, json=VIEWER_PRODUCTS if catalog else None)


@contextlib.asynccontextmanager
async def guarded(idp: OIDCProvider, audience: str, **options: Any) -> AsyncIterator[Guarded]:
    """accounts_app (audience ACCOUNTS) or catalog_app (CATALOG) behind a guard for ``audience``."""
    validator = IntrospectionValidator(idp.issuer, "resource-server", "resource-secret")
    app = catalog_app(validator) if audience == CATALOG else accounts_app(validator)
    guard = ResourceGuard(app, issuer=idp.issuer, audience=audience, **options)
    try:
        async with serve(guard) as url:
            yield Guarded(guard, app, f"{url}/graphql" if audience == CATALOG else url)
    finally:
        await guard.aclose()
        await validator.http.aclose()


def _is_error(response: httpx.Response, error: str, status: int = 400) -> bool:
    return response.status_code == status and response.json().get("error") == error


async def test_without_options_the_idp_is_unchanged() -> None:
    """No new environment: a login token for userinfo, no resource accepted (oidc-provider's
    default), the stats carry the new counters at zero."""
    with running_idp() as idp:
        async with client_of(idp) as c:
            tokens = await c.sign_in(resources=())
            assert "aud" not in await c.introspect(tokens["access_token"])
            assert (await c.userinfo(tokens["access_token"])).json()["sub"] == "alice"
            assert _is_error(await c.refresh(tokens["refresh_token"], ACCOUNTS), "invalid_target")
            assert _is_error(await c.exchange(tokens["access_token"], resource=ACCOUNTS), "unsupported_grant_type")
        assert idp.refresh_grants_by_resource() == {}
        assert idp.stats()["exchangeGrants"] == 0


async def test_a_refresh_per_resource_gives_a_token_only_that_resource_accepts(client: Client) -> None:
    before = client.idp.refresh_grants_by_resource()
    tokens = await client.sign_in()
    # the code exchange without `resource`: the BFF's login token, for userinfo, no audience
    assert tokens["token_type"] == "Bearer"
    assert "aud" not in await client.introspect(tokens["access_token"])
    assert (await client.userinfo(tokens["access_token"])).json()["sub"] == "alice"

    for_accounts = await client.refresh(tokens["refresh_token"], ACCOUNTS)
    assert for_accounts.status_code == 200, for_accounts.text
    issued = for_accounts.json()
    assert issued["scope"] == "api"
    assert issued["expires_in"] == ACCESS_TTL
    assert issued["refresh_token"] != tokens["refresh_token"]  # rotated
    info = await client.introspect(issued["access_token"])
    assert info["aud"] == ACCOUNTS
    assert info["sub"] == "alice"
    assert "cnf" not in info
    # a token for a resource is not for userinfo (oidc-provider: 403 insufficient_scope, no 'openid')
    assert (await client.userinfo(issued["access_token"])).status_code == 403

    for_catalog = (await client.refresh(issued["refresh_token"], CATALOG)).json()
    login = (await client.refresh(for_catalog["refresh_token"])).json()
    assert "aud" not in await client.introspect(login["access_token"])
    assert (await client.userinfo(login["access_token"])).json()["sub"] == "alice"

    async with guarded(client.idp, ACCOUNTS) as accounts, guarded(client.idp, CATALOG) as catalog:
        me = await accounts.call(issued["access_token"])
        assert me.status_code == 200, me.text
        assert me.json()["id"] == "alice"
        refused = await catalog.call(issued["access_token"])
        assert refused.status_code == 401
        assert refused.json()["error"] == "invalid_token"
        assert refused.headers["www-authenticate"].startswith('Bearer error="invalid_token"')
        assert (await catalog.call(for_catalog["access_token"])).status_code == 200
        assert (await accounts.call(login["access_token"])).status_code == 401  # no audience at all
        assert (await accounts.call("not-a-token")).status_code == 401
        assert (await accounts.call(None)).status_code == 401
        assert accounts.guard.stats.accepted == 1
        assert accounts.guard.stats.wrong_audience == 1
        assert accounts.guard.stats.inactive == 1
        assert accounts.guard.stats.no_token == 1
        assert catalog.guard.stats.accepted == 1
        assert catalog.guard.stats.wrong_audience == 1
        assert accounts.app.state.stats.calls["GET /me"] == 1  # only the accepted call got through

    after = client.idp.refresh_grants_by_resource()
    for resource in (ACCOUNTS, CATALOG, ""):
        assert after.get(resource, 0) - before.get(resource, 0) == 1


async def test_rotation_and_reuse_detection_still_work_with_resources(client: Client) -> None:
    tokens = await client.sign_in()
    stats = client.idp.stats()
    first = await client.refresh(tokens["refresh_token"], ACCOUNTS)
    assert first.status_code == 200
    replayed = await client.refresh(tokens["refresh_token"], ACCOUNTS)
    assert _is_error(replayed, "invalid_grant")
    after = client.idp.stats()
    assert after["refreshGrants"] - stats["refreshGrants"] == 1
    assert after["refreshErrors"] - stats["refreshErrors"] == 1
    assert after["refreshReuse"] - stats["refreshReuse"] == 1
    # the reuse revoked the whole grant: the newest refresh token is dead too
    assert _is_error(await client.refresh(first.json()["refresh_token"]), "invalid_grant")


async def test_resource_errors(client: Client) -> None:
    """An unknown resource is invalid_target at the authorization endpoint (an error redirect) and
    at the token endpoint (400), and so is a known resource that was not named at sign-in. Beware:
    oidc-provider rotates the refresh token BEFORE it resolves the resource, so a refused refresh
    has consumed it (the new one is never sent): using it again is reuse, and revokes the grant."""
    query = await client.authorize(resources=(ACCOUNTS, "http://elsewhere.test"))
    assert query["error"] == "invalid_target"
    tokens = await client.sign_in(resources=(ACCOUNTS,))
    before = client.idp.stats()
    assert _is_error(await client.refresh(tokens["refresh_token"], CATALOG), "invalid_target")
    assert _is_error(await client.refresh(tokens["refresh_token"], ACCOUNTS), "invalid_grant")
    assert client.idp.stats()["refreshReuse"] - before["refreshReuse"] == 1

    tokens = await client.sign_in(resources=(ACCOUNTS,))
    assert _is_error(await client.refresh(tokens["refresh_token"], "http://elsewhere.test"), "invalid_target")
    assert _is_error(await client.refresh(tokens["refresh_token"]), "invalid_grant")


async def test_resource_scope_must_be_asked_for(client: Client) -> None:
    """Without 'api' in the sign-in scope the grant holds no scope for the resources: a refresh for
    one still answers a token with its audience, but with an empty scope, which a guard that wants
    the 'api' scope refuses (403 insufficient_scope)."""
    query = await client.authorize(resources=(ACCOUNTS,), scope="openid offline_access")
    data = {
        "grant_type": "authorization_code",
        "code": query["code"],
        "redirect_uri": client.redirect_uri,
        "code_verifier": client.verifier,
    }
    tokens = (await client.token(data)).json()
    issued = (await client.refresh(tokens["refresh_token"], ACCOUNTS)).json()
    assert issued["scope"] == ""
    info = await client.introspect(issued["access_token"])
    assert info["aud"] == ACCOUNTS
    assert "scope" not in info
    async with guarded(client.idp, ACCOUNTS, scope="api") as strict:
        refused = await strict.call(issued["access_token"])
        assert refused.status_code == 403
        assert refused.json()["error"] == "insufficient_scope"
        assert strict.guard.stats.insufficient_scope == 1
        good = (await client.refresh((await client.sign_in(resources=(ACCOUNTS,)))["refresh_token"], ACCOUNTS)).json()
        assert (await strict.call(good["access_token"])).status_code == 200


async def test_dpop_bound_token_needs_a_proof_at_the_resource(client: Client) -> None:
    key = DPoPKey()
    tokens = await client.sign_in(dpop=key)
    assert tokens["token_type"] == "DPoP"
    assert (await client.introspect(tokens["access_token"]))["cnf"] == {"jkt": key.thumbprint}
    assert (await client.userinfo(tokens["access_token"], "DPoP", key)).json()["sub"] == "alice"

    bound = await client.refresh(tokens["refresh_token"], ACCOUNTS, dpop=key)
    assert bound.status_code == 200, bound.text
    token = bound.json()["access_token"]
    assert bound.json()["token_type"] == "DPoP"
    info = await client.introspect(token)
    assert info["aud"] == ACCOUNTS
    assert info["cnf"] == {"jkt": key.thumbprint}
    unbound = (await client.refresh(bound.json()["refresh_token"], ACCOUNTS)).json()
    assert unbound["token_type"] == "Bearer"

    async with guarded(client.idp, ACCOUNTS, require_dpop=True) as accounts:
        ok = await accounts.call(token, "DPoP", key)
        assert ok.status_code == 200, ok.text
        assert ok.json()["id"] == "alice"
        stats = accounts.guard.stats
        for response, counter in [
            (await accounts.call(token, "DPoP"), "missing_proof"),
            (await accounts.call(token, "Bearer", key), "missing_proof"),  # a bound token as a bearer token
            (await accounts.call(token, "DPoP", DPoPKey()), "bad_proof"),  # another key
            (await accounts.call(token, "DPoP", key, iat=time.time() - 300), "bad_proof"),
            (await accounts.call(unbound["access_token"], "DPoP", key), "unbound"),
            (await accounts.call(unbound["access_token"]), "unbound"),
        ]:
            assert response.status_code == 401, (counter, response.text)
            assert response.headers["www-authenticate"].startswith("DPoP ")
        assert (stats.accepted, stats.missing_proof, stats.bad_proof, stats.unbound) == (1, 2, 2, 2)

        # a proof is good for one request: the same proof again is a replay
        url = f"{accounts.url}/me"
        proof = key.proof("GET", url, token=token)
        async with httpx.AsyncClient(timeout=10) as http:
            headers = {"Authorization": f"DPoP {token}", "DPoP": proof}
            assert (await http.get(url, headers=headers)).status_code == 200
            replay = await http.get(url, headers=headers)
            assert replay.status_code == 401
            assert "jti replay" in replay.json()["error_description"]
            wrong_htu = {"Authorization": f"DPoP {token}", "DPoP": key.proof("GET", f"{url}/other", token=token)}
            assert (await http.get(url, headers=wrong_htu)).status_code == 401
            wrong_htm = {"Authorization": f"DPoP {token}", "DPoP": key.proof("POST", url, token=token)}
            assert (await http.get(url, headers=wrong_htm)).status_code == 401
            no_ath = {"Authorization": f"DPoP {token}", "DPoP": key.proof("GET", url)}
            assert (await http.get(url, headers=no_ath)).status_code == 401
            query = {"Authorization": f"DPoP {token}", "DPoP": key.proof("GET", url, token=token)}
            assert (await http.get(url, params={"x": "1"}, headers=query)).status_code == 200  # htu has no query
        assert stats.bad_proof == 6
        assert stats.accepted == 3


async def test_dpop_nonce_at_the_resource(client: Client) -> None:
    key = DPoPKey()
    tokens = await client.sign_in(dpop=key)
    token = (await client.refresh(tokens["refresh_token"], CATALOG, dpop=key)).json()["access_token"]
    async with guarded(client.idp, CATALOG, use_nonce=True) as catalog:
        challenged = await catalog.call(token, "DPoP", key)
        assert challenged.status_code == 401
        assert challenged.json()["error"] == "use_dpop_nonce"
        assert challenged.headers["www-authenticate"].startswith('DPoP error="use_dpop_nonce"')
        nonce = challenged.headers["dpop-nonce"]
        ok = await catalog.call(token, "DPoP", key, nonce=nonce)
        assert ok.status_code == 200, ok.text
        assert ok.json() == {"data": {"productsByIds": []}}
        catalog.guard.rotate_nonce()
        assert (await catalog.call(token, "DPoP", key, nonce=nonce)).status_code == 401  # a stale nonce
        assert catalog.guard.stats.nonce_challenges == 2
        assert catalog.guard.stats.accepted == 1


async def test_dpop_nonce_at_the_idp() -> None:
    """DPOP_NONCE=1: every DPoP request at the IdP needs its nonce: the token endpoint answers 400
    use_dpop_nonce with a DPoP-Nonce header, userinfo 401 with ``WWW-Authenticate: DPoP
    error="use_dpop_nonce"`` and the header; a retry with the nonce succeeds. DPOP_REQUIRED=1: a
    token request without a proof is invalid_grant (and consumes nothing)."""
    with running_idp(resources=ACCOUNTS, dpop_nonce="1", dpop_required="1") as idp:
        async with client_of(idp) as c:
            key = DPoPKey()
            query = await c.authorize(resources=(ACCOUNTS,))
            data = {
                "grant_type": "authorization_code",
                "code": query["code"],
                "redirect_uri": c.redirect_uri,
                "code_verifier": c.verifier,
            }
            assert _is_error(await c.token(data), "invalid_grant")  # DPOP_REQUIRED: no proof
            first = await c.token(data, key)
            assert _is_error(first, "use_dpop_nonce")
            nonce = first.headers["dpop-nonce"]
            tokens = await c.token(data, key, nonce=nonce)
            assert tokens.status_code == 200, tokens.text
            assert tokens.json()["token_type"] == "DPoP"

            url = f"{idp.issuer}/me"
            token = tokens.json()["access_token"]
            headers = {"Authorization": f"DPoP {token}", "DPoP": key.proof("GET", url, token=token)}
            info = await c.http.get(url, headers=headers)
            assert info.status_code == 401
            assert 'error="use_dpop_nonce"' in info.headers["www-authenticate"]
            headers["DPoP"] = key.proof("GET", url, token=token, nonce=info.headers["dpop-nonce"])
            assert (await c.http.get(url, headers=headers)).json()["sub"] == "alice"

            assert _is_error(await c.refresh(tokens.json()["refresh_token"], ACCOUNTS), "invalid_grant")
            bound = await c.refresh(tokens.json()["refresh_token"], ACCOUNTS, dpop=key)  # retries on the nonce
            assert bound.status_code == 200, bound.text
            assert (await c.introspect(bound.json()["access_token"]))["cnf"] == {"jkt": key.thumbprint}
            async with guarded(idp, ACCOUNTS, require_dpop=True) as accounts:
                assert (await accounts.call(bound.json()["access_token"], "DPoP", key)).status_code == 200


async def test_token_exchange_for_an_audience(client: Client) -> None:
    tokens = await client.sign_in(resources=())  # nothing named at sign-in: exchange later
    before = client.idp.stats()
    exchanged = await client.exchange(tokens["access_token"], resource=CATALOG)
    assert exchanged.status_code == 200, exchanged.text
    body = exchanged.json()
    assert body["issued_token_type"] == ACCESS_TOKEN_TYPE
    assert body["token_type"] == "Bearer"
    assert body["expires_in"] == ACCESS_TTL
    assert body["scope"] == "api"
    assert "refresh_token" not in body
    info = await client.introspect(body["access_token"])
    assert (info["aud"], info["sub"], info["client_id"]) == (CATALOG, "alice", "bff")

    by_audience = await client.exchange(tokens["access_token"], audience=ACCOUNTS)
    assert (await client.introspect(by_audience.json()["access_token"]))["aud"] == ACCOUNTS

    async with guarded(client.idp, CATALOG) as catalog, guarded(client.idp, ACCOUNTS) as accounts:
        assert (await catalog.call(body["access_token"])).status_code == 200
        assert (await accounts.call(body["access_token"])).status_code == 401
        assert accounts.guard.stats.wrong_audience == 1
        assert (await accounts.call(by_audience.json()["access_token"])).status_code == 200

    assert _is_error(await client.exchange(tokens["access_token"], resource="http://elsewhere.test"), "invalid_target")
    assert _is_error(await client.exchange(tokens["access_token"]), "invalid_target")  # no target
    assert _is_error(await client.exchange("no-such-token", resource=CATALOG), "invalid_grant")
    wrong_type = await client.exchange(
        tokens["access_token"], resource=CATALOG, subject_token_type="urn:ietf:params:oauth:token-type:id_token"
    )
    assert _is_error(wrong_type, "invalid_request")
    assert _is_error(await client.exchange(tokens["access_token"], resource=CATALOG, scope="admin"), "invalid_scope")
    after = client.idp.stats()
    assert after["exchangeGrants"] - before["exchangeGrants"] == 2
    assert after["exchangeErrors"] - before["exchangeErrors"] == 5


async def test_token_exchange_with_dpop(client: Client) -> None:
    """A proof on the exchange binds the new token; a bound subject token needs its own key's proof."""
    key = DPoPKey()
    tokens = await client.sign_in(dpop=key)
    assert _is_error(await client.exchange(tokens["access_token"], resource=ACCOUNTS), "invalid_grant")
    assert _is_error(await client.exchange(tokens["access_token"], DPoPKey(), resource=ACCOUNTS), "invalid_grant")
    exchanged = await client.exchange(tokens["access_token"], key, resource=ACCOUNTS)
    assert exchanged.status_code == 200, exchanged.text
    assert exchanged.json()["token_type"] == "DPoP"
    info = await client.introspect(exchanged.json()["access_token"])
    assert info["aud"] == ACCOUNTS
    assert info["cnf"] == {"jkt": key.thumbprint}
    async with guarded(client.idp, ACCOUNTS) as accounts:
        assert (await accounts.call(exchanged.json()["access_token"], "DPoP", key)).status_code == 200
        assert (await accounts.call(exchanged.json()["access_token"])).status_code == 401
        assert accounts.guard.stats.missing_proof == 1
