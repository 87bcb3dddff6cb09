"""The demo graph with no resolver written by hand (`bff demo --declarative`): the accounts service's
OpenAPI document and the catalog's SDL, mounted as declarative sources, and two links that give the
viewer query the calls the hand-written demo API makes (one ``/me``, one orders call, one catalog
batch for every product of every order)::

    { me { id name orders { id placedAt items { quantity product { id name priceCents } } } } }
"""

from __future__ import annotations

from typing import Any

from bff import build_schema
from bff.demo.upstreams import ACCOUNTS_OPENAPI, CATALOG_SDL
from bff.sources import graphql, link, openapi

SOURCES: list[Any] = [
    openapi("accounts", ACCOUNTS_OPENAPI),
    graphql("catalog", CATALOG_SDL),
    # a user's orders: GET /users/{id}/orders with the user's id
    link("User.orders", "accounts.userOrders", userId="$.id", limit=10),
    # every product of every order of the answer in one productsByIds call, matched by id
    link("OrderItem.product", "catalog.productsByIds", ids="[$.productId]", key="id"),
]

schema = build_schema(sources=SOURCES)
