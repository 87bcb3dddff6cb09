"""Stand-ins for the team's two upstreams, for tests and the tutorial:

- ``tasks_app()``: REST, ``GET /tasks?assignee=<id>`` and ``POST /tasks {"title"}`` (201);
- ``directory_app()``: GraphQL at ``/graphql``, ``people(ids: [ID!]!): [Person]!``.

Both want the bearer token of a development IdP (`bff.testing.dev_token_subject`), as the real
services want a real one. Run them with ``uvicorn --factory team_fakes:tasks_app --port 8101``.
"""

from __future__ import annotations

import itertools
import json
from typing import Any

import strawberry
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from bff.testing import dev_token_subject

PEOPLE = {
    "alice": {"name": "Alice Example", "team": "Platform"},
    "bob": {"name": "Bob Example", "team": "Platform"},
    "carol": {"name": "Carol Example", "team": "Design"},
}


def _unauthorized() -> Response:
    return JSONResponse({"error": "invalid_token"}, status_code=401, headers={"WWW-Authenticate": "Bearer"})


def tasks_app() -> Starlette:
    ids = itertools.count(1)
    tasks: list[dict[str, Any]] = [
        {"id": f"t{next(ids)}", "title": "Review the release notes", "done": False, "assignee": "alice"},
        {"id": f"t{next(ids)}", "title": "Rotate the staging secrets", "done": True, "assignee": "alice"},
        {"id": f"t{next(ids)}", "title": "Draft the onboarding page", "done": False, "assignee": "bob"},
    ]
    posts: list[dict[str, Any]] = []

    async def listing(request: Request) -> Response:
        if await dev_token_subject(request.headers.get("authorization")) is None:
            return _unauthorized()
        assignee = request.query_params.get("assignee")
        return JSONResponse([t for t in tasks if assignee is None or t["assignee"] == assignee])

    async def create(request: Request) -> Response:
        sub = await dev_token_subject(request.headers.get("authorization"))
        if sub is None:
            return _unauthorized()
        try:
            title = str(json.loads(await request.body())["title"])
        except (ValueError, KeyError, TypeError):
            return JSONResponse({"error": 'expected {"title": "..."}'}, status_code=400)
        task = {"id": f"t{next(ids)}", "title": title, "done": False, "assignee": sub}
        tasks.append(task)
        posts.append(task)
        return JSONResponse(task, status_code=201)

    app = Starlette(routes=[Route("/tasks", listing, methods=["GET"]), Route("/tasks", create, methods=["POST"])])
    app.state.posts = posts
    return app


@strawberry.type
class Person:
    id: strawberry.ID
    name: str
    team: str


def _person(person_id: str) -> Person:
    known = PEOPLE.get(person_id, {"name": person_id.title(), "team": "Guests"})
    return Person(id=strawberry.ID(person_id), name=known["name"], team=known["team"])


@strawberry.type
class DirectoryQuery:
    @strawberry.field
    def people(self, ids: list[strawberry.ID]) -> list[Person | None]:
        return [_person(str(i)) for i in ids]


def directory_app() -> Starlette:
    schema = strawberry.Schema(query=DirectoryQuery)
    calls: list[list[str]] = []

    async def endpoint(request: Request) -> Response:
        if await dev_token_subject(request.headers.get("authorization")) is None:
            return _unauthorized()
        body = json.loads(await request.body())
        calls.append(list((body.get("variables") or {}).get("ids", [])))
        result = await schema.execute(body["query"], variable_values=body.get("variables"))
        payload: dict[str, Any] = {"data": result.data}
        if result.errors:
            payload["errors"] = [{"message": error.message} for error in result.errors]
        return JSONResponse(payload)

    app = Starlette(routes=[Route("/graphql", endpoint, methods=["POST"])])
    app.state.calls = calls
    return app
