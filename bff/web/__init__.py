"""HTTP surface outside GraphQL: /auth/*, health and metrics, and the CSRF / Origin middleware."""
