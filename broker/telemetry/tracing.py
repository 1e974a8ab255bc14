"""OpenTelemetry spans for one request: the request, authentication, decision, approval wait, upstream call.

```
tools/call github__create_issue        SERVER   (the caller's traceparent is its parent)
├── broker.authenticate                INTERNAL
├── broker.decide                      INTERNAL engine, effect, policy version, policy ids
├── broker.approval                    INTERNAL the wait for a human
└── tools/call create_issue            CLIENT   traceparent injected into _meta / headers
```

`Tracing` owns its `TracerProvider` and never installs it as the global one: the MCP SDK
and libraries that trace through the global API are unaffected, and two brokers in one
process (or a test) each see only their own spans.

When tracing is off, `request()` hands back one shared `RequestTrace` whose methods do
nothing and whose steps are one shared `Step`: no span, no context switch, no
allocation per request, so the hot path pays a few attribute lookups (bench/telemetry.py).
The caller's `_meta` trace context then travels upstream untouched, as any other `_meta`
key does (gateway/stages/forward.py).

Child spans name the request span as their parent explicitly, so they stay in the right
trace even if a step runs in another task; while a span is open it is also the current
span of the context, which is where the JSON log formatter reads the trace id.

The span shapes (`RequestTrace`, `Step`) and their attributes are in spans.py.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Final, Literal

from opentelemetry.context import Context
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import SpanProcessor, TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter
from opentelemetry.sdk.trace.sampling import ParentBased, TraceIdRatioBased
from opentelemetry.trace import Link, SpanKind, Tracer, get_current_span
from opentelemetry.util.types import AttributeValue

from broker.telemetry.propagation import TraceCarrier
from broker.telemetry.spans import (
    INCOMING_REJECTED,
    METHOD,
    NO_TRACE,
    PROTOCOL_VERSION,
    REQUEST_ID,
    SESSION_ID,
    TRANSPORT,
    RequestTrace,
    SdkRequestTrace,
)

ExportProtocol = Literal["http/protobuf", "grpc"]

INSTRUMENTATION_NAME: Final = "mcp-authz-broker"


class TracingError(Exception):
    """Tracing cannot be set up as configured (bad value, exporter package missing)."""


@dataclass(frozen=True)
class TracingConfig:
    """The `tracing:` section of the broker config.

    `endpoint` None lets the OTLP exporter use its standard environment variables
    (`OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`, ...) and defaults (http://localhost:4318/v1/traces
    for http/protobuf). `sample_ratio` applies to traces the broker starts; a caller's
    sampled flag is followed (parent-based sampling). With `accept_incoming` false the
    caller's context is not trusted as a parent: each request starts a new trace that
    links to the caller's.
    """

    enabled: bool = False
    endpoint: str | None = None
    protocol: ExportProtocol = "http/protobuf"
    service_name: str = "mcp-authz-broker"
    sample_ratio: float = 1.0
    headers: Mapping[str, str] = field(default_factory=dict, repr=False, hash=False)
    """Sent with every export (a collector's API key): resolved secrets, kept out of repr."""
    timeout: float = 10.0
    accept_incoming: bool = True

    def __post_init__(self) -> None:
        if not 0.0 <= self.sample_ratio <= 1.0:
            raise TracingError(f"tracing.sample_ratio must be within 0..1, not {self.sample_ratio}")
        if self.protocol not in ("http/protobuf", "grpc"):
            raise TracingError(f"tracing.protocol must be http/protobuf or grpc, not {self.protocol!r}")
        if self.timeout <= 0:
            raise TracingError(f"tracing.timeout must be positive, not {self.timeout}")


# -- the entry point ---------------------------------------------------------------------------


class Tracing:
    """The broker's tracer. Build one from config in app.py; `shutdown()` when the broker stops.

    `processor` replaces the exporting pipeline (tests and the bench pass a
    `SimpleSpanProcessor(InMemorySpanExporter())`); by default spans are batched to OTLP.
    """

    def __init__(
        self, config: TracingConfig, *, processor: SpanProcessor | None = None, version: str = ""
    ) -> None:
        self.config = config
        self._off = NO_TRACE
        self._carrier = TraceCarrier()
        self._provider: TracerProvider | None = None
        self._tracer: Tracer | None = None
        if not config.enabled:
            return
        attributes: dict[str, str] = {"service.name": config.service_name}
        if version:
            attributes["service.version"] = version
        provider = TracerProvider(
            sampler=ParentBased(TraceIdRatioBased(config.sample_ratio)),
            resource=Resource.create(attributes),
            shutdown_on_exit=False,  # the broker shuts it down; no atexit hook per instance
        )
        provider.add_span_processor(processor or BatchSpanProcessor(_exporter(config)))
        self._provider = provider
        self._tracer = provider.get_tracer(INSTRUMENTATION_NAME, version or None)

    @property
    def enabled(self) -> bool:
        return self._tracer is not None

    def request(
        self,
        *,
        method: str,
        request_id: object = None,
        transport: str = "streamable-http",
        protocol_version: str | None = None,
        session_id: str | None = None,
        meta: Any = None,
        headers: Mapping[str, str] | None = None,
        start_time_ns: int | None = None,
    ) -> RequestTrace:
        """The span of one inbound request, parented on the caller's trace context if it sent one
        (`_meta` first, then the lower-case HTTP `headers`). Use it as a context manager.
        `meta` is the request's `params._meta` as received: anything but a mapping is ignored.
        `start_time_ns` (`time.time_ns()`) backdates it to the request's arrival."""
        tracer = self._tracer
        if tracer is None:
            return self._off
        remote = self._carrier.extract(meta, headers)
        attributes: dict[str, AttributeValue] = {METHOD: method, TRANSPORT: transport}
        if request_id is not None:
            attributes[REQUEST_ID] = str(request_id)
        if protocol_version:
            attributes[PROTOCOL_VERSION] = protocol_version
        if session_id:
            attributes[SESSION_ID] = session_id
        links: Sequence[Link] = ()
        parent: Context = Context()  # never the ambient context: a request is a root or the caller's child
        if remote is not None:
            if self.config.accept_incoming:
                parent = remote
            else:
                links = (Link(get_current_span(remote).get_span_context()),)
                attributes[INCOMING_REJECTED] = True
        span = tracer.start_span(
            method,
            context=parent,
            kind=SpanKind.SERVER,
            attributes=attributes,
            links=links,
            start_time=start_time_ns,
        )
        return SdkRequestTrace(tracer, self._carrier, span, method)

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        """Export every ended span now (tests, and before a planned exit)."""
        return self._provider.force_flush(timeout_millis) if self._provider is not None else True

    def shutdown(self) -> None:
        """Flush and stop the exporter; later requests get no spans."""
        if self._provider is not None:
            self._provider.shutdown()
            self._provider = None
            self._tracer = None


def _exporter(config: TracingConfig) -> SpanExporter:
    """The OTLP exporter for `config.protocol`; gRPC needs its own optional package."""
    headers = dict(config.headers) or None
    if config.protocol == "grpc":
        try:
            from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import (  # type: ignore[import-not-found,unused-ignore]
                OTLPSpanExporter as GrpcExporter,
            )
        except ImportError:
            raise TracingError(
                "tracing.protocol grpc needs the package opentelemetry-exporter-otlp-proto-grpc; "
                "install it or use http/protobuf"
            ) from None
        exporter: SpanExporter = GrpcExporter(
            endpoint=config.endpoint, headers=headers, timeout=config.timeout
        )
        return exporter
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

    return OTLPSpanExporter(endpoint=config.endpoint, headers=headers, timeout=config.timeout)
