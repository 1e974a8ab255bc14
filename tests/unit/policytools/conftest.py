"""A small policy repository in a tmp dir (Cedar + the same meaning in Rego, a catalog, cases),
and a way to run `mcp-broker policy …` in process with its output and exit code."""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from broker.cli import main
from broker.policytools.catalog import render
from tests.support.opa import REPO, opa_binary

SCHEMA = REPO / "schemas" / "mcp.cedarschema"

BASE_CEDAR = """\
// Fixture policies for the policy tool tests (the Rego fixture says the same).
@id("list")
@reason("anyone may list")
permit (
  principal,
  action in
    [Mcp::Action::"list_tools",
     Mcp::Action::"list_resources",
     Mcp::Action::"list_prompts"],
  resource
);

@id("read-only")
@reason("read-only tools are allowed")
permit (
  principal,
  action == Mcp::Action::"call_tool",
  resource
)
when { resource.readOnlyHint };

@id("engineers")
@reason("engineers may change things")
permit (
  principal in Mcp::Role::"engineer",
  action == Mcp::Action::"call_tool",
  resource
);

@id("bad-arguments")
@reason("some argument could not be interpreted safely")
forbid (principal, action, resource)
when { !context.problems.isEmpty() };
"""

APPROVALS_CEDAR = """\
// Approval gates: lifted by a human approval.
@id("destructive-needs-approval")
@approval("required")
@reason("destructive tools need a human approval")
forbid (
  principal,
  action == Mcp::Action::"call_tool",
  resource
)
when { resource.destructiveHint }
unless { context.approval.granted };
"""

REGO = """\
# Fixture policy for the policy tool tests: the same meaning as the Cedar fixture.
package mcp.authz

default decision := {"effect": "deny", "reasons": [{"id": "no_permit", "message": "no policy permits this"}]}

decision := {"effect": "deny", "reasons": [r | some r in deny]} if {
\tcount(deny) > 0
} else := {"effect": "require_approval", "reasons": [r | some r in approval]} if {
\tcount(approval) > 0
\tcount(permit) > 0
} else := {"effect": "allow", "reasons": [r | some r in permit]} if {
\tcount(permit) > 0
}

permit contains {"id": "list", "message": "anyone may list"} if {
\tinput.action in {"list_tools", "list_resources", "list_prompts"}
}

permit contains {"id": "read-only", "message": "read-only tools are allowed"} if {
\tinput.action == "call_tool"
\tinput.resource.annotations.readOnlyHint
}

permit contains {"id": "engineers", "message": "engineers may change things"} if {
\tinput.action == "call_tool"
\t"engineer" in input.principal.roles
}

approval contains {"id": "destructive-needs-approval", "message": "destructive tools need approval"} if {
\tinput.action == "call_tool"
\tinput.resource.annotations.destructiveHint
\tnot input.context.approval.granted
}

deny contains {"id": "bad-arguments", "message": "some argument could not be interpreted safely"} if {
\tcount(input.context.problems) > 0
}
"""


def _tool(name: str, *, read_only: bool, destructive: bool) -> dict[str, object]:
    return {
        "type": "Tool",
        "id": f"notes__{name}",
        "name": name,
        "server": "notes",
        "tenants": ["acme"],
        "tags": ["notes"],
        "annotations": {
            "readOnlyHint": read_only,
            "destructiveHint": destructive,
            "idempotentHint": True,
            "openWorldHint": False,
        },
    }


CATALOG = {
    "servers": {
        "notes": {"type": "Server", "id": "notes", "name": "notes", "server": "notes", "tenants": ["acme"]}
    },
    "tools": {
        "notes__read_note": _tool("read_note", read_only=True, destructive=False),
        "notes__write_note": _tool("write_note", read_only=False, destructive=False),
        "notes__delete_note": _tool("delete_note", read_only=False, destructive=True),
    },
    "resources": {
        "notes+notes://index": {
            "type": "Resource",
            "id": "notes+notes://index",
            "uri": "notes+notes://index",
            "server": "notes",
            "tenants": ["acme"],
            "tags": ["notes"],
        }
    },
    "resource_templates": {},
    "prompts": {},
}

CASES = """\
defaults:
  principal: {id: alice, tenant: acme, roles: [engineer]}
cases:
  - name: engineer reads a note
    tool: notes__read_note
    arguments: {note_id: welcome}
    expect: allow
    reasons: [read-only]
  - name: engineer writes a note
    tool: notes__write_note
    expect: allow
    reasons: [engineers]
  - name: engineer deletes a note
    tool: notes__delete_note
    expect: require_approval
    reasons: [destructive-needs-approval]
  - name: approved delete
    tool: notes__delete_note
    context: {approval: {granted: true, approver: bob}}
    expect: allow
  - name: guest writes a note
    principal: {id: guest, roles: []}
    tool: notes__write_note
    expect: deny
  - name: a path that cannot be read safely
    method: tools/call
    tool: notes__read_note
    arguments: {path: "/workspace/a\\u0000b"}
    expect: deny
    reasons: [bad-arguments]
  - name: anyone lists the notes tools
    principal: {id: guest, roles: []}
    action: list_tools
    server: notes
    expect: allow
"""
PASSING = 7


@dataclass
class Result:
    code: int
    out: str
    err: str

    @property
    def lines(self) -> list[str]:
        return self.out.splitlines()


@dataclass
class Repo:
    root: Path
    opa: str

    @property
    def policies(self) -> Path:
        return self.root / "policies"

    def write(self, relative: str, text: str) -> Path:
        path = self.root / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
        return path


@pytest.fixture
def repo(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Repo:
    """policies/ (cedar + rego), schemas/mcp.cedarschema, policy-tests/ with a catalog; cwd is its root."""
    made = Repo(tmp_path, str(opa_binary()))
    made.write("policies/cedar/base.cedar", BASE_CEDAR)
    made.write("policies/cedar/approvals.cedar", APPROVALS_CEDAR)
    made.write("policies/rego/mcp/authz/authz.rego", REGO)
    made.write("schemas/mcp.cedarschema", SCHEMA.read_text(encoding="utf-8"))
    made.write("policy-tests/catalog.yaml", render(CATALOG))
    made.write("policy-tests/basic.yaml", CASES)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("MCP_BROKER_OPA", made.opa)
    return made


Run = Callable[..., Result]


@pytest.fixture
def cli(capsys: pytest.CaptureFixture[str]) -> Iterator[Run]:
    """run(*args) -> Result: `mcp-broker …` in process (logging restored afterwards)."""
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level

    def run(*args: str) -> Result:
        capsys.readouterr()
        code = main(list(args))
        captured = capsys.readouterr()
        return Result(code, captured.out, captured.err)

    yield run
    root.handlers[:] = handlers
    root.setLevel(level)
