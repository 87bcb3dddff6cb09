"""Logging: JSON lines (structlog rendering the stdlib records of every library) or, for the demo,
readable console lines. Configured once by the CLI, never at import time.

What is logged is chosen where it is logged: a session appears only as a hash of its id; tokens,
codes and cookie values never appear (a test scans the logs of an end-to-end run)."""

from __future__ import annotations

import logging
import sys

import orjson
import structlog


def _drop_color_message(_: object, __: str, event: structlog.types.EventDict) -> structlog.types.EventDict:
    event.pop("color_message", None)  # uvicorn's ANSI duplicate of the message
    return event


def _orjson(value: object, **_: object) -> str:
    """One access-log line per request: orjson is several times cheaper than the stdlib encoder."""
    return orjson.dumps(value, default=str).decode()


def configure_logging(level: str = "info", *, json: bool = True) -> None:
    shared: list[structlog.types.Processor] = [
        structlog.stdlib.add_log_level,
        structlog.stdlib.add_logger_name,
        structlog.stdlib.ExtraAdder(),
        structlog.processors.TimeStamper(fmt="iso", utc=True),
        _drop_color_message,
    ]
    renderer: structlog.types.Processor = (
        structlog.processors.JSONRenderer(serializer=_orjson) if json else structlog.dev.ConsoleRenderer(colors=False)
    )
    formatter = structlog.stdlib.ProcessorFormatter(
        foreign_pre_chain=shared,
        processors=[
            structlog.stdlib.ProcessorFormatter.remove_processors_meta,
            structlog.processors.format_exc_info,
            renderer,
        ],
    )
    handler = logging.StreamHandler(sys.stdout)
    handler.setFormatter(formatter)
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    for noisy in ("httpx", "httpcore", "uvicorn.access"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    logging.getLogger("uvicorn.error").propagate = True
