"""Compatibility module of 0.1: the demo API's types live in `bff.demo.api.types`."""

from bff.demo.api.types import Mutation, Order, OrderItem, OrderLineInput, Product, Query, User

__all__ = ["Mutation", "Order", "OrderItem", "OrderLineInput", "Product", "Query", "User"]
