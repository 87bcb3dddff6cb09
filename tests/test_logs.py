"""`bff.logs`: the access line, built without structlog's processor chain, is the line the chain
makes (keys, order, values); every other record still goes through the chain."""

from __future__ import annotations

import logging
import re
import sys
from collections.abc import Iterator

import orjson
import pytest
import structlog

from bff.logs import _JSONFormatter, configure_logging

EXTRA = {
    "method": "POST",
    "path": "/graphql",
    "route": "/graphql",
    "status": 200,
    "duration_ms": 1.23,
    "request_id": "abc123",
    "operation": "Viewer",
    "sub": None,
    "session": "0123456789abcdef",
    "color_message": "dropped",
}


@pytest.fixture
def formatters() -> Iterator[tuple[logging.Formatter, logging.Formatter]]:
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    configure_logging("info", json=True)
    fast = root.handlers[0].formatter
    assert isinstance(fast, _JSONFormatter)
    # the same chain, without the shortcut
    chain = structlog.stdlib.ProcessorFormatter(foreign_pre_chain=fast.foreign_pre_chain, processors=fast.processors)
    yield fast, chain
    root.handlers[:] = handlers
    root.setLevel(level)


def _record(name: str, **extra: object) -> logging.LogRecord:
    return logging.getLogger(name).makeRecord(name, logging.INFO, __file__, 1, "request", (), None, extra=extra)


def test_the_access_line_is_the_chains_line(formatters: tuple[logging.Formatter, logging.Formatter]) -> None:
    fast, chain = formatters
    record = _record("bff.access", **EXTRA)
    mine, theirs = fast.format(record), chain.format(_record("bff.access", **EXTRA))
    stamp = re.compile(r'"timestamp":"[^"]+"')
    assert stamp.search(mine) and stamp.search(theirs)
    assert stamp.sub("", mine) == stamp.sub("", theirs)
    parsed = orjson.loads(mine)
    assert list(parsed)[:3] == ["event", "level", "logger"] and "color_message" not in parsed
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d+Z", parsed["timestamp"])


def test_other_records_still_go_through_the_chain(formatters: tuple[logging.Formatter, logging.Formatter]) -> None:
    fast, _ = formatters
    for record in (_record("bff", detail="x"), _record("bff.access", **EXTRA)):
        if record.name == "bff.access":
            record.args = ("an argument",)  # a formatted message: not the shortcut's case
            record.msg = "request %s"
        line = orjson.loads(fast.format(record))
        assert line["event"] in ("request", "request an argument")
    try:
        raise ValueError("boom")
    except ValueError:
        failing = logging.getLogger("bff.access").makeRecord(
            "bff.access", logging.ERROR, __file__, 1, "failed", (), sys.exc_info()
        )
    assert "ValueError: boom" in orjson.loads(fast.format(failing))["exception"]
