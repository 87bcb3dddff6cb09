"""Parsing and operation selection, the two steps before validation.

Both are linear in the document: parsing is bounded by the token limit, and any failure to parse
(graphql-core raises a plain ``IndexError`` on some truncated documents) is a syntax error.
Operation selection follows the spec's GetOperation: an ``operationName`` must name an operation
of the document, and a document with several operations needs one; those mistakes are request
errors (`OperationSelectionError`), answered 400 by the HTTP handler.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

from graphql import DocumentNode, GraphQLError, OperationDefinitionNode, parse
from strawberry.schema.exceptions import CannotGetOperationTypeError

from bff.graphql.documents.lru import LRU

T = TypeVar("T")

#: documents longer than this are parsed every time instead of being cached (a 1 MB comment is
#: still a 2,000-token document; 512 of them must not pin half a gigabyte)
MAX_CACHED_CHARS = 32 * 1024
#: what all cached documents may weigh together: a parsed document is ~3 objects per token, and
#: every full garbage collection walks them all (~0.5 us each on a small machine)
CACHE_CHARS = 512 * 1024
#: longer documents are parsed and validated in a worker thread, off the event loop
INLINE_CHARS = 2048


class OperationSelectionError(CannotGetOperationTypeError):
    """The request does not select exactly one operation of its document.

    A subclass of Strawberry's error, so that Strawberry re-raises it out of ``execute`` instead of
    turning it into a GraphQL error."""

    def __init__(self, operation_name: str | None, message: str) -> None:
        super().__init__(operation_name)
        self.message = message

    def as_http_error_reason(self) -> str:
        return self.message

    def __str__(self) -> str:
        return self.message


class DocumentCache:
    """Parsed documents by source text: a LRU bounded in entries and in total size, holding only
    the documents its owner `remember`s (those that passed validation: what real clients repeat,
    not what an attacker varies)."""

    def __init__(self, max_tokens: int, maxsize: int = 512, max_chars: int = CACHE_CHARS) -> None:
        self.max_tokens = max_tokens
        self.maxsize = maxsize
        self.max_chars = max_chars
        self._documents: LRU[str, DocumentNode] = LRU(maxsize=maxsize, max_weight=max_chars, weigh=_query_chars)
        self._worker: ThreadPoolExecutor | None = None

    async def off_loop(self, work: Callable[..., T], *args: Any) -> T:
        """``work(*args)`` in this cache's one worker thread. One, not asyncio's default pool: the
        event loop competes for the GIL with every thread that computes, and against four at once
        (four hostile documents) it waited up to half a second between two iterations; against one
        it waits about one switch interval (5 ms). Documents queue behind each other instead, which
        costs only their senders time."""
        if self._worker is None:
            self._worker = ThreadPoolExecutor(1, thread_name_prefix="bff-documents")
        return await asyncio.get_running_loop().run_in_executor(self._worker, work, *args)

    async def parse(self, query: str) -> DocumentNode:
        """The document of ``query``; raises `GraphQLError` (a syntax error) when it cannot be parsed.
        A long document is parsed in a worker thread (the cache is only touched in the loop)."""
        document = self._documents.get(query)
        if document is not None:
            return document
        if len(query) <= INLINE_CHARS:
            return self._parse(query)
        return await self.off_loop(self._parse, query)

    def _parse(self, query: str) -> DocumentNode:
        try:
            return parse(query, max_tokens=self.max_tokens)
        except GraphQLError:
            raise  # "Syntax Error: ...", the token limit's included
        except Exception:  # graphql-core's own bugs on odd input (IndexError, RecursionError...)
            raise GraphQLError("Syntax Error: unreadable document") from None

    def remember(self, query: str, document: DocumentNode) -> None:
        if len(query) > MAX_CACHED_CHARS or query in self._documents:
            return
        self._documents.put(query, document)


def _query_chars(query: str, _: object) -> int:
    return len(query)


def select_operation(document: DocumentNode, operation_name: str | None) -> OperationDefinitionNode:
    """The operation a request runs (the spec's GetOperation); raises `OperationSelectionError`."""
    operations = [d for d in document.definitions if isinstance(d, OperationDefinitionNode)]
    if operation_name is not None:
        for operation in operations:
            if operation.name is not None and operation.name.value == operation_name:
                return operation
        shown = operation_name if len(operation_name) <= 64 else operation_name[:64] + "…"
        raise OperationSelectionError(operation_name, f"the document has no operation named {shown!r}")
    if not operations:
        raise OperationSelectionError(None, "the document contains no operation to run")
    if len(operations) > 1:
        raise OperationSelectionError(None, "the document contains several operations: name one in operationName")
    return operations[0]
