"""The Strawberry GraphQL router on FastAPI, with our per-request context."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from fastapi import Request, Response
from fastapi.responses import HTMLResponse
from strawberry.fastapi import GraphQLRouter

from bff.graphql.context import Context
from bff.resources import Resources

_RESPONSE_KEY = "bff.graphql.response"


async def get_context(request: Request, response: Response) -> Context:
    """Cheap: reads the cookie and verifies its MAC; the store is read only if a resolver asks."""
    resources: Resources = request.state.resources
    session_id, from_cookie = resources.session_credentials(request.headers.get("authorization"), request.cookies)
    # Strawberry's FastAPI router keeps the sub-response on the router instance, shared between
    # concurrent requests; we keep it on the request instead (see BFFGraphQLRouter).
    request.scope[_RESPONSE_KEY] = response
    return Context(
        resources,
        session_id,
        cookie=resources.session_cookie if from_cookie else None,
        request_id=getattr(request.state, "request_id", ""),
    )


GRAPHIQL_HTML = (Path(__file__).parent / "graphiql.html").read_text()
STATIC_DIR = Path(__file__).parent / "static"


class BFFGraphQLRouter(GraphQLRouter[Context, None]):
    """GraphiQL is ours (served offline from `STATIC_DIR`, with sign-in controls and the CSRF
    header); everything else is Strawberry's."""

    def __init__(self, schema: Any, *, graphiql: bool, **kwargs: Any) -> None:
        super().__init__(
            schema,
            graphql_ide="graphiql" if graphiql else None,
            allow_queries_via_get=True,
            context_getter=get_context,
            **kwargs,
        )

    async def render_graphql_ide(self, request: Request) -> HTMLResponse:
        return HTMLResponse(GRAPHIQL_HTML, headers={"Cache-Control": "no-store"})

    async def get_sub_response(self, request: Request) -> Response:
        response: Response = request.scope[_RESPONSE_KEY]
        return response
