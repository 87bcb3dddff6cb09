"""The authorization directives (`bff.graphql.authorization`) in process: every directive on every
place it may stand, the ways around a denial a client controls (fragments, aliases, variables,
``@include``, interfaces and unions, several operations), exact answers and codes, and no resolver
call for a denied field. Each case runs three ways that must agree: Strawberry's ``Schema.execute``,
graphql-core through `DirectExecution`, and the compiled plan (the differential test of the issue).
"""

from __future__ import annotations

import asyncio
import json
from collections import Counter
from types import MappingProxyType
from typing import Any

import pytest
import strawberry
from strawberry.types.graphql import OperationType

from bff import Authenticated, Policy, RequiresScopes, SchemaError, User, build_schema
from bff.graphql.execution.direct import DirectExecution
from tests.graphql import authz_schema

ANONYMOUS = None
PLAIN = User(sub="ada", scopes=frozenset())
SCOPED = User(sub="ada", scopes=frozenset({"contact:read", "vault", "secret:read", "a", "b"}))
STRONG = User(sub="ada", scopes=frozenset({"c"}), claims=MappingProxyType({"acr": "urn:bff:loa:2"}))
USERS = {"anonymous": ANONYMOUS, "plain": PLAIN, "scoped": SCOPED, "strong": STRONG}


class Ctx:
    """What the authorization reads of `bff.Context`: ``user()`` and the per-operation slot."""

    def __init__(self, user: User | None) -> None:
        self._user = user
        self._authz: dict[int, Any] = {}
        self.request_id = "test"
        self.user_reads = 0

    async def user(self) -> User | None:
        self.user_reads += 1
        return self._user


async def run_three_ways(
    query: str, user: User | None, variables: dict[str, Any] | None = None, operation_name: str | None = None
) -> tuple[dict[str, Any], Counter[str]]:
    """The answer (data and the set of (path, code) errors), the same three ways, and the resolver
    calls of one execution."""
    schema = authz_schema.schema
    direct = DirectExecution(schema)
    allowed = {OperationType.QUERY, OperationType.MUTATION}
    answers = []
    calls: Counter[str] = Counter()
    for way in ("strawberry", "graphql-core", "compiled"):
        authz_schema.calls.clear()
        if way == "strawberry":
            result: Any = await schema.execute(
                query, variable_values=variables, context_value=Ctx(user), operation_name=operation_name
            )
        else:
            result = await direct.execute(
                query, variables, Ctx(user), operation_name, allowed, compiled=way == "compiled"
            )
            assert result is not None, "the document was validated and cached by the first way"
        errors = sorted((json.dumps(error.path), (error.extensions or {}).get("code")) for error in result.errors or [])
        answers.append({"data": result.data, "errors": errors})
        if way == "strawberry":
            calls = Counter(authz_schema.calls)
        else:
            assert authz_schema.calls == calls, f"{way} made other resolver calls than Strawberry's path"
    assert answers[0] == answers[1] == answers[2], f"the three ways disagree: {answers}"
    return answers[0], calls


def codes(answer: dict[str, Any]) -> dict[str, str]:
    return {path: code for path, code in answer["errors"]}


async def test_field_directives_for_each_kind_of_user() -> None:
    query = '{ public me { name email } secret either owned(owner: "ada") }'
    anonymous, calls = await run_three_ways(query, ANONYMOUS)
    assert anonymous["data"] == {"public": "hello", "me": None, "secret": None, "either": None, "owned": None}
    assert set(codes(anonymous).values()) == {"UNAUTHENTICATED"}
    assert set(codes(anonymous)) == {'["me"]', '["secret"]', '["either"]', '["owned"]'}
    assert calls == Counter({"public": 1}), "no resolver (no upstream call) for a denied field"

    plain, calls = await run_three_ways(query, PLAIN)
    # me.email is String! and denied: me is nulled, with FORBIDDEN at me.email
    assert plain["data"] == {"public": "hello", "me": None, "secret": None, "either": None, "owned": "ada's"}
    assert codes(plain) == {
        '["me", "email"]': "FORBIDDEN",
        '["secret"]': "FORBIDDEN",
        '["either"]': "FORBIDDEN",
    }
    assert calls == Counter({"public": 1, "me": 1, "owned": 1, "policy:is-owner": 1})

    scoped, calls = await run_three_ways(query, SCOPED)
    assert scoped["data"] == {
        "public": "hello",
        "me": {"name": "Ada", "email": "me@example.com"},
        "secret": "42",
        "either": "yes",  # ["a", "b"] held together
        "owned": "ada's",
    }
    assert scoped["errors"] == []
    assert calls["email"] == calls["secret"] == calls["either"] == 1


