"""What an approval is: one exact call, who asked, who decided, and until when it counts.

An approval is bound to the call it was asked for — the requesting principal, the target,
the sha256 digest of the canonical arguments and the policy version — so approving one
call never approves another. Its id is unguessable (it is also the key of the approvals
API).
"""

from __future__ import annotations

import enum
import secrets
from dataclasses import dataclass, replace
from typing import Any

from broker.identity.principal import Principal


class ApprovalStatus(enum.Enum):
    PENDING = "pending"
    APPROVED = "approved"
    DENIED = "denied"
    EXPIRED = "expired"
    CANCELLED = "cancelled"


def new_approval_id() -> str:
    return "apr_" + secrets.token_urlsafe(18)


def identity_key(principal: Principal) -> str:
    """Who a principal is across credentials (claims such as scope may change between tokens)."""
    return "|".join((principal.type, principal.id, principal.acting_for or "", principal.tenant or ""))


@dataclass(frozen=True, slots=True)
class Approval:
    id: str
    status: ApprovalStatus
    requester: dict[str, Any]
    """The requesting principal's document (type, id, tenant, roles, claims, acting_for)."""
    requester_key: str
    method: str
    server: str
    target: str
    """The public name or URI of what is called (`notes__delete_note`)."""
    argument_digest: str
    arguments: dict[str, Any]
    """The normalised argument summary policies saw (docs/policy-arguments.md), for the approver."""
    reasons: list[dict[str, str]]
    policy_version: str
    request: dict[str, Any]
    """The authorization request of the call, so `approve` can be decided without the caller."""
    created_at: float
    expires_at: float
    """Until when a decision may be made; a pending approval is expired after it."""
    session: str | None = None
    decided_at: float | None = None
    approver: dict[str, Any] | None = None
    note: str = ""
    usable_until: float | None = None
    """Until when the caller's identical call (or retry) may use the grant."""
    reuse_seconds: float = 0.0
    """When > 0 (a policy's explicit choice, @approval_reuse): the grant covers every identical
    call for this long after the decision, not just one."""
    used_at: float | None = None
    channel: str = ""
    """How it was decided: `api`, `elicitation` (the caller, where policy allows self-approval)."""

    @property
    def reusable(self) -> bool:
        return self.reuse_seconds > 0

    def decided(
        self,
        status: ApprovalStatus,
        *,
        at: float,
        approver: dict[str, Any] | None = None,
        note: str = "",
        usable_until: float | None = None,
        channel: str = "",
    ) -> Approval:
        return replace(
            self,
            status=status,
            decided_at=at,
            approver=approver,
            note=note,
            usable_until=usable_until,
            channel=channel or self.channel,
        )

    def summary(self) -> dict[str, Any]:
        """The JSON view the approvals API and CLI show (no authorization request internals)."""
        return {
            "id": self.id,
            "status": self.status.value,
            "requester": self.requester,
            "session": self.session,
            "method": self.method,
            "server": self.server,
            "target": self.target,
            "arguments": self.arguments,
            "argument_digest": self.argument_digest,
            "reasons": self.reasons,
            "policy_version": self.policy_version,
            "created_at": self.created_at,
            "expires_at": self.expires_at,
            "decided_at": self.decided_at,
            "approver": self.approver,
            "note": self.note,
            "usable_until": self.usable_until,
            "reuse_seconds": self.reuse_seconds,
            "used_at": self.used_at,
            "channel": self.channel,
        }
