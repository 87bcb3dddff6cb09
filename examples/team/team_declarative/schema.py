"""schema = the tasks service's OpenAPI document + the directory's SDL + one link."""

from pathlib import Path

from bff import build_schema
from bff.sources import graphql, openapi, read_links

HERE = Path(__file__).parent

schema = build_schema(
    sources=[
        openapi("tasks", str(HERE / "tasks.yaml")),
        graphql("directory", str(HERE / "directory.graphql")),
        *read_links(str(HERE / "links.toml")),
    ]
)
