"""The declarative variant (team_declarative): the same two fake upstreams, no resolver written by
hand, the same answers and the same calls as the hand-written team_bff."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest
from team_fakes import directory_app, tasks_app

from bff.testing import RunningBFF, running_bff

SCHEMA = "team_declarative.schema:schema"
TASKS = '{ tasks(assignee: "alice") { title done assignee { name team } } }'


@pytest.fixture
async def team() -> AsyncIterator[tuple[RunningBFF, Any, Any]]:
    tasks, directory = tasks_app(), directory_app()
    async with running_bff(SCHEMA, upstreams={"tasks": tasks, "directory": (directory, "/graphql")}) as bff:
        yield bff, tasks, directory


async def test_tasks_with_their_assignees_in_one_directory_call(team: tuple[RunningBFF, Any, Any]) -> None:
    bff, _, directory = team
    async with bff.client(user="alice") as client:
        body = await client.graphql(TASKS)
    alice = {"name": "Alice Example", "team": "Platform"}
    assert body == {
        "data": {
            "tasks": [
                {"title": "Review the release notes", "done": False, "assignee": alice},
                {"title": "Rotate the staging secrets", "done": True, "assignee": alice},
            ]
        }
    }
    assert directory.state.calls == [["alice"]]  # every assignee of the request in one call


async def test_the_mutation_and_a_signed_out_client(team: tuple[RunningBFF, Any, Any]) -> None:
    bff, tasks, _ = team
    async with bff.client(user="bob") as client:
        body = await client.graphql('mutation { addTask(input: {title: "Ship it"}) { title done assignee { name } } }')
    assert body == {"data": {"addTask": {"title": "Ship it", "done": False, "assignee": {"name": "Bob Example"}}}}
    assert [post["title"] for post in tasks.state.posts] == ["Ship it"]
    async with bff.client() as client:
        anonymous = await client.graphql(TASKS)
    assert anonymous["data"] == {"tasks": None}
    assert anonymous["errors"][0]["extensions"]["code"] == "UNAUTHENTICATED"
