"""Authorization at the boundary: Apollo's ``@authenticated``, ``@requiresScopes`` and ``@policy``.

The directives are Strawberry schema directives, so they are in the exported SDL for codegen and
mean what they mean at Apollo Router, Hive Gateway and Cosmo: on a field, an object type, an
interface, a scalar or an enum; ``scopes``/``policies`` are a list of alternatives (OR) of lists
that must all hold (AND). A type's directive guards every field of it and every field returning
it; an interface field's guards every implementation of that field.

How it is enforced (`Authorizer.install`, at schema build): each guarded field's resolver (and a
guarded subscription field's ``subscribe``) is wrapped. The first guarded field an operation
reaches, before its resolver runs, decides the whole operation at once, on every execution path
alike (Strawberry's, graphql-core's and the compiled plan's, so that they agree even on which
errors of siblings a null propagation drops): every guarded selection of the operation (fragments,
aliases and all type conditions included, ``@skip`` and ``@include`` ignored: a skipped field's
decision is never used) is checked against the user (`Context.user`), the policies are awaited
together, and the denials are kept on the context. A denied field raises `Forbidden`
(`Unauthenticated` without a session, `StepUpRequired` when a policy asks for a stronger sign-in)
instead of calling its resolver: null with that code, with GraphQL's null propagation, and no
upstream call for it or anything below it.

Decided once per operation: the walk of a document's guarded selections is cached per operation
(bounded), and, for operations whose guards name no policy, the decision per set of scopes.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

import strawberry
from graphql import (
    FieldNode,
    FragmentDefinitionNode,
    FragmentSpreadNode,
    GraphQLField,
    GraphQLInterfaceType,
    GraphQLObjectType,
    GraphQLSchema,
    InlineFragmentNode,
    OperationDefinitionNode,
    SelectionSetNode,
    get_named_type,
    is_abstract_type,
    is_object_type,
)
from graphql.execution.values import VariableValues, get_argument_values
from strawberry.schema_directive import Location

from bff.errors import BFFError, Forbidden, StepUpRequired, Unauthenticated
from bff.graphql.documents.lru import LRU
from bff.sessions.models import User

__all__ = ["Authenticated", "Authorizer", "Policy", "PolicyFunction", "RequiresScopes"]

log = logging.getLogger("bff.authorization")

_LOCATIONS = [Location.FIELD_DEFINITION, Location.OBJECT, Location.INTERFACE, Location.SCALAR, Location.ENUM]


@strawberry.schema_directive(
    locations=_LOCATIONS, name="authenticated", description="Only a signed-in user sees this (Apollo's semantics)."
)
class Authenticated:
    """``@authenticated``: null with ``UNAUTHENTICATED`` for a request without a session."""


@strawberry.schema_directive(
    locations=_LOCATIONS,
    name="requiresScopes",
    description="The user's scopes must include every scope of at least one of the lists.",
)
class RequiresScopes:
    """``@requiresScopes(scopes: [["a", "b"], ["c"]])``: (a AND b) OR c; ``FORBIDDEN`` otherwise."""

    scopes: list[list[str]]


@strawberry.schema_directive(
    locations=_LOCATIONS,
    name="policy",
    description="Every policy of at least one of the lists must allow the user (policies are named functions).",
)
class Policy:
    """``@policy(policies: [["owner"], ["admin"]])``: policies registered with
    ``build_schema(policies={"owner": fn})``, where ``fn(user, arguments)`` returns (or awaits to)
    a bool, or raises `bff.StepUpRequired` to ask for a stronger sign-in."""

    policies: list[list[str]]


class PolicyFunction(Protocol):
    """A policy: ``fn(user, arguments) -> bool`` (or an awaitable of it), given the user (`bff.User`:
    sub, claims, scopes, acr, amr, auth_time) and the guarded field's arguments; never a token."""

    def __call__(self, user: User, arguments: Mapping[str, Any], /) -> bool | Awaitable[bool]: ...


