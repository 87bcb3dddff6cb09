"""The public surface a team builds on (`bff.__all__`), in httpx's ``test_exported_members`` style,
and the promise behind it: a resolver written against it cannot reach a token, a secret, the session
store, the OIDC client, the cookie signer or `Settings`."""

from __future__ import annotations

import inspect
import re
import sys
import types
import warnings
from collections.abc import Iterator, Mapping
from typing import Any

import pytest
import strawberry
from strawberry.types import Info

import bff
from bff import Context, build_schema
from bff.auth.oidc import OIDCClient
from bff.resources import Resources
from bff.sessions.cookies import CookiePolicy
from bff.sessions.models import Session, TokenSet
from bff.sessions.store import SessionStore
from bff.settings import Settings
from bff.testing import running_bff

SURFACE = {
    "Authenticated",
    "AuthProviderUnavailable",
    "BFFError",
    "Backoff",
    "ClientRequest",
    "Context",
    "GraphQLClient",
    "Forbidden",
    "Limits",
    "Policy",
    "PolicyFunction",
    "QueryRejected",
    "RequiresScopes",
    "RestClient",
    "SchemaError",
    "Settings",
    "StepUpRequired",
    "Unauthenticated",
    "UpstreamError",
    "UpstreamEvent",
    "UpstreamTimeout",
    "UpstreamTokenRefused",
    "UpstreamUnauthorized",
    "User",
    "build_schema",
    "create_app",
    "load_schema",
    "selects",
}


def test_exported_members() -> None:
    """Every name in ``bff.__all__`` exists, is bff's own, and the list is the deliberate one: a new
    public name is a decision this test makes visible."""
    assert set(bff.__all__) == SURFACE
    assert bff.__all__ == sorted(bff.__all__)
    for name in bff.__all__:
        member = getattr(bff, name)
        assert member.__module__.startswith("bff."), name
        assert name in dir(bff)
    with pytest.raises(AttributeError):
        bff.Resources  # type: ignore[attr-defined]


def _bff_classes_named(annotation: str, namespace: dict[str, Any]) -> Iterator[type]:
    for word in re.findall(r"[A-Za-z_][\w.]*", annotation):
        value: Any = namespace.get(word.split(".")[0])
        for part in word.split(".")[1:]:
            value = getattr(value, part, None)
        if isinstance(value, type) and value.__module__.startswith("bff."):
            yield value


def test_public_signatures_name_only_exported_types() -> None:
    """A bff type a resolver meets in a public signature of `Context` or an upstream client can be
    imported from ``bff`` (no reaching into the package's modules for an annotation)."""
    exported = {getattr(bff, name) for name in bff.__all__}
    checked = 0
    for owner in (bff.Context, bff.RestClient, bff.GraphQLClient, bff.User, bff.ClientRequest):
        for name, member in inspect.getmembers(owner):
            if name.startswith("_"):
                continue
            target = member.fget if isinstance(member, property) else member
            if not inspect.isfunction(target):
                continue
            namespace = vars(sys.modules[target.__module__])
            for annotation in inspect.get_annotations(target).values():
                for used in _bff_classes_named(str(annotation), namespace):
                    checked += 1
                    assert used in exported, f"{owner.__name__}.{name} uses {used.__qualname__}, not exported by bff"
    assert checked > 5


# -- what a resolver can reach ------------------------------------------------------------------

#: types that carry tokens or secrets, or hand out everything (store, IdP client, signer, settings)
FORBIDDEN_TYPES = (Resources, Settings, SessionStore, OIDCClient, CookiePolicy, Session, TokenSet)
_LEAVES = (str, bytes, int, float, bool, type(None))


def _reachable(roots: list[Any], depth: int = 8) -> Iterator[tuple[str, Any]]:
    """Everything reachable from ``roots`` through public names only: attributes and properties not
    starting with ``_``, mapping items and sequence elements (no calls, no private attributes)."""
    seen: set[int] = set()
    frontier = [(f"root{i}", root) for i, root in enumerate(roots)]
    for _ in range(depth):
        following = []
        for path, obj in frontier:
            if id(obj) in seen:
                continue
            seen.add(id(obj))
            yield path, obj
            if isinstance(obj, _LEAVES) or inspect.isroutine(obj) or isinstance(obj, type | types.ModuleType):
                continue
            if isinstance(obj, Mapping):
                for key, value in list(obj.items()):
                    following += [(f"{path}[{key!r}]", key), (f"{path}[{key!r}]", value)]
                continue
            if isinstance(obj, list | tuple | set | frozenset):
                following += [(f"{path}[{i}]", value) for i, value in enumerate(obj)]
                continue
            for name in dir(obj):
                if name.startswith("_"):
                    continue
                try:
                    with warnings.catch_warnings():
                        warnings.simplefilter("ignore")
                        value = getattr(obj, name)
                except Exception:
                    continue
                following.append((f"{path}.{name}", value))
        frontier = following


captured: list[Any] = []


@strawberry.type
class Query:
    @strawberry.field
    async def me(self, info: Info[Context, None]) -> str | None:
        """A resolver that keeps everything the public API hands it."""
        context = info.context
        user = await context.user()
        captured.extend([context, user, context.rest("people"), context.graphql("directory"), context.request])
        return user.sub if user else None


