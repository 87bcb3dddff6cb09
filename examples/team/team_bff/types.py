"""The team's GraphQL types. Resolvers are thin: they call the upstreams through the context,
which adds the signed-in user's fresh token and turns failures into UPSTREAM_* errors."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import strawberry
from strawberry.dataloader import DataLoader
from strawberry.types import Info

from bff import Context, QueryRejected, Unauthenticated, UpstreamError

PEOPLE = "query People($ids: [ID!]!) { people(ids: $ids) { id name team } }"


def people_loader(context: Context) -> DataLoader[str, dict[str, Any] | None]:
    """Every person one request needs, in one call to the directory (a GraphQL upstream)."""

    async def load(ids: Sequence[str]) -> list[dict[str, Any] | None]:
        data = await context.graphql("directory").execute(PEOPLE, {"ids": list(ids)})
        people = data.get("people")
        if not isinstance(people, list) or len(people) != len(ids):
            raise UpstreamError("directory", "Upstream 'directory' answered a malformed list")
        return people

    return DataLoader(load_fn=load)


@strawberry.type
class Person:
    id: strawberry.ID
    name: str
    team: str


async def _person(info: Info[Context, None], person_id: str) -> Person | None:
    data = await info.context.loader("people", people_loader).load(person_id)
    if data is None:
        return None
    return Person(id=strawberry.ID(data["id"]), name=data["name"], team=data["team"])


@strawberry.type
class Task:
    id: strawberry.ID
    title: str
    done: bool
    assignee_id: strawberry.Private[str]

    @strawberry.field
    async def assignee(self, info: Info[Context, None]) -> Person | None:
        return await _person(info, self.assignee_id)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Task:
        try:
            return cls(
                id=strawberry.ID(str(data["id"])),
                title=str(data["title"]),
                done=bool(data["done"]),
                assignee_id=str(data["assignee"]),
            )
        except (KeyError, TypeError):
            raise UpstreamError("tasks", "Upstream 'tasks' answered an unexpected shape") from None


@strawberry.type
class Me:
    id: strawberry.ID

    @strawberry.field
    async def person(self, info: Info[Context, None]) -> Person | None:
        return await _person(info, str(self.id))

    @strawberry.field
    async def tasks(self, info: Info[Context, None]) -> list[Task]:
        rows = await info.context.rest("tasks").get_json("/tasks", {"assignee": str(self.id)})
        if not isinstance(rows, list):
            raise UpstreamError("tasks", "Upstream 'tasks' answered an unexpected shape")
        return [Task.from_json(row) for row in rows]


@strawberry.type
class Query:
    @strawberry.field(description="The signed-in user; null with UNAUTHENTICATED when signed out.")
    async def me(self, info: Info[Context, None]) -> Me | None:
        user = await info.context.user()
        if user is None:
            raise Unauthenticated()
        return Me(id=strawberry.ID(user.sub))


@strawberry.type
class Mutation:
    @strawberry.mutation(description="A new task for the signed-in user. Sent once (a POST is never retried).")
    async def add_task(self, info: Info[Context, None], title: str) -> Task | None:
        title = title.strip()
        if not 0 < len(title) <= 200:
            raise QueryRejected("a title has 1 to 200 characters")
        created = await info.context.rest("tasks").post_json("/tasks", {"title": title})
        return Task.from_json(created)
