"""A real remote GraphQL service for the source tests: a Strawberry schema served over Starlette at
``/graphql``, recording every request it receives (query text, variables, Authorization header).

Its schema has what a remote source must carry: objects, an interface implemented by another
interface and two objects, a union, an enum (one value deprecated), input types (one with a
default), custom scalars (one whose values are JSON objects), lists, nullable and non-null fields,
arguments with defaults, fields that fail (a nullable one, and a non-null one inside a list of
nullable items), a mutation, a subscription and an executable directive of its own (which a BFF
does not mount)."""

from __future__ import annotations

import base64
import enum
import json
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Annotated, Any, NewType

import strawberry
from graphql import GraphQLError
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route
from strawberry.directive import DirectiveLocation
from strawberry.schema.config import StrawberryConfig
from strawberry.types import ExecutionContext

Money = NewType("Money", object)
Url = NewType("Url", str)


@dataclass
class Seen:
    query: str
    variables: dict[str, Any]
    authorization: str | None


@dataclass
class Recorder:
    """Every request the service received."""

    seen: list[Seen] = field(default_factory=list)

    @property
    def count(self) -> int:
        return len(self.seen)

    def clear(self) -> None:
        self.seen.clear()


@strawberry.enum(description="What a product is")
class Category(enum.Enum):
    BOOK = "BOOK"
    MUSIC = "MUSIC"
    GAME = strawberry.enum_value("GAME", deprecation_reason="no more games")


@strawberry.interface(description="Anything with an id")
class Node:
    id: strawberry.ID


@strawberry.interface
class Item(Node):
    name: str


@strawberry.type
class User:
    name: str
    email: str | None = None


@strawberry.type
class Review(Node):
    stars: int
    body: str | None
    author: User | None


@strawberry.type(description="Something to buy")
class Product(Item):
    price: Money
    category: Category
    tags: list[str]
    homepage: Url | None

    @strawberry.field(description="The newest reviews first")  # type: ignore[untyped-decorator]
    def reviews(
        self, first: int = 10, min_stars: Annotated[int | None, strawberry.argument(description="at least")] = None
    ) -> list[Review]:
        found = [r for r in REVIEWS if r.id.startswith(f"r{self.id}") and (min_stars is None or r.stars >= min_stars)]
        return found[:first]

    @strawberry.field
    def related(self) -> list[Product | None]:
        return [PRODUCTS[i] for i in RELATED.get(str(self.id), [])]

    @strawberry.field
    def broken(self) -> str | None:
        raise ValueError(f"broken field of product {self.id}")

    @strawberry.field
    def broken_required(self) -> str:
        if self.id == "2":
            raise ValueError("product 2 cannot say")
        return f"fine {self.id}"


SearchResult = Annotated[Product | Review | User, strawberry.union("SearchResult")]


@strawberry.input
class ProductFilter:
    category: Category | None = None
    max_price: int = 100
    tags: list[str] | None = None


@strawberry.input
class ReviewInput:
    product_id: strawberry.ID
    stars: int
    body: str | None = None


PRODUCTS = {
    "1": Product(
        id=strawberry.ID("1"),
        name="Dune",
        price=Money({"amount": 1250, "currency": "EUR"}),
        category=Category.BOOK,
        tags=["scifi", "classic"],
        homepage=Url("https://dune.example"),
    ),
    "2": Product(
        id=strawberry.ID("2"),
        name="Kind of Blue",
        price=Money({"amount": 999, "currency": "EUR"}),
        category=Category.MUSIC,
        tags=[],
        homepage=None,
    ),
    "3": Product(
        id=strawberry.ID("3"),
        name="Tetris",
        price=Money({"amount": 500, "currency": "USD"}),
        category=Category.GAME,
        tags=["puzzle"],
        homepage=None,
    ),
}
RELATED = {"1": ["2", "3"], "3": ["1"]}
ALICE = User(name="Alice", email="alice@example.com")
REVIEWS = [
    Review(id=strawberry.ID("r1-1"), stars=5, body="A masterpiece", author=ALICE),
    Review(id=strawberry.ID("r1-2"), stars=3, body=None, author=None),
    Review(id=strawberry.ID("r2-1"), stars=4, body="Smooth", author=User(name="Bob")),
]


