"""Tracing: spans captured through the OpenTelemetry SDK (in-memory exporter), their parent/child
links and attributes, W3C trace context in and out (HTTP headers and `_meta`), and tracing off."""

from __future__ import annotations

import asyncio
import importlib.util
import time
from collections.abc import Iterator
from typing import Any

import pytest
from opentelemetry import trace
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, StatusCode

from broker.telemetry.tracing import Tracing, TracingConfig, TracingError

CALLER_TRACE = "4bf92f3577b34da6a3ce929d0e0e4736"
CALLER_SPAN = "00f067aa0ba902b7"
CALLER_PARENT = f"00-{CALLER_TRACE}-{CALLER_SPAN}-01"


@pytest.fixture
def captured() -> Iterator[tuple[Tracing, InMemorySpanExporter]]:
    exporter = InMemorySpanExporter()
    tracing = Tracing(TracingConfig(enabled=True), processor=SimpleSpanProcessor(exporter), version="0.1.0")
    yield tracing, exporter
    tracing.shutdown()


def by_name(exporter: InMemorySpanExporter) -> dict[str, ReadableSpan]:
    spans = exporter.get_finished_spans()
    named = {s.name: s for s in spans}
    assert len(named) == len(spans), [s.name for s in spans]
    return named


def hex_ids(span: ReadableSpan) -> tuple[str, str]:
    ctx = span.get_span_context()
    assert ctx is not None
    return format(ctx.trace_id, "032x"), format(ctx.span_id, "016x")


def parent_id(span: ReadableSpan) -> str | None:
    return format(span.parent.span_id, "016x") if span.parent is not None else None


def run_full_request(tracing: Tracing, **request: Any) -> tuple[dict[str, Any], dict[str, str], str | None]:
    """A tools/call through every step, as the pipeline will run it; returns what went upstream."""
    upstream_meta: dict[str, Any] = {}
    upstream_headers: dict[str, str] = {}
    with tracing.request(method="tools/call", request_id=7, protocol_version="2025-11-25", **request) as req:
        with req.authentication("bearer") as step:
            step.outcome("ok")
        req.set_principal("code-review-bot", "acme")
        req.set_target("github", "github__create_issue")
        with req.decision("cedar") as decision:
            decision.record_decision(
                effect="require_approval", policy_version="v42", policy_ids=["approve-writes"]
            )
        with req.approval_wait("ap-1") as wait:
            wait.outcome("approved")
        with req.upstream_call(
            server="github", method="tools/call", name="create_issue", transport="streamable-http"
        ) as call:
            call.inject_meta(upstream_meta)
            call.inject_headers(upstream_headers)
        req.outcome("ok")
        trace_id = req.trace_id
    return upstream_meta, upstream_headers, trace_id


def test_a_request_is_one_server_span_with_four_children(
    captured: tuple[Tracing, InMemorySpanExporter],
) -> None:
    tracing, exporter = captured
    _, _, trace_id = run_full_request(tracing)
    spans = by_name(exporter)
    assert set(spans) == {
        "tools/call github__create_issue",
        "broker.authenticate",
        "broker.decide",
        "broker.approval",
        "tools/call create_issue",
    }
    root = spans["tools/call github__create_issue"]
    root_trace, root_span = hex_ids(root)
    assert root.parent is None and root.kind is SpanKind.SERVER
    assert root_trace == trace_id
    for name in ("broker.authenticate", "broker.decide", "broker.approval", "tools/call create_issue"):
        child = spans[name]
        assert hex_ids(child)[0] == root_trace, name
        assert parent_id(child) == root_span, name
    assert spans["tools/call create_issue"].kind is SpanKind.CLIENT
    assert spans["broker.decide"].kind is SpanKind.INTERNAL
    # Children end before their parent, in the order the pipeline ran them.
    order = [s.name for s in exporter.get_finished_spans()]
    assert order[-1] == "tools/call github__create_issue"
    assert order[:4] == ["broker.authenticate", "broker.decide", "broker.approval", "tools/call create_issue"]


