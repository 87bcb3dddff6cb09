"""The demo schema with ``@requiresScopes(scopes: [["orders:read"]])`` on ``viewer`` (issue 27: the
directive's cost on the benchmark's viewer query). Served with ``BFF_SCHEMA=scoped:schema``, this
folder on ``PYTHONPATH`` and ``orders:read`` among ``BFF_OIDC_SCOPES`` (the dev IdP grants it to alice):

    python scripts/bench_cpu.py --variant "before@caf5694:" --variant "now:" \\
        --variant "scoped:BFF_SCHEMA=scoped:schema,PYTHONPATH=$PWD/scripts/benchapi,BFF_OIDC_SCOPES=openid profile email offline_access orders:read"
"""

from __future__ import annotations

import strawberry
from strawberry.types import Info

from bff import Context, RequiresScopes, build_schema
from bff.demo.api.live import Subscription
from bff.demo.api.types import POLICIES, Mutation, Query as DemoQuery, User


@strawberry.type
class Query(DemoQuery):
    @strawberry.field(directives=[RequiresScopes(scopes=[["orders:read"]])])  # type: ignore[untyped-decorator]
    async def viewer(self, info: Info[Context, None]) -> User | None:
        return User.from_json(await info.context.rest("accounts").get_json("/me"))


schema = build_schema(query=Query, mutation=Mutation, subscription=Subscription, policies=POLICIES)
