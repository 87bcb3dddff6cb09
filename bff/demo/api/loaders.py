"""Per-request DataLoaders: every product of one GraphQL request in one catalog call."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from strawberry.dataloader import DataLoader

from bff import Context, UpstreamError

PRODUCTS_BY_IDS = """
query ProductsByIds($ids: [ID!]!) { productsByIds(ids: $ids) { id name priceCents } }
"""


def product_loader(context: Context) -> DataLoader[str, dict[str, Any] | None]:
    async def load(ids: Sequence[str]) -> list[dict[str, Any] | None]:
        data = await context.graphql("catalog").execute(PRODUCTS_BY_IDS, {"ids": list(ids)})
        products = data.get("productsByIds")
        if not isinstance(products, list) or len(products) != len(ids):
            raise UpstreamError("catalog", "Upstream 'catalog' answered a malformed product list")
        return products

    # max_batch_size bounds one catalog call; a viewer's products still go out in one request
    # unless they exceed it.
    return DataLoader(load_fn=load, max_batch_size=500)
