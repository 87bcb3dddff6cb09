"""The demo API (viewer, orders, products; one mutation): one user of the public API, served
when no other schema is named (``BFF_SCHEMA=bff.demo.api:schema`` is the default)."""

from bff.demo.api.schema import schema

__all__ = ["schema"]
