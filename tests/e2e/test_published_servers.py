"""Published MCP servers behind the real broker, driven by the official SDK client in both eras.

One broker fronts four real stdio upstreams: `mcp-server-time` and `mcp-server-git` (PyPI, in the
venv) and `@modelcontextprotocol/server-filesystem` / `server-memory` (npm, Node 22). For each, in
`mode="legacy"` (2025-11-25) and `mode="auto"` (2026-07-28 to the broker):

* the broker lists the server's tools as `<upstream>__<tool>`, each otherwise identical to what the
  same server lists directly (annotations checked against the expected hints as well);
* real calls give the real results, and exactly what a second instance of the same server, started
  by the SDK client over stdio in the same mode, gives directly: content, structuredContent and
  isError (or the JSON-RPC error) must be identical, timestamps masked where the result has the time.
"""

from __future__ import annotations

import base64
import os
import re
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from mcp import Client, StdioServerParameters
from mcp.shared.exceptions import MCPError
from pydantic import BaseModel

from tests.support.broker import (
    NODE22,
    SERVER_FILESYSTEM_JS,
    SERVER_MEMORY_JS,
    BrokerProcess,
    broker_config,
    command_upstream,
    running_broker,
)

VENV_BIN = Path(sys.executable).parent
MODES = ["legacy", "auto"]

pytestmark = [
    pytest.mark.anyio,
    pytest.mark.fail_if_missing(
        not (NODE22.exists() and SERVER_FILESYSTEM_JS.exists() and SERVER_MEMORY_JS.exists()),
        reason="Node tools missing: run scripts/install-node-tools.sh",
    ),
    pytest.mark.fail_if_missing(
        not ((VENV_BIN / "mcp-server-time").exists() and (VENV_BIN / "mcp-server-git").exists()),
        reason="mcp-server-time / mcp-server-git not installed in the venv",
    ),
]

# Expected (readOnlyHint, destructiveHint, idempotentHint, openWorldHint); None = not set.
# Per /work/shared/notes/mcp-sdk-and-spec.md §11.
R, W = (True, False, True, False), (False, False, False, False)
ANNOTATIONS: dict[str, dict[str, tuple[bool | None, ...]]] = {
    "time": {"get_current_time": R, "convert_time": R},
    "git": {
        **dict.fromkeys(
            [
                "git_status",
                "git_diff_unstaged",
                "git_diff_staged",
                "git_diff",
                "git_log",
                "git_show",
                "git_branch",
            ],
            R,
        ),
        **dict.fromkeys(["git_commit", "git_create_branch", "git_checkout"], W),
        "git_add": (False, False, True, False),
        "git_reset": (False, True, True, False),
    },
    "fs": {
        **dict.fromkeys(
            [
                "read_file",
                "read_text_file",
                "read_media_file",
                "read_multiple_files",
                "list_directory",
                "list_directory_with_sizes",
                "directory_tree",
                "search_files",
                "get_file_info",
                "list_allowed_directories",
            ],
            (True, None, None, False),
        ),
        "write_file": (False, True, True, False),
        "edit_file": (False, True, False, False),
        "move_file": (False, True, False, False),
        "create_directory": (False, False, True, False),
    },
    "memory": {
        **dict.fromkeys(["create_entities", "create_relations", "add_observations"], W),
        **dict.fromkeys(
            ["delete_entities", "delete_observations", "delete_relations"], (False, True, True, False)
        ),
        **dict.fromkeys(["read_graph", "search_nodes", "open_nodes"], R),
    },
}

PNG_1X1 = base64.b64decode(
    "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNkYPhfDwAChwGA60e6kgAAAABJRU5ErkJggg=="
)


@dataclass
class Setup:
    broker: BrokerProcess
    root: Path
    repo: Path
    commit: str
    fsroot: Path
    servers: dict[str, tuple[str, list[str], dict[str, str]]]  # name -> (command, args, extra env)

    def direct(self, name: str, mode: str, tmp_path: Path) -> Client:
        """A second instance of upstream `name`, started by the SDK client itself over stdio."""
        command, args, env = self.servers[name]
        if name == "memory":
            env = {"MEMORY_FILE_PATH": str(tmp_path / f"direct-memory-{mode}.jsonl")}
        params = StdioServerParameters(command=command, args=args, env={**os.environ, **env})
        return Client(params, mode=mode)


