"""The team's BFF built only from its services' own descriptions: no Strawberry type, no resolver.

    tasks.yaml          the tasks service's OpenAPI document
    directory.graphql   the directory's SDL
    links.toml          Task.assignee <- directory.people, batched
    schema.py           schema = build_schema(sources=[...])

The same with no Python at all: ``BFF_UPSTREAMS__TASKS__OPENAPI=team_declarative/tasks.yaml``,
``BFF_UPSTREAMS__DIRECTORY__GRAPHQL=team_declarative/directory.graphql`` and
``BFF_SOURCE_LINKS=team_declarative/links.toml`` (BFF_SCHEMA unset)."""
