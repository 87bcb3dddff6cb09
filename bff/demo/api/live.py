"""The demo's subscription: an order's status, fed by the accounts service's event stream."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any
from urllib.parse import quote

import strawberry
from strawberry.types import Info

from bff import Context
from bff.demo.api.types import SHAPE_ERRORS, shape_error


@strawberry.type
class OrderStatus:
    order_id: strawberry.ID
    status: str

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> OrderStatus:
        try:
            return cls(order_id=strawberry.ID(str(data["orderId"])), status=str(data["status"]))
        except SHAPE_ERRORS:
            raise shape_error("accounts") from None


@strawberry.type
class Subscription:
    @strawberry.subscription
    async def order_status_changed(
        self, info: Info[Context, None], order_id: strawberry.ID
    ) -> AsyncIterator[OrderStatus]:
        """The order's status now, then each time it changes (the accounts service's event stream)."""
        path = f"/orders/{quote(str(order_id), safe='')}/events"
        async for event in info.context.events("accounts", path):
            if event.event == "status":
                yield OrderStatus.from_json(event.data)
