"""The span shapes of one request: `RequestTrace` (the request's server span) and its `Step`s.

The base classes do nothing: they are what a request gets when tracing is off, one shared
instance each, so call sites never branch on whether tracing is on. The SDK-backed
subclasses here override them; `Tracing` (tracing.py) decides which one a request gets.

Span names and attributes follow OpenTelemetry's MCP conventions where they define one
(`mcp.method.name`, `jsonrpc.request.id`, `gen_ai.tool.name`, `error.type`, `network.transport`);
the rest are `broker.*`. Arguments and results never go into spans.
"""

from __future__ import annotations

from collections.abc import MutableMapping, Sequence
from contextvars import Token
from types import TracebackType
from typing import Any, Final

from opentelemetry import context as otel_context
from opentelemetry.context import Context
from opentelemetry.trace import Span, SpanKind, StatusCode, Tracer, set_span_in_context
from opentelemetry.util.types import AttributeValue

from broker.telemetry.propagation import TraceCarrier

# -- attribute names ---------------------------------------------------------------------------

METHOD: Final = "mcp.method.name"
REQUEST_ID: Final = "jsonrpc.request.id"
PROTOCOL_VERSION: Final = "mcp.protocol.version"
SESSION_ID: Final = "mcp.session.id"
TOOL_NAME: Final = "gen_ai.tool.name"
ERROR_TYPE: Final = "error.type"
NETWORK_TRANSPORT: Final = "network.transport"
TRANSPORT: Final = "broker.transport"
PRINCIPAL_ID: Final = "broker.principal.id"
PRINCIPAL_TENANT: Final = "broker.principal.tenant"
SERVER: Final = "broker.upstream.name"
UPSTREAM_TRANSPORT: Final = "broker.upstream.transport"
OUTCOME: Final = "broker.outcome"
AUTH_METHOD: Final = "broker.auth.method"
ENGINE: Final = "broker.policy.engine"
POLICY_VERSION: Final = "broker.policy.version"
POLICY_IDS: Final = "broker.policy.ids"
EFFECT: Final = "broker.decision.effect"
DECISION_ID: Final = "broker.decision.id"
APPROVAL_ID: Final = "broker.approval.id"
INCOMING_REJECTED: Final = "broker.trace.incoming_ignored"


# -- the no-op shapes (tracing off); the SDK-backed classes below override them --------------


class Step:
    """One child span: a context manager with setters. This base does nothing (tracing off)."""

    __slots__ = ()

    def __enter__(self) -> Step:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        return None

    def set(self, key: str, value: AttributeValue) -> None:
        """Add one attribute."""

    def outcome(self, outcome: str, *, fault: bool = False) -> None:
        """How the step ended (`ok`, a reason code, ...); `fault` marks the span as an error."""

    def record_decision(
        self,
        *,
        effect: str,
        policy_version: str,
        policy_ids: Sequence[str] = (),
        decision_id: str | None = None,
        failed: bool = False,
    ) -> None:
        """The engine's answer; `failed` when it is a deny because the engine could not decide."""

    def inject_meta(self, meta: MutableMapping[str, Any]) -> None:
        """Write this span's context into an outgoing request's `_meta`."""

    def inject_headers(self, headers: MutableMapping[str, str]) -> None:
        """Write this span's context into outgoing HTTP headers."""


class RequestTrace:
    """The span of one request, and the factory of its steps. This base does nothing (tracing off)."""

    __slots__ = ("_step",)

    def __init__(self, step: Step) -> None:
        self._step = step

    def __enter__(self) -> RequestTrace:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        return None

    @property
    def trace_id(self) -> str | None:
        """32 lower-case hex digits, for logs and the audit record; None when tracing is off."""
        return None

    @property
    def span_id(self) -> str | None:
        return None

    def set_principal(self, principal_id: str, tenant: str | None = None) -> None:
        """Who is asking (after authentication)."""

    def set_target(self, server: str, name: str | None) -> None:
        """What is asked for (after the catalog): renames the span `<method> <name>`."""

    def outcome(self, outcome: str, *, fault: bool = False) -> None:
        """How the request ended: `ok`, `tool_error`, `error`, or the broker's reason code.
        `fault` marks the span as an error: a failure of the broker or the upstream, not a refusal."""

    def authentication(self, method: str) -> Step:
        """A span around verifying the caller's credential (`bearer`, `api_key`, `stdio`, ...)."""
        return self._step

    def record_authentication(self, method: str, start_ns: int, end_ns: int, outcome: str = "ok") -> None:
        """The authentication span, after the fact: for a front that verifies the credential before
        it has parsed the request (and so before the request span could start). Times are
        `time.time_ns()`; start the request span at the same arrival time (`start_time_ns`)."""

    def decision(self, engine: str) -> Step:
        """A span around `PolicyEngine.decide()`; call `record_decision()` on it."""
        return self._step

    def approval_wait(self, approval_id: str) -> Step:
        """A span around the wait for a human's approval; call `outcome()` on it."""
        return self._step

    def upstream_call(self, *, server: str, method: str, name: str | None, transport: str) -> Step:
        """A client span around the upstream round trip; inject its context into the request."""
        return self._step


# -- SDK-backed --------------------------------------------------------------------------------