#: the key of a guarded field's `Requirement` in its ``GraphQLField.extensions``
GUARD = "bff-authorization"
#: ... of the function that puts a resolver behind the guard (the compiled plan's fast resolvers)
GUARD_WRAP = "bff-authorization-wrap"
#: ... and of its unwrapped (resolve, subscribe)
_ORIGINAL = "bff-authorization-original"
#: walks kept (operations of cached documents)
WALK_CACHE_SIZE = 512
#: decisions kept per walk (one per set of scopes seen)
DECISIONS_PER_WALK = 64

Alternatives = tuple[frozenset[str], ...]


@dataclass(frozen=True, slots=True)
class Requirement:
    """What a field needs: a session, and every one of ``scopes`` and ``policies`` (each a list of
    alternatives, each alternative a set that must hold entirely)."""

    authenticated: bool = False
    scopes: tuple[Alternatives, ...] = ()
    policies: tuple[Alternatives, ...] = ()

    def __and__(self, other: Requirement) -> Requirement:
        return Requirement(
            self.authenticated or other.authenticated,
            _union(self.scopes, other.scopes),
            _union(self.policies, other.policies),
        )

    def __bool__(self) -> bool:
        return self.authenticated or bool(self.scopes) or bool(self.policies)

    def policy_names(self) -> set[str]:
        return {name for alternatives in self.policies for group in alternatives for name in group}

    def scopes_allow(self, scopes: frozenset[str]) -> bool:
        return all(any(group <= scopes for group in alternatives) for alternatives in self.scopes)


def _union(a: tuple[Alternatives, ...], b: tuple[Alternatives, ...]) -> tuple[Alternatives, ...]:
    return a + tuple(x for x in b if x not in a)


def _alternatives(value: Iterable[Iterable[str]]) -> Alternatives:
    return tuple(frozenset(str(name) for name in group) for group in value)


def requirement_of(directives: Iterable[object]) -> Requirement:
    """The requirement the authorization directives among ``directives`` state (others ignored)."""
    requirement = Requirement()
    for directive in directives:
        if isinstance(directive, Authenticated):
            requirement &= Requirement(authenticated=True)
        elif isinstance(directive, RequiresScopes):
            requirement &= Requirement(authenticated=True, scopes=(_alternatives(directive.scopes),))
        elif isinstance(directive, Policy):
            requirement &= Requirement(authenticated=True, policies=(_alternatives(directive.policies),))
    return requirement


def _directives(graphql_type_or_field: Any) -> tuple[object, ...]:
    definition = (getattr(graphql_type_or_field, "extensions", None) or {}).get("strawberry-definition")
    return tuple(getattr(definition, "directives", None) or ())


def _type_requirement(type_: Any) -> Requirement:
    return requirement_of(_directives(get_named_type(type_)))