def _git(repo: Path, *args: str) -> str:
    return subprocess.run(["git", "-C", str(repo), *args], check=True, capture_output=True, text=True).stdout


@pytest.fixture(scope="module")
def setup(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Setup]:
    root = tmp_path_factory.mktemp("published").resolve()
    repo = root / "repo"
    repo.mkdir()
    _git(repo, "init", "-q", "-b", "main")
    _git(repo, "config", "user.name", "Broker Test")
    _git(repo, "config", "user.email", "broker-test@example.invalid")
    (repo / "README.md").write_text("a repository for the broker's end-to-end tests\n")
    _git(repo, "add", "README.md")
    _git(repo, "commit", "-q", "-m", "Initial commit for broker e2e")
    commit = _git(repo, "rev-parse", "HEAD").strip()
    fsroot = root / "fsroot"
    fsroot.mkdir()
    (root / "outside.txt").write_text("not for the filesystem server\n")
    servers = {
        "time": (str(VENV_BIN / "mcp-server-time"), [], {}),
        "git": (str(VENV_BIN / "mcp-server-git"), ["--repository", str(repo)], {}),
        "fs": (str(NODE22), [str(SERVER_FILESYSTEM_JS), str(fsroot)], {}),
        "memory": (str(NODE22), [str(SERVER_MEMORY_JS)], {"MEMORY_FILE_PATH": str(root / "memory.jsonl")}),
    }
    upstreams = {
        name: command_upstream(command, *args, **({"env": env} if env else {}))
        for name, (command, args, env) in servers.items()
    }
    with running_broker(root, broker_config(upstreams)) as broker:
        yield Setup(broker, root, repo, commit, fsroot, servers)


# -- helpers -------------------------------------------------------------------------------------------


async def outcome(client: Client, tool: str, arguments: dict[str, Any]) -> dict[str, Any]:
    """What a client sees of a call: content, structuredContent, isError, or the JSON-RPC error."""
    try:
        result = await client.call_tool(tool, arguments)
    except MCPError as exc:
        return {"error": {"code": exc.error.code, "message": exc.error.message, "data": exc.error.data}}
    return {
        "content": [
            item.model_dump(mode="json", by_alias=True, exclude_none=True) for item in result.content
        ],
        "structuredContent": result.structured_content,
        "isError": bool(result.is_error),
    }


async def same_through_broker(
    broker: Client, direct: Client, upstream: str, tool: str, arguments: dict[str, Any]
) -> dict[str, Any]:
    """Call `tool` through the broker and directly; assert both outcomes are identical; return it."""
    via_broker = await outcome(broker, f"{upstream}__{tool}", arguments)
    via_direct = await outcome(direct, tool, arguments)
    assert via_broker == via_direct, (
        f"{upstream}__{tool}({arguments}) differs\n"
        f"  through the broker: {via_broker}\n"
        f"  directly: {via_direct}"
    )
    return via_broker


def wire(model: BaseModel) -> dict[str, Any]:
    """A model as it looks on the wire (camelCase, unset fields left out)."""
    return model.model_dump(mode="json", by_alias=True, exclude_none=True)


def text_of(result: dict[str, Any]) -> str:
    return "".join(item.get("text", "") for item in result.get("content", []))


def hints(tool: dict[str, Any]) -> tuple[bool | None, ...]:
    a = tool.get("annotations") or {}
    return (a.get("readOnlyHint"), a.get("destructiveHint"), a.get("idempotentHint"), a.get("openWorldHint"))


async def check_listing(broker: Client, direct: Client, upstream: str) -> dict[str, dict[str, Any]]:
    """The upstream's tools, namespaced, identical to the direct listing except for the name."""
    listed = [wire(t) for t in (await broker.list_tools()).tools]
    direct_tools = {t.name: wire(t) for t in (await direct.list_tools()).tools}
    assert all("__" in t["name"] for t in listed), [t["name"] for t in listed if "__" not in t["name"]]
    mine = {
        t["name"].removeprefix(f"{upstream}__"): t for t in listed if t["name"].startswith(f"{upstream}__")
    }
    assert set(mine) == set(direct_tools) == set(ANNOTATIONS[upstream]), (sorted(mine), sorted(direct_tools))
    for name, tool in mine.items():
        assert {**tool, "name": name} == direct_tools[name], (
            f"{upstream}__{name} is not listed as the server lists it"
        )
        assert hints(tool) == ANNOTATIONS[upstream][name], f"{upstream}__{name}: {tool.get('annotations')}"
    return mine


