"""``bff serve | check | demo | export-schema | demo-upstream``. Builds `Settings` once and passes it down."""

from __future__ import annotations

import argparse
import difflib
import os
import sys
from pathlib import Path
from typing import Any

DEFAULT_SCHEMA_PATH = Path("schema/schema.graphql")
SCHEMA_HELP = (
    "the schema to serve, package.module:attribute naming a schema built with bff.build_schema "
    "(default: BFF_SCHEMA, else the demo API)"
)


def _fail(message: str, code: int = 2) -> int:
    print(f"bff: {message}", file=sys.stderr)
    return code


def schema_sdl(reference: str | None) -> str:
    """--schema's, else the schema the environment configures (BFF_SCHEMA and the declarative
    sources; raises pydantic's ValidationError)."""
    from bff.app import load_schema, settings_schema
    from bff.settings import Settings

    schema = load_schema(reference) if reference else settings_schema(Settings())
    return schema.as_str().rstrip("\n") + "\n"


def export_schema(reference: str | None, output: Path | None, check: bool) -> int:
    from pydantic import ValidationError

    from bff.graphql.schema import SchemaError
    from bff.settings import invalid_configuration

    try:
        sdl = schema_sdl(reference)
    except SchemaError as exc:
        return _fail(str(exc))
    except ValidationError as exc:
        return _fail(invalid_configuration(exc))
    if check:
        path = output or DEFAULT_SCHEMA_PATH
        current = path.read_text() if path.exists() else ""
        if current == sdl:
            return 0
        sys.stdout.writelines(
            difflib.unified_diff(current.splitlines(True), sdl.splitlines(True), str(path), "bff export-schema")
        )
        named = f" --schema {reference}" if reference else ""
        print(f"\n{path} is stale: run 'bff export-schema{named} --output {path}'", file=sys.stderr)
        return 1
    if output is None:
        sys.stdout.write(sdl)
    else:
        output.parent.mkdir(parents=True, exist_ok=True)
        output.write_text(sdl)
    return 0


def serve(args: argparse.Namespace) -> int:
    import uvicorn
    from pydantic import ValidationError

    from bff import serving
    from bff.app import settings_schema
    from bff.graphql.schema import SchemaError, for_settings
    from bff.logs import configure_logging
    from bff.protocols import uvicorn_options
    from bff.settings import Settings, invalid_configuration

    if args.schema:
        os.environ["BFF_SCHEMA"] = args.schema  # for every worker's app_from_env
    try:
        settings = Settings()  # fail fast on bad configuration, before forking workers
    except ValidationError as exc:
        print(invalid_configuration(exc), file=sys.stderr)
        return 2
    try:
        for_settings(settings_schema(settings), settings)
    except SchemaError as exc:
        return _fail(str(exc))
    if args.workers > 1 and settings.session_store == "memory":
        print(
            "bff serve --workers > 1 needs a shared session store (BFF_SESSION_STORE=redis://...): "
            "each worker would otherwise have its own sessions",
            file=sys.stderr,
        )
        return 2
    if not args.skip_startup_checks:
        problem, warning = _startup_failure(settings)
        if problem is not None:
            # one line naming the variable, before any worker starts (a failing lifespan would log a
            # traceback per worker); an orchestrator restarts us until the part answers
            return _fail(f"cannot start: {problem}")
        if warning is not None:
            print(f"bff: warning: {warning}; starting anyway (/readyz is 503 until it answers)", file=sys.stderr)
    configure_logging(args.log_level or settings.log_level, json=True)
    config = uvicorn.Config(
        "bff.app:app_from_env",
        factory=True,
        host=args.host,
        port=args.port,
        workers=args.workers,
        log_level=args.log_level or settings.log_level,
        log_config=None,  # ours: JSON lines
        access_log=False,  # ours is bff.access: no query strings (authorization codes), with request ids
        proxy_headers=True,
        timeout_graceful_shutdown=10,
        # write deadline, WebSocket messages bounded before they are buffered, no compression
        **uvicorn_options(settings.max_body_bytes),
    )
    # not uvicorn.run: streams must end (with `complete`) when shutdown starts, in every worker
    return 0 if serving.run(config) else 3


