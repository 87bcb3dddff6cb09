"""The one place where exceptions become GraphQL errors with an ``extensions.code``.

`bff.errors` classes carry their code and public message; GraphQL's own parse and validation
errors get GRAPHQL_PARSE_FAILED / GRAPHQL_VALIDATION_FAILED; anything else is masked as
"Internal server error" and logged with the request id (never shown to the client).
"""

from __future__ import annotations

import logging
from typing import Any

from graphql.error import GraphQLError
from strawberry import Schema
from strawberry.extensions import MaskErrors
from strawberry.types import ExecutionContext

from bff.errors import BFFError

log = logging.getLogger("bff.graphql")

INTERNAL_MESSAGE = "Internal server error"


def _request_id(execution_context: ExecutionContext | None) -> str | None:
    context = getattr(execution_context, "context", None)
    return getattr(context, "request_id", None)


def _is_parse_failure(error: GraphQLError, execution_context: ExecutionContext | None) -> bool:
    return (
        execution_context is not None
        and execution_context.graphql_document is None
        and (error.message.startswith("Syntax Error") or error.original_error is not None)
    )


def to_graphql_error(error: GraphQLError, execution_context: ExecutionContext | None = None) -> GraphQLError:
    """The client-facing version of ``error``."""
    original = error.original_error
    extensions: dict[str, Any]
    if isinstance(original, BFFError):
        message, extensions = original.message, original.extensions()
    elif _is_parse_failure(error, execution_context):
        # graphql-core may raise a bare IndexError on truncated documents: still a syntax error.
        message = error.message if error.original_error is None else "Syntax Error: unreadable document"
        extensions = {"code": "GRAPHQL_PARSE_FAILED"}
    elif original is None:
        message = error.message
        extensions = {"code": (error.extensions or {}).get("code", "GRAPHQL_VALIDATION_FAILED")}
    else:
        message, extensions = INTERNAL_MESSAGE, {"code": "INTERNAL_SERVER_ERROR"}
    request_id = _request_id(execution_context)
    if request_id:
        extensions["requestId"] = request_id
    return GraphQLError(
        message=message,
        nodes=error.nodes,
        source=error.source,
        positions=error.positions,
        path=error.path,
        original_error=None,
        extensions=extensions,
    )


class ErrorCodes(MaskErrors):
    """Strawberry's MaskErrors, rewriting every error through `to_graphql_error`."""

    def _process_errors(self, errors: list[GraphQLError]) -> list[GraphQLError]:
        return [to_graphql_error(error, self.execution_context) for error in errors]


class BFFSchema(Schema):
    """Logs expected errors in one line and unexpected ones with their traceback and request id."""

    def process_errors(self, errors: list[GraphQLError], execution_context: ExecutionContext | None = None) -> None:
        request_id = _request_id(execution_context)
        for error in errors:
            original = error.original_error
            if original is None or isinstance(original, BFFError) or _is_parse_failure(error, execution_context):
                log.info(
                    "graphql error: %s",
                    original.code if isinstance(original, BFFError) else error.message[:200],
                    extra={"request_id": request_id, "path": error.path},
                )
            else:
                log.error(
                    "unexpected error in a resolver",
                    exc_info=original,
                    extra={"request_id": request_id, "path": error.path},
                )
