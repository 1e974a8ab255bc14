"""Clean published servers produce no finding, and pin stably.

The real listings of `mcp-server-time`, `mcp-server-git` (PyPI, in the venv) and
`@modelcontextprotocol/server-filesystem` / `server-memory` (npm, Node 22), read through the
broker's own upstream code, scanned together with and without namespacing.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from broker.registry.cli import fetch_live
from broker.registry.pins import Pins, compare, pins_for
from broker.registry.scan import RegistryScanner, ServerOffer
from tests.integration.registry.conftest import run_cli, write_config
from tests.support.broker import NODE22, SERVER_FILESYSTEM_JS, SERVER_MEMORY_JS, command_upstream

VENV_BIN = Path(sys.executable).parent

pytestmark = [
    pytest.mark.fail_if_missing(
        not (NODE22.exists() and SERVER_FILESYSTEM_JS.exists() and SERVER_MEMORY_JS.exists()),
        reason="Node tools missing: run scripts/install-node-tools.sh",
    ),
    pytest.mark.fail_if_missing(
        not ((VENV_BIN / "mcp-server-time").exists() and (VENV_BIN / "mcp-server-git").exists()),
        reason="mcp-server-time / mcp-server-git not installed in the venv",
    ),
]


def published(tmp_path: Path) -> dict[str, dict[str, Any]]:
    repo = tmp_path / "repo"
    repo.mkdir()
    subprocess.run(["git", "init", "-q", str(repo)], check=True)
    files = tmp_path / "files"
    files.mkdir()
    return {
        "time": command_upstream(VENV_BIN / "mcp-server-time", "--local-timezone", "UTC"),
        "git": command_upstream(VENV_BIN / "mcp-server-git", "--repository", repo),
        "fs": command_upstream(NODE22, SERVER_FILESYSTEM_JS, files),
        "memory": command_upstream(
            NODE22, SERVER_MEMORY_JS, env={"MEMORY_FILE_PATH": str(tmp_path / "m.jsonl")}
        ),
    }


@pytest.mark.anyio
async def test_no_false_positive_and_stable_pins(tmp_path: Path) -> None:
    config = write_config(tmp_path, published(tmp_path))
    live = await fetch_live(config)
    tools = {server: len(listing.tools) for server, listing in live.listings.items()}
    assert tools == {"time": 2, "git": 12, "fs": 14, "memory": 9}

    scanner = RegistryScanner()
    for namespace in (True, False):
        offers = [ServerOffer(s, live.listings[s], namespace) for s in live.order]
        findings = scanner.scan(offers)
        assert findings == [], "\n".join(f.line() for f in findings)

    pins = Pins({server: pins_for(listing) for server, listing in live.listings.items()})
    again = await fetch_live(config)  # fresh processes: the definitions hash the same
    for server in live.order:
        state = compare(pins, server, again.listings[server])
        assert state.clean, [(i.key, i.status, i.changes) for i in state.items.values()]

    results = {
        "content": [
            {"type": "text", "text": t["description"]} for s in live.order for t in live.listings[s].tools
        ]
    }
    assert scanner.scan_result("all", "descriptions", results) == []


def test_scan_command_reports_nothing(tmp_path: Path) -> None:
    config = write_config(tmp_path, published(tmp_path))
    code, out, err = run_cli("scan", "-c", str(config), "--lock", str(tmp_path / "lock.yaml"))
    assert code == 0, err
    assert out.strip() == "0 finding(s): 0 quarantine, 0 warn (4 server(s) scanned)"