def _startup_failure(settings: Any) -> tuple[str | None, str | None]:
    """`bff.resources.startup_failure` run to completion; logs of the probe itself are kept quiet
    (logging is not configured yet: only the one line of the verdict is printed)."""
    import asyncio
    import logging

    from bff.resources import startup_failure

    quiet = logging.getLogger("bff")
    level = quiet.level
    quiet.setLevel(logging.CRITICAL)
    try:
        return asyncio.run(startup_failure(settings))
    finally:
        quiet.setLevel(level)


def check(args: argparse.Namespace) -> int:
    """The effective configuration (secrets masked) and whether each part is reachable; exit 1 if not."""
    import asyncio
    import json

    from pydantic import ValidationError

    from bff.app import settings_schema
    from bff.graphql.schema import SchemaError, for_settings
    from bff.resources import PartCheck, check_parts, open_resources
    from bff.settings import Settings, invalid_configuration, mask_url, suggest_variable, unknown_variables

    try:
        settings = Settings()
    except ValidationError as exc:
        print(invalid_configuration(exc))
        return 1
    shown = json.loads(settings.model_dump_json())  # SecretStr values come out as "**********"
    shown["session_store"] = mask_url(settings.session_store)
    shown["schema"] = shown.pop("schema_ref")
    print("configuration:")
    for key, value in sorted(shown.items()):
        print(f"  BFF_{key.upper()} = {json.dumps(value)}")
    try:
        schema = for_settings(settings_schema(settings), settings)
        schema_check = PartCheck("schema", True, f"{_schema_origin(settings)}: {_describe(schema)}")
    except SchemaError as exc:
        schema_check = PartCheck("schema", False, str(exc))
    unknown = unknown_variables(os.environ)
    named = []
    for name in unknown:
        suggestion = suggest_variable(name)
        close = suggestion and suggestion != name.upper()
        named.append(f"{name} (did you mean {suggestion}?)" if close else name)
    variables_check = PartCheck(
        "variables",
        not unknown,
        "every BFF_ variable is a setting"
        if not unknown
        else f"not settings (misspelt?), they configure nothing: {', '.join(named)}",
    )

    async def run() -> list[bool]:
        async with open_resources(settings, log_checks=False) as resources:
            checks = [
                variables_check,
                schema_check,
                *await check_parts(resources, timeout=args.timeout, verify_client=True),
            ]
        print("checks:")
        for item in checks:
            print(f"  [{item.status}] {item.part}: {item.detail}")
        return [item.ok for item in checks]

    return 0 if all(asyncio.run(run())) else 1


def _describe(schema: Any) -> str:
    options = schema.bff_options
    roots = [kind for kind in ("query", "mutation", "subscription") if getattr(options, kind) is not None]
    limits = options.limits
    return (
        f"{', '.join(roots)}; max depth {limits.max_depth}, cost {limits.max_cost}; "
        f"introspection {'on' if limits.introspection else 'off'}"
    )


