"""`mcp-broker policy check` and `policy fmt`: real cedarpy validation/formatting, the real `opa` CLI."""

from __future__ import annotations

import cedarpy
import pytest

from broker.policytools import cedarfiles
from tests.unit.policytools.conftest import APPROVALS_CEDAR, BASE_CEDAR, REGO, Repo, Run


def test_a_clean_repository_checks_clean(repo: Repo, cli: Run) -> None:
    repo.write("policies/rego/mcp/authz/authz_test.rego", REGO_TEST)
    result = cli("policy", "check")
    assert result.code == 0, result.out
    assert result.lines == [
        "policy check: OK; cedar: 2 files; rego: 2 files (1 with tests); cases: 7 in 1 file"
    ]


REGO_TEST = """\
package mcp.authz_test

import data.mcp.authz

test_reads_are_allowed if {
\tauthz.decision.effect == "allow" with input as reader
}

reader := {
\t"action": "call_tool",
\t"principal": {"roles": []},
\t"resource": {"annotations": {"readOnlyHint": true, "destructiveHint": false}},
\t"context": {"problems": [], "approval": {"granted": false}},
}
"""


def test_check_lists_every_problem_with_file_and_line(repo: Repo, cli: Run) -> None:
    # A Cedar typo, a Rego conflict, an unformatted Rego file, a broken case: all in one run.
    repo.write("policies/cedar/approvals.cedar", APPROVALS_CEDAR.replace("forbid (", "forbidd ("))
    repo.write(
        "policies/rego/conflict.rego", 'package conflict\n\np contains "x" if {\n\tinput.a\n}\n\np := 1\n'
    )
    repo.write("policies/rego/other.rego", "package other\nr   :=   1\n")
    repo.write("policy-tests/broken.yaml", "cases:\n  - name: x\n    tool: notes__nope\n    expect: allow\n")
    result = cli("policy", "check")
    assert result.code == 1
    lines = result.lines
    assert lines[0].startswith("policies/cedar/approvals.cedar:2: syntax error: ")
    assert "policies/rego/conflict.rego:3: rego_type_error: conflicting rules data.conflict.p found" in lines
    assert "policies/rego/other.rego: not formatted; run mcp-broker policy fmt" in lines
    assert any(line.startswith("policy-tests/broken.yaml:3: unknown tool 'notes__nope'") for line in lines)
    assert lines[-1].startswith("policy check: 4 problems (cedar 1, rego 2, cases 1); ")


def test_check_reports_the_validators_unsafe_optional_attribute_at_its_line(repo: Repo, cli: Run) -> None:
    # `tenant` is optional on a User: strict validation needs a `has` guard.
    repo.write(
        "policies/cedar/tenants.cedar",
        cedarpy.format_policies(
            '@id("other-tenants")\n'
            "forbid (principal, action, resource)\n"
            'when { principal.tenant != "acme" };\n'
        ),
    )
    result = cli("policy", "check")
    assert result.code == 1
    assert len(result.lines) == 3  # one problem per principal type (User, Agent), then the summary
    for problem in result.lines[:2]:
        assert problem.startswith("policies/cedar/tenants.cedar:1: invalid policy (@id 'other-tenants'): ")
        assert "unable to guarantee safety of access to optional attribute `tenant`" in problem


def test_check_finds_unformatted_cedar(repo: Repo, cli: Run) -> None:
    repo.write(
        "policies/cedar/base.cedar",
        BASE_CEDAR.replace("permit (\n  principal,\n  action in", "permit (principal,\n  action in"),
    )
    result = cli("policy", "check")
    assert result.code == 1
    assert result.lines[0] == "policies/cedar/base.cedar: not formatted; run mcp-broker policy fmt"


def test_check_runs_rego_unit_tests(repo: Repo, cli: Run) -> None:
    repo.write("policies/rego/mcp/authz/authz_test.rego", REGO_TEST.replace('"allow"', '"deny"'))
    result = cli("policy", "check")
    assert result.code == 1
    assert result.lines[0] == (
        "policies/rego/mcp/authz/authz_test.rego:5: opa test data.mcp.authz_test.test_reads_are_allowed: FAIL"
    )


def test_exclude_skips_rego_files(repo: Repo, cli: Run) -> None:
    repo.write("policies/rego/vendor/lib.rego", "package vendor\nr   :=   1\n")
    assert cli("policy", "check").code == 1
    assert cli("policy", "check", "--exclude", "rego/vendor/*").code == 0


UGLY_CEDAR = """\
// Who may write: a comment that must survive formatting.
@id("engineers")   @reason("engineers may change things")
permit (principal in Mcp::Role::"engineer", action == Mcp::Action::"call_tool", resource)   // trailing note
;
"""


def test_fmt_round_trip_keeps_comments_and_annotations(repo: Repo, cli: Run) -> None:
    cedar = repo.write("policies/cedar/base.cedar", UGLY_CEDAR)
    rego = repo.write(
        "policies/rego/mcp/authz/authz.rego", REGO.replace("\tcount(deny) > 0", "    count(deny)   >   0")
    )
    check = cli("policy", "fmt", "--check")
    assert check.code == 1
    assert check.lines == [
        "policies/cedar/base.cedar: not formatted; run mcp-broker policy fmt",
        "policies/rego/mcp/authz/authz.rego: not formatted; run mcp-broker policy fmt",
        "2 files would be formatted, 1 already formatted",
    ]
    assert cedar.read_text() == UGLY_CEDAR  # --check writes nothing

    done = cli("policy", "fmt")
    assert done.code == 0
    assert done.lines == [
        "formatted policies/cedar/base.cedar",
        "formatted policies/rego/mcp/authz/authz.rego",
        "2 files formatted, 1 already formatted",
    ]
    text = cedar.read_text()
    assert "// Who may write: a comment that must survive formatting." in text
    assert "// trailing note" in text
    assert '@id("engineers")' in text and '@reason("engineers may change things")' in text
    assert rego.read_text() == REGO
    assert cli("policy", "fmt").lines == ["0 files formatted, 3 already formatted"]
    assert cli("policy", "check").code == 0


def test_fmt_does_not_rewrite_a_file_whose_comments_the_formatter_would_drop(
    repo: Repo, cli: Run, monkeypatch: pytest.MonkeyPatch
) -> None:
    cedar = repo.write("policies/cedar/base.cedar", UGLY_CEDAR)
    real = cedarpy.format_policies

    def forgetful(text: str) -> str:
        return "\n".join(line.split("//")[0].rstrip() for line in real(text).splitlines()) + "\n"

    monkeypatch.setattr(cedarfiles.cedarpy, "format_policies", forgetful)
    result = cli("policy", "fmt")
    assert result.code == 1
    refused = [line for line in result.lines if line.startswith("policies/cedar/base.cedar: ")]
    assert len(refused) == 1
    assert refused[0].startswith(
        "policies/cedar/base.cedar: cedarpy's formatter would drop 2 comment(s) (e.g. // "
    )
    assert refused[0].endswith("not rewritten: format it by hand")
    assert cedar.read_text() == UGLY_CEDAR


def test_comments_are_found_outside_strings_only() -> None:
    text = '// one\n@id("a//b") permit (principal, action, resource) when { "x//y" == "x//y" }; // two\n'
    assert cedarfiles.comments(text) == {"one": 1, "two": 1}
