"""`mcp-broker policy test`: real cedarpy and a real (managed) OPA over fixture policies."""

from __future__ import annotations

import json

from tests.unit.policytools.conftest import PASSING, Repo, Run


def test_a_passing_suite_passes_on_both_engines(repo: Repo, cli: Run) -> None:
    result = cli("policy", "test", "--engine", "both")
    assert result.code == 0, result.out + result.err
    assert result.lines == [f"{PASSING} passed, 0 failed, 0 disagreements"]


def test_verbose_lists_passing_cases_with_each_engine(repo: Repo, cli: Run) -> None:
    result = cli("policy", "test", "--engine", "both", "-v")
    assert (
        "ok policy-tests/basic.yaml:13: engineer deletes a note [cedar=require_approval opa=require_approval]"
        in (result.lines)
    )


def test_a_failing_case_names_file_line_expectation_decision_reasons_and_engine(repo: Repo, cli: Run) -> None:
    repo.write(
        "policy-tests/wrong.yaml",
        "cases:\n"
        "  - name: guest deletes\n"
        "    tool: notes__delete_note\n"
        "    expect: allow\n"
        "  - name: reader reads for the wrong reason\n"
        "    tool: notes__read_note\n"
        "    expect: allow\n"
        "    reasons: [engineers]\n",
    )
    result = cli("policy", "test", "--engine", "both", "policy-tests/wrong.yaml")
    assert result.code == 1
    assert result.lines == [
        "policy-tests/wrong.yaml:2: guest deletes: expected allow, got deny (reasons: no_permit) [cedar]",
        "policy-tests/wrong.yaml:2: guest deletes: expected allow, got deny (reasons: no_permit) [opa]",
        "policy-tests/wrong.yaml:5: reader reads for the wrong reason: expected allow with reasons "
        "engineers, got allow (reasons: read-only) [cedar]",
        "policy-tests/wrong.yaml:5: reader reads for the wrong reason: expected allow with reasons "
        "engineers, got allow (reasons: read-only) [opa]",
        "0 passed, 2 failed, 0 disagreements",
    ]


def test_an_engine_disagreement_fails_the_case_even_when_one_engine_matches(repo: Repo, cli: Run) -> None:
    rego = repo.policies / "rego" / "mcp" / "authz" / "authz.rego"
    rego.write_text(rego.read_text().replace('"engineer" in input.principal.roles', "true"))  # anyone writes
    result = cli("policy", "test", "--engine", "both")
    assert result.code == 1
    assert result.lines == [
        "policy-tests/basic.yaml:21: guest writes a note: expected deny, got allow (reasons: engineers) "
        "[opa]",
        "DISAGREE policy-tests/basic.yaml:21: guest writes a note: cedar=deny opa=allow",
        f"{PASSING - 1} passed, 1 failed, 1 disagreement",
    ]
    # Alone, each engine is internally consistent: only the comparison finds it.
    assert cli("policy", "test", "--engine", "cedar").code == 0


def test_a_disagreement_is_a_failure_even_if_the_case_expectation_is_met_by_one(repo: Repo, cli: Run) -> None:
    repo.write(
        "policy-tests/split.yaml",
        "cases:\n  - name: guest writes\n    principal: {roles: []}\n"
        "    tool: notes__write_note\n    expect: deny\n",
    )
    rego = repo.policies / "rego" / "mcp" / "authz" / "authz.rego"
    rego.write_text(rego.read_text().replace('"engineer" in input.principal.roles', "true"))
    result = cli("policy", "test", "--engine", "both", "policy-tests/split.yaml")
    assert "DISAGREE policy-tests/split.yaml:2: guest writes: cedar=deny opa=allow" in result.lines
    assert result.lines[-1] == "0 passed, 1 failed, 1 disagreement"


def test_case_file_schema_errors_are_reported_with_file_and_line(repo: Repo, cli: Run) -> None:
    repo.write(
        "policy-tests/broken.yaml",
        "cases:\n"
        "  - name: typo in a key\n"
        "    tool: notes__read_note\n"
        "    expct: allow\n"
        "  - name: typo in a value\n"
        "    tool: notes__read_note\n"
        "    expect: alow\n"
        "  - name: two targets\n"
        "    tool: notes__read_note\n"
        "    server: notes\n"
        "    expect: allow\n"
        "  - name: action does not fit\n"
        "    action: get_prompt\n"
        "    tool: notes__read_note\n"
        "    expect: allow\n"
        "  - name: fine\n"
        "    tool: notes__read_note\n"
        "    expect: allow\n",
    )
    result = cli("policy", "test", "--engine", "cedar", "policy-tests/broken.yaml")
    assert result.code == 1
    assert result.lines == [
        "policy-tests/broken.yaml:2: cases[0]: missing required key 'expect'",
        "policy-tests/broken.yaml:4: cases[0].expct: unknown key 'expct' (did you mean 'expect'?)",
        "policy-tests/broken.yaml:7: cases[1].expect: 'alow' is not one of allow, deny, require_approval "
        "(did you mean 'allow'?)",
        "policy-tests/broken.yaml:8: give exactly one target: tool, prompt, resource, server or "
        "resource_document (got tool, server)",
        "policy-tests/broken.yaml:13: action get_prompt does not apply to a Tool "
        "(use call_tool, approve, self_approve)",
        "1 passed, 0 failed, 5 case-file problems",
    ]