def demo(args: argparse.Namespace) -> int:
    import logging
    import os

    import uvicorn
    from pydantic import ValidationError

    from bff import serving
    from bff.demo.stack import DEMO_SCHEMA, DEMO_SCOPES, build_demo_app
    from bff.graphql.schema import SchemaError
    from bff.protocols import uvicorn_options
    from bff.settings import Settings, invalid_configuration

    if os.environ.get("BFF_ENV") == "production":
        print("bff demo runs a development identity provider and refuses BFF_ENV=production", file=sys.stderr)
        return 2
    from bff.logs import configure_logging

    # the scopes the BFF asks for at sign-in: --scopes, else BFF_OIDC_SCOPES, else the demo's own
    # (the OpenID ones and the demo API's: the dev IdP grants each user the API scopes it may have)
    scopes = args.scopes if args.scopes is not None else os.environ.get("BFF_OIDC_SCOPES") or DEMO_SCOPES
    if not scopes.split() or "openid" not in scopes.split():
        return _fail(f"bff demo --scopes {scopes!r}: a sign-in needs the 'openid' scope")
    os.environ["BFF_OIDC_SCOPES"] = " ".join(scopes.split())  # read by the demo's settings
    try:
        # only the schema, the upstreams and the scopes come from the environment; the rest is the demo's
        environment = Settings()
    except ValidationError as exc:
        return _fail(invalid_configuration(exc))
    configure_logging("info", json=False)
    base = f"http://{args.host}:{args.port}"
    from bff.sources import from_settings

    schema: str | None = args.schema or environment.schema_ref
    if args.declarative:
        schema = "bff.demo.declarative:schema"
    elif not args.schema and "schema_ref" not in environment.model_fields_set and from_settings(environment):
        schema = None  # BFF_SCHEMA unset and declarative sources configured: the sources alone
    try:
        app = build_demo_app(
            base,
            access_ttl=args.access_ttl,
            schema=schema,
            upstreams={name: upstream.model_dump() for name, upstream in environment.upstreams.items()},
            # a team's schema calls the team's upstreams (BFF_UPSTREAMS__*), not the demo's; with
            # none configured, the demo's (as 0.2 did), so a schema tried on its own still has some
            demo_upstreams=schema == DEMO_SCHEMA
            or args.declarative
            or args.demo_upstreams
            or not environment.upstreams,
        )
    except SchemaError as exc:
        return _fail(str(exc))
    log = logging.getLogger("bff.demo")
    log.warning("DEVELOPMENT identity provider at %s/idp: demo users, no passwords, never for production", base)
    print(
        f"\n  bff demo is running:\n    open      {base}/\n    GraphiQL  {base}/graphql\n"
        f"    sign in   {base}/auth/login?return_to=/graphql\n",
        flush=True,
    )
    config = uvicorn.Config(
        app,
        host=args.host,
        port=args.port,
        log_config=None,
        access_log=False,
        timeout_graceful_shutdown=5,
        **uvicorn_options(environment.max_body_bytes),
    )
    return 0 if serving.run(config) else 3


def demo_upstream(args: argparse.Namespace) -> int:
    import uvicorn

    from bff.demo.tokens import IntrospectionValidator, JWKSValidator, TokenValidator
    from bff.demo.upstreams import accounts_app, catalog_app

    validator: TokenValidator
    if args.introspection_client_id:
        validator = IntrospectionValidator(
            args.issuer, args.introspection_client_id, args.introspection_client_secret or ""
        )
    else:
        validator = JWKSValidator(issuer=args.issuer, audience=args.audience)
    factory = accounts_app if args.service == "accounts" else catalog_app
    app = factory(validator, latency=args.latency_ms / 1000)
    uvicorn.run(app, host=args.host, port=args.port, log_level="warning")
    return 0


def _schema_origin(settings: Any) -> str:
    """What the served schema is built from: BFF_SCHEMA's reference, and the declarative sources."""
    names = [name for name, upstream in sorted(settings.upstreams.items()) if upstream.openapi or upstream.graphql]
    if not names:
        return str(settings.schema_ref)
    sources = f"the sources {', '.join(names)}"
    return sources if "schema_ref" not in settings.model_fields_set else f"{settings.schema_ref} with {sources}"


