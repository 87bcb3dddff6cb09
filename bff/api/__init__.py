"""The demo API: types, thin resolvers and loaders. The part a user replaces with their own."""

from bff.api.schema import build_schema

__all__ = ["build_schema"]