def test_span_attributes_say_who_what_and_how_it_was_decided(
    captured: tuple[Tracing, InMemorySpanExporter],
) -> None:
    tracing, exporter = captured
    run_full_request(tracing, transport="streamable-http", session_id="sess-1")
    spans = by_name(exporter)
    root = dict(spans["tools/call github__create_issue"].attributes or {})
    assert root == {
        "mcp.method.name": "tools/call",
        "broker.transport": "streamable-http",
        "jsonrpc.request.id": "7",
        "mcp.protocol.version": "2025-11-25",
        "mcp.session.id": "sess-1",
        "broker.principal.id": "code-review-bot",
        "broker.principal.tenant": "acme",
        "broker.upstream.name": "github",
        "gen_ai.tool.name": "github__create_issue",
        "broker.outcome": "ok",
    }
    decide = dict(spans["broker.decide"].attributes or {})
    assert decide == {
        "broker.policy.engine": "cedar",
        "broker.decision.effect": "require_approval",
        "broker.policy.version": "v42",
        "broker.policy.ids": ("approve-writes",),
    }
    assert dict(spans["broker.authenticate"].attributes or {}) == {
        "broker.auth.method": "bearer",
        "broker.outcome": "ok",
    }
    assert dict(spans["broker.approval"].attributes or {}) == {
        "broker.approval.id": "ap-1",
        "broker.outcome": "approved",
    }
    upstream = dict(spans["tools/call create_issue"].attributes or {})
    assert upstream == {
        "mcp.method.name": "tools/call",
        "broker.upstream.name": "github",
        "broker.upstream.transport": "streamable-http",
        "network.transport": "tcp",
        "gen_ai.tool.name": "create_issue",
    }
    resource = spans["broker.decide"].resource.attributes
    assert resource["service.name"] == "mcp-authz-broker"
    assert resource["service.version"] == "0.1.0"
    assert all(s.status.status_code is StatusCode.UNSET for s in spans.values())


def test_traceparent_header_in_becomes_the_parent_and_goes_out_with_the_upstream_span(
    captured: tuple[Tracing, InMemorySpanExporter],
) -> None:
    tracing, exporter = captured
    meta, headers, trace_id = run_full_request(
        tracing, headers={"traceparent": CALLER_PARENT, "tracestate": "rojo=00f067aa0ba902b7"}
    )
    spans = by_name(exporter)
    root = spans["tools/call github__create_issue"]
    assert trace_id == CALLER_TRACE
    assert parent_id(root) == CALLER_SPAN and root.parent is not None and root.parent.is_remote
    upstream_span = spans["tools/call create_issue"]
    _, upstream_span_id = hex_ids(upstream_span)
    expected = f"00-{CALLER_TRACE}-{upstream_span_id}-01"
    assert headers == {"traceparent": expected, "tracestate": "rojo=00f067aa0ba902b7"}
    assert meta == {"traceparent": expected, "tracestate": "rojo=00f067aa0ba902b7"}


def test_traceparent_in_meta_round_trips_into_the_upstream_meta(
    captured: tuple[Tracing, InMemorySpanExporter],
) -> None:
    tracing, exporter = captured
    caller_meta = {"traceparent": CALLER_PARENT, "tracestate": "congo=t61rcWkgMzE", "progressToken": 3}
    meta, _, trace_id = run_full_request(tracing, meta=caller_meta, transport="stdio")
    spans = by_name(exporter)
    assert trace_id == CALLER_TRACE
    assert parent_id(spans["tools/call github__create_issue"]) == CALLER_SPAN
    _, upstream_span_id = hex_ids(spans["tools/call create_issue"])
    assert meta == {
        "traceparent": f"00-{CALLER_TRACE}-{upstream_span_id}-01",
        "tracestate": "congo=t61rcWkgMzE",
    }


def test_meta_wins_over_the_http_header(captured: tuple[Tracing, InMemorySpanExporter]) -> None:
    tracing, exporter = captured
    header_parent = "00-11111111111111111111111111111111-2222222222222222-01"
    with tracing.request(
        method="tools/call", meta={"traceparent": CALLER_PARENT}, headers={"traceparent": header_parent}
    ) as req:
        assert req.trace_id == CALLER_TRACE
    (root,) = exporter.get_finished_spans()
    assert parent_id(root) == CALLER_SPAN