async def test_a_resolver_cannot_reach_a_token_or_a_secret() -> None:
    captured.clear()
    schema = build_schema(query=Query)
    upstreams = {"people": "http://127.0.0.1:9", "directory": "http://127.0.0.1:9/graphql"}
    async with running_bff(schema, upstreams=upstreams) as running, running.client(user="alice") as client:
        body = await client.graphql("{ me }")
        assert body == {"data": {"me": "alice"}}
        resources: Resources = running.app.state.resources
        session_id = resources.session_credentials(None, dict(client.cookies)).session_id
        assert session_id
        session = await resources.store.get(session_id, touch=False)
        assert session is not None and session.tokens.refresh_token and session.tokens.id_token
        secrets = {
            "access token": session.tokens.access_token,
            "refresh token": session.tokens.refresh_token,
            "ID token": session.tokens.id_token,
            "session id": session_id,
            "client secret": running.settings.oidc_client_secret.get_secret_value(),
            "session secret": running.settings.session_secret.get_secret_value(),
            **{f"cookie {name}": value for name, value in client.cookies.items()},
        }
    assert len(captured) == 5
    assert captured[1].sub == "alice" and captured[1].scopes
    checked = 0
    for path, obj in _reachable(captured):
        checked += 1
        assert not isinstance(obj, FORBIDDEN_TYPES), f"{path} is a {type(obj).__name__}"
        if isinstance(obj, str | bytes):
            text = obj.decode("latin-1") if isinstance(obj, bytes) else obj
            for what, secret in secrets.items():
                assert secret not in text, f"{path} holds the {what}"
    assert checked > 50  # the walk went somewhere: the request's headers, the user's claims, the clients


async def test_the_names_of_0_2_say_what_replaced_them() -> None:
    """``Context.session()`` still answers (the `User`, with a DeprecationWarning) so a 0.2 resolver
    that read ``session.sub`` keeps working; ``Context.resources`` says what to use instead."""
    seen: list[Any] = []

    @strawberry.type
    class Legacy:
        @strawberry.field
        async def who(self, info: Info[Context, None]) -> str | None:
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always")
                session = await info.context.session()
            seen.extend(caught)
            try:
                info.context.resources
            except AttributeError as exc:
                seen.append(exc)
            return session.sub if session else None

    async with running_bff(build_schema(query=Legacy)) as running, running.client(user="bob") as client:
        assert await client.graphql("{ who }") == {"data": {"who": "bob"}}
    assert [type(item) for item in seen] == [warnings.WarningMessage, AttributeError]
    assert issubclass(seen[0].category, DeprecationWarning) and "user()" in str(seen[0].message)
    assert "removed in 0.3" in str(seen[1])


def test_connection_params_and_request_headers_without_the_session_credential() -> None:
    """A WebSocket's ``connection_init`` payload and the request's headers reach resolvers without
    the ``Authorization``/cookie that carry the session (native clients send ``Session <handle>``)."""
    from starlette.requests import Request

    stub: Any = types.SimpleNamespace(requests=types.SimpleNamespace(timeout_seconds=5))
    headers = [(b"cookie", b"__Host-bff=signed"), (b"authorization", b"Session abc"), (b"accept-language", b"de")]
    request = Request(
        {"type": "http", "method": "POST", "path": "/graphql", "headers": headers, "client": ("1.2.3.4", 5)}
    )
    context = Context(
        stub,
        "sid",
        cookie=None,
        request_id="r",
        connection=request,
        connection_params={"Authorization": "Session abc", "locale": "de"},
    )
    assert dict(context.connection_params or {}) == {"locale": "de"}
    view = context.request
    assert view is not None
    assert dict(view.headers) == {"accept-language": "de"}
    assert (view.method, view.path, view.client) == ("POST", "/graphql", "1.2.3.4")


async def test_dev_token_subject_trusts_only_the_idps_it_was_told_of() -> None:
    """A token names its own issuer: one minted by another development IdP on this machine (any
    local process can run one) is refused unless the fake upstream was told to trust that issuer."""
    from bff.demo.idp import DevClient, DevIdentityProvider, DevUser
    from bff.testing import dev_token_subject, free_port, serve

    port = free_port()
    rogue = DevIdentityProvider(f"http://127.0.0.1:{port}", [DevClient("x", "y", ["http://127.0.0.1/cb"])])
    async with serve(rogue.app(), port):
        token = rogue._access_token(rogue.clients["x"], "authorization_code", DevUser("mallory", "s"), "openid")
        assert await dev_token_subject(f"Bearer {token}") is None
        assert await dev_token_subject(f"Bearer {token}", issuer=rogue.issuer) == "mallory"
        assert await dev_token_subject(f"Bearer {token}", issuer="http://127.0.0.1:2") is None


def test_build_schema_limits_are_a_floor_the_settings_cannot_loosen() -> None:
    from bff.graphql.schema import for_settings
    from tests.conftest import make_settings

    strict = build_schema(query=Query, limits=bff.Limits(max_depth=3, max_cost=100, introspection=False))
    loose = for_settings(strict, make_settings(max_depth=50, max_cost=10_000, introspection=True))
    served = loose.bff_options.limits
    assert (served.max_depth, served.max_cost, served.introspection) == (3, 100, False)
    stricter = for_settings(strict, make_settings(max_depth=2, max_cost=10_000)).bff_options.limits
    assert (stricter.max_depth, stricter.max_cost) == (2, 100)
    plain = for_settings(build_schema(query=Query), make_settings(max_depth=50)).bff_options.limits
    assert plain.max_depth == 50  # without a floor the settings decide
