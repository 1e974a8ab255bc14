"""The records the broker writes: one per decided request, authentication failure, policy
reload and approval event. Pure functions from what the request path already has to a dict.

Every record has `kind`, `v` (the format version) and `time` (UTC, microseconds). Fields
that do not apply are null rather than absent, so queries and readers see one shape per
kind. Nothing here writes or hashes: the sink adds `seq`, `prev` and `hash`.

Secrets stay out: argument values go through the Redactor (the normalised summary of
docs/policy-arguments.md, not the raw arguments, plus their digest), so do error messages
and resource URIs; the caller's credential is never read.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Final, Literal, Protocol

from broker.approval.model import Approval
from broker.audit.redact import Redactor
from broker.audit.sink import AuditRecord
from broker.audit.timefmt import FORMAT_VERSION, iso_time
from broker.errors import BrokerError, ForwardedError, Rejection
from broker.gateway.call import Call
from broker.gateway.stages.decide import arguments_of
from broker.identity.principal import Principal
from broker.policy.arguments import ArgumentSummary, summarize
from broker.policy.decision import Decision

MAX_MESSAGE: Final = 500
"""Characters kept of an error message or approval note."""

OutcomeStatus = Literal["ok", "is_error", "error", "not_forwarded"]
ApprovalEventName = Literal["requested", "approved", "denied", "expired", "cancelled"]


@dataclass(frozen=True, slots=True)
class Outcome:
    """What came of a request after the decision: the upstream's answer, or why it never got one."""

    status: OutcomeStatus
    latency_ms: float | None = None
    """Time spent in the upstream call; None when it was not called."""
    error: dict[str, Any] | None = None
    """{code, reason, message} of the error the caller received."""

    @classmethod
    def of(
        cls, result: Mapping[str, Any] | None, exc: BaseException | None, latency_ms: float | None = None
    ) -> Outcome:
        """Classify how a request ended: the forwarded result, or the exception it raised.

        A Rejection means the upstream was never called (`not_forwarded`); an upstream
        JSON-RPC error, an UpstreamError or anything unexpected is `error`; a tool
        result with `isError: true` is `is_error`.
        """
        if exc is not None:
            if isinstance(exc, Rejection):
                return cls("not_forwarded", None, _error(exc.code, exc.reason, exc.message))
            if isinstance(exc, ForwardedError):
                code = exc.error.get("code")
                return cls(
                    "error",
                    latency_ms,
                    _error(code if isinstance(code, int) else None, "upstream_error", str(exc)),
                )
            if isinstance(exc, BrokerError):
                return cls("error", latency_ms, _error(exc.code, exc.reason, exc.message))
            if isinstance(exc, asyncio.CancelledError):  # the caller cancelled or went away
                status: OutcomeStatus = "not_forwarded" if latency_ms is None else "error"
                return cls(status, latency_ms, _error(None, "cancelled", "the caller cancelled or went away"))
            return cls("error", latency_ms, _error(None, "internal_error", type(exc).__name__))
        if result is not None and result.get("isError") is True:
            return cls("is_error", latency_ms)
        return cls("ok", latency_ms)


def _error(code: int | None, reason: str, message: str) -> dict[str, Any]:
    return {"code": code, "reason": reason, "message": message}


class ApprovalView(Protocol):
    """What the audit trail reads of an approval (broker/approval/model.py `Approval` has it)."""

    @property
    def id(self) -> str: ...
    @property
    def status(self) -> Any: ...  # an enum whose `.value` is the status name, or the name
    @property
    def created_at(self) -> float: ...
    @property
    def decided_at(self) -> float | None: ...
    @property
    def expires_at(self) -> float: ...
    @property
    def approver(self) -> Mapping[str, Any] | None: ...
    @property
    def channel(self) -> str: ...
    @property
    def note(self) -> str: ...