@pytest.mark.parametrize(
    "bad",
    [
        "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",  # forbidden version
        "00-00000000000000000000000000000000-00f067aa0ba902b7-01",  # zero trace id
        "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",  # zero parent id
        "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7",  # no flags
        "00-4BF92F3577B34DA6A3CE929D0E0E4736-00F067AA0BA902B7-01",  # upper case
        "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-extra",  # fields after version 00
        "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01\r\nx-evil: 1",
        "00-" + "a" * 100_000,
        "",
        "garbage",
        42,
        ["00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"],
        {"traceparent": CALLER_PARENT},
        None,
    ],
)
def test_a_malformed_traceparent_is_ignored_and_the_request_starts_its_own_trace(
    captured: tuple[Tracing, InMemorySpanExporter], bad: Any
) -> None:
    tracing, exporter = captured
    meta_out: dict[str, Any] = {"traceparent": bad}
    with tracing.request(method="tools/call", meta={"traceparent": bad, "tracestate": "a=b"}) as req:
        with req.upstream_call(server="s", method="tools/call", name="t", transport="stdio") as call:
            call.inject_meta(meta_out)
        own_trace = req.trace_id
    root = by_name(exporter)["tools/call"]
    assert root.parent is None
    assert own_trace is not None and own_trace != CALLER_TRACE
    assert meta_out["traceparent"].startswith(f"00-{own_trace}-")
    assert "tracestate" not in meta_out  # the caller's state belonged to a trace we did not join


def test_a_malformed_meta_traceparent_falls_back_to_a_valid_header(
    captured: tuple[Tracing, InMemorySpanExporter],
) -> None:
    tracing, _ = captured
    with tracing.request(
        method="tools/call", meta={"traceparent": "junk"}, headers={"traceparent": CALLER_PARENT}
    ) as req:
        assert req.trace_id == CALLER_TRACE


def test_an_oversized_tracestate_is_dropped_but_the_traceparent_kept(
    captured: tuple[Tracing, InMemorySpanExporter],
) -> None:
    tracing, _ = captured
    out: dict[str, str] = {}
    state = ",".join(f"k{i}=" + "v" * 40 for i in range(30))  # > 512 characters
    with tracing.request(
        method="tools/call", headers={"traceparent": CALLER_PARENT, "tracestate": state}
    ) as req:
        with req.upstream_call(server="s", method="tools/call", name="t", transport="stdio") as call:
            call.inject_headers(out)
        assert req.trace_id == CALLER_TRACE
    assert set(out) == {"traceparent"}


def test_with_accept_incoming_off_the_caller_is_linked_not_parent() -> None:
    exporter = InMemorySpanExporter()
    tracing = Tracing(
        TracingConfig(enabled=True, accept_incoming=False), processor=SimpleSpanProcessor(exporter)
    )
    with tracing.request(method="tools/list", headers={"traceparent": CALLER_PARENT}) as req:
        assert req.trace_id != CALLER_TRACE
    (root,) = exporter.get_finished_spans()
    assert root.parent is None
    assert [
        (format(link.context.trace_id, "032x"), format(link.context.span_id, "016x")) for link in root.links
    ] == [(CALLER_TRACE, CALLER_SPAN)]
    assert (root.attributes or {})["broker.trace.incoming_ignored"] is True
    tracing.shutdown()


def test_sampling_follows_the_callers_flag_and_the_ratio_for_new_traces() -> None:
    exporter = InMemorySpanExporter()
    tracing = Tracing(TracingConfig(enabled=True, sample_ratio=0.0), processor=SimpleSpanProcessor(exporter))
    out: dict[str, str] = {}
    with tracing.request(method="tools/call") as unsampled:
        with unsampled.upstream_call(server="s", method="tools/call", name="t", transport="stdio") as call:
            call.inject_headers(out)
        assert unsampled.trace_id is not None  # still there for logs and the audit record
    assert exporter.get_finished_spans() == ()
    assert int(out["traceparent"][-2:], 16) & 1 == 0  # the upstream learns we did not sample
    with tracing.request(method="tools/call", headers={"traceparent": CALLER_PARENT}):
        pass
    assert [s.name for s in exporter.get_finished_spans()] == ["tools/call"]
    not_sampled_parent = CALLER_PARENT[:-2] + "00"
    meta: dict[str, str] = {}
    with tracing.request(method="tools/call", meta={"traceparent": not_sampled_parent}) as req:
        with req.decision("cedar") as decision:
            decision.record_decision(effect="allow", policy_version="v1")
            logged_span = format(trace.get_current_span().get_span_context().span_id, "016x")
        with req.upstream_call(server="s", method="tools/call", name="t", transport="stdio") as call:
            call.inject_meta(meta)
        req.record_authentication("jwt", 1, 2)
        assert req.trace_id == CALLER_TRACE and logged_span == req.span_id
        # No child spans: the upstream's parent is the (unrecorded) request span, flag still off.
        assert meta == {"traceparent": f"00-{CALLER_TRACE}-{req.span_id}-00"}
    assert len(exporter.get_finished_spans()) == 1
    tracing.shutdown()