def _subject(authorization: str | None) -> str | None:
    """The ``sub`` of a bearer JWT (not verified: this service only reports who called)."""
    if not authorization or not authorization.startswith("Bearer "):
        return None
    try:
        payload = authorization.removeprefix("Bearer ").split(".")[1]
        claims = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    except (IndexError, ValueError):
        return None
    sub = claims.get("sub")
    return str(sub) if sub else None


@strawberry.type
class Query:
    @strawberry.field
    def product(self, id: strawberry.ID) -> Product | None:
        return PRODUCTS.get(str(id))

    @strawberry.field(description="Products, filtered")  # type: ignore[untyped-decorator]
    def products(self, filter: ProductFilter | None = None, first: int = 5, order: list[str] = ["id"]) -> list[Product]:
        found = sorted(PRODUCTS.values(), key=lambda p: [getattr(p, key) for key in order])
        if filter is not None:
            found = [p for p in found if filter.category is None or p.category == filter.category]
            found = [p for p in found if p.price["amount"] <= filter.max_price * 100]  # type: ignore[index]
            if filter.tags:
                found = [p for p in found if set(filter.tags) & set(p.tags)]
        return found[:first]

    @strawberry.field
    def search(self, text: str) -> list[SearchResult]:
        text = text.lower()
        out: list[Product | Review | User] = [p for p in PRODUCTS.values() if text in p.name.lower()]
        out += [r for r in REVIEWS if r.body and text in r.body.lower()]
        out += [u for u in (ALICE,) if text in u.name.lower()]
        return out

    @strawberry.field
    def node(self, id: strawberry.ID) -> Node | None:
        return PRODUCTS.get(str(id)) or next((r for r in REVIEWS if r.id == id), None)

    @strawberry.field
    def viewer(self, info: strawberry.Info) -> User | None:
        sub = _subject(info.context["authorization"])
        return None if sub is None else User(name=sub)

    @strawberry.field
    def failing(self) -> str | None:
        raise GraphQLError("the service is out of failing")


@strawberry.type
class Mutation:
    @strawberry.mutation
    def add_review(self, input: ReviewInput) -> Review | None:
        if str(input.product_id) not in PRODUCTS:
            raise ValueError(f"no product {input.product_id}")
        review = Review(id=strawberry.ID(f"r{input.product_id}-new"), stars=input.stars, body=input.body, author=None)
        return review


@strawberry.type
class Subscription:
    @strawberry.subscription
    async def reviewed(self) -> AsyncIterator[Review]:
        yield REVIEWS[0]


@strawberry.directive(locations=[DirectiveLocation.FIELD])
def shout(value: str) -> str:
    return value.upper()


class _Quiet(strawberry.Schema):
    """No error logs: the failing fields fail on purpose."""

    def process_errors(self, errors: list[GraphQLError], execution_context: ExecutionContext | None = None) -> None:
        return None


def _money(value: Any) -> Any:
    return value


SCHEMA = _Quiet(
    query=Query,
    mutation=Mutation,
    subscription=Subscription,
    directives=[shout],
    types=[Review, Product],
    config=StrawberryConfig(
        scalar_map={
            Money: strawberry.scalar(name="Money", description="An amount of a currency", serialize=_money),
            Url: strawberry.scalar(name="Url", specified_by_url="https://url.spec.whatwg.org/"),
        }
    ),
)


def remote_app(recorder: Recorder) -> Starlette:
    """The service at ``/graphql``: POST ``{query, variables}``, answered ``{data, errors}``."""

    async def endpoint(request: Request) -> Response:
        body = json.loads(await request.body())
        query, variables = body["query"], body.get("variables") or {}
        authorization = request.headers.get("authorization")
        recorder.seen.append(Seen(query, variables, authorization))
        result = await SCHEMA.execute(query, variable_values=variables, context_value={"authorization": authorization})
        payload: dict[str, Any] = {"data": result.data}
        if result.errors:
            payload["errors"] = [error.formatted for error in result.errors]
        return JSONResponse(payload)

    return Starlette(routes=[Route("/graphql", endpoint, methods=["POST"])])


