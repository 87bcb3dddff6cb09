"""The team's BFF, tested with bff.testing only: the real app signed in through the dev IdP, its
fake upstreams on real ports, respx where an upstream must misbehave."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest
from team_fakes import directory_app, tasks_app

from bff.testing import RunningBFF, mock_upstream, running_bff

SCHEMA = "team_bff.schema:schema"
ME = "{ me { person { name team } tasks { title done assignee { name } } } }"
ADD = "mutation Add($title: String!) { addTask(title: $title) { id title done assignee { id } } }"


@pytest.fixture
async def team() -> AsyncIterator[tuple[RunningBFF, Any, Any]]:
    tasks, directory = tasks_app(), directory_app()
    async with running_bff(SCHEMA, upstreams={"tasks": tasks, "directory": (directory, "/graphql")}) as bff:
        yield bff, tasks, directory


async def test_signed_in_query(team: tuple[RunningBFF, Any, Any]) -> None:
    bff, _, directory = team
    async with bff.client(user="alice") as client:
        body = await client.graphql(ME)
    assert body == {
        "data": {
            "me": {
                "person": {"name": "Alice Example", "team": "Platform"},
                "tasks": [
                    {"title": "Review the release notes", "done": False, "assignee": {"name": "Alice Example"}},
                    {"title": "Rotate the staging secrets", "done": True, "assignee": {"name": "Alice Example"}},
                ],
            }
        }
    }
    assert directory.state.calls == [["alice"]]  # every person of the request in one call


async def test_signed_out(team: tuple[RunningBFF, Any, Any]) -> None:
    bff, _, _ = team
    async with bff.client() as client:
        body = await client.graphql(ME)
    assert body["data"] == {"me": None}
    assert body["errors"][0]["extensions"]["code"] == "UNAUTHENTICATED"


async def test_add_task(team: tuple[RunningBFF, Any, Any]) -> None:
    bff, tasks, _ = team
    async with bff.client(user="dana") as client:
        added = await client.graphql(ADD, {"title": "  Write the tutorial  "})
        assert added["data"]["addTask"]["title"] == "Write the tutorial"
        assert added["data"]["addTask"]["assignee"] == {"id": "dana"}
        mine = await client.graphql("{ me { tasks { title } person { team } } }")
        refused = await client.graphql(ADD, {"title": ""})
    assert mine["data"]["me"] == {"tasks": [{"title": "Write the tutorial"}], "person": {"team": "Guests"}}
    assert refused["errors"][0]["extensions"]["code"] == "BAD_USER_INPUT"
    assert len(tasks.state.posts) == 1


async def test_a_failing_directory_fails_only_its_fields() -> None:
    directory = mock_upstream("http://directory.test")
    down = directory.post("/graphql").respond(503)
    upstreams = {"tasks": tasks_app(), "directory": (directory, "/graphql")}
    async with running_bff(SCHEMA, upstreams=upstreams) as bff, bff.client(user="bob") as client:
        body = await client.graphql("{ me { person { name } tasks { title } } }")
    assert body["data"] == {"me": {"person": None, "tasks": [{"title": "Draft the onboarding page"}]}}
    (error,) = body["errors"]
    assert error["path"] == ["me", "person"]
    assert error["extensions"]["code"] == "UPSTREAM_ERROR"
    assert error["extensions"]["upstream"] == "directory"
    assert down.call_count == 1


async def test_production_hides_the_schema() -> None:
    async with running_bff(SCHEMA, env="production") as bff, bff.client() as client:
        body = await client.graphql("{ __schema { types { name } } }")
    assert "introspection" in body["errors"][0]["message"].lower()