def generate_sources(output: Path) -> int:
    from pydantic import ValidationError

    from bff.settings import Settings, invalid_configuration
    from bff.sources import SourceError, from_settings
    from bff.sources.eject import write_package

    if not output.name.isidentifier():
        return _fail(f"--output {output}: the directory's name is the package's, so it must be a Python identifier")
    try:
        sources = from_settings(Settings())
    except ValidationError as exc:
        return _fail(invalid_configuration(exc))
    except SourceError as exc:
        return _fail(str(exc))
    if not sources:
        return _fail("no declarative sources: set BFF_UPSTREAMS__<NAME>__URL and __OPENAPI (or __GRAPHQL)")
    try:
        written = write_package(sources, output)
    except SourceError as exc:
        return _fail(str(exc))
    for path in written:
        print(path)
    print(f"serve it with BFF_SCHEMA={output.name}:schema (from {output.parent.resolve()})", file=sys.stderr)
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="bff", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)

    p = commands.add_parser("serve", help="run the BFF (configuration from BFF_* variables)")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=8000)
    p.add_argument("--workers", type=int, default=1)
    p.add_argument("--log-level", default=None)
    p.add_argument("--schema", default=None, help=SCHEMA_HELP)
    p.add_argument(
        "--skip-startup-checks",
        action="store_true",
        help="start even when the session store or the identity provider does not answer (/readyz reports it)",
    )

    p = commands.add_parser("check", help="print the effective configuration and check every part; exit 1 if not ok")
    p.add_argument("--timeout", type=float, default=3.0, help="seconds per check")

    p = commands.add_parser("demo", help="the whole demo on one port: BFF, dev IdP, demo upstreams")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=8000)
    p.add_argument("--access-ttl", type=int, default=300, help="access token lifetime in seconds")
    p.add_argument(
        "--schema",
        default=None,
        help=SCHEMA_HELP + "; behind the dev IdP, with the upstreams of BFF_UPSTREAMS__* (none set: the demo's)",
    )
    p.add_argument(
        "--declarative",
        action="store_true",
        help="serve the demo graph from the accounts service's OpenAPI document and the catalog's SDL (bff.sources)",
    )
    p.add_argument(
        "--demo-upstreams",
        action="store_true",
        help="with --schema (or BFF_SCHEMA): also run the demo's accounts and catalog upstreams",
    )
    p.add_argument(
        "--scopes",
        default=None,
        help=(
            "space-separated scopes asked for at sign-in (BFF_OIDC_SCOPES; default: the OpenID ones and the "
            "demo API's orders:read orders:write); the dev IdP grants alice all of them, bob the read-only ones, "
            "carol none"
        ),
    )

    p = commands.add_parser("export-schema", help="print the GraphQL SDL (or write / check a file)")
    p.add_argument("--schema", default=None, help=SCHEMA_HELP)
    p.add_argument(
        "--output", type=Path, default=None, help=f"write it here (--check: compare; default {DEFAULT_SCHEMA_PATH})"
    )
    p.add_argument("--check", action="store_true", help="exit 1 with a diff when the file is stale")

    p = commands.add_parser("sources", help="the declarative sources (BFF_UPSTREAMS__<NAME>__OPENAPI/__GRAPHQL)")
    actions = p.add_subparsers(dest="action", required=True)
    g = actions.add_parser("generate", help="write the Strawberry code the sources mount, as a package to edit")
    g.add_argument("--output", type=Path, required=True, help="the package directory to write (its name: the package)")

    p = commands.add_parser("demo-upstream", help="run one demo upstream alone")
    p.add_argument("service", choices=["accounts", "catalog"])
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=8001)
    p.add_argument("--issuer", required=True, help="issuer whose tokens are accepted")
    p.add_argument("--audience", default=None, help="required aud of JWT access tokens")
    p.add_argument("--introspection-client-id", default=None, help="use RFC 7662 introspection")
    p.add_argument("--introspection-client-secret", default=None)
    p.add_argument("--latency-ms", type=float, default=0.0)

    args = parser.parse_args(argv)
    if args.command == "serve":
        return serve(args)
    if args.command == "export-schema":
        return export_schema(args.schema, args.output, args.check)
    if args.command == "demo":
        return demo(args)
    if args.command == "check":
        return check(args)
    if args.command == "sources":
        return generate_sources(args.output)
    return demo_upstream(args)


if __name__ == "__main__":
    raise SystemExit(main())