@dataclass(frozen=True, slots=True)
class ApprovalFacts:
    """An approval as the audit trail tells it."""

    id: str
    status: ApprovalEventName
    requested_at: float
    decided_at: float | None = None
    expires_at: float | None = None
    approver: str | Mapping[str, Any] | None = None
    """Who decided: a principal document (its type, id, tenant, acting_for are kept), or a name."""
    channel: str | None = None
    """How it was asked or decided: `elicitation`, `api`, `cli`, `dashboard`…"""
    note: str | None = None

    @classmethod
    def of(cls, approval: ApprovalView, status: ApprovalEventName | None = None) -> ApprovalFacts:
        """From the approval component's object; `status` overrides its own (`requested` for a new one)."""
        own = getattr(approval.status, "value", approval.status)
        name = status or ("requested" if own == "pending" else own)
        return cls(
            approval.id,
            name,
            approval.created_at,
            approval.decided_at,
            approval.expires_at,
            approval.approver,
            approval.channel or None,
            approval.note or None,
        )

    def to_json(self, redactor: Redactor) -> dict[str, Any]:
        waited = None if self.decided_at is None else round((self.decided_at - self.requested_at) * 1000, 3)
        approver: Any = self.approver
        if isinstance(approver, Mapping):
            approver = {k: approver.get(k) for k in ("type", "id", "tenant", "acting_for")}
        return {
            "id": self.id,
            "status": self.status,
            "approver": approver,
            "channel": self.channel,
            "requested_at": iso_time(self.requested_at),
            "decided_at": None if self.decided_at is None else iso_time(self.decided_at),
            "expires_at": None if self.expires_at is None else iso_time(self.expires_at),
            "wait_ms": waited,
            "note": None if self.note is None else _text(self.note, redactor),
        }


def principal_json(principal: Principal | None) -> dict[str, Any] | None:
    """Who: type, id, tenant, roles, acting_for (the token's other claims are not recorded)."""
    if principal is None:
        return None
    return {
        "type": principal.type,
        "id": principal.id,
        "tenant": principal.tenant,
        "roles": list(principal.roles),
        "acting_for": principal.acting_for,
    }


def decision_json(decision: Decision | None) -> dict[str, Any] | None:
    if decision is None:
        return None
    return {
        "effect": decision.effect.value,
        "reasons": [r.to_json() for r in decision.reasons],
        "policies": [r.id for r in decision.reasons],
        "engine": decision.engine,
        "policy_version": decision.policy_version,
        "latency_ms": round(decision.latency_ms, 3),
        "decision_id": decision.decision_id,
        "error": decision.error,
    }


def _text(text: str, redactor: Redactor) -> str:
    return redactor.redact_text(text[:MAX_MESSAGE])


def _summary_in(request: Mapping[str, Any]) -> ArgumentSummary | None:
    """The argument summary an authorization request already carries (broker/policy/request.py)."""
    context = request.get("context")
    if not isinstance(context, Mapping) or not isinstance(context.get("argument_digest"), str):
        return None
    return ArgumentSummary(
        context.get("arguments") or {},
        context["argument_digest"],
        tuple(context.get("paths") or ()),
        tuple(context.get("hosts") or ()),
        context.get("argument_limits") or {},
        tuple(context.get("problems") or ()),
    )


def arguments_json(summary: ArgumentSummary | None, redactor: Redactor) -> tuple[dict[str, Any] | None, Any]:
    """The record's `arguments` member, and the redacted normalised arguments (for `request`)."""
    if summary is None:
        return None, None
    redacted_args, redacted = redactor.redact(summary.arguments)
    member = {
        "digest": summary.digest,
        "summary": redacted_args,
        "redacted": list(redacted),
        "limits": summary.limits,
        "problems": list(summary.problems),
    }
    return member, redacted_args


def request_record(
    call: Call,
    outcome: Outcome,
    *,
    redactor: Redactor,
    summary: ArgumentSummary | None = None,
    request: Mapping[str, Any] | None = None,
    approval: ApprovalFacts | None = None,
    listing: Mapping[str, int] | None = None,
    trace_id: str | None = None,
    now: float | None = None,
) -> AuditRecord:
    """The record of one request the broker decided (a call, read, prompt, completion, or a list).

    `summary` is the ArgumentSummary the decide stage built (read from `request` if absent,
    else computed again when the call was decided); `request`, when given, is the authorization request the
    engine saw and is recorded under `request` with its arguments redacted (for `mcp-broker
    policy diff --log`); `listing` is {"visible": n, "hidden": m} for a list request.
    """
    if summary is None and request is not None:
        summary = _summary_in(request)
    if summary is None and call.decision is not None:
        try:
            summary = summarize(arguments_of(call))
        except (TypeError, ValueError):
            summary = None
    arguments, redacted_args = arguments_json(summary, redactor)
    target = call.target
    session = call.session
    record: AuditRecord = {
        "v": FORMAT_VERSION,
        "kind": "request",
        "time": iso_time(time.time() if now is None else now),
        "principal": principal_json(call.principal),
        "session": session.id if session is not None else None,
        "transport": call.transport,
        "request_id": call.request_id if isinstance(call.request_id, str | int) else None,
        "method": call.method,
        "server": target.upstream if target is not None else None,
        "target": (
            {
                "kind": target.kind,
                "id": target.resource.get("id"),
                "name": _text(target.name, redactor),
            }
            if target is not None
            else None
        ),
        "arguments": arguments,
        "decision": decision_json(call.decision),
        "approval": approval.to_json(redactor) if approval is not None else None,
        "listing": dict(listing) if listing is not None else None,
        "result_guard": call.result_guard,
        "outcome": {
            "status": outcome.status,
            "latency_ms": None if outcome.latency_ms is None else round(outcome.latency_ms, 3),
            "error": (
                {**outcome.error, "message": _text(str(outcome.error.get("message", "")), redactor)}
                if outcome.error is not None
                else None
            ),
        },
        "trace_id": trace_id,
    }
    if request is not None:
        context = dict(request.get("context") or {})
        if redacted_args is not None:
            context["arguments"] = redacted_args
        record["request"] = {**request, "context": context}
    return record


