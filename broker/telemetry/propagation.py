"""W3C Trace Context across the broker's two hops: caller → broker and broker → upstream.

Where the context travels (SEP-414, the MCP convention the official SDKs implement):

- **`params._meta`**: the keys `traceparent` and `tracestate` (un-prefixed: MCP's one
  exception to the `_meta` key prefix rule, kept for compatibility with OpenTelemetry's MCP
  conventions), with the W3C header formats as values. This is transport-independent, so it
  is the only carrier a stdio hop has.
- **HTTP headers** `traceparent` / `tracestate`: what an OpenTelemetry-instrumented HTTP
  client sends by default.

Inbound, `_meta` wins over the HTTP header when both carry a valid `traceparent` (it is
MCP's own carrier and the more specific one: it names this request, while a header may
belong to an HTTP client that multiplexes several). Outbound, the broker writes `_meta`
for every upstream and, for HTTP upstreams, mirrors it into the headers
(`headers_from_meta`).

Malformed input is ignored, never an error: a caller's bad trace context must not fail
its call. Values are length-capped before parsing, and anything sent on is re-checked so a
header value can never carry a line break.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, MutableMapping
from typing import Any, Final

from opentelemetry.context import Context
from opentelemetry.trace import get_current_span
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

TRACEPARENT: Final = "traceparent"
TRACESTATE: Final = "tracestate"

MAX_TRACEPARENT: Final = 128
"""A version-00 traceparent is 55 characters; future versions may append fields, not megabytes."""
MAX_TRACESTATE: Final = 512
"""W3C: a vendor should propagate at least 512 characters of tracestate; we keep no more."""

_TRACEPARENT_SHAPE: Final = re.compile(r"[0-9a-f]{2}-[0-9a-f]{32}-[0-9a-f]{16}-[0-9a-f]{2}(-[0-9a-f-]*)?")
_PRINTABLE: Final = re.compile(r"[\x20-\x7e]*")


class TraceCarrier:
    """Reads and writes trace context in a str-keyed mapping (`_meta` or HTTP headers).

    Holds one W3C propagator; stateless otherwise, so one instance serves every request.
    """

    def __init__(self) -> None:
        self._propagator = TraceContextTextMapPropagator()

    def extract(self, meta: Any, headers: Mapping[str, str] | None) -> Context | None:
        """The caller's remote context, `_meta` first, then headers; None when neither holds a
        valid one. Header names must be lower case (as ASGI delivers them)."""
        for carrier in (meta, headers):
            if not carrier or not isinstance(carrier, Mapping):  # `_meta` is whatever the caller sent
                continue
            parent = carrier.get(TRACEPARENT)
            if not isinstance(parent, str) or len(parent) > MAX_TRACEPARENT:
                continue
            fields = {TRACEPARENT: parent}
            state = carrier.get(TRACESTATE)
            if isinstance(state, str) and len(state) <= MAX_TRACESTATE:
                fields[TRACESTATE] = state
            context = self._propagator.extract(fields, context=Context())
            if get_current_span(context).get_span_context().is_valid:
                return context
        return None

    def inject(self, carrier: MutableMapping[str, Any], context: Context) -> None:
        """Write the context's traceparent (and tracestate, or drop a stale one) into `carrier`."""
        carrier.pop(TRACESTATE, None)
        self._propagator.inject(carrier, context=context)


def headers_from_meta(meta: Any) -> dict[str, str]:
    """HTTP headers mirroring the trace context of an outgoing request's `_meta`.

    For HTTP upstream transports: the `_meta` of the JSON-RPC request is what the broker
    decided to propagate (its own span when tracing is on; the caller's context, passed
    through, when it is off), so the headers say the same. Values that are not well-formed
    are not sent.
    """
    if not isinstance(meta, dict):
        return {}
    parent = meta.get(TRACEPARENT)
    if (
        not isinstance(parent, str)
        or len(parent) > MAX_TRACEPARENT
        or not _TRACEPARENT_SHAPE.fullmatch(parent)
    ):
        return {}
    out = {TRACEPARENT: parent}
    state = meta.get(TRACESTATE)
    if isinstance(state, str) and state and len(state) <= MAX_TRACESTATE and _PRINTABLE.fullmatch(state):
        out[TRACESTATE] = state
    return out