# -- tests -----------------------------------------------------------------------------------------------


async def test_catalog_namespaces_every_upstream(setup: Setup) -> None:
    for mode in MODES:
        async with Client(setup.broker.url, mode=mode) as client:
            names = {t.name for t in (await client.list_tools()).tools}
            expected = {f"{up}__{tool}" for up, tools in ANNOTATIONS.items() for tool in tools}
            assert names == expected, (mode, sorted(names ^ expected))
            assert client.server_info is not None
            assert client.server_info.name == "mcp-authz-broker"


@pytest.mark.parametrize("mode", MODES)
async def test_time(setup: Setup, mode: str, tmp_path: Path) -> None:
    async with (
        Client(setup.broker.url, mode=mode) as broker,
        setup.direct("time", mode, tmp_path) as direct,
    ):
        await check_listing(broker, direct, "time")

        now = await outcome(broker, "time__get_current_time", {"timezone": "UTC"})
        reference = await outcome(direct, "get_current_time", {"timezone": "UTC"})
        assert now["isError"] is False, now
        when = datetime.fromisoformat(now["structuredContent"]["datetime"])
        assert abs((datetime.now(UTC) - when).total_seconds()) < 60
        assert now["structuredContent"]["timezone"] == "UTC"
        assert mask_times(now) == mask_times(reference)

        converted = await same_through_broker(
            broker, direct, "time", "convert_time",
            {"source_timezone": "UTC", "time": "12:00", "target_timezone": "Asia/Tokyo"},
        )  # fmt: skip
        assert converted["structuredContent"]["target"]["timezone"] == "Asia/Tokyo"
        assert converted["structuredContent"]["target"]["datetime"].endswith("T21:00:00+09:00")

        bad = await same_through_broker(
            broker, direct, "time", "get_current_time", {"timezone": "Nowhere/Atlantis"}
        )
        assert bad["isError"] is True, bad
        assert "Invalid timezone" in text_of(bad), bad


def mask_times(value: Any) -> Any:
    """Replace ISO-8601 date-times (and the day of the week they carry) so two calls compare equal."""
    if isinstance(value, dict):
        return {k: "<day>" if k == "day_of_week" else mask_times(v) for k, v in value.items()}
    if isinstance(value, list):
        return [mask_times(v) for v in value]
    if isinstance(value, str):
        value = re.sub(
            r"\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(?:\.\d+)?(?:Z|[+-]\d{2}:\d{2})?", "<datetime>", value
        )
        return re.sub(r'"day_of_week": "\w+"', '"day_of_week": "<day>"', value)
    return value


@pytest.mark.parametrize("mode", MODES)
async def test_git(setup: Setup, mode: str, tmp_path: Path) -> None:
    repo = str(setup.repo)
    async with (
        Client(setup.broker.url, mode=mode) as broker,
        setup.direct("git", mode, tmp_path) as direct,
    ):
        await check_listing(broker, direct, "git")

        status = await same_through_broker(broker, direct, "git", "git_status", {"repo_path": repo})
        assert status["isError"] is False, status
        assert "On branch main" in text_of(status), status
        assert "working tree clean" in text_of(status), status

        log = await same_through_broker(broker, direct, "git", "git_log", {"repo_path": repo})
        assert log["isError"] is False, log
        assert setup.commit in text_of(log), log
        assert "Initial commit for broker e2e" in text_of(log), log

        show = await same_through_broker(
            broker, direct, "git", "git_show", {"repo_path": repo, "revision": "HEAD"}
        )
        assert "README.md" in text_of(show), show

        outside = await same_through_broker(broker, direct, "git", "git_log", {"repo_path": str(setup.root)})
        assert outside["isError"] is True, outside
        assert "outside the allowed repository" in text_of(outside), outside


