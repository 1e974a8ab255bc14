"""What a policy engine answers: allow, deny or require-approval, with the reasons why.

Deny is not an error and an engine failure is not a deny: a failure becomes a deny with
reason `policy_error` in exactly one place (`Decision.failure`), so every caller treats
it the same way and the audit record says which it was.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from typing import Any


class Effect(enum.Enum):
    ALLOW = "allow"
    DENY = "deny"
    REQUIRE_APPROVAL = "require_approval"


@dataclass(frozen=True, slots=True)
class Reason:
    """Why: the determining policy's id (Cedar `@id`, Rego reason id) and its human text."""

    id: str
    message: str = ""
    scope: str = ""
    """An OAuth scope whose absence the policy denies for: the caller may step up (HTTP 403 scope=…)."""
    approval_reuse: float = 0.0
    """On an approval gate: seconds an approval, once granted, covers every identical call (0: once)."""

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"id": self.id}
        if self.message:
            out["message"] = self.message
        if self.scope:
            out["scope"] = self.scope
        if self.approval_reuse:
            out["approval_reuse"] = self.approval_reuse
        return out


@dataclass(frozen=True, slots=True)
class Decision:
    effect: Effect
    reasons: tuple[Reason, ...]
    engine: str
    policy_version: str
    obligations: tuple[dict[str, Any], ...] = ()
    decision_id: str | None = None
    error: str | None = None
    """Set when the deny comes from an engine failure, not from a policy: the failure, for logs."""
    latency_ms: float = 0.0
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def allowed(self) -> bool:
        return self.effect is Effect.ALLOW

    @classmethod
    def failure(cls, engine: str, policy_version: str, error: str) -> Decision:
        """The one way an engine failure becomes a decision: deny, reason `policy_error`."""
        return cls(Effect.DENY, (Reason("policy_error", error),), engine, policy_version, error=error)

    def reason_text(self) -> str:
        parts = [f"{r.id}: {r.message}" if r.message else r.id for r in self.reasons]
        return "; ".join(parts) or "no policy permits this"
