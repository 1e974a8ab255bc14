"""The default export path, for real: batched spans sent over OTLP/HTTP (protobuf) to a collector
endpoint on 127.0.0.1, decoded with the OTLP protobuf definitions."""

from __future__ import annotations

from dataclasses import dataclass, field

from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from broker.telemetry.tracing import Tracing, TracingConfig
from tests.unit.telemetry.serve import serving


@dataclass
class Collector:
    """Records every OTLP export it receives."""

    exports: list[ExportTraceServiceRequest] = field(default_factory=list)
    headers: list[dict[str, str]] = field(default_factory=list)

    async def traces(self, request: Request) -> Response:
        self.headers.append(dict(request.headers))
        self.exports.append(ExportTraceServiceRequest.FromString(await request.body()))
        return Response(b"", media_type="application/x-protobuf")


def test_spans_reach_an_otlp_http_collector_with_service_name_and_links() -> None:
    collector = Collector()
    app = Starlette(routes=[Route("/v1/traces", collector.traces, methods=["POST"])])
    with serving(app) as url:
        config = TracingConfig(
            enabled=True,
            endpoint=f"{url}/v1/traces",
            service_name="broker-under-test",
            headers={"x-collector-key": "k-123"},
            timeout=5.0,
        )
        tracing = Tracing(config, version="9.9.9")  # the default pipeline: batch processor + OTLP
        with tracing.request(method="tools/call", request_id=1) as req:
            req.set_target("time", "time__now")
            with req.decision("cedar") as decision:
                decision.record_decision(effect="allow", policy_version="v1")
            with req.upstream_call(server="time", method="tools/call", name="now", transport="stdio"):
                pass
            trace_id = req.trace_id
        assert tracing.force_flush(10_000)
        tracing.shutdown()
    assert collector.exports, "nothing was exported"
    assert all(h["content-type"] == "application/x-protobuf" for h in collector.headers)
    assert all(h["x-collector-key"] == "k-123" for h in collector.headers)
    spans = []
    for export in collector.exports:
        for resource_spans in export.resource_spans:
            resource = {a.key: a.value.string_value for a in resource_spans.resource.attributes}
            assert resource["service.name"] == "broker-under-test"
            assert resource["service.version"] == "9.9.9"
            for scope in resource_spans.scope_spans:
                assert scope.scope.name == "mcp-authz-broker"
                spans.extend(scope.spans)
    by_name = {s.name: s for s in spans}
    assert set(by_name) == {"tools/call time__now", "broker.decide", "tools/call now"}
    root = by_name["tools/call time__now"]
    assert root.trace_id.hex() == trace_id and root.parent_span_id == b""
    for name in ("broker.decide", "tools/call now"):
        assert by_name[name].trace_id == root.trace_id
        assert by_name[name].parent_span_id == root.span_id