@pytest.mark.parametrize("mode", MODES)
async def test_filesystem(setup: Setup, mode: str, tmp_path: Path) -> None:
    target = setup.fsroot / f"note-{mode}.txt"
    content = f'written through the broker ({mode})\nünïcode ✓ 😀 "quoted" \\ back\\slash\n'
    async with (
        Client(setup.broker.url, mode=mode) as broker,
        setup.direct("fs", mode, tmp_path) as direct,
    ):
        await check_listing(broker, direct, "fs")

        # Round trip through the broker, then the same calls directly (same allowed dir, same file).
        written = await outcome(broker, "fs__write_file", {"path": str(target), "content": content})
        assert written["isError"] is False, written
        assert target.read_text(encoding="utf-8") == content
        read = await outcome(broker, "fs__read_text_file", {"path": str(target)})
        assert text_of(read) == content, read
        assert written == await outcome(direct, "write_file", {"path": str(target), "content": content})
        assert read == await outcome(direct, "read_text_file", {"path": str(target)})

        # Binary content (image) passes through unchanged.
        (setup.fsroot / "pixel.png").write_bytes(PNG_1X1)
        media = await same_through_broker(
            broker, direct, "fs", "read_media_file", {"path": str(setup.fsroot / "pixel.png")}
        )
        assert media["content"][0]["type"] == "image", media
        assert media["content"][0]["mimeType"] == "image/png", media
        assert base64.b64decode(media["content"][0]["data"]) == PNG_1X1

        # The server's own errors pass through unchanged.
        outside = await same_through_broker(
            broker, direct, "fs", "read_text_file", {"path": str(setup.root / "outside.txt")}
        )
        assert "error" in outside or outside["isError"] is True, outside
        assert "Access denied" in (text_of(outside) or outside.get("error", {}).get("message", "")), outside
        missing = await same_through_broker(
            broker, direct, "fs", "read_text_file", {"path": str(setup.fsroot / "nope.txt")}
        )
        assert missing.get("isError") is True, missing
        assert "ENOENT" in text_of(missing), missing
        # Arguments that break the tool's inputSchema stop at the broker (guard-in), named.
        invalid = await outcome(broker, "fs__read_text_file", {})
        assert invalid["error"]["code"] == -32602, invalid
        assert invalid["error"]["data"]["reason"] == "invalid_arguments", invalid
        assert "path" in invalid["error"]["message"], invalid

        allowed = await same_through_broker(broker, direct, "fs", "list_allowed_directories", {})
        assert str(setup.fsroot) in text_of(allowed), allowed


@pytest.mark.parametrize("mode", MODES)
async def test_memory(setup: Setup, mode: str, tmp_path: Path) -> None:
    entities = [
        {
            "name": f"broker-{mode}",
            "entityType": "service",
            "observations": ["fronts MCP servers", "ünïcode ✓"],
        },
        {"name": f"upstream-{mode}", "entityType": "service", "observations": []},
    ]
    relation = {"from": f"broker-{mode}", "to": f"upstream-{mode}", "relationType": "fronts"}
    async with (
        Client(setup.broker.url, mode=mode) as broker,
        setup.direct("memory", mode, tmp_path) as direct,
    ):
        await check_listing(broker, direct, "memory")

        # Each mode uses its own entity names on the broker's (shared) memory file, and a fresh file
        # directly, so every result below is the same on both sides.
        created = await same_through_broker(
            broker, direct, "memory", "create_entities", {"entities": entities}
        )
        assert created["isError"] is False, created
        assert created["structuredContent"]["entities"] == entities
        related = await same_through_broker(
            broker, direct, "memory", "create_relations", {"relations": [relation]}
        )
        assert related["isError"] is False, related
        opened = await same_through_broker(
            broker, direct, "memory", "open_nodes", {"names": [e["name"] for e in entities]}
        )
        assert opened["structuredContent"] == {"entities": entities, "relations": [relation]}, opened

        graph = await outcome(broker, "memory__read_graph", {})
        assert graph["isError"] is False, graph
        assert all(e in graph["structuredContent"]["entities"] for e in entities), graph
        assert relation in graph["structuredContent"]["relations"], graph
        direct_graph = await outcome(direct, "read_graph", {})
        assert direct_graph["structuredContent"] == {"entities": entities, "relations": [relation]}

        invalid = await outcome(broker, "memory__open_nodes", {"names": "not-a-list"})
        assert invalid["error"]["data"]["reason"] == "invalid_arguments", invalid
        assert "names" in invalid["error"]["message"], invalid

    lines = (setup.root / "memory.jsonl").read_text(encoding="utf-8")
    assert f'"broker-{mode}"' in lines  # the broker's instance wrote where MEMORY_FILE_PATH said