class Authorizer:
    """One per served schema: its policies, and the walks of the operations it has decided."""

    def __init__(self, policies: Mapping[str, PolicyFunction]) -> None:
        self.policies = dict(policies)
        self._walks: LRU[int, _Walk] = LRU(maxsize=WALK_CACHE_SIZE, max_weight=WALK_CACHE_SIZE, weigh=lambda _k, _v: 1)

    def install(self, schema: GraphQLSchema) -> bool:
        """Wrap every guarded field of ``schema`` (see the module); whether any field is guarded.
        Raises ValueError naming a policy that a directive uses and is not registered."""
        guarded = False
        unknown: dict[str, str] = {}
        for type_ in schema.type_map.values():
            if not is_object_type(type_) or type_.name.startswith("__"):
                continue
            assert isinstance(type_, GraphQLObjectType)
            own = _type_requirement(type_)
            for name, definition in type_.fields.items():
                requirement = own & requirement_of(_directives(definition)) & _type_requirement(definition.type)
                for interface in type_.interfaces:
                    requirement &= _interface_requirement(interface, name)
                if not requirement:
                    continue
                for policy in requirement.policy_names() - set(self.policies):
                    unknown.setdefault(policy, f"{type_.name}.{name}")
                self._guard(definition, requirement)
                guarded = True
        if unknown:
            named = ", ".join(f"{policy!r} (used by {where})" for policy, where in sorted(unknown.items()))
            raise ValueError(f"@policy names a policy that build_schema(policies=...) does not register: {named}")
        return guarded

    def _guard(self, definition: GraphQLField, requirement: Requirement) -> None:
        extensions = dict(definition.extensions or {})
        original = extensions.get(_ORIGINAL)
        if original is None:
            original = extensions[_ORIGINAL] = (definition.resolve, definition.subscribe)
        extensions[GUARD] = requirement
        extensions[GUARD_WRAP] = self.guarded_resolver
        definition.extensions = extensions
        resolve, subscribe = original
        if resolve is not None:
            definition.resolve = self.guarded_resolver(resolve)
        if subscribe is not None:
            definition.subscribe = self.guarded_resolver(subscribe)

    def guarded_resolver(self, resolve: Callable[..., Any]) -> Callable[..., Any]:
        """``resolve`` behind the operation's decision (the compiled plan wraps its own fast
        resolver of a guarded field with this too)."""

        def guarded(source: Any, info: Any, **arguments: Any) -> Any:
            decided = _decided(info.context, info.operation)
            if decided is None:
                return self._decide_then_resolve(resolve, source, info, arguments)
            denial = decided.get((id(info.field_nodes[0]), info.parent_type.name))
            if denial is not None:
                raise denial()
            return resolve(source, info, **arguments)

        return guarded

    async def _decide_then_resolve(
        self, resolve: Callable[..., Any], source: Any, info: Any, arguments: dict[str, Any]
    ) -> Any:
        decided = await self.prepare(info.context, info.schema, info.operation, info.fragments, info.variable_values)
        denial = decided.get((id(info.field_nodes[0]), info.parent_type.name))
        if denial is not None:
            raise denial()
        result = resolve(source, info, **arguments)
        return await result if inspect.isawaitable(result) else result

    async def prepare(
        self,
        context: Any,
        schema: GraphQLSchema,
        operation: OperationDefinitionNode,
        fragments: Mapping[str, FragmentDefinitionNode],
        variable_values: Any,
    ) -> Decisions:
        """Decide ``operation`` for the user of ``context``: once per operation, the first caller
        deciding and the others (concurrent sibling fields) waiting for it."""
        slots = getattr(context, "_authz", None)
        if slots is None:  # not a bff Context (a schema executed by hand): decided per field
            return await self._decisions(context, schema, operation, fragments, variable_values)
        entry = slots.get(id(operation))
        if entry is not None and entry[0] is operation:
            decided = entry[1]
            if isinstance(decided, dict):
                return decided
            try:
                result: Decisions = await asyncio.shield(decided)  # a sibling is deciding: its answer
            except _Abandoned:  # ... and was cancelled first: decide here
                return await self.prepare(context, schema, operation, fragments, variable_values)
            return result
        # the first caller decides in its own task (no task of its own: one per request would cost
        # more than the decision); siblings that come meanwhile wait on the future
        pending: asyncio.Future[Decisions] = asyncio.get_running_loop().create_future()
        slots[id(operation)] = (operation, pending)
        try:
            result = await self._decisions(context, schema, operation, fragments, variable_values)
        except BaseException as exc:
            if slots.get(id(operation)) == (operation, pending):
                del slots[id(operation)]  # decided again by the next caller
            pending.set_exception(_Abandoned() if isinstance(exc, asyncio.CancelledError) else exc)
            pending.exception()  # retrieved: a sibling may never ask
            raise
        slots[id(operation)] = (operation, result)
        pending.set_result(result)
        return result

    async def _decisions(
        self,
        context: Any,
        schema: GraphQLSchema,
        operation: OperationDefinitionNode,
        fragments: Mapping[str, FragmentDefinitionNode],
        variable_values: Any,
    ) -> Decisions:
        walk = self._walks.get(id(operation))
        if walk is None or walk.operation is not operation:
            guarded = _walk(schema, operation, fragments)
            walk = _Walk(operation, guarded, any(item.requirement.policies for item in guarded))
            self._walks.put(id(operation), walk)
        if not walk.guarded:
            return {}
        user = await _user(context)
        if user is None:
            end_session = getattr(context, "end_session", None)
            if callable(end_session):
                end_session()  # a cookie naming no live session is cleared wherever it is read
        key = (user is not None, user.scopes if user is not None else frozenset())
        decided = None if walk.has_policies else walk.decisions.get(key)
        if decided is None:
            decided = await _decide(walk, user, variable_values, self.policies)
            if not walk.has_policies and len(walk.decisions) < DECISIONS_PER_WALK:
                walk.decisions[key] = decided
        return decided


