"""GraphQL over HTTP (the GraphQL-over-HTTP spec, audited with graphql-http in CI).

Hand-written instead of Strawberry's router because the spec's answers need control that router
does not give: ``application/graphql-response+json`` with its status codes, a JSON
``{"errors": [...]}`` body for every refusal (bad JSON, missing query, GET mutation, oversized
body), 405 with ``Allow``, persisted documents, batching off by default, and a per-request
sub-response that concurrent requests do not share. A document seen for the first time is executed
by Strawberry (which parses, validates and caches it); a cached, validated one by
`bff.graphql.execution.direct` (graphql-core directly, or a compiled plan: ``BFF_COMPILED_EXECUTION``).
"""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path
from typing import Any

import orjson
from fastapi import Request
from fastapi.responses import HTMLResponse, Response
from strawberry.exceptions import MissingQueryError
from strawberry.schema.exceptions import CannotGetOperationTypeError, InvalidOperationTypeError
from strawberry.types.graphql import OperationType

from bff.errors import (
    MethodNotAllowed,
    NotAcceptable,
    PayloadTooLarge,
    RequestRefused,
    UnsupportedMediaType,
)
from bff.graphql.context import Context
from bff.graphql.documents.persisted import PersistedDocuments
from bff.graphql.errors import refusal_body, result_body
from bff.graphql.execution.direct import DirectExecution
from bff.graphql.transport.request import DocumentSource, GraphQLRequest
from bff.graphql.transport.streams import EventStream, MultipartFraming, SSEFraming, wants_event_stream, wants_multipart
from bff.metrics import OperationLabels, loggable_name
from bff.resources import Resources

GRAPHQL_RESPONSE = "application/graphql-response+json"
#: answers are personal: no shared or browser cache may keep one
NO_STORE = {"Cache-Control": "no-store"}
JSON = "application/json"
GRAPHIQL_HTML = (Path(__file__).parent / "graphiql.html").read_text()
STATIC_DIR = Path(__file__).parent / "static"


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
        raise RequestRefused(f"{name} must be a JSON object") from None
    if value is not None and not isinstance(value, dict):
        raise RequestRefused(f"{name} must be a JSON object")
    return value


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
        self.documents = DocumentSource(persisted, self.direct.validates)

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
                raise MethodNotAllowed("GraphQL is served over GET and POST", headers={"Allow": "GET, POST"})
            if media is None:
                raise NotAcceptable(f"Accept {GRAPHQL_RESPONSE} or {JSON}")
            payload = await self._payload(request)
        except RequestRefused as exc:
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
                raise RequestRefused("a stream runs one operation, not a batch")
            operation = GraphQLRequest.of(payload)
            document = await self.documents.document(operation)
            context = await self._context(request)
            session_id = context._session_id  # the package's own use: resolvers never see it
            assert resources.streams is not None
            # StreamLimitExceeded (429) or ShuttingDown (503, Retry-After): refusals like the others
            stream = resources.streams.open(session_id, request.client.host if request.client else None)
        except RequestRefused as exc:
            return self._error(exc, JSON)
        context.touch = resources.streaming.keeps_session_alive
        request.state.graphql_operation = loggable_name(operation.name)
        headers = dict(NO_STORE)
        response = EventStream(self.schema, resources, context, stream, framing, self.direct).response(
            document, operation.variables, operation.operation_name, headers
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
            raise UnsupportedMediaType("send the request as application/json")
        for param in params:
            name, _, value = param.partition("=")
            if name == "charset" and value.strip('"') not in ("utf-8", "utf8"):
                raise UnsupportedMediaType("the request must be encoded in utf-8")
        raw = await self._body(request)
        if not raw.strip():
            raise RequestRefused("the request body is empty")
        try:
            data = orjson.loads(raw)
        except orjson.JSONDecodeError:
            raise RequestRefused("the request body is not valid JSON") from None
        if isinstance(data, list):
            if not self.batch_max_operations:
                raise RequestRefused("batched requests are not enabled on this server")
            if not data or len(data) > self.batch_max_operations:
                raise RequestRefused(f"a batch holds 1 to {self.batch_max_operations} operations")
        return data

    async def _body(self, request: Request) -> bytes:
        declared = request.headers.get("content-length")
        if declared and declared.isdigit() and int(declared) > self.max_body_bytes:
            raise PayloadTooLarge(f"the request body exceeds {self.max_body_bytes} bytes")
        chunks, size = [], 0
        async for chunk in request.stream():
            size += len(chunk)
            if size > self.max_body_bytes:
                raise PayloadTooLarge(f"the request body exceeds {self.max_body_bytes} bytes")
            chunks.append(chunk)
        return b"".join(chunks)

    async def _context(self, request: Request) -> Context:
        resources: Resources = request.state.resources
        credentials = resources.session_credentials(request.headers.get("authorization"), request.cookies)
        context = Context(
            resources,
            credentials.session_id,
            cookie=resources.session_cookie if credentials.from_cookie and credentials.presented else None,
            request_id=getattr(request.state, "request_id", ""),
            connection=request,
            response=Response(),
        )
        if credentials.invalid:
            context.end_session()  # a cookie that names no session is cleared, whatever the query asks
        return context

    async def _run(
        self, request: Request, context: Context, data: Any, media: str
    ) -> tuple[dict[str, Any], int, dict[str, str]]:
        resources: Resources = request.state.resources
        started = time.perf_counter()
        name: str | None = None
        try:
            operation = GraphQLRequest.of(data)
            name = operation.name
            document = await self.documents.document(operation)
            variables, operation_name = operation.variables, operation.operation_name
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
                    compiled=resources.requests.compiled_execution,
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
                allow = {"Allow": "POST"}
                raise MethodNotAllowed("only queries may be sent with GET; use POST", headers=allow) from None
            except MissingQueryError:
                raise RequestRefused("the request has no query") from None
            except CannotGetOperationTypeError as exc:
                # an operationName naming nothing, several operations and no name, no operation at all
                raise RequestRefused(exc.as_http_error_reason()) from None
        except RequestRefused as exc:
            resources.metrics.graphql_operations.labels(self.labels.label(name), "rejected").inc()
            request.state.graphql_operation = loggable_name(name)
            return refusal_body(exc), exc.status, exc.headers
        # a request that never executed (parse, validation, variables) has no data entry at all
        body, request_failed = result_body(result, mapped=True)  # BFFSchema / DirectExecution mapped them
        outcome = "rejected" if request_failed else ("error" if result.errors else "ok")
        # a name becomes a label only once it has run for a signed-in user
        signed_in = not request_failed and getattr(request.state, "user_sub", None) is not None
        metrics = resources.metrics
        metrics.child(metrics.graphql_operations, self.labels.label(name, admit=signed_in), outcome).inc()
        request.state.graphql_operation = loggable_name(name)
        request.state.graphql_seconds = time.perf_counter() - started
        status = 400 if request_failed and media == GRAPHQL_RESPONSE else 200
        return body, status, {}

    def _error(self, exc: RequestRefused, media: str) -> Response:
        return Response(
            orjson.dumps(refusal_body(exc)),
            status_code=exc.status,
            media_type=f"{media}; charset=utf-8",
            headers={**exc.headers, **NO_STORE},
        )