def test_unknown_tools_and_duplicate_names_are_case_file_problems(repo: Repo, cli: Run) -> None:
    repo.write(
        "policy-tests/names.yaml",
        "cases:\n"
        "  - name: same\n"
        "    tool: notes__raed_note\n"
        "    expect: allow\n"
        "  - name: same\n"
        "    resource_document: {type: Tool, id: other__x, server: other, tenants: []}\n"
        "    expect: deny\n",
    )
    result = cli("policy", "test", "--engine", "cedar", "policy-tests/names.yaml")
    assert result.code == 1
    assert result.lines == [
        "policy-tests/names.yaml:3: unknown tool 'notes__raed_note': not in policy-tests/catalog.yaml "
        "(did you mean 'notes__read_note'?); regenerate the catalog (mcp-broker policy catalog) or give "
        "resource_document",
        "policy-tests/names.yaml:5: duplicate case name 'same' (first at line 2)",
        "1 passed, 0 failed, 2 case-file problems",
    ]


def test_yaml_errors_and_full_request_errors_have_lines(repo: Repo, cli: Run) -> None:
    repo.write("policy-tests/bad-yaml.yaml", "cases:\n  - name: [unclosed\n")
    repo.write(
        "policy-tests/bad-request.yaml",
        "cases:\n"
        "  - name: incomplete request\n"
        "    request:\n"
        "      principal: {type: Robot, id: r, tenant: null, roles: [], claims: {}, acting_for: null}\n"
        "      action: call_tool\n"
        "      resource: {type: Tool, id: t, server: s, tenants: []}\n"
        "      context: {}\n"
        "    expect: deny\n",
    )
    result = cli(
        "policy", "test", "--engine", "cedar", "policy-tests/bad-yaml.yaml", "policy-tests/bad-request.yaml"
    )
    assert result.code == 1
    assert result.lines[0].startswith("policy-tests/bad-yaml.yaml:3: not valid YAML: ")
    assert (
        "policy-tests/bad-request.yaml:4: cases[0].request.principal.type: 'Robot' is not one of Agent, User"
        in (result.lines)
    )
    assert "policy-tests/bad-request.yaml:7: cases[0].request.context: missing required key 'arguments'" in (
        result.lines
    )


def test_json_output_for_machines(repo: Repo, cli: Run) -> None:
    result = cli("policy", "test", "--engine", "both", "--format", "json")
    report = json.loads(result.out)
    assert report["summary"] == {
        "passed": PASSING,
        "failed": 0,
        "disagreements": 0,
        "skipped": 0,
        "problems": 0,
    }
    first = report["cases"][0]
    assert first["name"] == "engineer reads a note" and first["line"] == 4 and first["status"] == "pass"
    assert first["decisions"]["opa"]["reasons"] == [
        {"id": "engineers", "message": "engineers may change things"},
        {"id": "read-only", "message": "read-only tools are allowed"},
    ]


def test_errors_are_one_line_saying_what_to_do(repo: Repo, cli: Run) -> None:
    missing = cli("policy", "test", "nowhere/")
    assert missing.code == 2
    assert missing.err.strip().splitlines()[-1] == (
        "error: nowhere does not exist; give case files or directories (default policy-tests/)"
    )
    (repo.policies / "cedar" / "base.cedar").write_text(
        '@id("x")\npermit (principal, action, resource) when {'
    )
    broken = cli("policy", "test", "--engine", "cedar")
    assert broken.code == 2
    assert broken.err.splitlines()[-1] == (
        "error: the cedar policies in policies/ do not load; fix the problems above "
        "(mcp-broker policy check lists them all)"
    )
    assert broken.err.splitlines()[0].startswith("policies/cedar/base.cedar:1: syntax error")


def test_cases_restricted_to_an_engine_are_skipped_elsewhere(repo: Repo, cli: Run) -> None:
    repo.write(
        "policy-tests/only.yaml",
        "cases:\n  - name: opa only\n    tool: notes__read_note\n    expect: allow\n    engines: [opa]\n",
    )
    result = cli("policy", "test", "--engine", "cedar", "policy-tests/only.yaml")
    assert result.code == 0
    assert result.lines == ["0 passed, 0 failed, 1 skipped"]
