"""`mcp-broker policy diff`: decisions under a git ref vs the working tree, in a tmp git repository."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from broker.identity.principal import Principal
from broker.policy.request import CallFacts, build_request
from tests.unit.policytools.conftest import CATALOG, Repo, Run


def git(root: Path, *args: str) -> str:
    done = subprocess.run(["git", "-C", str(root), *args], capture_output=True, text=True, check=True)
    return done.stdout


@pytest.fixture
def committed(repo: Repo) -> Repo:
    git(repo.root, "init", "-q", "-b", "main")
    git(repo.root, "-c", "user.name=t", "-c", "user.email=t@example.com", "add", ".")
    git(repo.root, "-c", "user.name=t", "-c", "user.email=t@example.com", "commit", "-q", "-m", "policies")
    return repo


def engineers_become_admins(repo: Repo) -> None:
    """The one-line change (in each language): the write permit moves from engineers to admins."""
    cedar = repo.policies / "cedar" / "base.cedar"
    cedar.write_text(cedar.read_text().replace('Mcp::Role::"engineer"', 'Mcp::Role::"admin"'))
    rego = repo.policies / "rego" / "mcp" / "authz" / "authz.rego"
    rego.write_text(
        rego.read_text().replace('"engineer" in input.principal.roles', '"admin" in input.principal.roles')
    )


def test_no_change_exits_0(committed: Repo, cli: Run) -> None:
    result = cli("policy", "diff", "--base", "HEAD")
    assert result.code == 0, result.err
    assert result.lines == [
        "no decision changes: 7 requests (7 cases) under cedar, opa; base HEAD vs working tree"
    ]


def test_a_one_line_change_shows_exactly_the_changed_decisions(committed: Repo, cli: Run) -> None:
    engineers_become_admins(committed)
    before = git(committed.root, "status", "--porcelain")
    result = cli("policy", "diff", "--base", "HEAD")
    assert result.code == 1, result.err
    assert result.lines == [
        "Tool notes__delete_note · User alice [engineer; tenant acme]: 2 changed",
        "  policy-tests/basic.yaml:13: engineer deletes a note: require_approval → deny [cedar, opa]",
        "  policy-tests/basic.yaml:17: approved delete: allow → deny [cedar, opa]",
        "Tool notes__write_note · User alice [engineer; tenant acme]: 1 changed",
        "  policy-tests/basic.yaml:9: engineer writes a note: allow → deny [cedar, opa]",
        "3 decisions changed (2 allow → deny, 1 require_approval → deny) in 2 groups; "
        "7 requests (7 cases) under cedar, opa; base HEAD vs working tree",
    ]
    assert git(committed.root, "status", "--porcelain") == before  # the working tree is not touched


def test_only_one_engine_changed_is_shown_per_engine(committed: Repo, cli: Run) -> None:
    cedar = committed.policies / "cedar" / "base.cedar"
    cedar.write_text(cedar.read_text().replace('Mcp::Role::"engineer"', 'Mcp::Role::"admin"'))
    result = cli("policy", "diff", "--base", "HEAD", "--engine", "cedar")
    assert result.code == 1
    assert "  policy-tests/basic.yaml:9: engineer writes a note: allow → deny [cedar]" in result.lines
    assert cli("policy", "diff", "--base", "HEAD", "--engine", "opa").code == 0


def _logged(principal: Principal, tool: str, arguments: dict[str, str]) -> str:
    request, _ = build_request(
        principal, "call_tool", CATALOG["tools"][tool], arguments, CallFacts("stdio", "2025-11-25")
    )
    return json.dumps({"time": "2026-01-07T10:00:00Z", "request": request})


def test_requests_of_an_audit_log_are_compared_too(committed: Repo, cli: Run) -> None:
    engineer = Principal("User", "bob", "acme", ("engineer",))
    log = committed.write(
        "audit.jsonl",
        "\n".join(
            [
                _logged(engineer, "notes__write_note", {"note_id": "n", "text": "t"}),
                _logged(engineer, "notes__read_note", {"note_id": "n"}),
                json.dumps({"event": "started"}),
            ]
        )
        + "\n",
    )
    engineers_become_admins(committed)
    result = cli("policy", "diff", "--base", "HEAD", "--log", str(log), "--engine", "cedar")
    assert result.code == 1
    assert "Tool notes__write_note · User bob [engineer; tenant acme]: 1 changed" in result.lines
    assert "  audit.jsonl:1: call_tool: allow → deny [cedar]" in result.lines
    assert not any("audit.jsonl:2" in line for line in result.lines)
    assert result.lines[-1] == (
        "4 decisions changed (3 allow → deny, 1 require_approval → deny) in 3 groups; 9 requests "
        "(7 cases, 2 from audit.jsonl, 1 log line without a request skipped) under cedar; "
        "base HEAD vs working tree"
    )


def test_an_audit_log_line_that_is_not_a_request_is_an_error_with_its_line(committed: Repo, cli: Run) -> None:
    committed.write("audit.jsonl", '{"request": {"principal": {}}}\n')
    result = cli("policy", "diff", "--base", "HEAD", "--log", "audit.jsonl")
    assert result.code == 2
    assert result.err.splitlines()[0] == "audit.jsonl:1: request.principal: missing required key 'acting_for'"
    assert result.err.splitlines()[-1] == (
        "error: the audit log audit.jsonl has lines that are not authorization requests (see above)"
    )


def test_markdown_for_a_pull_request(committed: Repo, cli: Run) -> None:
    engineers_become_admins(committed)
    result = cli("policy", "diff", "--base", "HEAD", "--format", "markdown")
    assert result.code == 1
    assert result.out.startswith(
        "### Policy decision changes\n\n**3 of 7 requests change** (2 allow → deny, "
    )
    assert "#### `Tool notes__write_note` · User alice [engineer; tenant acme] — 1" in result.out
    assert "| request | cedar | opa |" in result.out
    assert (
        "| `policy-tests/basic.yaml:9` engineer writes a note | **allow → deny** | **allow → deny** |"
        in result.out
    )


def test_errors_exit_2(committed: Repo, cli: Run) -> None:
    unknown = cli("policy", "diff", "--base", "no-such-branch")
    assert unknown.code == 2
    assert unknown.err.strip() == (
        "error: unknown git ref 'no-such-branch'; fetch it first (git fetch origin) or name a commit"
    )
    (committed.policies / "cedar" / "base.cedar").write_text("permit (")
    broken = cli("policy", "diff", "--base", "HEAD", "--engine", "cedar")
    assert broken.code == 2
    assert broken.err.splitlines()[-1].startswith("error: the cedar policies in policies/ do not load")


def test_the_base_side_reads_the_ref_not_the_working_tree(committed: Repo, cli: Run) -> None:
    engineers_become_admins(committed)
    git(
        committed.root, "-c", "user.name=t", "-c", "user.email=t@example.com", "commit", "-q", "-am", "admins"
    )
    assert cli("policy", "diff", "--base", "HEAD").code == 0
    result = cli("policy", "diff", "--base", "HEAD~1", "--format", "json")
    assert result.code == 1
    report = json.loads(result.out)
    assert [c["source"] for c in report["changes"]] == [
        "policy-tests/basic.yaml:9",
        "policy-tests/basic.yaml:13",
        "policy-tests/basic.yaml:17",
    ]


def test_a_long_markdown_diff_is_cut_to_fit_a_comment(monkeypatch: pytest.MonkeyPatch) -> None:
    from broker.policy.decision import Decision, Effect
    from broker.policytools import diff

    def change(index: int) -> diff.Change:
        request = {"principal": {"type": "User", "id": f"u{index}"}, "resource": {"type": "Tool", "id": "t"}}
        allow, deny = (Decision(e, (), "cedar", "v") for e in (Effect.ALLOW, Effect.DENY))
        return diff.Change(diff.Item(f"cases.yaml:{index}", "case", request), {"cedar": (allow, deny)})

    changes = [change(i) for i in range(50)]
    report = diff.DiffReport("main", ("cedar",), [c.item for c in changes], changes, {"cases": 50})
    monkeypatch.setattr(diff, "MARKDOWN_LIMIT", 2000)
    text = diff.markdown(report)
    assert len(text) < 2500
    assert (
        "… and " in text and "more changed decisions: run `mcp-broker policy diff` for all of them." in text
    )
    assert text.rstrip().endswith("</sub>")