def unguarded_resolve(definition: GraphQLField) -> Any:
    """The field's resolver as Strawberry built it, without the guard (None: not guarded)."""
    original = (definition.extensions or {}).get(_ORIGINAL)
    return None if original is None else original[0]


class _Abandoned(Exception):
    """The field deciding an operation was cancelled before it decided (its siblings decide)."""


def _interface_requirement(interface: GraphQLInterfaceType, name: str) -> Requirement:
    definition = interface.fields.get(name)
    if definition is None:
        return Requirement()
    return _type_requirement(interface) & requirement_of(_directives(definition))


Denial = Callable[[], BFFError]
Decisions = dict[tuple[int, str], Denial]


def _decided(context: Any, operation: OperationDefinitionNode) -> Decisions | None:
    slots = getattr(context, "_authz", None)
    if slots is None:
        return None
    entry = slots.get(id(operation))
    if entry is None or entry[0] is not operation or not isinstance(entry[1], dict):
        return None
    decided: Decisions = entry[1]
    return decided


@dataclass(slots=True)
class _Guarded:
    parent: str
    nodes: list[FieldNode]
    definition: GraphQLField
    requirement: Requirement


@dataclass(slots=True)
class _Walk:
    operation: OperationDefinitionNode
    guarded: list[_Guarded]
    has_policies: bool
    #: the decisions by (authenticated, scopes), for walks without policies
    decisions: dict[tuple[bool, frozenset[str]], Decisions] = field(default_factory=dict)


async def _user(context: Any) -> User | None:
    user = getattr(context, "user", None)
    if user is None:
        return None
    result = user()
    found = await result if inspect.isawaitable(result) else result
    return found if isinstance(found, User) else None


def _unauthenticated() -> BFFError:
    return Unauthenticated()


def _forbidden() -> BFFError:
    return Forbidden()


async def _decide(
    walk: _Walk, user: User | None, variable_values: Any, policies: Mapping[str, PolicyFunction]
) -> Decisions:
    decisions: Decisions = {}
    pending: list[tuple[_Guarded, asyncio.Future[Denial | None]]] = []
    for item in walk.guarded:
        denial: Denial | None = None
        if user is None:
            denial = _unauthenticated
        elif not item.requirement.scopes_allow(user.scopes):
            denial = _forbidden
        elif item.requirement.policies:
            pending.append((item, asyncio.ensure_future(_policies(item, user, variable_values, policies))))
            continue
        if denial is not None:
            _deny(decisions, item, denial)
    if pending:
        await asyncio.wait([future for _, future in pending])
        for item, future in pending:
            denial = future.result()
            if denial is not None:
                _deny(decisions, item, denial)
    return decisions


def _deny(decisions: Decisions, item: _Guarded, denial: Denial) -> None:
    for node in item.nodes:
        decisions[(id(node), item.parent)] = denial