def auth_failure_record(
    *,
    reason: str,
    description: str,
    transport: str,
    redactor: Redactor,
    method: str | None = None,
    session: str | None = None,
    client: str | None = None,
    required_scopes: tuple[str, ...] = (),
    principal: Principal | None = None,
    trace_id: str | None = None,
    now: float | None = None,
) -> AuditRecord:
    """A request refused before any decision because its credential was missing, invalid or short
    of scopes. `principal` only for insufficient scope (the token verified); never the token."""
    return {
        "v": FORMAT_VERSION,
        "kind": "auth_failure",
        "time": iso_time(time.time() if now is None else now),
        "reason": reason,
        "description": _text(description, redactor),
        "principal": principal_json(principal),
        "session": session,
        "transport": transport,
        "method": method,
        "client": client,
        "required_scopes": list(required_scopes),
        "trace_id": trace_id,
    }


def policy_reload_record(
    *,
    ok: bool,
    engine: str,
    policy_version: str,
    previous_version: str | None,
    trigger: str,
    message: str = "",
    now: float | None = None,
) -> AuditRecord:
    """A policy load or reload: which version is now in force (on failure: still the previous one)."""
    return {
        "v": FORMAT_VERSION,
        "kind": "policy_reload",
        "time": iso_time(time.time() if now is None else now),
        "ok": ok,
        "engine": engine,
        "policy_version": policy_version,
        "previous_version": previous_version,
        "trigger": trigger,
        "message": message[:MAX_MESSAGE] or None,
    }


def approval_record(
    approval: ApprovalFacts,
    *,
    redactor: Redactor,
    call: Call | None = None,
    trace_id: str | None = None,
    now: float | None = None,
) -> AuditRecord:
    """One approval event (requested, approved, denied, expired, cancelled) for the call it is about."""
    target = call.target if call is not None else None
    return {
        "v": FORMAT_VERSION,
        "kind": "approval",
        "time": iso_time(time.time() if now is None else now),
        "event": approval.status,
        "approval": approval.to_json(redactor),
        "principal": principal_json(call.principal if call is not None else None),
        "session": call.session.id if call is not None and call.session is not None else None,
        "method": call.method if call is not None else None,
        "server": target.upstream if target is not None else None,
        "target": (
            {"kind": target.kind, "id": target.resource.get("id"), "name": _text(target.name, redactor)}
            if target is not None
            else None
        ),
        "argument_digest": call.argument_digest if call is not None else None,
        "decision": decision_json(call.decision if call is not None else None),
        "trace_id": trace_id,
    }


def approval_event_record(
    approval: Approval,
    event: ApprovalEventName,
    *,
    redactor: Redactor,
    trace_id: str | None = None,
    now: float | None = None,
) -> AuditRecord:
    """One approval event, told from the stored approval itself (it holds the call it is about),
    so events decided through the API — where there is no call at hand — carry the same facts."""
    requester = approval.requester
    return {
        "v": FORMAT_VERSION,
        "kind": "approval",
        "time": iso_time(time.time() if now is None else now),
        "event": event,
        "approval": ApprovalFacts.of(approval, event).to_json(redactor),
        "principal": {k: requester.get(k) for k in ("type", "id", "tenant", "roles", "acting_for")},
        "session": approval.session,
        "method": approval.method,
        "server": approval.server,
        "target": {"id": approval.target},
        "argument_digest": approval.argument_digest,
        "reasons": approval.reasons,
        "policy_version": approval.policy_version,
        "trace_id": trace_id,
    }
