"""Compatibility names of 0.1: `build_schema` is `bff.build_schema`; the demo API moved to
`bff.demo.api`. Nothing new should import from here."""

from bff.graphql.schema import build_schema

__all__ = ["build_schema"]
