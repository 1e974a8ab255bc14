"""The MCP Inspector CLI (`@modelcontextprotocol/inspector` 2.12, Node 22) against the real broker.

The broker fronts examples/notes_server.py over stdio as upstream `notes` (namespaced: tools and
prompts `notes__*`, resources `notes+<uri>`). Each Inspector invocation is a fresh handshake-era
client session (initialize 2025-11-25, logging/setLevel, the list, the call); ~0.7 s each.
"""

from __future__ import annotations

import json
import os
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.fixtures import REPO_ROOT, example_script, import_script
from tests.support.broker import (
    INSPECTOR_JS,
    NODE22,
    BrokerProcess,
    broker_config,
    running_broker,
    stdio_upstream,
)

pytestmark = pytest.mark.fail_if_missing(
    not (NODE22.exists() and INSPECTOR_JS.exists()),
    reason="Node tools missing: run scripts/install-node-tools.sh",
)

NOTES = example_script("notes_server")
SEED_NOTES: dict[str, str] = import_script(NOTES).SEED_NOTES
NOTE_TOOLS = {"list_notes", "read_note", "search_notes", "write_note", "delete_note", "archive_all"}
EXIT_TOOL_IS_ERROR = 5


@dataclass
class InspectorRun:
    args: list[str]
    returncode: int
    stdout: str
    stderr: str

    def json(self) -> Any:
        assert self.stdout.strip(), f"no output from the Inspector {self.args}:\n{self.stderr}"
        return json.loads(self.stdout)

    def __str__(self) -> str:
        return f"inspector {' '.join(self.args)} → exit {self.returncode}\n{self.stdout}\n{self.stderr}"


@dataclass
class Setup:
    broker: BrokerProcess
    home: Path

    def inspector(self, *args: str, timeout: float = 60.0) -> InspectorRun:
        """`node inspector --cli URL ARGS...`; HOME is a temporary directory (it creates ~/.mcp-inspector)."""
        argv = ["--cli", self.broker.url, *args]
        env = {**os.environ, "HOME": str(self.home), "NO_COLOR": "1"}
        done = subprocess.run(
            [str(NODE22), str(INSPECTOR_JS), *argv],
            capture_output=True,
            text=True,
            timeout=timeout,
            env=env,
            cwd=self.home,
            stdin=subprocess.DEVNULL,
        )
        return InspectorRun(argv, done.returncode, done.stdout, done.stderr)


@pytest.fixture(scope="module")
def setup(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Setup]:
    directory = tmp_path_factory.mktemp("inspector")
    home = directory / "home"
    home.mkdir()
    config = broker_config({"notes": stdio_upstream(NOTES, cwd=str(REPO_ROOT / "examples"))})
    with running_broker(directory, config) as broker:
        yield Setup(broker, home)


def _text(content: list[dict[str, Any]]) -> str:
    return "".join(item["text"] for item in content if item.get("type") == "text")


def test_tools_list(setup: Setup) -> None:
    run = setup.inspector("--method", "tools/list")
    assert run.returncode == 0, run
    tools = {tool["name"]: tool for tool in run.json()["tools"]}
    assert set(tools) == {f"notes__{name}" for name in NOTE_TOOLS}, run
    read = tools["notes__read_note"]
    assert read["title"] == "Read a note"
    assert read["description"] == "Return the text of one note."
    assert read["inputSchema"]["required"] == ["note_id"]
    assert read["annotations"] == {
        "readOnlyHint": True,
        "destructiveHint": False,
        "idempotentHint": True,
        "openWorldHint": False,
    }
    assert tools["notes__delete_note"]["annotations"]["destructiveHint"] is True
    assert tools["notes__write_note"]["annotations"]["readOnlyHint"] is False


@pytest.mark.parametrize("note_id", ["welcome", "groceries"])
def test_tools_call_read_note(setup: Setup, note_id: str) -> None:
    run = setup.inspector(
        "--method", "tools/call", "--tool-name", "notes__read_note", "--tool-arg", f"note_id={note_id}"
    )
    assert run.returncode == 0, run
    result = run.json()
    assert result.get("isError") is not True, run
    assert _text(result["content"]) == SEED_NOTES[note_id]
    assert result["structuredContent"] == {"result": SEED_NOTES[note_id]}


def test_tools_call_write_then_read(setup: Setup) -> None:
    text = 'written through the Inspector: ünïcode ✓, "quotes" and = signs'
    run = setup.inspector(
        "--method", "tools/call", "--tool-name", "notes__write_note",
        "--tool-arg", "note_id=inspector-note", f"text={text}",
    )  # fmt: skip
    assert run.returncode == 0, run
    assert "inspector-note" in _text(run.json()["content"])
    run = setup.inspector(
        "--method", "tools/call", "--tool-name", "notes__read_note", "--tool-arg", "note_id=inspector-note"
    )
    assert run.returncode == 0, run
    assert _text(run.json()["content"]) == text


def test_tools_call_upstream_error_is_error_result(setup: Setup) -> None:
    """The upstream's own ToolError comes back as an `isError` result (Inspector exit 5, result on stdout)."""
    run = setup.inspector(
        "--method", "tools/call", "--tool-name", "notes__read_note", "--tool-arg", "note_id=nope"
    )
    assert run.returncode == EXIT_TOOL_IS_ERROR, run
    result = run.json()
    assert result["isError"] is True
    assert "Unknown note: 'nope'" in _text(result["content"])
    assert "tool_is_error" in run.stderr


def test_resources_list_and_read(setup: Setup) -> None:
    run = setup.inspector("--method", "resources/list")
    assert run.returncode == 0, run
    resources = {r["uri"]: r for r in run.json()["resources"]}
    assert set(resources) == {"notes+notes://index"}, run
    assert resources["notes+notes://index"]["mimeType"] == "application/json"

    run = setup.inspector("--method", "resources/templates/list")
    assert run.returncode == 0, run
    assert [t["uriTemplate"] for t in run.json()["resourceTemplates"]] == ["notes+notes://note/{note_id}"]

    run = setup.inspector("--method", "resources/read", "--uri", "notes+notes://note/meeting")
    assert run.returncode == 0, run
    contents = run.json()["contents"]
    assert contents == [
        {"uri": "notes+notes://note/meeting", "mimeType": "text/plain", "text": SEED_NOTES["meeting"]}
    ]


def test_prompts_list_and_get(setup: Setup) -> None:
    run = setup.inspector("--method", "prompts/list")
    assert run.returncode == 0, run
    assert [p["name"] for p in run.json()["prompts"]] == ["notes__summarize_note"]

    run = setup.inspector(
        "--method",
        "prompts/get",
        "--prompt-name",
        "notes__summarize_note",
        "--prompt-args",
        "note_id=welcome",
    )
    assert run.returncode == 0, run
    messages = run.json()["messages"]
    assert len(messages) == 1
    assert messages[0]["role"] == "user"
    assert SEED_NOTES["welcome"] in messages[0]["content"]["text"]
