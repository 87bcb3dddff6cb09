"""OpenTelemetry, optional (``pip install 'bff[otel]'``, ``BFF_OTEL_ENABLED=true``): a span per
request (FastAPI instrumentation), per upstream and IdP call (httpx instrumentation, which also
propagates ``traceparent``), and per token refresh. Exporters and the tracer provider are the
operator's choice (``opentelemetry-instrument bff serve``, or the SDK configured at start-up).
Without the packages everything here is a no-op."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator
from typing import Any

log = logging.getLogger("bff.telemetry")


@contextlib.contextmanager
def span(name: str, **attributes: Any) -> Iterator[None]:
    """A span named ``name`` when OpenTelemetry is installed, nothing otherwise."""
    try:
        from opentelemetry import trace
    except ImportError:
        yield
        return
    with trace.get_tracer("bff").start_as_current_span(name, attributes=attributes):
        yield


def instrument(app: Any) -> bool:
    """Instrument the FastAPI app and every httpx client; False when the extra is not installed."""
    try:
        from opentelemetry.instrumentation.fastapi import FastAPIInstrumentor
        from opentelemetry.instrumentation.httpx import HTTPXClientInstrumentor
    except ImportError:
        log.warning("BFF_OTEL_ENABLED is set but the otel extra is not installed: pip install 'bff[otel]'")
        return False
    FastAPIInstrumentor.instrument_app(app, excluded_urls="healthz,readyz,metrics")
    instrumentor = HTTPXClientInstrumentor()
    if not instrumentor.is_instrumented_by_opentelemetry:
        instrumentor.instrument()
    return True


def traced_transport(transport: Any) -> Any:
    """``transport`` wrapped so that each call is a client span carrying ``traceparent`` (the
    global httpx instrumentation only patches httpx's own transports)."""
    try:
        from opentelemetry.instrumentation.httpx import AsyncOpenTelemetryTransport
    except ImportError:
        return transport
    return AsyncOpenTelemetryTransport(transport)
