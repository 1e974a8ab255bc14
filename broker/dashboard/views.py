"""What each page shows, as plain data built from the running broker (the templates only lay it out).

Kept apart from the routes so each view is a function of the broker's parts that a test can
call with real parts and read back, and so that what reaches a page is decided in one place:
argument summaries pass through the audit trail's secret redactor and are cut to a readable
size; no credential, raw request or authorization document is ever handed to a template.
"""

from __future__ import annotations

import json
import time
from collections.abc import Mapping
from typing import Any, Protocol

from broker.approval.approvals import Approvals
from broker.approval.model import Approval
from broker.audit.redact import SecretRedactor
from broker.dashboard.feed import DecisionFeed
from broker.gateway.stages.traffic import Traffic
from broker.policy.point import PolicyPoint
from broker.registry import Registry
from broker.registry.canonical import KIND_SINGULAR
from broker.registry.diff import item_diff
from broker.registry.pins import PinStatus
from broker.upstream.group import Upstream, UpstreamGroup

MAX_ARGUMENT_CHARS = 160
"""An argument value longer than this is cut on the page (the approver sees its start)."""


class BrokerParts(Protocol):
    """What the dashboard reads of the broker (`broker.app.Broker` has this shape)."""

    @property
    def policy(self) -> PolicyPoint: ...

    @property
    def approvals(self) -> Approvals | None: ...

    @property
    def upstreams(self) -> Mapping[str, Upstream]: ...

    @property
    def traffic(self) -> Traffic: ...

    @property
    def registry(self) -> Registry | None: ...


def argument_summary(arguments: Mapping[str, Any], redactor: SecretRedactor) -> list[tuple[str, str]]:
    """(name, shown value) per top-level argument: secrets replaced, long values cut."""
    redacted, _ = redactor.redact(dict(arguments))
    rows: list[tuple[str, str]] = []
    for name, value in sorted(redacted.items()):
        shown = value if isinstance(value, str) else json.dumps(value, ensure_ascii=True, sort_keys=True)
        if len(shown) > MAX_ARGUMENT_CHARS:
            shown = shown[:MAX_ARGUMENT_CHARS] + f"… ({len(shown)} chars)"
        rows.append((str(name), shown))
    return rows


def requester_label(requester: Mapping[str, Any]) -> str:
    tenant = f"@{requester['tenant']}" if requester.get("tenant") else ""
    acting = f" for User:{requester['acting_for']}" if requester.get("acting_for") else ""
    return f"{requester.get('type', '?')}:{requester.get('id', '?')}{tenant}{acting}"


def approval_row(approval: Approval, redactor: SecretRedactor, now: float) -> dict[str, Any]:
    return {
        "id": approval.id,
        "target": approval.target,
        "server": approval.server,
        "method": approval.method,
        "arguments": argument_summary(approval.arguments, redactor),
        "digest": approval.argument_digest,
        "requester": requester_label(approval.requester),
        "reasons": [(r.get("id", ""), r.get("message", "")) for r in approval.reasons],
        "created": time.strftime("%H:%M:%S", time.gmtime(approval.created_at)),
        "expires_at": approval.expires_at,
        "seconds_left": max(0, int(approval.expires_at - now)),
    }


def upstream_rows(parts: BrokerParts, feed: DecisionFeed) -> list[dict[str, Any]]:
    """Per upstream: health, breaker, calls in flight now, and latency of the recent calls."""
    breakers = {}
    if parts.traffic.breakers is not None:
        breakers = {b.upstream: b for b in parts.traffic.breakers.snapshot()}
    latencies = feed.upstream_latencies(parts.upstreams)
    rows = []
    for name, upstream in parts.upstreams.items():
        breaker = breakers.get(name)
        rows.append(
            {
                "name": name,
                "state": upstream.state.value,
                "last_error": upstream.last_error or "",
                "restarts": upstream.restarts,
                "tools": len(upstream.listing.tools),
                "breaker": breaker.state if breaker is not None else "off",
                "breaker_failures": f"{breaker.failures}/{breaker.calls}" if breaker is not None else "",
                "in_flight": in_flight(upstream),
                "latency": latencies.get(name),
            }
        )
    return rows


def in_flight(upstream: Upstream) -> int:
    """Requests sent and not yet answered on the upstream's shared connection(s)."""
    if isinstance(upstream, UpstreamGroup):
        return sum(int(member["in_flight"]) for member in upstream.status())
    connection = upstream.connection
    return connection.in_flight if connection is not None else 0


def registry_view(registry: Registry | None) -> dict[str, Any]:
    """Pinned / unpinned / drifted / missing counts per server, every item that is not simply
    pinned (with its flags and quarantine reason), and the drift diff of each drifted item."""
    if registry is None:
        return {"enabled": False, "servers": [], "items": []}
    guard = registry.guard
    servers: list[dict[str, Any]] = [
        {"name": name, **{s.value: len(state.by_status(s)) for s in PinStatus}}
        for name, state in sorted(guard.states().items())
    ]
    diffs = {
        (item.server, item.kind, item.key): item_diff(item)
        for state in guard.states().values()
        for item in state.by_status(PinStatus.DRIFTED)
    }
    items = [
        {
            "server": v.server,
            "kind": KIND_SINGULAR.get(v.kind, v.kind),
            "key": v.key,
            "status": v.status.value,
            "quarantined": v.quarantined,
            "flags": list(v.flags),
            "reason": v.reason,
            "diff": diffs.get((v.server, v.kind, v.key), []),
        }
        for v in sorted(guard.verdicts(), key=lambda v: (v.server, v.kind, v.key))
        if v.quarantined or v.flags or v.status is not PinStatus.PINNED
    ]
    pinned = sum(int(s[PinStatus.PINNED.value]) for s in servers)
    return {
        "enabled": True,
        "lock_file": str(guard.pins.source) if guard.pins.source is not None else "",
        "pinned": pinned,
        "quarantined": sum(1 for i in items if i["quarantined"]),
        "flagged": sum(1 for i in items if i["flags"]),
        "servers": servers,
        "items": items,
    }


def policy_view(policy: PolicyPoint) -> dict[str, Any]:
    status = policy.status()
    last = status["last_reload"]
    return {
        "engine": status["engine"],
        "version": status["policy_version"],
        "failures": status["reload_failures"],
        "last_reload": None
        if last is None
        else {
            "ok": last["ok"],
            "message": last["message"] or "",
            "at": time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(last["at"])) if last["at"] else "",
        },
    }
