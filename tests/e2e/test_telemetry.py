"""End to end: the broker's metrics and traces, from outside, as an operator's tools see them.

A real broker process with a real stdio upstream (counter) and a real HTTP upstream (whoami,
which reports the trace context each call arrived with); `/metrics` scraped over HTTP and
parsed with Prometheus' text parser; spans exported by the broker's own OTLP/HTTP exporter to
a collector endpoint on 127.0.0.1 and decoded with the OTLP protobuf definitions.
"""

from __future__ import annotations

import json
import secrets
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import mcp_types as types
import pytest
from mcp import Client
from mcp.shared.exceptions import MCPError
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.trace.v1.trace_pb2 import Span
from prometheus_client.parser import text_string_to_metric_families
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from tests.fixtures import fixture_script, running_server
from tests.support.broker import broker_config, http_upstream, running_broker, stdio_upstream
from tests.unit.telemetry.serve import serving

pytestmark = pytest.mark.anyio

POLICIES = Path(__file__).resolve().parents[1] / "support" / "policies" / "approvals"


@dataclass
class Collector:
    """An OTLP/HTTP trace endpoint that keeps every span it is sent."""

    spans: list[Span] = field(default_factory=list)

    async def traces(self, request: Request) -> Response:
        export = ExportTraceServiceRequest.FromString(await request.body())
        for resource in export.resource_spans:
            for scope in resource.scope_spans:
                self.spans.extend(scope.spans)
        return Response(b"", media_type="application/x-protobuf")


@pytest.fixture
def collector() -> Iterator[tuple[Collector, str]]:
    sink = Collector()
    with serving(Starlette(routes=[Route("/v1/traces", sink.traces, methods=["POST"])])) as url:
        yield sink, f"{url}/v1/traces"


@pytest.fixture
def whoami() -> Iterator[str]:
    with running_server(fixture_script("whoami"), transport="http") as server:
        yield server.url


def text_of(result: types.CallToolResult) -> str:
    block = result.content[0]
    assert isinstance(block, types.TextContent)
    return block.text


def samples(text: str, name: str) -> list[tuple[dict[str, str], float]]:
    out = []
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == name:
                out.append((dict(sample.labels), sample.value))
    return out


def value(text: str, name: str, **labels: str) -> float:
    return sum(v for got, v in samples(text, name) if all(got.get(k) == want for k, want in labels.items()))


async def test_metrics_count_what_happened(tmp_path: Path) -> None:
    config = broker_config(
        {"counter": stdio_upstream("counter")},
        policy={"path": str(POLICIES), "watch": False},
        identity={"default_principal": {"type": "User", "id": "alice", "roles": ["engineer"]}},
        approvals={"enabled": False},
    )
    with running_broker(tmp_path, config) as broker:
        async with Client(broker.url, mode="legacy") as client:
            for _ in range(3):
                await client.call_tool("counter__count", {})
            with pytest.raises(MCPError):
                await client.call_tool("counter__hit_destructive", {})  # needs an approval: refused
            with pytest.raises(MCPError):
                await client.call_tool("counter__nope", {})
        async with httpx.AsyncClient(timeout=10) as http:
            scrape = await http.get(f"{broker.base_url}/metrics")
    assert scrape.status_code == 200
    assert scrape.headers["content-type"].startswith("text/plain")
    text = scrape.text
    calls = "mcp_broker_calls_total"
    assert value(text, calls, server="counter", tool="counter__count", effect="allow", outcome="ok") == 3
    assert value(text, calls, server="counter", effect="require_approval", outcome="approval_required") == 1
    assert value(text, calls, server="", effect="none", outcome="unknown_tool") == 1
    assert value(text, "mcp_broker_decision_duration_seconds_count", engine="cedar") == 4
    assert value(text, "mcp_broker_upstream_duration_seconds_count", server="counter") == 3
    assert value(text, "mcp_broker_audit_write_duration_seconds_count") >= 5
    assert value(text, "mcp_broker_audit_write_failures_total") == 0
    [(info, _)] = samples(text, "mcp_broker_build_info")
    assert info["engine"] == "cedar" and info["policy_version"].startswith(("sha256:", "git:"))
    assert value(text, "mcp_broker_breaker_open", server="counter") == 0  # declared at start


