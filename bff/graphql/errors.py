"""The one place where exceptions become GraphQL errors with an ``extensions.code``.

`bff.errors` classes carry their code and public message; GraphQL's own parse and validation
errors get GRAPHQL_PARSE_FAILED / GRAPHQL_VALIDATION_FAILED; anything else is masked as
"Internal server error" and logged with the request id (never shown to the client).
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from typing import Any

from graphql.error import GraphQLError
from strawberry import Schema
from strawberry.exceptions import MissingQueryError
from strawberry.schema.exceptions import CannotGetOperationTypeError, InvalidOperationTypeError
from strawberry.types import ExecutionContext

from bff.errors import BFFError, StepUpRequired, error_entry

log = logging.getLogger("bff.graphql")

INTERNAL_MESSAGE = "Internal server error"
#: Strawberry's refusals of a request that cannot run (an operationName naming nothing, several
#: operations and no name, no query, an operation type not allowed): the client's mistake, which
#: a stream reports through `BFFSchema.process_errors` (over HTTP the handler answers it first)
CLIENT_MISTAKES = (CannotGetOperationTypeError, InvalidOperationTypeError, MissingQueryError)


def _is_parse_failure(error: GraphQLError) -> bool:
    # graphql-core may raise a bare IndexError (or worse) on truncated documents: still a syntax error.
    return error.path is None and (
        error.message.startswith("Syntax Error")
        or isinstance(error.original_error, IndexError | ValueError | RecursionError)
    )


def to_graphql_error(error: GraphQLError, request_id: str | None = None) -> GraphQLError:
    """The client-facing version of ``error`` (idempotent: mapping twice changes nothing)."""
    original = error.original_error
    extensions: dict[str, Any]
    if isinstance(original, BFFError):
        message, extensions = original.message, original.extensions()
    elif _is_parse_failure(error):
        message = error.message if original is None else "Syntax Error: unreadable document"
        extensions = {"code": "GRAPHQL_PARSE_FAILED"}
    elif original is None:
        message = error.message
        extensions = dict(error.extensions or {})
        extensions.setdefault("code", "GRAPHQL_VALIDATION_FAILED")
    else:
        message, extensions = INTERNAL_MESSAGE, {"code": "INTERNAL_SERVER_ERROR"}
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


def complete_step_ups(errors: Iterable[GraphQLError], context: Any) -> None:
    """Fill in the ready login URL (`StepUpRequired.login`) of every ``STEP_UP_REQUIRED`` leaving
    a result: the upstream client or policy that raised it knows nothing of the request, the
    context does (the BFF's URL, the page to come back to). Runs where every result's errors pass
    with their context (`BFFSchema.process_errors`), before `to_graphql_error` maps them."""
    complete = getattr(context, "_step_up_login", None)
    if complete is None:
        return
    for error in errors:
        original = error.original_error
        if isinstance(original, StepUpRequired) and not original.login:
            original.login = complete(original)


def refusal_body(exc: BFFError) -> dict[str, Any]:
    """The body of a request refused before execution (`bff.errors.RequestRefused` and kin)."""
    return {"errors": [error_entry(exc.message, exc.code)]}


def result_body(result: Any, request_id: str | None = None, *, mapped: bool = False) -> tuple[dict[str, Any], bool]:
    """The response body of an execution result, over every transport (errors mapped by
    `to_graphql_error`), and whether the request failed before execution: a result whose errors
    all lack a path and that has no data has no ``data`` entry at all (GraphQL over HTTP).
    ``mapped``: the errors went through `to_graphql_error` already (`BFFSchema.execute` does)."""
    errors = getattr(result, "errors", None) or []
    data = getattr(result, "data", None)
    failed = data is None and bool(errors) and all(error.path is None for error in errors)
    body: dict[str, Any] = {} if failed else {"data": data}
    if errors:
        body["errors"] = [(error if mapped else to_graphql_error(error, request_id)).formatted for error in errors]
    extensions = getattr(result, "extensions", None)
    if extensions:
        body["extensions"] = extensions
    return body, failed


def _request_id(context: Any) -> str | None:
    request_id = getattr(context, "request_id", None)
    return str(request_id) if request_id else None


class BFFSchema(Schema):
    """A Strawberry schema whose every result goes through `to_graphql_error` (field errors, and
    the parse and validation errors that Strawberry answers before extensions see a result), and
    whose logs say expected errors in one line, unexpected ones with traceback and request id.

    Build it with `bff.build_schema`, which also records how (``bff_options``) so that the app can
    apply its settings to it."""

    bff_options: Any = None
    #: its `bff.graphql.authorization.Authorizer`, when a field is guarded
    bff_authorizer: Any = None

    async def execute(
        self, query: str | None, variable_values: Any = None, context_value: Any = None, *args: Any, **kwargs: Any
    ) -> Any:
        result = await super().execute(query, variable_values, context_value, *args, **kwargs)
        errors = getattr(result, "errors", None)
        if errors:
            complete_step_ups(errors, context_value)
            request_id = _request_id(context_value)
            result.errors = [to_graphql_error(error, request_id) for error in errors]
        return result

    def process_errors(self, errors: list[GraphQLError], execution_context: ExecutionContext | None = None) -> None:
        context = getattr(execution_context, "context", None)
        complete_step_ups(errors, context)
        request_id = _request_id(context)
        for error in errors:
            original = error.original_error
            expected = isinstance(original, (BFFError, *CLIENT_MISTAKES)) or _is_parse_failure(error)
            if original is None or expected:
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
