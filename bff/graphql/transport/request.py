"""One GraphQL request as every transport receives it (an HTTP body or query string, a WebSocket
``subscribe`` payload), and where its document comes from (its query, or a persisted one)."""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from bff.errors import RequestRefused
from bff.graphql.documents.persisted import PersistedDocuments

_OPERATION_NAME = re.compile(r"\s*(?:query|mutation|subscription)\s+([_A-Za-z][_0-9A-Za-z]*)")


@dataclass(frozen=True, slots=True)
class GraphQLRequest:
    """The operation a client asked for, its types checked (`of`)."""

    query: str | None = None
    variables: dict[str, Any] | None = None
    operation_name: str | None = None
    extensions: dict[str, Any] | None = None
    document_id: str | None = None

    @classmethod
    def of(cls, data: Any) -> GraphQLRequest:
        """From a JSON body (or a WebSocket ``subscribe`` payload); raises `RequestRefused`."""
        if not isinstance(data, dict):
            raise RequestRefused("the request body must be a JSON object {query, variables, operationName}")
        request = cls(
            query=data.get("query"),
            variables=data.get("variables"),
            operation_name=data.get("operationName"),
            extensions=data.get("extensions"),
            document_id=data.get("documentId"),
        )
        for name, value, kind, what in (
            ("query", request.query, str, "a string"),
            ("variables", request.variables, dict, "a JSON object"),
            ("operationName", request.operation_name, str, "a string"),
            ("extensions", request.extensions, dict, "a JSON object"),
            ("documentId", request.document_id, str, "a string"),
        ):
            if value is not None and not isinstance(value, kind):
                raise RequestRefused(f"{name} must be {what}")
        return request

    @property
    def name(self) -> str | None:
        """The operation's name, from the request or else from the start of the document (for
        metrics and the access log; execution selects the operation itself)."""
        if self.operation_name is not None or self.query is None:
            return self.operation_name
        match = _OPERATION_NAME.match(self.query)
        return match.group(1) if match else None


class DocumentSource:
    """The document a request runs: its query, or the persisted one it names by hash (a hash sent
    with its document registers it only once it parsed and validated: ``validates``)."""

    def __init__(self, persisted: PersistedDocuments, validates: Callable[[str], Awaitable[bool]]) -> None:
        self.persisted = persisted
        self.validates = validates

    async def document(self, request: GraphQLRequest) -> str:
        """Raises `RequestRefused` (a `PersistedQueryError` among them) when there is none to run."""
        document = await self.persisted.resolve(
            request.query, request.extensions, request.document_id, valid=self.validates
        )
        if document is None:
            raise RequestRefused("the request has no query")
        return document
