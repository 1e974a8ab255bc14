"""JSON log lines: one object per line, parseable, carrying the trace and span id of the open span."""

from __future__ import annotations

import io
import json
import logging
from collections.abc import Iterator
from typing import Any

import pytest
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from broker.telemetry.logging import JsonLogFormatter
from broker.telemetry.tracing import Tracing, TracingConfig


@pytest.fixture
def log() -> Iterator[tuple[logging.Logger, io.StringIO]]:
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(JsonLogFormatter())
    logger = logging.getLogger("broker.test-json-logs")
    logger.handlers[:] = [handler]
    logger.propagate = False
    logger.setLevel(logging.DEBUG)
    yield logger, stream
    logger.handlers.clear()
    logger.propagate = True


def lines(stream: io.StringIO) -> list[dict[str, Any]]:
    text = stream.getvalue()
    assert text.endswith("\n")
    return [json.loads(line) for line in text.splitlines()]


def test_a_line_inside_a_request_carries_its_trace_and_span_ids(
    log: tuple[logging.Logger, io.StringIO],
) -> None:
    logger, stream = log
    tracing = Tracing(TracingConfig(enabled=True), processor=SimpleSpanProcessor(InMemorySpanExporter()))
    parent = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
    with tracing.request(method="tools/call", headers={"traceparent": parent}) as req:
        logger.info("deciding %s", "github__create_issue")
        with req.decision("cedar"):
            logger.warning("slow engine")
        request_span = req.span_id
    logger.info("after the request")
    tracing.shutdown()
    first, second, after = lines(stream)
    assert first["trace_id"] == second["trace_id"] == "4bf92f3577b34da6a3ce929d0e0e4736"
    assert first["span_id"] == request_span
    assert second["span_id"] not in (request_span, "00f067aa0ba902b7")
    assert first["message"] == "deciding github__create_issue"
    assert second["level"] == "warning" and second["logger"] == "broker.test-json-logs"
    assert "trace_id" not in after and "span_id" not in after


def test_the_keys_of_the_previous_formatter_are_kept(log: tuple[logging.Logger, io.StringIO]) -> None:
    logger, stream = log
    logger.error("upstream %s closed", "github")
    (entry,) = lines(stream)
    assert set(entry) == {"time", "level", "logger", "message"}
    assert entry["level"] == "error" and entry["message"] == "upstream github closed"
    assert entry["time"].endswith("Z") and len(entry["time"]) == len("2026-11-21T10:00:00.000Z")


def test_extra_fields_are_added_but_cannot_replace_the_core_keys(
    log: tuple[logging.Logger, io.StringIO],
) -> None:
    logger, stream = log

    class Opaque:
        def __repr__(self) -> str:
            return "<opaque>"

    logger.info(
        "reloaded",
        extra={"policy_version": "v7", "level": "spoofed", "time": "never", "thing": Opaque(), "n": {1: 2}},
    )
    logger.info("explicit", extra={"trace_id": "0af7651916cd43dd8448eb211c80319c"})
    reloaded, explicit = lines(stream)
    assert reloaded["policy_version"] == "v7"
    assert reloaded["level"] == "info" and reloaded["time"] != "never"
    assert reloaded["thing"] == "<opaque>"
    assert reloaded["n"] == {"1": 2}
    assert explicit["trace_id"] == "0af7651916cd43dd8448eb211c80319c"


def test_exceptions_and_stacks_are_one_line_of_json(log: tuple[logging.Logger, io.StringIO]) -> None:
    logger, stream = log
    try:
        raise ValueError("bad\nthing")
    except ValueError:
        logger.exception("failed")
    logger.info("where", stack_info=True)
    failed, where = lines(stream)
    assert failed["exception"].startswith("Traceback") and "ValueError: bad\nthing" in failed["exception"]
    assert "test_exceptions_and_stacks_are_one_line_of_json" in where["stack"]