def test_an_exception_marks_the_span_failed_and_restores_the_context(
    captured: tuple[Tracing, InMemorySpanExporter],
) -> None:
    tracing, exporter = captured
    with pytest.raises(RuntimeError), tracing.request(method="tools/call") as req, req.decision("opa"):
        raise RuntimeError("engine exploded")
    assert not trace.get_current_span().get_span_context().is_valid
    spans = by_name(exporter)
    for name in ("broker.decide", "tools/call"):
        assert spans[name].status.status_code is StatusCode.ERROR
        assert (spans[name].attributes or {})["error.type"] == "RuntimeError"
        assert spans[name].events == ()  # no exception event: messages may carry arguments


def test_a_refusal_is_an_outcome_not_an_error_but_a_fault_is(
    captured: tuple[Tracing, InMemorySpanExporter],
) -> None:
    tracing, exporter = captured
    with tracing.request(method="tools/call") as req:
        with req.decision("cedar") as decision:
            decision.record_decision(effect="deny", policy_version="v1", policy_ids=["no-writes"])
        req.outcome("policy_denied")
    with tracing.request(method="prompts/get") as req:
        with req.decision("opa") as decision:
            decision.record_decision(effect="deny", policy_version="v1", decision_id="d-9", failed=True)
        with req.upstream_call(server="s", method="prompts/get", name="p", transport="stdio") as call:
            call.outcome("upstream_timeout", fault=True)
        req.outcome("upstream_timeout", fault=True)
    decide_1, denied, decide_2, upstream, failed = exporter.get_finished_spans()
    assert denied.name == "tools/call" and failed.name == "prompts/get" and upstream.name == "prompts/get p"
    assert denied.status.status_code is StatusCode.UNSET
    assert (denied.attributes or {})["error.type"] == "policy_denied"
    assert decide_1.status.status_code is StatusCode.UNSET
    assert (decide_1.attributes or {})["broker.policy.ids"] == ("no-writes",)
    assert decide_2.status.status_code is StatusCode.ERROR
    assert (decide_2.attributes or {})["error.type"] == "policy_error"
    assert (decide_2.attributes or {})["broker.decision.id"] == "d-9"
    for span in (upstream, failed):
        assert span.status.status_code is StatusCode.ERROR
        assert (span.attributes or {})["error.type"] == "upstream_timeout"


def test_the_open_span_is_the_current_one_for_logs(captured: tuple[Tracing, InMemorySpanExporter]) -> None:
    tracing, _ = captured
    with tracing.request(method="tools/call") as req:
        current = trace.get_current_span().get_span_context()
        assert format(current.span_id, "016x") == req.span_id
        with req.decision("cedar"):
            inner = trace.get_current_span().get_span_context()
            assert inner.trace_id == current.trace_id and inner.span_id != current.span_id
        assert trace.get_current_span().get_span_context().span_id == current.span_id
    assert not trace.get_current_span().get_span_context().is_valid


@pytest.mark.anyio
async def test_concurrent_requests_keep_their_own_traces(
    captured: tuple[Tracing, InMemorySpanExporter],
) -> None:
    tracing, exporter = captured

    async def one(n: int) -> str | None:
        with tracing.request(method="tools/call", request_id=n) as req:
            await asyncio.sleep(0.01 * (3 - n))
            with req.upstream_call(server="s", method="tools/call", name=f"t{n}", transport="stdio"):
                await asyncio.sleep(0.005)
                assert format(trace.get_current_span().get_span_context().trace_id, "032x") == req.trace_id
            return req.trace_id

    trace_ids = await asyncio.gather(*(one(n) for n in range(3)))
    assert len(set(trace_ids)) == 3
    spans = exporter.get_finished_spans()
    roots = {(s.attributes or {})["jsonrpc.request.id"]: s for s in spans if s.kind is SpanKind.SERVER}
    for s in spans:
        if s.kind is SpanKind.CLIENT:
            n = s.name.removeprefix("tools/call t")
            assert s.parent is not None and s.parent.span_id == roots[n].context.span_id


