"""Authentication: the OIDC client facade, the refresh policy and its single flight."""
