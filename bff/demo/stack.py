"""`bff demo`: the BFF, the development IdP (/idp) and both demo upstreams (/demo/...) in one
process on one port, talking to each other over real HTTP. ``bff demo --schema`` serves a team's
own schema there instead of the demo API, behind the same dev IdP, with the team's upstreams
(``BFF_UPSTREAMS__*``) and without the demo's unless asked (``--demo-upstreams``)."""

from __future__ import annotations

import html
import os
import secrets
from collections.abc import Mapping
from typing import Any

from fastapi import FastAPI
from fastapi.responses import HTMLResponse
from joserfc.jwk import KeySet

from bff.app import create_app
from bff.demo.data import API_SCOPES
from bff.demo.idp import OPENID_SCOPES, DevClient, DevIdentityProvider
from bff.demo.tokens import JWKSValidator
from bff.demo.upstreams import accounts_app, accounts_index, catalog_app
from bff.settings import Settings

DEMO_SCHEMA = "bff.demo.api:schema"


#: what the demo asks for at sign-in unless told otherwise (`bff demo --scopes`, BFF_OIDC_SCOPES)
DEMO_SCOPES = " ".join((*OPENID_SCOPES, *API_SCOPES))


def demo_settings(
    base_url: str,
    *,
    schema: str | None = DEMO_SCHEMA,
    upstreams: Mapping[str, Any] | None = None,
    demo_upstreams: bool = True,
) -> Settings:
    """Embedded defaults: nothing from the environment is needed (or used for these fields).
    ``upstreams`` are added to (or replace) the demo's own accounts and catalog, which are left out
    with ``demo_upstreams=False`` (a team's schema that does not call them). ``schema=None``: the
    declarative sources of ``upstreams`` alone (`bff.sources`)."""
    own: dict[str, Any] = (
        {
            "accounts": {"url": f"{base_url}/demo/accounts"},
            # public product data: anonymous requests use the BFF's own token
            "catalog": {"url": f"{base_url}/demo/catalog/graphql", "anonymous": "client_credentials"},
        }
        if demo_upstreams
        else {}
    )
    # the schema is given only when there is one: unset, the sources alone are served
    named: dict[str, Any] = {} if schema is None else {"schema_ref": schema}
    return Settings(
        **named,
        env="development",
        public_url=base_url,
        oidc_issuer=f"{base_url}/idp",
        oidc_client_id="bff-demo",
        oidc_client_secret=secrets.token_urlsafe(24),
        oidc_post_logout_redirect_uri=f"{base_url}/",
        session_store="memory",
        session_secret=secrets.token_urlsafe(32),
        cookie_secure=base_url.startswith("https://"),
        upstreams={**own, **(upstreams or {})},
        graphiql=True,
        # the scopes the demo asks for: `bff demo --scopes` (through BFF_OIDC_SCOPES), else the
        # OpenID ones and the demo API's (the dev IdP grants each user those it may have)
        oidc_scopes=os.environ.get("BFF_OIDC_SCOPES") or DEMO_SCOPES,
    )


def build_demo_app(
    base_url: str,
    *,
    access_ttl: int = 300,
    upstream_latency: float = 0.0,
    schema: str | None = DEMO_SCHEMA,
    upstreams: Mapping[str, Any] | None = None,
    demo_upstreams: bool = True,
) -> FastAPI:
    """The demo on ``base_url``; ``schema`` is a ``package.module:attribute`` reference (raises
    `bff.SchemaError` for a bad one). ``demo_upstreams=False``: the demo's accounts and catalog are
    neither mounted nor configured (so not probed at start either)."""
    settings = demo_settings(base_url, schema=schema, upstreams=upstreams, demo_upstreams=demo_upstreams)
    assert settings.oidc_client_id is not None
    assert settings.oidc_client_secret is not None
    assert settings.oidc_issuer is not None
    idp = DevIdentityProvider(
        settings.oidc_issuer,
        [
            DevClient(
                client_id=settings.oidc_client_id,
                client_secret=settings.oidc_client_secret.get_secret_value(),
                redirect_uris=[settings.redirect_uri],
                post_logout_redirect_uris=[f"{base_url}/"],
                scope=settings.oidc_scopes,  # what the demo asks for (`bff demo --scopes`), per user below
            )
        ],
        access_ttl=access_ttl,
    )
    validator = JWKSValidator(issuer=settings.oidc_issuer, keys=KeySet([idp.key]), audience="demo-api")
    app = create_app(settings)
    app.mount("/idp", idp.app())
    if demo_upstreams:
        accounts = accounts_app(validator, latency=upstream_latency)
        # its base URL answers too (start-up probe, `bff check`): a 404 there reads as a wrong URL
        app.add_route("/demo/accounts", accounts_index, include_in_schema=False)
        app.mount("/demo/accounts", accounts)
        app.mount("/demo/catalog", catalog_app(validator, latency=upstream_latency))
    app.state.dev_idp = idp
    upstream_list = UPSTREAMS_ITEM if demo_upstreams else ""

    @app.get("/", response_class=HTMLResponse, include_in_schema=False)
    async def home() -> str:
        return HOME.format(base=html.escape(base_url), ttl=access_ttl, upstreams=upstream_list)

    return app


HOME = """<!doctype html><html lang="en"><head><meta charset="utf-8"><title>bff demo</title>
<style>body{{font-family:system-ui,sans-serif;max-width:40rem;margin:3rem auto;line-height:1.5;color:#222}}
code{{background:#f3f3f3;padding:0 .2rem}} a.button{{display:inline-block;background:#1f5f99;color:#fff;
padding:.5rem 1rem;border-radius:4px;text-decoration:none;margin-right:.5rem}}</style></head><body>
<h1>bff demo</h1>
<p>Running in this one process, over real HTTP on {base}:</p>
<ul>
<li>the BFF: GraphQL at <code>/graphql</code>, sign-in at <code>/auth/login</code>;</li>
<li>a <b>development</b> OpenID Connect provider at <code>/idp</code> (demo users, no passwords,
refresh tokens rotate; access tokens live {ttl} s);</li>
{upstreams}</ul>
<p>The browser never sees a token: only an HttpOnly session cookie. Refreshes happen on the server,
one line each in the log.</p>
<p><a class="button" href="/graphql">Open GraphiQL</a>
<a class="button" href="/auth/login?return_to=/graphql">Sign in</a></p>
</body></html>"""

UPSTREAMS_ITEM = """<li>the demo upstreams: REST accounts at <code>/demo/accounts</code>, GraphQL catalog at
<code>/demo/catalog/graphql</code>.</li>
"""
