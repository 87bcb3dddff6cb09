"""GraphQL over HTTP (the GraphQL-over-HTTP spec, audited with graphql-http in CI).

Hand-written instead of Strawberry's router because the spec's answers need control that router
does not give: ``application/graphql-response+json`` with its status codes, a JSON
``{"errors": [...]}`` body for every refusal (bad JSON, missing query, GET mutation, oversized
body), 405 with ``Allow``, persisted documents, batching off by default, and a per-request
sub-response that concurrent requests do not share. A document seen for the first time is executed
by Strawberry (which parses, validates and caches it); a cached, validated one by
`bff.graphql.execution` (graphql-core directly, or a compiled plan: ``BFF_COMPILED_EXECUTION``).
"""

from __future__ import annotations

import asyncio
import json
import re
import time
from pathlib import Path
from typing import Any

import orjson
from fastapi import Request
from fastapi.responses import HTMLResponse, Response
from strawberry.exceptions import MissingQueryError
from strawberry.schema.exceptions import CannotGetOperationTypeError, InvalidOperationTypeError
from strawberry.types.graphql import OperationType

from bff.errors import ShuttingDown, StreamLimitExceeded
from bff.graphql.context import Context
from bff.graphql.execution import DirectExecution
from bff.graphql.persisted import PersistedDocuments, PersistedQueryError
from bff.graphql.subscriptions import EventStream, MultipartFraming, SSEFraming, wants_event_stream, wants_multipart
from bff.metrics import OperationLabels, loggable_name
from bff.resources import Resources

GRAPHQL_RESPONSE = "application/graphql-response+json"
_OPERATION_NAME = re.compile(r"\s*(?:query|mutation|subscription)\s+([_A-Za-z][_0-9A-Za-z]*)")
#: answers are personal: no shared or browser cache may keep one
NO_STORE = {"Cache-Control": "no-store"}
JSON = "application/json"
GRAPHIQL_HTML = (Path(__file__).parent / "graphiql.html").read_text()
STATIC_DIR = Path(__file__).parent / "static"


class RequestError(Exception):
    """A request the server refuses before execution: answered with ``status`` and a JSON body."""

    def __init__(self, status: int, message: str, code: str = "BAD_REQUEST", headers: dict[str, str] | None = None):
        super().__init__(message)
        self.status = status
        self.code = code
        self.headers = headers or {}


def negotiate(accept: str | None) -> str | None:
    """The response media type for an Accept header; None when nothing we speak is acceptable."""
    if not accept or not accept.strip():
        return JSON  # legacy clients that send no Accept get application/json
    ranges: list[tuple[float, int, str]] = []
    for index, part in enumerate(accept.split(",")):
        media, *params = (p.strip() for p in part.split(";"))
        quality = 1.0
        for param in params:
            name, _, value = param.partition("=")
            if name.strip().lower() == "q":
                try:
                    quality = float(value)
                except ValueError:
                    quality = 0.0
        if quality > 0:
            ranges.append((-quality, index, media.lower()))
    for _, _, media in sorted(ranges):
        if media == GRAPHQL_RESPONSE:
            return GRAPHQL_RESPONSE
        if media in (JSON, "application/*", "*/*"):
            return JSON
    return None


def _json_param(raw: str | None, name: str) -> dict[str, Any] | None:
    if raw is None or raw == "":
        return None
    try:
        value = json.loads(raw)
    except ValueError:
        raise RequestError(400, f"{name} must be a JSON object") from None
    if value is not None and not isinstance(value, dict):
        raise RequestError(400, f"{name} must be a JSON object")
    return value


#: query, variables, operationName, extensions, documentId
Params = tuple[str | None, dict[str, Any] | None, str | None, dict[str, Any] | None, str | None]


def request_params(data: Any) -> Params:
    """The operation of a JSON body (or a WebSocket ``subscribe`` payload), its types checked;
    raises `RequestError`."""
    if not isinstance(data, dict):
        raise RequestError(400, "the request body must be a JSON object {query, variables, operationName}")
    query, variables = data.get("query"), data.get("variables")
    operation_name, extensions, document_id = data.get("operationName"), data.get("extensions"), data.get("documentId")
    if query is not None and not isinstance(query, str):
        raise RequestError(400, "query must be a string")
    if variables is not None and not isinstance(variables, dict):
        raise RequestError(400, "variables must be a JSON object")
    if operation_name is not None and not isinstance(operation_name, str):
        raise RequestError(400, "operationName must be a string")
    if extensions is not None and not isinstance(extensions, dict):
        raise RequestError(400, "extensions must be a JSON object")
    if document_id is not None and not isinstance(document_id, str):
        raise RequestError(400, "documentId must be a string")
    return query, variables, operation_name, extensions, document_id


