"""Before execution: a request's document parsed (cached), its operation selected, its limits
enforced and validation cached, and persisted documents. Imports nothing from `execution` or
`transport`."""