def test_tracing_off_hands_out_shared_no_op_objects_and_leaves_meta_alone() -> None:
    tracing = Tracing(TracingConfig(enabled=False))
    assert not tracing.enabled
    first = tracing.request(method="tools/call", headers={"traceparent": CALLER_PARENT})
    second = tracing.request(method="tools/list")
    assert first is second
    assert first.decision("cedar") is first.upstream_call(server="s", method="m", name="n", transport="stdio")
    meta = {"traceparent": CALLER_PARENT, "tracestate": "a=b"}
    headers: dict[str, str] = {}
    with first as req, req.upstream_call(server="s", method="m", name="n", transport="stdio") as call:
        call.inject_meta(meta)
        call.inject_headers(headers)
        assert req.trace_id is None and req.span_id is None
        assert not trace.get_current_span().get_span_context().is_valid
    assert meta == {"traceparent": CALLER_PARENT, "tracestate": "a=b"}  # passes through untouched
    assert headers == {}
    tracing.shutdown()
    assert tracing.force_flush()


def test_the_global_tracer_provider_is_never_replaced(captured: tuple[Tracing, InMemorySpanExporter]) -> None:
    tracing, exporter = captured
    assert tracing.enabled
    assert type(trace.get_tracer_provider()).__name__ == "ProxyTracerProvider"
    # A library tracing through the global API inside our request is not captured by us.
    with tracing.request(method="tools/call"), trace.get_tracer("lib").start_as_current_span("library-span"):
        pass
    assert [s.name for s in exporter.get_finished_spans()] == ["tools/call"]


def test_after_shutdown_requests_are_not_traced(captured: tuple[Tracing, InMemorySpanExporter]) -> None:
    tracing, exporter = captured
    tracing.shutdown()
    assert not tracing.enabled
    with tracing.request(method="tools/call") as req:
        assert req.trace_id is None
    assert exporter.get_finished_spans() == ()


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"sample_ratio": 1.5}, "sample_ratio must be within 0..1"),
        ({"sample_ratio": -0.1}, "sample_ratio must be within 0..1"),
        ({"protocol": "zipkin"}, "protocol must be http/protobuf or grpc"),
        ({"timeout": 0}, "timeout must be positive"),
    ],
)
def test_bad_config_values_are_refused_with_the_key_named(fields: dict[str, Any], message: str) -> None:
    with pytest.raises(TracingError, match=message):
        TracingConfig(enabled=True, **fields)


def test_the_collector_headers_stay_out_of_repr() -> None:
    config = TracingConfig(enabled=True, headers={"x-api-key": "sekrit"})
    assert "sekrit" not in repr(config)


def test_grpc_export_needs_its_package_and_says_so() -> None:
    config = TracingConfig(enabled=True, protocol="grpc", endpoint="http://127.0.0.1:4317")
    if importlib.util.find_spec("opentelemetry.exporter.otlp.proto.grpc") is None:
        with pytest.raises(TracingError, match="opentelemetry-exporter-otlp-proto-grpc"):
            Tracing(config)
    else:
        tracing = Tracing(config)
        assert tracing.enabled
        tracing.shutdown()


def test_authentication_done_before_parsing_is_recorded_inside_the_backdated_request(
    captured: tuple[Tracing, InMemorySpanExporter],
) -> None:
    tracing, exporter = captured
    arrived = time.time_ns() - 5_000_000  # the request came in 5 ms ago, verified 3 ms ago
    verified = arrived + 2_000_000
    with tracing.request(method="tools/call", start_time_ns=arrived) as req:
        req.record_authentication("jwt", arrived + 1000, verified)
    with tracing.request(method="tools/call", start_time_ns=arrived) as req:
        req.record_authentication("jwt", arrived, verified, outcome="insufficient_scope")
    auth_ok, root_ok, auth_failed, _ = exporter.get_finished_spans()
    assert auth_ok.name == "broker.authenticate" and auth_ok.parent is not None
    assert auth_ok.parent.span_id == root_ok.context.span_id
    assert root_ok.start_time == arrived
    assert (auth_ok.start_time, auth_ok.end_time) == (arrived + 1000, verified)
    assert root_ok.end_time is not None and root_ok.end_time >= verified
    assert dict(auth_ok.attributes or {}) == {"broker.auth.method": "jwt", "broker.outcome": "ok"}
    assert (auth_failed.attributes or {})["error.type"] == "insufficient_scope"
    off = Tracing(TracingConfig())
    with off.request(method="tools/call", start_time_ns=arrived) as req:
        req.record_authentication("jwt", arrived, verified)  # a no-op, like every other step