class GraphQLHTTPHandler:
    """One instance per app; ``__call__`` serves GET and POST ``/graphql``."""

    def __init__(
        self,
        schema: Any,
        *,
        persisted: PersistedDocuments,
        graphiql: bool,
        max_body_bytes: int,
        batch_max_operations: int = 0,
    ) -> None:
        self.schema = schema
        self.persisted = persisted
        self.graphiql = graphiql
        self.max_body_bytes = max_body_bytes
        self.batch_max_operations = batch_max_operations
        self.labels = OperationLabels(persisted.operation_names())
        self.direct = DirectExecution(schema)

    async def __call__(self, request: Request) -> Response:
        if request.method == "POST":
            accept = request.headers.get("accept")
            if wants_event_stream(accept):
                return await self._event_stream(request, SSEFraming())
            if wants_multipart(accept):
                return await self._event_stream(request, MultipartFraming())
        media = negotiate(request.headers.get("accept"))
        try:
            if request.method == "GET" and self.graphiql and self._wants_html(request):
                return HTMLResponse(GRAPHIQL_HTML, headers=NO_STORE)
            if request.method not in ("GET", "POST"):
                raise RequestError(405, "GraphQL is served over GET and POST", headers={"Allow": "GET, POST"})
            if media is None:
                raise RequestError(406, f"Accept {GRAPHQL_RESPONSE} or {JSON}", code="NOT_ACCEPTABLE")
            payload = await self._payload(request)
        except RequestError as exc:
            return self._error(exc, media or JSON)
        context = await self._context(request)
        headers: dict[str, str] = {}
        if isinstance(payload, list):
            results = await asyncio.gather(*(self._run(request, context, item, media) for item in payload))
            body: Any = [result for result, _, _ in results]
            status = 200
        else:
            body, status, headers = await self._run(request, context, payload, media)
        response = Response(
            orjson.dumps(body),
            status_code=status,
            media_type=f"{media}; charset=utf-8",
            headers={**headers, **NO_STORE},
        )
        # the context's sub-response carries Set-Cookie (a cleared cookie after UNAUTHENTICATED)
        sub_response = context.response
        if sub_response is not None:
            response.headers.raw.extend((k, v) for k, v in sub_response.headers.raw if k == b"set-cookie")
        context.release()
        context.response = None
        return response

    async def _event_stream(self, request: Request, framing: SSEFraming | MultipartFraming) -> Response:
        """A streamed answer, any operation, subscriptions too: GraphQL over SSE (graphql-sse,
        distinct connections) or Apollo's multipart subscriptions, as ``framing`` says."""
        resources: Resources = request.state.resources
        try:
            payload = await self._payload(request)
            if isinstance(payload, list):
                raise RequestError(400, "a stream runs one operation, not a batch")
            query, variables, operation_name, extensions, document_id = request_params(payload)
            name = _operation_name(operation_name, query)
            document = await self.document(query, extensions, document_id)
            context = await self._context(request)
            session_id = context._session_id  # the package's own use: resolvers never see it
            assert resources.streams is not None
            try:
                stream = resources.streams.open(session_id, request.client.host if request.client else None)
            except StreamLimitExceeded as exc:
                raise RequestError(429, str(exc), code=exc.code) from None
            except ShuttingDown as exc:
                headers = {"Retry-After": str(exc.retry_after)}
                raise RequestError(503, str(exc), code=exc.code, headers=headers) from None
        except RequestError as exc:
            return self._error(exc, JSON)
        context.touch = resources.settings.stream_keeps_session_alive
        request.state.graphql_operation = loggable_name(name)
        headers = dict(NO_STORE)
        response = EventStream(self.schema, resources, context, stream, framing).response(
            document, variables, operation_name, headers
        )
        sub_response = context.response
        if sub_response is not None:
            response.headers.raw.extend((k, v) for k, v in sub_response.headers.raw if k == b"set-cookie")
        return response

    @staticmethod
    def _wants_html(request: Request) -> bool:
        return "query" not in request.query_params and "text/html" in request.headers.get("accept", "")

    async def _payload(self, request: Request) -> Any:
        if request.method == "GET":
            query = request.query_params
            return {
                "query": query.get("query"),
                "variables": _json_param(query.get("variables"), "variables"),
                "operationName": query.get("operationName") or None,
                "extensions": _json_param(query.get("extensions"), "extensions"),
                "documentId": query.get("documentId"),
            }
        content_type = request.headers.get("content-type", "")
        media, *params = (p.strip().lower() for p in content_type.split(";"))
        if media != JSON:
            raise RequestError(415, "send the request as application/json", code="UNSUPPORTED_MEDIA_TYPE")
        for param in params:
            name, _, value = param.partition("=")
            if name == "charset" and value.strip('"') not in ("utf-8", "utf8"):
                raise RequestError(415, "the request must be encoded in utf-8", code="UNSUPPORTED_MEDIA_TYPE")
        raw = await self._body(request)
        if not raw.strip():
            raise RequestError(400, "the request body is empty")
        try:
            data = orjson.loads(raw)
        except orjson.JSONDecodeError:
            raise RequestError(400, "the request body is not valid JSON") from None
        if isinstance(data, list):
            if not self.batch_max_operations:
                raise RequestError(400, "batched requests are not enabled on this server")
            if not data or len(data) > self.batch_max_operations:
                raise RequestError(400, f"a batch holds 1 to {self.batch_max_operations} operations")
        return data

    async def _body(self, request: Request) -> bytes:
        declared = request.headers.get("content-length")
        if declared and declared.isdigit() and int(declared) > self.max_body_bytes:
            raise RequestError(413, f"the request body exceeds {self.max_body_bytes} bytes", code="PAYLOAD_TOO_LARGE")
        chunks, size = [], 0
        async for chunk in request.stream():
            size += len(chunk)
            if size > self.max_body_bytes:
                raise RequestError(
                    413, f"the request body exceeds {self.max_body_bytes} bytes", code="PAYLOAD_TOO_LARGE"
                )
            chunks.append(chunk)
        return b"".join(chunks)

    async def _context(self, request: Request) -> Context:
        resources: Resources = request.state.resources
        session_id, from_cookie = resources.session_credentials(request.headers.get("authorization"), request.cookies)
        context = Context(
            resources,
            session_id,
            cookie=resources.session_cookie if from_cookie else None,
            request_id=getattr(request.state, "request_id", ""),
            connection=request,
            response=Response(),
        )
        if session_id == "":
            context.end_session()  # a cookie that names no session is cleared, whatever the query asks
        return context

    async def document(self, query: str | None, extensions: dict[str, Any] | None, document_id: str | None) -> str:
        """The document to run: the query, or the persisted one the request names by hash (a hash
        sent with its document registers it only once it parsed and validated)."""
        try:
            document = await self.persisted.resolve(query, extensions, document_id, valid=self.direct.validates)
        except PersistedQueryError as exc:
            raise RequestError(exc.status, str(exc), code=exc.code) from None
        if document is None:
            raise RequestError(400, "the request has no query", code="BAD_REQUEST")
        return document

    async def _run(
        self, request: Request, context: Context, data: Any, media: str
    ) -> tuple[dict[str, Any], int, dict[str, str]]:
        resources: Resources = request.state.resources
        started = time.perf_counter()
        name: str | None = None
        try:
            query, variables, operation_name, extensions, document_id = request_params(data)
            name = _operation_name(operation_name, query)
            document = await self.document(query, extensions, document_id)
            allowed = (
                {OperationType.QUERY} if request.method == "GET" else {OperationType.QUERY, OperationType.MUTATION}
            )
            try:
                result: Any = await self.direct.execute(
                    document,
                    variables,
                    context,
                    operation_name,
                    allowed,
                    compiled=resources.settings.compiled_execution,
                    metrics=resources.metrics,
                )
                if result is None:  # not cached yet, or the schema has extensions with hooks
                    result = await self.schema.execute(
                        document,
                        variable_values=variables,
                        context_value=context,
                        operation_name=operation_name,
                        allowed_operation_types=allowed,
                    )
            except InvalidOperationTypeError:
                raise RequestError(
                    405,
                    "only queries may be sent with GET; use POST",
                    code="METHOD_NOT_ALLOWED",
                    headers={"Allow": "POST"},
                ) from None
            except MissingQueryError:
                raise RequestError(400, "the request has no query") from None
            except CannotGetOperationTypeError as exc:
                # an operationName naming nothing, several operations and no name, no operation at all
                raise RequestError(400, exc.as_http_error_reason()) from None
        except RequestError as exc:
            resources.metrics.graphql_operations.labels(self.labels.label(name), "rejected").inc()
            request.state.graphql_operation = loggable_name(name)
            refusal = {"errors": [{"message": str(exc), "extensions": {"code": exc.code}}]}
            return refusal, exc.status, exc.headers
        # a request that never executed (parse, validation, variables) has no data entry at all
        request_failed = result.data is None and bool(result.errors) and all(e.path is None for e in result.errors)
        body: dict[str, Any] = {} if request_failed else {"data": result.data}
        if result.errors:
            body["errors"] = [error.formatted for error in result.errors]
        if result.extensions:
            body["extensions"] = result.extensions
        outcome = "rejected" if request_failed else ("error" if result.errors else "ok")
        # a name becomes a label only once it has run for a signed-in user
        signed_in = not request_failed and getattr(request.state, "user_sub", None) is not None
        resources.metrics.graphql_operations.labels(self.labels.label(name, admit=signed_in), outcome).inc()
        request.state.graphql_operation = loggable_name(name)
        request.state.graphql_seconds = time.perf_counter() - started
        status = 400 if request_failed and media == GRAPHQL_RESPONSE else 200
        return body, status, {}

    def _error(self, exc: RequestError, media: str) -> Response:
        body = {"errors": [{"message": str(exc), "extensions": {"code": exc.code}}]}
        return Response(
            orjson.dumps(body),
            status_code=exc.status,
            media_type=f"{media}; charset=utf-8",
            headers={**exc.headers, **NO_STORE},
        )


def _operation_name(operation_name: str | None, query: str | None) -> str | None:
    """The operation's name, from the request or else from the start of the document."""
    if operation_name is not None or query is None:
        return operation_name
    match = _OPERATION_NAME.match(query)
    return match.group(1) if match else None
