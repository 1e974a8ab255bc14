"""The one shape every request has inside the broker, whichever front and era it came from."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from broker.gateway.sessions import DownstreamSession
from broker.identity.principal import Principal
from broker.jsonrpc import RequestId
from broker.policy.decision import Decision
from broker.telemetry.spans import NO_TRACE, RequestTrace
from broker.upstream.connection import Relay

if TYPE_CHECKING:
    from broker.approval.model import Approval
    from broker.traffic.quota import QuotaCharge
    from broker.traffic.subject import TrafficSubject


@dataclass(slots=True)
class Target:
    """Where a call goes: the upstream, and the params as that upstream must see them."""

    upstream: str
    kind: str  # "tool" | "prompt" | "resource" | "completion" | "subscription"
    name: str  # the name or URI the upstream knows
    namespaced: bool
    resource: dict[str, Any]
    """What policies see of the target (the `resource` of the authorization request)."""


@dataclass(slots=True)
class Call:
    method: str
    params: dict[str, Any]
    request_id: RequestId
    protocol_version: str
    transport: str  # "streamable-http" | "stdio"
    relay: Relay
    session: DownstreamSession | None = None
    client_capabilities: dict[str, Any] = field(default_factory=dict)
    principal: Principal | None = None
    credential: str | None = field(default=None, repr=False)
    """The caller's own bearer token: only for exchanging it (RFC 8693); never forwarded or logged."""
    target: Target | None = None
    decision: Decision | None = None
    argument_digest: str | None = None
    authz_request: dict[str, Any] | None = None
    """The authorization request `decide` evaluated (the approval stage decides it again)."""
    approval: Approval | None = None
    disconnected: asyncio.Event | None = None
    """Set by a front when the caller's connection goes away (ends a wait for an approval)."""
    upstream_ms: float | None = None
    """How long the upstream took (set by forward; the audit record carries it)."""
    listed: int | None = None
    """For a list: how many items the caller was shown (the audit record carries it)."""
    result_guard: dict[str, Any] | None = None
    """What guard-out found or redacted in the result (codes and counts, never values)."""
    trace: RequestTrace = NO_TRACE
    """The request's span (a shared no-op while tracing is off); stages open their steps on it."""
    trace_headers: dict[str, str] | None = None
    """The caller's W3C `traceparent`/`tracestate` HTTP headers, if it sent them."""
    authenticated: tuple[str, int, int] | None = None
    """How and when the front verified the caller's credential: (method, start ns, end ns)."""
    arrived_ns: int | None = None
    """When the front received the request (`time.time_ns()`): the request span starts there."""
    traffic_subject: TrafficSubject | None = None
    """The call as the traffic parts see it, built once (broker/gateway/stages/traffic.py)."""
    quota_charge: QuotaCharge | None = None
    """What the traffic stage charged to call budgets (refunded if the call is refused later)."""

    @property
    def progress_token(self) -> Any:
        meta = self.params.get("_meta")
        return meta.get("progressToken") if isinstance(meta, dict) else None