async def _policies(
    item: _Guarded, user: User, variable_values: Any, policies: Mapping[str, PolicyFunction]
) -> Denial | None:
    """None when some alternative of every ``@policy`` holds; the denial otherwise. A policy that
    fails (raises anything but `StepUpRequired`) denies: closed, and logged without the user."""
    if isinstance(variable_values, Mapping):  # Strawberry's executor hands resolvers the coerced dict
        variable_values = VariableValues({}, dict(variable_values))
    try:
        arguments = get_argument_values(item.definition, item.nodes[0], variable_values)
    except Exception:  # bad arguments fail the field on their own; no policy sees them
        arguments = {}
    results: dict[str, bool] = {}
    step_up: StepUpRequired | None = None
    for alternatives in item.requirement.policies:
        allowed = False
        for group in alternatives:
            for name in sorted(group):
                if name not in results:
                    try:
                        value = policies[name](user, arguments)
                        results[name] = bool(await value if inspect.isawaitable(value) else value)
                    except StepUpRequired as exc:
                        results[name], step_up = False, step_up or exc
                    except Exception:
                        log.warning("policy %r failed; the field is denied", name, exc_info=True)
                        results[name] = False
                if not results[name]:
                    break
            else:
                allowed = True
                break
        if not allowed:
            if step_up is not None:
                asked = step_up
                return lambda: StepUpRequired(asked.message, acr_values=asked.acr_values, max_age=asked.max_age)
            return _forbidden
    return None


def _walk(
    schema: GraphQLSchema, operation: OperationDefinitionNode, fragments: Mapping[str, FragmentDefinitionNode]
) -> list[_Guarded]:
    """Every guarded selection of ``operation``, under every type it may be selected on."""
    root = schema.get_root_type(operation.operation)
    found: list[_Guarded] = []
    if root is None:
        return found
    stack: list[tuple[GraphQLObjectType, list[SelectionSetNode]]] = [(root, [operation.selection_set])]
    seen: set[tuple[str, tuple[int, ...]]] = set()
    while stack:
        parent, selection_sets = stack.pop()
        marker = (parent.name, tuple(id(s) for s in selection_sets))
        if marker in seen:
            continue
        seen.add(marker)
        groups: dict[str, list[FieldNode]] = {}
        for selection_set in selection_sets:
            _collect(schema, parent, selection_set, fragments, groups, set())
        for nodes in groups.values():
            name = nodes[0].name.value
            definition = parent.fields.get(name)
            if definition is None:
                continue  # __typename and introspection
            requirement = (definition.extensions or {}).get(GUARD)
            if requirement:
                found.append(_Guarded(parent.name, nodes, definition, requirement))
            subs = [node.selection_set for node in nodes if node.selection_set is not None]
            if not subs:
                continue
            named = get_named_type(definition.type)
            if is_abstract_type(named):
                types = schema.get_possible_types(named)
            else:
                types = [named] if is_object_type(named) else []
            stack.extend((object_type, subs) for object_type in types)
    return found


def _collect(
    schema: GraphQLSchema,
    parent: GraphQLObjectType,
    selection_set: SelectionSetNode,
    fragments: Mapping[str, FragmentDefinitionNode],
    groups: dict[str, list[FieldNode]],
    visited: set[str],
) -> None:
    for selection in selection_set.selections:
        if isinstance(selection, FieldNode):
            key = selection.alias.value if selection.alias else selection.name.value
            groups.setdefault(key, []).append(selection)
        elif isinstance(selection, InlineFragmentNode):
            if _applies(schema, selection.type_condition, parent):
                _collect(schema, parent, selection.selection_set, fragments, groups, visited)
        elif isinstance(selection, FragmentSpreadNode):
            name = selection.name.value
            fragment = fragments.get(name)
            if fragment is None or name in visited:
                continue
            visited.add(name)
            if _applies(schema, fragment.type_condition, parent):
                _collect(schema, parent, fragment.selection_set, fragments, groups, visited)


def _applies(schema: GraphQLSchema, condition: Any, parent: GraphQLObjectType) -> bool:
    if condition is None:
        return True
    type_ = schema.get_type(condition.name.value)
    if type_ is parent:
        return True
    return is_abstract_type(type_) and schema.is_sub_type(type_, parent)
