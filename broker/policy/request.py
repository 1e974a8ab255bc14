"""Build the authorization request document: one pure function, the same for both engines.

The document (schemas/authz-request.schema.json) is what OPA receives as `input` and what
the Cedar adapter turns into entities and a request. Everything a policy can see is in
it; nothing else reaches the engines.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Final

from broker.identity.principal import Principal
from broker.policy.arguments import ArgumentLimits, ArgumentSummary, summarize
from broker.policy.engine import AuthzRequest

ACTION_FOR_METHOD: Final[Mapping[str, str]] = {
    "tools/call": "call_tool",
    "resources/read": "read_resource",
    "resources/subscribe": "read_resource",
    "prompts/get": "get_prompt",
    "completion/complete": "complete",
}
"""The action a routed MCP request asks for. Subscribing to a resource is reading it."""

LIST_ACTION_FOR_KIND: Final[Mapping[str, str]] = {
    "tools": "list_tools",
    "resources": "list_resources",
    "prompts": "list_prompts",
}
ITEM_ACTION_FOR_KIND: Final[Mapping[str, str]] = {
    "tools": "call_tool",
    "resources": "read_resource",
    "prompts": "get_prompt",
}


@dataclass(frozen=True, slots=True)
class CallFacts:
    """What the front knows about the request itself."""

    transport: str
    protocol_version: str
    session: str | None = None
    trace_id: str | None = None


def build_request(
    principal: Principal,
    action: str,
    resource: Mapping[str, Any],
    arguments: Mapping[str, Any] | None,
    facts: CallFacts,
    *,
    listing: bool = False,
    now: datetime | None = None,
    limits: ArgumentLimits | None = None,
) -> tuple[AuthzRequest, ArgumentSummary]:
    """The authorization request for one decision, and the argument summary it carries."""
    summary = summarize(arguments, limits or ArgumentLimits())
    moment = now or datetime.now(UTC)
    context: dict[str, Any] = {
        "arguments": summary.arguments,
        "argument_digest": summary.digest,
        "paths": list(summary.paths),
        "hosts": list(summary.hosts),
        "argument_limits": summary.limits,
        "problems": list(summary.problems),
        "transport": facts.transport,
        "protocol_version": facts.protocol_version,
        "time": moment.strftime("%Y-%m-%dT%H:%M:%SZ"),
        "hour": moment.hour,
        "weekday": moment.weekday(),
        "session": facts.session,
        "trace_id": facts.trace_id,
        "listing": listing,
        "approval": {"granted": False},
    }
    document: AuthzRequest = {
        "principal": principal.document,
        "action": action,
        "resource": dict(resource),
        "context": context,
    }
    return document, summary