async def test_spans_nest_under_the_callers_trace_and_reach_the_upstream(
    tmp_path: Path, collector: tuple[Collector, str], whoami: str
) -> None:
    sink, endpoint = collector
    config = broker_config(
        {"who": http_upstream(whoami), "counter": stdio_upstream("counter")},
        tracing={"enabled": True, "endpoint": endpoint, "service_name": "broker-e2e"},
    )
    trace_id, caller_span = secrets.token_hex(16), secrets.token_hex(8)
    traceparent = f"00-{trace_id}-{caller_span}-01"
    with running_broker(tmp_path, config) as broker:
        async with Client(broker.url, mode="legacy") as client:
            report = json.loads(
                text_of(await client.call_tool("who__trace", {}, meta={"traceparent": traceparent}))
            )
            await client.call_tool("counter__count", {}, meta={"traceparent": traceparent})
    # The broker stopped: its batch processor exported everything at shutdown.
    spans = [s for s in sink.spans if s.trace_id.hex() == trace_id]
    by_name: dict[str, list[Span]] = {}
    for span in spans:
        by_name.setdefault(span.name, []).append(span)
    [request] = by_name["tools/call who__trace"]
    assert request.parent_span_id.hex() == caller_span
    assert request.kind == Span.SpanKind.SPAN_KIND_SERVER
    [upstream] = by_name["tools/call trace"]
    assert upstream.kind == Span.SpanKind.SPAN_KIND_CLIENT
    decide = [s for s in by_name["broker.decide"] if s.parent_span_id == request.span_id]
    assert len(decide) == 1 and upstream.parent_span_id == request.span_id
    attributes = {a.key: a.value for a in decide[0].attributes}
    assert attributes["broker.decision.effect"].string_value == "allow"
    # The HTTP upstream got the upstream span's context, in _meta and as the traceparent header.
    sent = f"00-{trace_id}-{upstream.span_id.hex()}-01"
    assert report["meta"]["traceparent"] == sent
    assert report["headers"]["traceparent"] == sent
    assert "tools/call counter__count" in by_name and "tools/call count" in by_name


async def test_without_tracing_the_callers_context_passes_through(tmp_path: Path, whoami: str) -> None:
    config = broker_config({"who": http_upstream(whoami)})
    traceparent = f"00-{secrets.token_hex(16)}-{secrets.token_hex(8)}-01"
    with running_broker(tmp_path, config) as broker:
        async with Client(broker.url, mode="legacy") as client:
            report = json.loads(
                text_of(await client.call_tool("who__trace", {}, meta={"traceparent": traceparent}))
            )
    assert report == {"headers": {"traceparent": traceparent}, "meta": {"traceparent": traceparent}}


async def test_audit_records_carry_the_trace_id(tmp_path: Path, collector: tuple[Collector, str]) -> None:
    _, endpoint = collector
    config = broker_config(
        {"counter": stdio_upstream("counter")},
        tracing={"enabled": True, "endpoint": endpoint},
        audit={"directory": str(tmp_path / "audit")},
    )
    trace_id = secrets.token_hex(16)
    with running_broker(tmp_path, config) as broker:
        async with Client(broker.url, mode="legacy") as client:
            meta: dict[str, Any] = {"traceparent": f"00-{trace_id}-{secrets.token_hex(8)}-01"}
            await client.call_tool("counter__count", {}, meta=meta)
    records = [
        json.loads(line)
        for path in sorted((tmp_path / "audit").glob("audit-*.jsonl"))
        for line in path.read_text().splitlines()
        if line.strip()
    ]
    calls = [r for r in records if r["kind"] == "request" and r["method"] == "tools/call"]
    assert [r["trace_id"] for r in calls] == [trace_id]
