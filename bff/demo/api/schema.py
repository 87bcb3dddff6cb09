"""The demo schema: the demo's root types through the public `build_schema`, like any team's."""

from __future__ import annotations

from bff import build_schema
from bff.demo.api.live import Subscription
from bff.demo.api.types import POLICIES, Mutation, Query

schema = build_schema(query=Query, mutation=Mutation, subscription=Subscription, policies=POLICIES)
