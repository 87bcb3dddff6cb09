"""Test utilities for a team's BFF: the real app, signed in through the development IdP, over HTTP.

::

    from bff.testing import mock_upstream, running_bff

    async def test_my_tasks() -> None:
        people = mock_upstream("http://people.test")            # respx: no server needed
        people.get("/people/alice").respond(json={"name": "Alice"})
        async with running_bff("team_bff.schema:schema", upstreams={"people": people}) as bff:
            async with bff.client(user="alice") as client:      # signed in
                body = await client.graphql("{ me { name } }")
        assert body["data"] == {"me": {"name": "Alice"}}

`running_bff` serves your schema with `bff.create_app` on a free loopback port in the test's event
loop, exactly as `bff serve` would (CSRF, limits, error mapping, cookies), with the development
identity provider of `bff demo` mounted at ``/idp``. ``client(user=...)`` signs in through the real
login (``/auth/login`` -> IdP -> ``/auth/callback``); any user name works. No session is ever
injected: there is no test-only door in the app for production settings to refuse.

An upstream is given as:

- a URL (``str``) of a server you run yourself;
- an ASGI app (your fake upstream), served on its own port: ``app``, or ``(app, "/graphql")`` for a
  GraphQL endpoint below its root;
- a respx router from `mock_upstream` (needs ``pip install respx``), or ``(router, "/graphql")``.

The access tokens are RS256 JWTs of the dev IdP; a fake upstream checks them with
`dev_token_subject` (signature, issuer, expiry) and so sees who is signed in.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import logging
import re
import secrets
import socket
import time
from collections.abc import AsyncIterator, Iterable, Mapping
from dataclasses import dataclass, field
from html import unescape
from typing import TYPE_CHECKING, Any

import httpx
import uvicorn
from fastapi import FastAPI
from joserfc import jwt
from joserfc.errors import JoseError
from joserfc.jwk import KeySet
from joserfc.jwt import JWTClaimsRegistry

from bff.app import create_app
from bff.demo.data import API_SCOPES
from bff.demo.idp import OPENID_SCOPES, DevClient, DevIdentityProvider
from bff.graphql.errors import BFFSchema
from bff.settings import Settings

if TYPE_CHECKING:
    import respx

__all__ = [
    "BFFTestClient",
    "RunningBFF",
    "dev_token_subject",
    "free_port",
    "mock_upstream",
    "running_bff",
    "serve",
]

log = logging.getLogger("bff.testing")
_HANDED_OUT: set[int] = set()
#: the development IdPs `running_bff` started in this process: the only issuers `dev_token_subject`
#: trusts unless told one (a token names its own issuer, so trusting "any IdP on loopback" would
#: let any local process mint a token a fake upstream believes)
_TRUSTED_ISSUERS: set[str] = set()


def free_port() -> int:
    """A free loopback port, never handed out twice in one process."""
    while True:
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            port = int(sock.getsockname()[1])
        if port not in _HANDED_OUT:
            _HANDED_OUT.add(port)
            return port


def reserve_port(port: int) -> bool:
    """Keep ``port`` from being handed out by `free_port` in this process (a Redis Cluster node's
    bus port, ``port + 10000``); False when it was handed out already."""
    if port in _HANDED_OUT:
        return False
    _HANDED_OUT.add(port)
    return True


@contextlib.asynccontextmanager
async def serve(app: Any, port: int | None = None, *, http: str = "auto") -> AsyncIterator[str]:
    """Run an ASGI app with uvicorn on a loopback port in this event loop; yields its base URL.
    ``http``: uvicorn's HTTP protocol (``"bff.protocols:HTTPProtocol"``: as ``bff serve`` runs)."""
    port = port or free_port()
    config = uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", lifespan="on", http=http)
    server = uvicorn.Server(config)
    task = asyncio.create_task(server.serve())
    deadline = time.monotonic() + 10
    while not server.started:
        if task.done():
            task.result()
            raise RuntimeError("the server stopped during start-up")
        if time.monotonic() > deadline:
            server.should_exit = True
            raise TimeoutError("the server did not start within 10 s")
        await asyncio.sleep(0.01)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        await asyncio.wait_for(task, 15)


def mock_upstream(url: str = "http://upstream.test") -> respx.MockRouter:
    """A respx router standing in for an upstream at ``url``: routes are relative to it
    (``router.get("/tasks").respond(json=[...])``); ``router.calls`` records what the BFF sent.
    A request no route matches is answered 501 (the field fails with UPSTREAM_ERROR) and logged
    as a warning of ``bff.testing``."""
    import respx

    router = respx.MockRouter(base_url=url, assert_all_called=False)
    router.bff_url = url  # type: ignore[attr-defined]
    return router


