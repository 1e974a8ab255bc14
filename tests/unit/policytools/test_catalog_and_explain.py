"""`policy catalog` against a real example upstream; `policy explain` with both engines."""

from __future__ import annotations

import json
import subprocess
import sys
import uuid
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml

from broker.cli import main
from broker.identity.principal import Principal
from broker.policy.request import CallFacts, build_request
from broker.policytools.catalog import HEADER, render
from tests.support.opa import REPO
from tests.unit.policytools.conftest import CATALOG, Repo, Run

MCP_BROKER = str(Path(sys.executable).parent / "mcp-broker")


def _config(repo: Repo, upstream: dict[str, object]) -> Path:
    config = {"policy": {"engine": "cedar", "path": "policies"}, "upstreams": {"notes": upstream}}
    return repo.write("broker.yaml", yaml.safe_dump(config))


def _processes_mentioning(marker: str) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if marker in (entry / "cmdline").read_bytes().decode(errors="replace"):
                    found.append(int(entry.name))
            except OSError:
                continue
    return found


@dataclass
class Snapshotted:
    text: str
    stderr: str
    leftovers: list[int]


@pytest.fixture(scope="module")
def snapshotted(tmp_path_factory: pytest.TempPathFactory) -> Snapshotted:
    """`policy catalog` once, as a subprocess, over examples/notes_server.py (stdio)."""
    root = tmp_path_factory.mktemp("catalog")
    (root / "policies" / "cedar").mkdir(parents=True)
    marker = f"catalog-test-{uuid.uuid4().hex}"
    upstream = {
        "transport": "stdio",
        "command": sys.executable,
        "args": [str(REPO / "examples" / "notes_server.py"), "--data-dir", str(root / marker)],
        "tenants": ["acme"],
        "tags": ["notes"],
        "tool_tags": {"delete_note": ["dangerous"]},
    }
    config = {"policy": {"engine": "cedar", "path": "policies"}, "upstreams": {"notes": upstream}}
    (root / "broker.yaml").write_text(yaml.safe_dump(config))
    done = subprocess.run(
        [MCP_BROKER, "policy", "catalog", "-c", "broker.yaml", "-o", "policy-tests/catalog.yaml"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        cwd=root,
    )
    assert done.returncode == 0, done.stderr
    leftovers = _processes_mentioning(marker)
    return Snapshotted((root / "policy-tests" / "catalog.yaml").read_text(), done.stderr, leftovers)


def test_catalog_snapshots_a_real_upstream_and_leaves_no_process_behind(snapshotted: Snapshotted) -> None:
    assert snapshotted.leftovers == []
    assert snapshotted.stderr.strip().splitlines()[-1] == (
        "wrote policy-tests/catalog.yaml: 1 servers, 6 tools, 1 resources, 1 resource templates, 1 prompts"
    )
    text = snapshotted.text
    assert text.startswith(HEADER)
    snapshot = yaml.safe_load(text)
    assert list(snapshot) == ["servers", "tools", "resources", "resource_templates", "prompts"]
    assert render(snapshot) == text  # deterministic: sorted keys, one entry per line
    assert snapshot["servers"]["notes"] | {"tenants": None} == {
        "type": "Server",
        "id": "notes",
        "name": "notes",
        "server": "notes",
        "tenants": None,
    }
    read = snapshot["tools"]["notes__read_note"]
    assert {k: v for k, v in read.items() if k not in ("tenants", "tags")} == {
        "type": "Tool",
        "id": "notes__read_note",
        "name": "read_note",
        "server": "notes",
        "annotations": {
            "readOnlyHint": True,
            "destructiveHint": False,
            "idempotentHint": True,
            "openWorldHint": False,
        },
        # What the tool registry says of it (no lock file in this project: unpinned, allowed).
        "pinned": False,
        "flags": ["unpinned"],
    }
    assert sorted(snapshot["tools"]) == [
        "notes__archive_all",
        "notes__delete_note",
        "notes__list_notes",
        "notes__read_note",
        "notes__search_notes",
        "notes__write_note",
    ]
    assert snapshot["tools"]["notes__delete_note"]["annotations"]["destructiveHint"] is True
    assert snapshot["resources"]["notes+notes://index"]["type"] == "Resource"
    assert snapshot["resource_templates"]["notes+notes://note/{note_id}"]["server"] == "notes"
    assert snapshot["prompts"]["notes__summarize_note"]["type"] == "Prompt"
    assert "\n  notes__read_note: {annotations: {destructiveHint: false, idempotentHint: true, " in text


def test_catalog_carries_the_configs_tenants_and_tags(snapshotted: Snapshotted) -> None:
    snapshot = yaml.safe_load(snapshotted.text)
    assert snapshot["servers"]["notes"]["tenants"] == ["acme"]
    assert snapshot["tools"]["notes__read_note"]["tags"] == ["notes"]
    assert snapshot["tools"]["notes__delete_note"]["tags"] == ["notes", "dangerous"]


def test_the_snapshot_drives_cases_including_resource_templates(repo: Repo, cli: Run) -> None:
    snapshot = {
        **CATALOG,
        "resource_templates": {
            "notes+notes://note/{note_id}": {
                "type": "Resource",
                "id": "notes+notes://note/{note_id}",
                "uri": "notes+notes://note/{note_id}",
                "server": "notes",
                "tenants": ["acme"],
                "tags": [],
            }
        },
    }
    repo.write("policy-tests/catalog.yaml", render(snapshot))
    repo.write(
        "policy-tests/resources.yaml",
        "cases:\n"
        "  - name: a note by template\n    method: resources/read\n    resource: notes+notes://note/welcome\n"
        "    expect: deny\n"
        "  - name: nothing matches\n    action: read_resource\n    resource: other://x\n    expect: deny\n",
    )
    result = cli("policy", "test", "--engine", "cedar", "policy-tests/resources.yaml")
    assert result.lines == [
        "policy-tests/resources.yaml:8: unknown resource 'other://x': not in policy-tests/catalog.yaml; "
        "regenerate the catalog (mcp-broker policy catalog) or give resource_document",
        "1 passed, 0 failed, 1 case-file problem",
    ]


def test_catalog_fails_clearly_when_an_upstream_does_not_start(repo: Repo, cli: Run) -> None:
    config = _config(
        repo, {"transport": "stdio", "command": sys.executable, "args": ["-c", "import sys; sys.exit(3)"]}
    )
    result = cli("policy", "catalog", "-c", str(config), "-o", "out.yaml")
    assert result.code == 2
    assert result.err.splitlines()[-1] == (
        f"error: upstream(s) notes did not start (see above); fix {config.name} or the server, "
        "then run the command again"
    )
    assert not (repo.root / "out.yaml").exists()


def test_explain_a_full_request_document(repo: Repo, cli: Run) -> None:
    request, _ = build_request(
        Principal("User", "alice", "acme", ("engineer",)),
        "call_tool",
        CATALOG["tools"]["notes__delete_note"],
        {"note_id": "welcome", "path": "/workspace/../etc/passwd"},
        CallFacts("stdio", "2025-11-25"),
    )
    repo.write("request.json", json.dumps(request))
    result = cli("policy", "explain", "request.json")
    assert result.code == 0, result.err
    out = result.lines
    assert out[0] == "request: User alice [engineer; tenant acme] · call_tool · Tool notes__delete_note"
    assert '  arguments: {"note_id": "welcome", "path": "/etc/passwd"}' in out
    assert '  paths: ["/etc/passwd"]' in out
    assert '  cedar tags: {"note_id": {"text": "welcome"}, "path": {"text": "/etc/passwd"}}' in out
    cedar = out.index(next(line for line in out if line.startswith("cedar: ")))
    assert out[cedar].startswith("cedar: require_approval (policy version sha256:")
    assert out[cedar + 1] == (
        "  destructive-needs-approval  policies/cedar/approvals.cedar:2  "
        "destructive tools need a human approval"
    )
    opa = out.index(next(line for line in out if line.startswith("opa: ")))
    assert out[opa].startswith("opa: require_approval")
    assert out[opa + 1].startswith("  destructive-needs-approval  policies/rego/mcp/authz/authz.rego:")


def test_explain_a_case_of_a_case_file_and_json(repo: Repo, cli: Run) -> None:
    result = cli(
        "policy",
        "explain",
        "policy-tests/basic.yaml",
        "--case",
        "engineer writes a note",
        "--engine",
        "cedar",
    )
    assert result.code == 0, result.err
    assert result.lines[0] == (
        "request: User alice [engineer; tenant acme] · call_tool · Tool notes__write_note"
        "  (case 'engineer writes a note', policy-tests/basic.yaml:9)"
    )
    assert "  engineers  policies/cedar/base.cedar:22  engineers may change things" in result.lines
    assert result.lines[-1] == "expected: allow with reasons engineers: cedar as expected"

    data = json.loads(
        cli(
            "policy",
            "explain",
            "policy-tests/basic.yaml",
            "--case",
            "engineer writes a note",
            "--format",
            "json",
        ).out
    )
    assert data["decisions"]["opa"]["effect"] == "allow"
    assert data["decisions"]["cedar"]["reasons"] == [
        {"id": "engineers", "message": "engineers may change things", "where": "policies/cedar/base.cedar:22"}
    ]
    several = cli("policy", "explain", "policy-tests/basic.yaml")
    assert several.code == 2
    assert several.err.strip() == "error: policy-tests/basic.yaml has 7 cases; pick one with --case NAME"


def test_every_command_shows_an_example_and_the_exit_codes(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("COLUMNS", "200")
    for command in ("catalog", "test", "check", "fmt", "diff", "explain"):
        with pytest.raises(SystemExit) as exited:
            main(["policy", command, "--help"])
        assert exited.value.code == 0
        out = capsys.readouterr().out
        assert f"example:\n  mcp-broker policy {command}" in out
        assert "exit codes: 0 = all good, 1 = something was found" in out
