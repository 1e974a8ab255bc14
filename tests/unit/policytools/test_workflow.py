"""The policy CI workflow cannot run here: check that it parses and runs the steps it must."""

from __future__ import annotations

from typing import Any

import yaml

from tests.support.opa import REPO

WORKFLOW = REPO / ".github" / "workflows" / "policy.yml"


def _workflow() -> dict[Any, Any]:
    loaded = yaml.safe_load(WORKFLOW.read_text(encoding="utf-8"))
    assert isinstance(loaded, dict)
    return loaded


def test_it_runs_for_pull_requests_touching_policies_schemas_or_cases() -> None:
    workflow = _workflow()
    trigger = workflow[True] if True in workflow else workflow["on"]  # YAML 1.1 reads `on:` as True
    paths = trigger["pull_request"]["paths"]
    for wanted in ("policies/**", "schemas/**", "policy-tests/**"):
        assert wanted in paths
    assert workflow["permissions"]["pull-requests"] == "write"


def test_it_sets_up_installs_builds_opa_and_runs_check_test_and_diff() -> None:
    steps = _workflow()["jobs"]["policy"]["steps"]
    uses = {s["uses"].split("@")[0]: s for s in steps if "uses" in s}
    assert uses["actions/setup-python"]["with"]["python-version"] == "3.11"
    assert "actions/setup-go" in uses
    assert uses["actions/checkout"]["with"]["fetch-depth"] == 0  # the base branch must be there for the diff
    runs = [s.get("run", "") for s in steps]
    order = [
        next(i for i, r in enumerate(runs) if needle in r)
        for needle in (
            "make install",
            "scripts/install-opa.sh",
            "mcp-broker policy check",
            "mcp-broker policy test --engine both",
            'mcp-broker policy diff --base "origin/$BASE_REF" --format markdown',
        )
    ]
    assert order == sorted(order)
    diff = next(s for s in steps if "policy diff" in s.get("run", ""))
    assert diff["env"]["BASE_REF"] == "${{ github.base_ref }}"
    comment = uses["marocchino/sticky-pull-request-comment"]
    assert comment["with"]["path"] == "policy-diff.md"
    assert all(s.get("name") for s in steps)
