"""What `bff serve --schema team_bff.schema:schema` (or BFF_SCHEMA) serves."""

from bff import build_schema
from team_bff.types import Mutation, Query

schema = build_schema(query=Query, mutation=Mutation)