class SdkStep(Step):
    __slots__ = ("_carrier", "_span", "_token")

    def __init__(self, span: Span, carrier: TraceCarrier) -> None:
        self._span = span
        self._carrier = carrier
        self._token: Token[Context] | None = None

    def __enter__(self) -> Step:
        self._token = otel_context.attach(set_span_in_context(self._span))
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        try:
            if exc_type is not None:
                _mark_failed(self._span, exc_type.__name__)
            self._span.end()
        finally:
            if self._token is not None:
                otel_context.detach(self._token)
                self._token = None

    def set(self, key: str, value: AttributeValue) -> None:
        self._span.set_attribute(key, value)

    def outcome(self, outcome: str, *, fault: bool = False) -> None:
        self._span.set_attribute(OUTCOME, outcome)
        if fault:
            _mark_failed(self._span, outcome)

    def record_decision(
        self,
        *,
        effect: str,
        policy_version: str,
        policy_ids: Sequence[str] = (),
        decision_id: str | None = None,
        failed: bool = False,
    ) -> None:
        span = self._span
        span.set_attribute(EFFECT, effect)
        span.set_attribute(POLICY_VERSION, policy_version)
        if policy_ids:
            span.set_attribute(POLICY_IDS, list(policy_ids))
        if decision_id:
            span.set_attribute(DECISION_ID, decision_id)
        if failed:
            _mark_failed(span, "policy_error")

    def inject_meta(self, meta: MutableMapping[str, Any]) -> None:
        self._carrier.inject(meta, set_span_in_context(self._span, Context()))

    def inject_headers(self, headers: MutableMapping[str, str]) -> None:
        self._carrier.inject(headers, set_span_in_context(self._span, Context()))


class UnsampledStep(Step):
    """The steps of a request the sampler dropped: no child spans (nothing would be recorded, and
    the SDK's non-recording spans still cost ≈ 10 µs each), but the upstream is still handed the
    request's context, sampled flag off, so it joins the trace and does not sample either."""

    __slots__ = ("_carrier", "_context")

    def __init__(self, context: Context, carrier: TraceCarrier) -> None:
        self._context = context
        self._carrier = carrier

    def inject_meta(self, meta: MutableMapping[str, Any]) -> None:
        self._carrier.inject(meta, self._context)

    def inject_headers(self, headers: MutableMapping[str, str]) -> None:
        self._carrier.inject(headers, self._context)


class SdkRequestTrace(RequestTrace):
    __slots__ = ("_carrier", "_method", "_parent", "_recording", "_span", "_token", "_tracer")

    def __init__(self, tracer: Tracer, carrier: TraceCarrier, span: Span, method: str) -> None:
        parent = set_span_in_context(span, Context())
        recording = span.is_recording()
        super().__init__(Step() if recording else UnsampledStep(parent, carrier))
        self._tracer = tracer
        self._carrier = carrier
        self._span = span
        self._method = method
        self._parent = parent
        self._recording = recording
        self._token: Token[Context] | None = None

    def __enter__(self) -> RequestTrace:
        self._token = otel_context.attach(self._parent)
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        try:
            if exc_type is not None:
                _mark_failed(self._span, exc_type.__name__)
            self._span.end()
        finally:
            if self._token is not None:
                otel_context.detach(self._token)
                self._token = None

    @property
    def trace_id(self) -> str | None:
        return format(self._span.get_span_context().trace_id, "032x")

    @property
    def span_id(self) -> str | None:
        return format(self._span.get_span_context().span_id, "016x")

    def set_principal(self, principal_id: str, tenant: str | None = None) -> None:
        self._span.set_attribute(PRINCIPAL_ID, principal_id)
        if tenant:
            self._span.set_attribute(PRINCIPAL_TENANT, tenant)

    def set_target(self, server: str, name: str | None) -> None:
        self._span.set_attribute(SERVER, server)
        if name:
            self._span.update_name(f"{self._method} {name}")
            if self._method == "tools/call":
                self._span.set_attribute(TOOL_NAME, name)

    def outcome(self, outcome: str, *, fault: bool = False) -> None:
        self._span.set_attribute(OUTCOME, outcome)
        if fault:
            _mark_failed(self._span, outcome)
        elif outcome != "ok":
            self._span.set_attribute(ERROR_TYPE, outcome)

    def _child(self, name: str, kind: SpanKind, attributes: dict[str, AttributeValue]) -> Step:
        if not self._recording:
            return self._step
        span = self._tracer.start_span(name, context=self._parent, kind=kind, attributes=attributes)
        return SdkStep(span, self._carrier)

    def authentication(self, method: str) -> Step:
        return self._child("broker.authenticate", SpanKind.INTERNAL, {AUTH_METHOD: method})

    def record_authentication(self, method: str, start_ns: int, end_ns: int, outcome: str = "ok") -> None:
        if not self._recording:
            return
        span = self._tracer.start_span(
            "broker.authenticate",
            context=self._parent,
            kind=SpanKind.INTERNAL,
            attributes={AUTH_METHOD: method, OUTCOME: outcome},
            start_time=start_ns,
        )
        if outcome != "ok":
            span.set_attribute(ERROR_TYPE, outcome)
        span.end(end_time=end_ns)

    def decision(self, engine: str) -> Step:
        return self._child("broker.decide", SpanKind.INTERNAL, {ENGINE: engine})

    def approval_wait(self, approval_id: str) -> Step:
        return self._child("broker.approval", SpanKind.INTERNAL, {APPROVAL_ID: approval_id})

    def upstream_call(self, *, server: str, method: str, name: str | None, transport: str) -> Step:
        attributes: dict[str, AttributeValue] = {
            METHOD: method,
            SERVER: server,
            UPSTREAM_TRANSPORT: transport,
            NETWORK_TRANSPORT: "pipe" if transport == "stdio" else "tcp",
        }
        if name and method == "tools/call":
            attributes[TOOL_NAME] = name
        return self._child(f"{method} {name}" if name else method, SpanKind.CLIENT, attributes)


def _mark_failed(span: Span, error_type: str) -> None:
    span.set_attribute(ERROR_TYPE, error_type)
    span.set_status(StatusCode.ERROR)


NO_TRACE: Final = RequestTrace(Step())
"""What a request carries while tracing is off (and before the gateway starts its span)."""