async def test_outer_list_is_or_inner_list_is_and() -> None:
    only_a = User(sub="ada", scopes=frozenset({"a"}))
    answer, calls = await run_three_ways("{ either }", only_a)
    assert codes(answer) == {'["either"]': "FORBIDDEN"} and calls["either"] == 0
    answer, _ = await run_three_ways("{ either }", STRONG)  # has "c": the second alternative
    assert answer["data"] == {"either": "yes"}


@pytest.mark.parametrize(
    ("query", "variables"),
    [
        ("{ x: secret y: secret public }", None),
        ("{ ...F public } fragment F on Query { secret }", None),
        ("{ ... on Query { ... on Query { secret } } public }", None),
        ("query($yes: Boolean!) { secret @include(if: $yes) public }", {"yes": True}),
        ("query($no: Boolean!) { secret @skip(if: $no) public }", {"no": False}),
        ("{ ...A ...B public } fragment A on Query { secret } fragment B on Query { s: secret }", None),
    ],
)
async def test_no_way_around_a_denied_field(query: str, variables: dict[str, Any] | None) -> None:
    answer, calls = await run_three_ways(query, PLAIN, variables)
    assert calls["secret"] == 0, "the guarded resolver ran"
    assert answer["data"]["public"] == "hello"
    assert [value for key, value in answer["data"].items() if key != "public"] == [None] * (len(answer["data"]) - 1)
    assert set(codes(answer).values()) == {"FORBIDDEN"}
    assert "42" not in json.dumps(answer)


async def test_skipped_guarded_field_is_simply_absent() -> None:
    answer, calls = await run_three_ways(
        "query($yes: Boolean!) { secret @include(if: $yes) public }", PLAIN, {"yes": False}
    )
    assert answer == {"data": {"public": "hello"}, "errors": []}
    assert calls["secret"] == 0


async def test_type_directives_guard_fields_returning_them_and_their_fields() -> None:
    # Vault carries @requiresScopes(vault): the field returning it, and its fields reached through
    # an interface or a union (a type condition on Vault), are denied
    query = """{
      vault { code }
      nodes { id ... on Vault { code } ... on Doc { title } }
      items { ... on Vault { code } ... on Doc { title } }
      level
    }"""
    plain, calls = await run_three_ways(query, PLAIN)
    assert plain["data"]["vault"] is None
    assert plain["data"]["nodes"] is None  # Vault.id is ID!: the item, then the list ([Node!]) is null
    assert plain["data"]["items"] is None
    assert plain["data"]["level"] == "HIGH"  # @authenticated on the enum: a signed-in user sees it
    assert codes(plain) == {
        '["vault"]': "FORBIDDEN",
        '["nodes", 1, "id"]': "FORBIDDEN",
        '["items", 1, "code"]': "FORBIDDEN",
    }
    assert calls["vault"] == 0
    assert "1234" not in json.dumps(plain)

    anonymous, _ = await run_three_ways("{ level public }", ANONYMOUS)
    assert anonymous["data"] == {"level": None, "public": "hello"}
    assert codes(anonymous) == {'["level"]': "UNAUTHENTICATED"}

    scoped, _ = await run_three_ways(query, SCOPED)
    assert scoped["errors"] == []
    assert scoped["data"]["nodes"] == [{"id": "d1", "title": "t"}, {"id": "v1", "code": "1234"}]


async def test_policies_see_the_arguments_and_are_called_once_per_selection() -> None:
    answer, calls = await run_three_ways(
        'query($who: String!) { mine: owned(owner: $who) theirs: owned(owner: "bob") }', PLAIN, {"who": "ada"}
    )
    assert answer["data"] == {"mine": "ada's", "theirs": None}
    assert codes(answer) == {'["theirs"]': "FORBIDDEN"}
    assert calls["policy:is-owner"] == 2 and calls["owned"] == 1


async def test_a_policy_asks_for_a_stronger_sign_in() -> None:
    answer, calls = await run_three_ways("{ strong }", PLAIN)
    assert codes(answer) == {'["strong"]': "STEP_UP_REQUIRED"}
    assert calls["strong"] == 0
    result = await authz_schema.schema.execute("{ strong }", context_value=Ctx(PLAIN))
    assert result.errors and result.errors[0].extensions["acrValues"] == "urn:bff:loa:2"
    answer, _ = await run_three_ways("{ strong }", STRONG)
    assert answer["data"] == {"strong": "strong"}


async def test_mutations_are_guarded_before_they_run() -> None:
    answer, calls = await run_three_ways("mutation { place }", PLAIN)
    assert codes(answer) == {'["place"]': "FORBIDDEN"} and calls["place"] == 0
    writer = User(sub="ada", scopes=frozenset({"orders:write"}))
    answer, calls = await run_three_ways("mutation { place }", writer)
    assert answer["data"] == {"place": "placed"} and calls["place"] == 1


