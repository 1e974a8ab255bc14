"""`@approval_reuse` (Cedar) and a reason's `approval_reuse` (Rego) reach the decision's reasons."""

from __future__ import annotations

from pathlib import Path

import pytest

from broker.policy.cedar import CedarEngine
from broker.policy.decision import Effect
from broker.policy.engine import PolicyLoadError
from broker.policy.opa import to_decision
from broker.policy.request import CallFacts, build_request
from tests.unit.approval.test_approvals import ALICE, SCHEMA, TOOL

pytestmark = pytest.mark.anyio

GATE = """
@id("all") permit (principal, action, resource);

@id("delete-needs-approval")
@approval("required")
@approval_reuse("{reuse}")
@reason("deleting needs an approval")
forbid (principal, action == Mcp::Action::"call_tool", resource)
when {{ resource.destructiveHint }}
unless {{ context.approval.granted }};
"""


def policies(tmp_path: Path, reuse: str) -> Path:
    (tmp_path / "cedar").mkdir()
    (tmp_path / "cedar" / "p.cedar").write_text(GATE.format(reuse=reuse))
    return tmp_path


async def test_a_cedar_gate_can_make_grants_reusable(tmp_path: Path) -> None:
    engine = CedarEngine(policies(tmp_path, "3600"), SCHEMA)
    await engine.start()
    request, _ = build_request(ALICE, "call_tool", TOOL, {"note_id": "a"}, CallFacts("stdio", "2025-11-25"))
    decision = await engine.decide(request)
    assert decision.effect is Effect.REQUIRE_APPROVAL
    assert [(r.id, r.approval_reuse) for r in decision.reasons] == [("delete-needs-approval", 3600.0)]


@pytest.mark.parametrize("bad", ["an hour", "-5", "inf"])
async def test_a_bad_reuse_window_keeps_the_policies_out(tmp_path: Path, bad: str) -> None:
    engine = CedarEngine(policies(tmp_path, bad), SCHEMA)
    with pytest.raises(PolicyLoadError, match="@approval_reuse must be a number of seconds"):
        await engine.start()


def test_a_rego_reason_can_make_grants_reusable() -> None:
    result = {
        "effect": "require_approval",
        "reasons": [
            {"id": "g1", "message": "m", "approval_reuse": 600},
            {"id": "g2", "message": "m", "approval_reuse": "soon"},
        ],
    }
    decision = to_decision(
        result, rule="mcp.authz.decision", policy_version="v", decision_id=None, latency_ms=0
    )
    assert [(r.id, r.approval_reuse) for r in decision.reasons] == [("g1", 600.0), ("g2", 0.0)]