#: a service a team might have that no Python class describes: a custom root type name, a lowercase
#: type, fields named like Python keywords and builtins, enum values Python cannot name, a
#: ``@oneOf`` input, a one-member union, a self-referencing input, scalars named DateTime and Any
ODD_SDL = '''
schema { query: Root mutation: Change }

"""A thing with "quotes" and a description longer than the line length of the module written for it, on and on"""
type thing implements Node {
  id: ID!
  from: String
  class(self: Int, value: Int, cls: Int): [[Int!]]
  is_type_of: Boolean
  isTypeOf: Boolean
  kind: Kind!
  json: JSON
  when: DateTime
  list: [String!]!
  any: Any
  root: Root
}
type Other implements Node { id: ID! other: String }
interface Node { id: ID! }
enum Kind { None name value _private lower mro True }
scalar JSON
scalar DateTime
scalar Any
union One = Other
input In @oneOf { a: Int b: String }
input Self { next: Self k: Kind = None l: [Int] = [1] n: Int! = 3 }
type Root {
  thing(id: ID! = "x", k: Kind = name, s: Self): thing
  node(id: ID!): Node
  one: One
  root: Root
  strawberry: String
  enum: String
}
type Change { do(in: In!): Boolean }
'''


def _thing(_info: Any, id: str = "x", k: str = "name", s: dict[str, Any] | None = None) -> dict[str, Any]:
    return {
        "__typename": "thing",
        "id": id,
        "from": f"s={json.dumps(s, sort_keys=True)}",
        "class": [[1, 2], None],
        "is_type_of": True,
        "isTypeOf": False,
        "kind": k,
        "json": {"a": [1, {"b": None}], "k": k},
        "when": "2024-01-02T03:04:05Z",
        "list": ["x", "y"],
        "any": 12.5,
    }


ODD_ROOT: dict[str, Any] = {
    "thing": _thing,
    "node": lambda _info, id: {"__typename": "Other", "id": id, "other": f"other {id}"},
    "one": lambda _info: {"__typename": "Other", "id": "1", "other": "uno"},
    "strawberry": "berry",
    "enum": "e",
}
ODD_CHANGE: dict[str, Any] = {"do": lambda _info, **given: "a" in given["in"]}


def odd_app(recorder: Recorder) -> Starlette:
    """A graphql-core service of `ODD_SDL` at ``/graphql``."""
    from graphql import build_schema, graphql

    schema = build_schema(ODD_SDL)

    async def endpoint(request: Request) -> Response:
        body = json.loads(await request.body())
        query, variables = body["query"], body.get("variables") or {}
        recorder.seen.append(Seen(query, variables, request.headers.get("authorization")))
        is_mutation = query.lstrip().startswith("mutation")
        result = await graphql(
            schema, query, root_value=ODD_CHANGE if is_mutation else ODD_ROOT, variable_values=variables
        )
        payload: dict[str, Any] = {"data": result.data}
        if result.errors:
            payload["errors"] = [error.formatted for error in result.errors]
        return JSONResponse(payload)

    return Starlette(routes=[Route("/graphql", endpoint, methods=["POST"])])


#: a type the Query fields reach only through an interface (Relay's ``node`` is the usual case)
ZOO_SDL = """
interface Animal { name: String! }
type Dog implements Animal { name: String! barks: Boolean! }
type Cat implements Animal { name: String! lives: Int! }
type Query { animals: [Animal!]! cat: Cat }
"""
ZOO_ROOT: dict[str, Any] = {
    "animals": [{"__typename": "Dog", "name": "Rex", "barks": True}, {"__typename": "Cat", "name": "Tom", "lives": 9}],
    "cat": {"__typename": "Cat", "name": "Tom", "lives": 9},
}