async def test_the_user_is_read_once_and_the_operation_decided_once() -> None:
    direct = DirectExecution(authz_schema.schema)
    query = "{ a: secret b: secret me { email backupEmail } nodes { id } }"
    await authz_schema.schema.execute(query, context_value=Ctx(SCOPED))  # cached, validated
    context = Ctx(SCOPED)
    result = await direct.execute(query, None, context, None, {OperationType.QUERY})
    assert result is not None and not result.errors
    assert context.user_reads == 1


@strawberry.type
class BrokenPolicyQuery:
    @strawberry.field(directives=[Policy(policies=[["broken"]])])
    def guarded(self) -> str | None:
        return "no"


@strawberry.type
class MissingPolicyQuery:
    @strawberry.field(directives=[Policy(policies=[["missing"]])])
    def guarded(self) -> str | None:
        return "no"


@strawberry.type(directives=[Authenticated()])
class Account:
    id: strawberry.ID


@strawberry.type
class AccountQuery:
    @strawberry.field(directives=[RequiresScopes(scopes=[["a", "b"], ["c"]])])
    def account(self) -> Account | None:
        return None


async def test_a_failing_policy_denies_and_an_unknown_one_is_refused_at_build() -> None:
    def broken(user: User, arguments: Any) -> bool:
        raise RuntimeError("the policy's own bug")

    schema = build_schema(query=BrokenPolicyQuery, policies={"broken": broken})
    result = await schema.execute("{ guarded }", context_value=Ctx(PLAIN))
    assert result.data == {"guarded": None}
    assert result.errors and result.errors[0].extensions["code"] == "FORBIDDEN"

    with pytest.raises(SchemaError, match=r"'missing'.*MissingPolicyQuery\.guarded"):
        build_schema(query=MissingPolicyQuery)


def test_the_sdl_carries_the_directives_for_codegen() -> None:
    sdl = str(build_schema(query=AccountQuery))
    assert "directive @authenticated on FIELD_DEFINITION | OBJECT | INTERFACE | SCALAR | ENUM" in sdl
    assert "directive @requiresScopes(scopes: [[String!]!]!) on FIELD_DEFINITION" in sdl
    assert 'account: Account @requiresScopes(scopes: [["a", "b"], ["c"]])' in sdl
    assert "type Account @authenticated" in sdl


async def test_concurrent_guarded_siblings_share_one_decision() -> None:
    # two guarded root fields resolve concurrently on the graphql-core path: one decision
    context = Ctx(SCOPED)
    result = await authz_schema.schema.execute("{ me { email } secret }", context_value=context)
    assert not result.errors
    assert context.user_reads == 1
    await asyncio.sleep(0)


class SlowCtx(Ctx):
    """A user read that takes a while (or fails): the decision's concurrency is visible."""

    def __init__(self, user: User | None, *, error: Exception | None = None) -> None:
        super().__init__(user)
        self.error = error

    async def user(self) -> User | None:
        self.user_reads += 1
        await asyncio.sleep(0.05)
        if self.error is not None:
            raise self.error
        return self._user


async def test_a_failed_user_read_fails_only_the_guarded_fields() -> None:
    from bff.errors import StoreUnavailable

    context = SlowCtx(SCOPED, error=StoreUnavailable())
    result = await authz_schema.schema.execute("{ public secret either }", context_value=context)
    assert result.data == {"public": "hello", "secret": None, "either": None}
    assert sorted(e.extensions["code"] for e in result.errors or []) == ["SESSION_STORE_UNAVAILABLE"] * 2


async def test_a_sibling_decides_when_the_deciding_field_is_cancelled() -> None:
    from graphql import parse

    from bff.graphql._strawberry import graphql_schema

    schema = graphql_schema(authz_schema.schema)
    authorizer = authz_schema.schema.bff_authorizer
    operation = parse("{ secret either }").definitions[0]
    context = SlowCtx(PLAIN)
    first = asyncio.ensure_future(authorizer.prepare(context, schema, operation, {}, {}))
    await asyncio.sleep(0)
    second = asyncio.ensure_future(authorizer.prepare(context, schema, operation, {}, {}))
    await asyncio.sleep(0.01)
    first.cancel()
    decided = await asyncio.wait_for(second, 5)
    assert len(decided) == 2  # both denied
    assert context.user_reads == 2  # the cancelled read, then the sibling's own
    assert await authorizer.prepare(context, schema, operation, {}, {}) is decided  # kept for the operation