def _unmatched_is_501(name: str, router: respx.MockRouter) -> Any:
    import respx

    async def handle(request: httpx.Request) -> httpx.Response:
        try:
            response: httpx.Response = await router.async_handler(request)
        except respx.models.AllMockedAssertionError:
            log.warning("upstream %r: no route of its mock matches %s %s", name, request.method, request.url)
            return httpx.Response(501, json={"error": f"not mocked: {request.method} {request.url.path}"})
        return response

    return handle


class BFFTestClient(httpx.AsyncClient):
    """An httpx client for the running BFF (cookies kept, like a browser's)."""

    async def graphql(
        self,
        query: str,
        variables: Mapping[str, Any] | None = None,
        *,
        operation_name: str | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> dict[str, Any]:
        """POST /graphql as a browser would; the JSON body. Fails on a 5xx or a non-JSON answer,
        which the BFF never gives to a GraphQL request."""
        payload: dict[str, Any] = {"query": query}
        if variables is not None:
            payload["variables"] = dict(variables)
        if operation_name is not None:
            payload["operationName"] = operation_name
        response = await self.post("/graphql", json=payload, headers=headers)
        if response.status_code >= 500 or not response.headers.get("content-type", "").startswith(
            ("application/json", "application/graphql-response+json")
        ):
            raise AssertionError(f"/graphql answered HTTP {response.status_code}: {response.text[:500]}")
        body: dict[str, Any] = response.json()
        return body

    async def session_info(self) -> dict[str, Any]:
        """GET /auth/session: who is signed in (never a token)."""
        body: dict[str, Any] = (await self.get("/auth/session")).json()
        return body


@dataclass
class RunningBFF:
    """A BFF served for a test: its URL, app, settings, dev IdP and upstream URLs."""

    url: str
    app: FastAPI
    settings: Settings
    idp: DevIdentityProvider
    upstreams: dict[str, str] = field(default_factory=dict)

    @contextlib.asynccontextmanager
    async def client(
        self, user: str | None = None, *, scopes: Iterable[str] | None = None, **kwargs: Any
    ) -> AsyncIterator[BFFTestClient]:
        """A client for the BFF; signed in as ``user`` (any name) when given. ``scopes``: the scopes
        (beyond OpenID Connect's) the dev IdP grants this user, of those the BFF asks for
        (`running_bff`'s ``scopes``); None leaves the user's grant as it is (the demo's ``alice``
        may have ``orders:read orders:write``, ``bob`` ``orders:read``, anyone else none)."""
        if user is not None and scopes is not None:
            self.idp.user_scopes[user] = tuple(scopes)
        async with BFFTestClient(base_url=self.url, timeout=kwargs.pop("timeout", 30), **kwargs) as client:
            if user is not None:
                await self.sign_in(client, user)
            yield client

    async def sign_in(self, client: httpx.AsyncClient, user: str) -> None:
        """The real login: /auth/login, the dev IdP's page, its answer to /auth/callback."""
        self.idp.users.setdefault(user, {"name": user.replace("-", " ").title(), "email": f"{user}@example.com"})
        start = await client.get(f"{self.url}/auth/login", params={"return_to": "/"})
        _expect(start, 302, "GET /auth/login")
        page = await client.get(start.headers["location"])
        found = re.search(r'<form method="post" action="([^"]+)"', page.text)
        if page.status_code != 200 or found is None:
            raise AssertionError(f"the dev IdP did not show its sign-in page: HTTP {page.status_code}")
        chosen = await client.post(unescape(found.group(1)), data={"user": user})
        _expect(chosen, 302, "the dev IdP's sign-in")
        done = await client.get(chosen.headers["location"])
        _expect(done, 302, "GET /auth/callback")

    async def subject(self, token: str) -> str | None:
        """Whose access token this is, if the dev IdP issued it and it is valid now."""
        claims = self.idp.verify_access_token(token)
        return str(claims["sub"]) if claims else None


def _expect(response: httpx.Response, status: int, step: str) -> None:
    if response.status_code != status:
        raise AssertionError(f"{step} answered HTTP {response.status_code}, not {status}: {response.text[:300]}")


@contextlib.asynccontextmanager
async def running_bff(
    schema: str | BFFSchema | None = None,
    *,
    upstreams: Mapping[str, Any] | None = None,
    settings: Mapping[str, Any] | None = None,
    env: str = "development",
    access_ttl: int = 300,
    scopes: Iterable[str] = API_SCOPES,
) -> AsyncIterator[RunningBFF]:
    """Serve ``schema`` (a ``package.module:attribute`` reference or a schema from `bff.build_schema`;
    default: the demo API) with ``upstreams`` (see the module's docstring) and the dev IdP.

    ``settings`` are extra `Settings` fields (``{"max_depth": 5}``; per-upstream options under
    ``"upstreams"`` are merged into the generated ones); ``env="production"`` serves it as
    production does (no GraphiQL, no introspection, no suggestions). ``scopes``: what the BFF asks
    for at sign-in beyond OpenID Connect's (default: the demo API's); `RunningBFF.client` chooses
    which of them each user is granted."""
    upstreams = dict(upstreams or {})
    extra = dict(settings or {})
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    async with contextlib.AsyncExitStack() as stack:
        urls: dict[str, str] = {}
        transports: dict[str, httpx.AsyncBaseTransport] = {}
        for name, given in upstreams.items():
            upstream, path = given if isinstance(given, tuple) else (given, "")
            if isinstance(upstream, str):
                urls[name] = upstream + path
            elif getattr(upstream, "bff_url", None) is not None:
                urls[name] = upstream.bff_url.rstrip("/") + path
                transports[name] = httpx.MockTransport(_unmatched_is_501(name, upstream))
            else:
                urls[name] = await stack.enter_async_context(serve(upstream)) + path
        configured = {name: {"url": url} for name, url in urls.items()}
        for name, options in dict(extra.pop("upstreams", None) or {}).items():
            configured[name] = {**configured.get(name, {}), **options}
        client_secret = secrets.token_urlsafe(24)
        asked = " ".join(dict.fromkeys((*OPENID_SCOPES, *scopes)))
        values: dict[str, Any] = {
            "oidc_scopes": asked,
            "env": env,
            "public_url": base,
            "oidc_issuer": f"{base}/idp",
            "oidc_client_id": "bff-test",
            "oidc_client_secret": client_secret,
            "session_store": "memory",
            "session_secret": secrets.token_urlsafe(32),
            "cookie_secure": False,
            "upstreams": configured,
            **extra,
        }
        if isinstance(schema, str):
            values["schema_ref"] = schema
        built = Settings(**values)
        idp = DevIdentityProvider(
            f"{base}/idp",
            [
                DevClient(
                    client_id="bff-test",
                    client_secret=client_secret,
                    redirect_uris=[built.redirect_uri],
                    scope=built.oidc_scopes,
                )
            ],
            access_ttl=access_ttl,
        )
        given = None if schema is None or isinstance(schema, str) else schema
        app = create_app(built, schema=given, transports=transports)
        app.mount("/idp", idp.app())
        _TRUSTED_ISSUERS.add(f"{base}/idp")
        url = await stack.enter_async_context(serve(app, port))
        yield RunningBFF(url=url, app=app, settings=built, idp=idp, upstreams=urls)


# -- for fake upstreams ---------------------------------------------------------------------------

_KEYS: dict[tuple[str, str], KeySet] = {}


def _segment(part: str) -> dict[str, Any]:
    value = json.loads(base64.urlsafe_b64decode(part + "=" * (-len(part) % 4)))
    if not isinstance(value, dict):
        raise ValueError("not a JSON object")
    return value


async def dev_token_subject(authorization: str | None, *, issuer: str | None = None) -> str | None:
    """For a fake upstream: the subject of ``Authorization: Bearer <token>`` when the token was
    issued by a trusted development IdP and is valid now: signature checked against that IdP's
    published keys, issuer and expiry. None otherwise.

    Trusted: ``issuer`` when given (for example ``bff demo``'s, ``http://127.0.0.1:8000/idp``), else
    the IdPs of the `running_bff` calls of this process. A token's own ``iss`` is never a reason to
    trust it."""
    scheme, _, token = (authorization or "").partition(" ")
    token = token.strip()
    if scheme.lower() != "bearer" or token.count(".") != 2:
        return None
    try:
        header, claims = _segment(token.split(".")[0]), _segment(token.split(".")[1])
        claimed, kid = str(claims["iss"]), str(header["kid"])
    except (ValueError, KeyError):
        return None
    if claimed not in ({issuer} if issuer else _TRUSTED_ISSUERS):
        return None
    issuer = claimed
    keys = _KEYS.get((issuer, kid))
    if keys is None:
        try:
            async with httpx.AsyncClient(timeout=5) as http:
                meta = (await http.get(f"{issuer}/.well-known/openid-configuration")).json()
                keys = KeySet.import_key_set((await http.get(meta["jwks_uri"])).json())
        except (httpx.HTTPError, ValueError, KeyError):
            return None
        _KEYS[(issuer, kid)] = keys
    try:
        decoded = jwt.decode(token, keys, algorithms=["RS256"])
        JWTClaimsRegistry(iss={"essential": True, "value": issuer}, exp={"essential": True}).validate(decoded.claims)
    except (JoseError, ValueError):
        return None
    subject = decoded.claims.get("sub")
    return str(subject) if subject else None
