"""One JSON object per log line, carrying the trace id of the span it was written in.

A drop-in `logging.Formatter` for `logging.format: json` (cli.setup_logging): the same
keys as before (`time`, `level`, `logger`, `message`, `exception`), plus `trace_id` and
`span_id` when the line is written while a span is current (tracing on, inside a
request), plus any `extra={...}` fields the call site passed. Log pipelines join lines
to traces and audit records on `trace_id`.

The trace id is read from OpenTelemetry's current context, which works with any tracer
provider: the broker's own (`Tracing`) and a host application's alike. A call site may
also pass `extra={"trace_id": ...}` explicitly (for work done outside the request's
context); an explicit value wins.
"""

from __future__ import annotations

import logging
import time
from typing import Any, Final

import orjson
from opentelemetry.trace import get_current_span

_STANDARD: Final[frozenset[str]] = frozenset(
    logging.LogRecord("", 0, "", 0, "", None, None).__dict__.keys() | {"message", "asctime", "taskName"}
)
"""Attributes every LogRecord has; anything else on a record came from `extra=`."""

_RESERVED: Final = frozenset({"time", "level", "logger", "message", "exception", "stack"})
"""Keys an `extra=` field cannot replace: a log line always says what these say."""


class JsonLogFormatter(logging.Formatter):
    """Formats a record as one line of JSON (orjson), with the current trace and span ids."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "time": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
            + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        context = get_current_span().get_span_context()
        if context.is_valid:
            entry["trace_id"] = format(context.trace_id, "032x")
            entry["span_id"] = format(context.span_id, "016x")
        for key, value in record.__dict__.items():
            if key not in _STANDARD and key not in _RESERVED and not key.startswith("_"):
                entry[key] = value
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        if record.stack_info:
            entry["stack"] = self.formatStack(record.stack_info)
        return orjson.dumps(entry, default=repr, option=orjson.OPT_NON_STR_KEYS).decode()
