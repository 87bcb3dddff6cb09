"""A team's BFF: its own GraphQL types over its own upstreams, served by `bff`."""
