"""Demo services: the accounts (REST) and catalog (GraphQL) upstreams, and a development IdP.

Apart from the product: only the CLI wires them in.
"""
