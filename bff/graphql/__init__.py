"""Ties sessions, auth and upstreams to Strawberry: context, error mapping, extensions, router."""
