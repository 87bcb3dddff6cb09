"""Persisted operations: Automatic Persisted Queries (``extensions.persistedQuery.sha256Hash``) and
a trusted-documents mode in which only the operations of a manifest execute.

Manifests: ``{"<sha256>": "<document>"}`` (graphql-codegen's client preset) or Apollo's
``{"format": "apollo-persisted-query-manifest", "operations": [{"id", "body"}]}``.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from graphql import GraphQLError, OperationDefinitionNode, parse

from bff.errors import RequestRefused
from bff.graphql.documents.lru import LRU


class PersistedQueryError(RequestRefused):
    """A persisted-document request that cannot be served; each kind its code (Apollo's APQ codes)."""


class PersistedQueryInvalid(PersistedQueryError):
    code = "PERSISTED_QUERY_INVALID"


class PersistedQueryHashMismatch(PersistedQueryError):
    code = "PERSISTED_QUERY_HASH_MISMATCH"


class PersistedQueryNotAllowed(PersistedQueryError):
    code = "PERSISTED_QUERY_NOT_ALLOWED"


class PersistedQueryNotFound(PersistedQueryError):
    """Answered 200: APQ clients read the code in the body and send the document with its hash."""

    code = "PERSISTED_QUERY_NOT_FOUND"
    status = 200


def sha256(document: str) -> str:
    return hashlib.sha256(document.encode()).hexdigest()


def load_manifest(path: str | Path) -> dict[str, str]:
    data = json.loads(Path(path).read_text())
    if isinstance(data, dict) and data.get("format") == "apollo-persisted-query-manifest":
        return {str(op["id"]): str(op["body"]) for op in data.get("operations", [])}
    if isinstance(data, dict) and all(isinstance(v, str) for v in data.values()):
        return {k.removeprefix("sha256:"): v for k, v in data.items()}
    raise ValueError(f"{path}: not a persisted-documents manifest")


#: what every registered APQ document may weigh together, in characters (issue 24: bounded by
#: size, as the parse cache is, not by count: 2,000 documents of 1 MB were 2 GB per worker)
APQ_CACHE_CHARS = 2 * 1024 * 1024
#: a longer document is never registered (it still runs when sent whole): real clients' documents
#: are a few KB, and this is the parse cache's own bound (`bff.graphql.documents.parsing.MAX_CACHED_CHARS`)
APQ_MAX_DOCUMENT_CHARS = 32 * 1024

#: decides whether a document may be registered: it parses within the token limit and validates
Validator = Callable[[str], Awaitable[bool]]


class PersistedDocuments:
    """Resolves the document to execute from a request's ``query``, ``extensions`` and
    ``documentId``. With a manifest only its documents run; without one, APQ registers documents in
    an LRU bounded by characters (hand-written: aiocache's memory backend has TTLs but no size
    bound), and only documents that parsed within the token limit and passed validation: a hash is
    never an alias for a document that was refused, nor for megabytes of padding."""

    def __init__(
        self,
        manifest: dict[str, str] | None = None,
        *,
        apq: bool = True,
        max_chars: int = APQ_CACHE_CHARS,
        max_document_chars: int = APQ_MAX_DOCUMENT_CHARS,
    ) -> None:
        self.manifest = manifest
        self.apq = apq and manifest is None
        self.max_chars = max_chars
        self.max_document_chars = max_document_chars
        self._cache: LRU[str, str] = LRU(max_weight=max_chars, weigh=lambda _, query: len(query))

    def __len__(self) -> int:
        return len(self._cache)

    @property
    def chars(self) -> int:
        """What the registered documents weigh together, in characters."""
        return self._cache.weight

    def operation_names(self) -> set[str]:
        """The names of the manifest's operations (none without a manifest)."""
        names: set[str] = set()
        for document in (self.manifest or {}).values():
            try:
                parsed = parse(document)
            except GraphQLError:
                continue
            names.update(d.name.value for d in parsed.definitions if isinstance(d, OperationDefinitionNode) and d.name)
        return names

    async def resolve(
        self,
        query: str | None,
        extensions: dict[str, Any] | None,
        document_id: str | None,
        *,
        valid: Validator | None = None,
    ) -> str | None:
        """The document to run (None: the request has none); raises `PersistedQueryError`. A hash
        sent with its document registers it when ``valid`` says so (always when ``valid`` is None)."""
        persisted = (extensions or {}).get("persistedQuery")
        wanted: str | None = None
        if document_id is not None:
            wanted = str(document_id).removeprefix("sha256:")
        elif isinstance(persisted, dict):
            digest = persisted.get("sha256Hash")
            if not isinstance(digest, str):
                raise PersistedQueryInvalid("persistedQuery needs a sha256Hash")
            wanted = digest.removeprefix("sha256:")  # graphql-codegen's client preset may emit the prefix
        if wanted is not None and query is not None and sha256(query) != wanted:
            raise PersistedQueryHashMismatch("provided sha does not match query")

        if self.manifest is not None:  # trusted documents only
            digest = wanted or (sha256(query) if query is not None else None)
            if digest is None:
                return None
            document = self.manifest.get(digest)
            if document is None:
                raise PersistedQueryNotAllowed("Only trusted documents may be executed on this server")
            return document

        if wanted is None:
            return query
        if query is not None:
            small = len(query) <= self.max_document_chars
            if self.apq and small and wanted not in self._cache and (valid is None or await valid(query)):
                self._remember(wanted, query)
            return query
        cached = self._cache.get(wanted) if self.apq else None
        if cached is None:
            raise PersistedQueryNotFound("PersistedQueryNotFound")
        return cached

    def _remember(self, digest: str, query: str) -> None:
        if not self._cache.touch(digest):
            self._cache.put(digest, query)
