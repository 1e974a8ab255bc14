"""The carriers: what an HTTP upstream transport puts in headers, read from the request's `_meta`."""

from __future__ import annotations

from typing import Any

import pytest
from opentelemetry.context import Context
from opentelemetry.trace import get_current_span

from broker.telemetry.propagation import TraceCarrier, headers_from_meta

PARENT = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"


def test_headers_mirror_the_meta_trace_context() -> None:
    meta = {"traceparent": PARENT, "tracestate": "rojo=00f067aa0ba902b7", "progressToken": 1}
    assert headers_from_meta(meta) == {"traceparent": PARENT, "tracestate": "rojo=00f067aa0ba902b7"}
    assert headers_from_meta({"traceparent": PARENT}) == {"traceparent": PARENT}


@pytest.mark.parametrize(
    "meta",
    [
        None,
        [],
        {},
        {"tracestate": "a=b"},
        {"traceparent": 7},
        {"traceparent": PARENT.upper()},
        {"traceparent": PARENT + "\r\nx-injected: 1"},
        {"traceparent": "00-" + "a" * 500},
    ],
)
def test_nothing_is_sent_for_a_missing_or_malformed_traceparent(meta: Any) -> None:
    assert headers_from_meta(meta) == {}


@pytest.mark.parametrize("state", ["a=b\r\nx-injected: 1", "", "x" * 600, 5])
def test_a_tracestate_that_cannot_be_a_header_value_is_left_out(state: Any) -> None:
    assert headers_from_meta({"traceparent": PARENT, "tracestate": state}) == {"traceparent": PARENT}


def test_a_future_version_traceparent_with_more_fields_is_passed_on() -> None:
    future = "01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-abcd"
    assert headers_from_meta({"traceparent": future}) == {"traceparent": future}


def test_inject_replaces_the_callers_keys_and_leaves_the_rest() -> None:
    carrier = TraceCarrier()
    context = carrier.extract({"traceparent": PARENT}, None)
    assert context is not None
    meta: dict[str, Any] = {"traceparent": "old", "tracestate": "stale=1", "baggage": "k=v", "other": 1}
    carrier.inject(meta, context)
    assert meta == {"traceparent": PARENT, "baggage": "k=v", "other": 1}


def test_extract_reads_lower_case_header_names_and_ignores_empty_carriers() -> None:
    carrier = TraceCarrier()
    assert carrier.extract(None, None) is None
    assert carrier.extract({}, {}) is None
    context = carrier.extract(None, {"traceparent": PARENT})
    assert context is not None
    assert format(get_current_span(context).get_span_context().trace_id, "032x") == PARENT[3:35]
    assert carrier.extract(None, {"Traceparent": PARENT}) is None  # ASGI hands names lower-cased
    for meta in ("traceparent", [PARENT], 3, True):  # `_meta` as a caller may send it
        assert carrier.extract(meta, None) is None
    assert carrier.extract(["junk"], {"traceparent": PARENT}) is not None
    assert isinstance(context, Context)
