"""Sources on a schema: documents read, modules generated and executed, root types merged.

A generated module is executed as a real module (registered in ``sys.modules`` under a name of its
own) so Strawberry resolves its annotations exactly as it would in the file `bff sources generate`
writes: the declarative mount and the ejected code are the same code."""

from __future__ import annotations

import json
import logging
import sys
import time
import types
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

log = logging.getLogger("bff.sources")


class SourceError(ValueError):
    """A source that cannot be mounted at all (no document, not OpenAPI 3, a name taken twice)."""


@dataclass
class Mounted:
    """What a source adds to a schema: its root classes (None when it has no such fields)."""

    name: str
    query: type | None
    mutation: type | None
    warnings: list[str] = field(default_factory=list)
    code: str = ""
    types: list[str] = field(default_factory=list)
    #: Strawberry scalar definitions the generated types need (`build_schema` adds them)
    scalars: dict[object, Any] = field(default_factory=dict)
    #: classes the schema must list itself (types reached only through an interface)
    classes: list[Any] = field(default_factory=list)


class Source(Protocol):
    """A declarative source: knows its upstream's name and how to generate its module's code."""

    @property
    def name(self) -> str: ...

    def generate(self, taken_types: Sequence[str] = (), *, links: Sequence[Any] = ()) -> Any: ...


def read_document(spec: str | Mapping[str, Any], *, timeout: float = 10.0) -> dict[str, Any]:
    """A document from a mapping, a file (JSON or YAML) or an http(s) URL."""
    if isinstance(spec, Mapping):
        return dict(spec)
    text: str
    if spec.startswith(("http://", "https://")):
        text = _fetch(spec, timeout)
    else:
        try:
            text = Path(spec).read_text(encoding="utf-8")
        except OSError as exc:
            raise SourceError(f"cannot read {spec}: {exc.strerror or exc}") from None
    return parse_document(text, spec)


def send_at_start(method: str, url: str, where: str, timeout: float, **kwargs: Any) -> Any:
    """One synchronous request made while the schema is built (a document, an introspection). A
    refused connection is tried again for ``timeout`` seconds: a service starting beside the BFF (a
    compose file, a test harness) may not listen yet. Any other failure is a one-line `SourceError`
    starting with ``where``."""
    import httpx

    deadline = time.monotonic() + timeout
    while True:
        try:
            return httpx.request(method, url, timeout=timeout, **kwargs)
        except httpx.ConnectError as exc:
            if time.monotonic() >= deadline:
                raise SourceError(f"{where}: {_one_line(exc)}") from None
            time.sleep(0.25)
        except httpx.HTTPError as exc:
            raise SourceError(f"{where}: {_one_line(exc)}") from None


def _one_line(exc: BaseException) -> str:
    return " ".join(str(exc).split()) or type(exc).__name__


def _fetch(url: str, timeout: float) -> str:
    response = send_at_start("GET", url, f"cannot read {url}", timeout, follow_redirects=True)
    if response.status_code >= 400:
        raise SourceError(f"cannot read {url}: HTTP {response.status_code}")
    return str(response.text)


def parse_document(text: str, where: str = "the document") -> dict[str, Any]:
    """JSON, or else YAML (a JSON document is YAML too, but JSON's parser is faster and stricter)."""
    try:
        value = json.loads(text)
    except ValueError:
        import yaml  # type: ignore[import-untyped]

        try:
            value = yaml.safe_load(text)
        except yaml.YAMLError as exc:
            raise SourceError(f"{where} is neither JSON nor YAML: {str(exc).splitlines()[0]}") from None
    if not isinstance(value, dict):
        raise SourceError(f"{where} is not an object")
    return value


def execute(code: str, name: str) -> types.ModuleType:
    """Run generated ``code`` as the module ``name`` (in a package of generated modules), kept in
    ``sys.modules``: Strawberry resolves annotations through the module of each class, and a link
    imports the module of another source by name."""
    package, _, _ = name.rpartition(".")
    if package and package not in sys.modules:
        parent = types.ModuleType(package)
        parent.__path__ = []
        sys.modules[package] = parent
    module = types.ModuleType(name)
    module.__file__ = f"<bff source {name}>"
    sys.modules[name] = module
    try:
        exec(compile(code, module.__file__, "exec"), module.__dict__)  # noqa: S102 - our own generated code
    except BaseException:
        del sys.modules[name]
        raise
    return module


def _identifier(text: str) -> str:
    return "".join(c if c.isalnum() else "_" for c in text)


def mount(source: Source, taken_types: Sequence[str] = ()) -> Mounted:
    """One source without links (`bff.sources.assemble.mount_all` mounts several, with links)."""
    from bff.sources.assemble import mount_all

    return mount_all([source], taken_types)[0]
