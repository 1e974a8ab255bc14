"""The `mcp-broker` command line, run as a user would: check-config, serve, stdio, --help.

`check-config` and `serve` run the installed console script as a subprocess; `stdio` is
driven by the official SDK client over stdin/stdout in both protocol eras
(`mode="legacy"` = 2025-11-25, `mode="auto"` = 2026-07-28), and once more by hand to see
its exit code when the caller closes stdin.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
from pathlib import Path

import mcp_types as types
import orjson
import pytest
from mcp import Client, StdioServerParameters

from tests.fixtures import REPO_ROOT
from tests.support.broker import alive, broker_config, broker_env, descendants, stdio_upstream, write_config


@pytest.fixture(autouse=True)
def policies_folder(tmp_path: Path) -> None:
    """A config file needs its policies (default: policies/ next to it); give each test one."""
    (tmp_path / "policies" / "cedar").mkdir(parents=True)

MCP_BROKER = str(Path(sys.executable).parent / "mcp-broker")
EXIT_CONFIG = 2
TIMEOUTS = {"call": 10, "startup": 15, "ping_interval": 0}


def run(*args: str, cwd: Path = REPO_ROOT, timeout: float = 30) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [MCP_BROKER, *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=cwd,
        env=broker_env(),
        stdin=subprocess.DEVNULL,
        check=False,
    )


def wait_gone(pids: list[int], seconds: float) -> list[int]:
    deadline = time.monotonic() + seconds
    while any(alive(pid) for pid in pids) and time.monotonic() < deadline:
        time.sleep(0.05)
    return [pid for pid in pids if alive(pid)]


# --- check-config ------------------------------------------------------------------------------


def test_check_config_accepts_the_example() -> None:
    result = run("check-config", "examples/broker.yaml")
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("examples/broker.yaml: OK"), result.stdout
    assert "notes (stdio)" in result.stdout
    assert "time (stdio)" in result.stdout
    assert result.stderr == ""


TYPO = """\
server:
  nmae: demo
upstreams:
  notes:
    transport: stdio
    command: python
"""

WRONG_TYPE = """\
upstreams:
  notes:
    transport: stdio
    command: python
    timeouts:
      call: soon
"""

INLINE_SECRET = """\
upstreams:
  remote:
    transport: streamable_http
    url: https://mcp.example.com/mcp
    headers:
      Authorization: Bearer s3cr3t-t0ken
"""

ALL_THREE = """\
server:
  nmae: demo
http:
  port: "80a"
upstreams:
  remote:
    transport: streamable_http
    url: https://mcp.example.com/mcp
    headers:
      Authorization: Bearer s3cr3t-t0ken
"""

TWO_SCHEMA_PROBLEMS = """\
server:
  nmae: demo
http:
  port: "80a"
upstreams:
  notes:
    transport: stdoi
    command: python
"""


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (TYPO, [r"2: server: unknown key 'nmae' \(did you mean 'name'\?\)"]),
        (WRONG_TYPE, [r"6: upstreams\.notes\.timeouts\.call: expected number, got string 'soon'"]),
        (
            INLINE_SECRET,
            [
                r"6: upstreams\.remote\.headers\.Authorization: inline values are not allowed for "
                r"credential-like name 'Authorization'; use \{env: NAME\} or \{file: PATH\}"
            ],
        ),
        (
            TWO_SCHEMA_PROBLEMS,
            [
                r"2: server: unknown key 'nmae' \(did you mean 'name'\?\)",
                r"4: http\.port: expected integer, got string '80a'",
                r"7: upstreams\.notes\.transport: 'stdoi' is not one of 'stdio', 'streamable_http', 'sse'",
            ],
        ),
    ],
    ids=["typo-key", "wrong-type", "inline-secret", "several"],
)
def test_check_config_names_file_line_and_path_of_each_problem(
    tmp_path: Path, text: str, expected: list[str]
) -> None:
    (tmp_path / "broker.yaml").write_text(text)
    result = run("check-config", "broker.yaml", cwd=tmp_path)
    assert result.returncode == EXIT_CONFIG, result
    assert result.stdout == ""
    lines = result.stderr.splitlines()
    assert len(lines) == len(expected), result.stderr
    for line, pattern in zip(lines, expected, strict=True):
        assert re.match(rf"broker\.yaml:{pattern}", line), f"{line!r} !~ {pattern!r}"
    assert "s3cr3t" not in result.stderr, "the secret value was echoed"


def test_check_config_reports_schema_and_semantic_problems_together(tmp_path: Path) -> None:
    path = write_config(tmp_path, ALL_THREE)
    result = run("check-config", str(path))
    assert result.returncode == EXIT_CONFIG
    problems = result.stderr.splitlines()
    assert len(problems) == 3, result.stderr
    assert any("server: unknown key 'nmae'" in p for p in problems)
    assert any("http.port: expected integer" in p for p in problems)
    assert any("headers.Authorization: inline values are not allowed" in p for p in problems)


def test_check_config_missing_file(tmp_path: Path) -> None:
    result = run("check-config", str(tmp_path / "nope.yaml"))
    assert result.returncode == EXIT_CONFIG
    assert (
        result.stderr.strip()
        == f"{tmp_path / 'nope.yaml'}: cannot read configuration file: No such file or directory"
    )


# --- serve / stdio with an invalid config --------------------------------------------------------


@pytest.mark.parametrize("command", ["serve", "stdio"])
def test_invalid_config_exits_2_without_starting_anything(tmp_path: Path, command: str) -> None:
    marker = tmp_path / "upstream-was-started"
    text = f"""\
server:
  nmae: typo
upstreams:
  starter:
    transport: stdio
    command: {sys.executable}
    args: ["-c", "open({str(marker)!r}, 'w').close()"]
"""
    path = write_config(tmp_path, text)
    ready = tmp_path / "ready"
    extra = ["--port", "0", "--ready-file", str(ready)] if command == "serve" else []
    started = time.monotonic()
    result = run(command, "-c", str(path), *extra)
    assert result.returncode == EXIT_CONFIG, result
    assert time.monotonic() - started < 15
    assert result.stderr.splitlines() == [f"{path}:2: server: unknown key 'nmae' (did you mean 'name'?)"]
    assert result.stdout == ""
    assert not marker.exists(), "an upstream was started from an invalid config"
    assert not ready.exists()


# --- help ----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "command",
    [
        [],
        ["serve"],
        ["stdio"],
        ["check-config"],
    ],
    ids=["top-level", "serve", "stdio", "check-config"],
)
def test_help_shows_an_example(command: list[str]) -> None:
    result = run(*command, "--help")
    assert result.returncode == 0, result.stderr
    flat = " ".join(result.stdout.split())  # argparse wraps long lines
    assert re.search(r"Example: mcp-broker \S+.* examples/broker\.yaml", flat), result.stdout


def test_version() -> None:
    result = run("--version")
    assert result.returncode == 0
    assert re.fullmatch(r"mcp-broker \S+\n", result.stdout), result.stdout


# --- stdio ---------------------------------------------------------------------------------------


@pytest.fixture
def stdio_config(tmp_path: Path) -> Path:
    return write_config(tmp_path, broker_config({"counter": stdio_upstream("counter", timeouts=TIMEOUTS)}))


def broker_and_children() -> list[int]:
    """This test process's `broker.cli stdio` child and everything below it."""
    for pid in descendants(os.getpid()):
        try:
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if b"broker.cli" in cmdline and b"stdio" in cmdline:
            return [pid, *descendants(pid)]
    return []


@pytest.mark.anyio
@pytest.mark.parametrize(("mode", "version"), [("legacy", "2025-11-25"), ("auto", "2026-07-28")])
async def test_stdio_serves_the_sdk_client(stdio_config: Path, mode: str, version: str) -> None:
    params = StdioServerParameters(
        command=sys.executable,
        args=["-m", "broker.cli", "stdio", "-c", str(stdio_config)],
        cwd=str(REPO_ROOT),
    )
    async with Client(params, mode=mode) as client:
        assert client.protocol_version == version
        tools = sorted(tool.name for tool in (await client.list_tools()).tools)
        assert tools == ["counter__count", "counter__hit", "counter__hit_destructive", "counter__reset"]
        result = await client.call_tool("counter__hit", {})
        assert not result.is_error
        assert isinstance(result.content[0], types.TextContent)
        assert result.content[0].text == "1"
        assert (await client.call_tool("counter__count", {})).structured_content == {"result": 1}
        processes = broker_and_children()
        assert len(processes) == 2, processes  # the broker and its counter upstream
    left = wait_gone(processes, 5)
    assert not left, f"still running after the client disconnected: {left}"


def test_stdio_exits_0_when_the_caller_closes_stdin(stdio_config: Path) -> None:
    process = subprocess.Popen(
        [sys.executable, "-m", "broker.cli", "stdio", "-c", str(stdio_config)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        cwd=REPO_ROOT,
        env=broker_env(),
    )
    assert process.stdin is not None
    assert process.stdout is not None
    try:
        messages = [
            {
                "jsonrpc": "2.0",
                "id": 1,
                "method": "initialize",
                "params": {
                    "protocolVersion": "2025-11-25",
                    "capabilities": {},
                    "clientInfo": {"name": "e2e-cli", "version": "1"},
                },
            },
            {"jsonrpc": "2.0", "method": "notifications/initialized"},
            {"jsonrpc": "2.0", "id": 2, "method": "tools/call", "params": {"name": "counter__hit"}},
        ]
        for message in messages:
            process.stdin.write(orjson.dumps(message) + b"\n")
        process.stdin.flush()
        replies = [orjson.loads(process.stdout.readline()) for _ in range(2)]
        assert replies[0]["id"] == 1
        assert replies[0]["result"]["protocolVersion"] == "2025-11-25"
        assert replies[1] == {
            "jsonrpc": "2.0",
            "id": 2,
            "result": {
                "content": [{"type": "text", "text": "1"}],
                "structuredContent": {"result": 1},
                "isError": False,
            },
        }
        children = descendants(process.pid)
        assert len(children) == 1, children
        process.stdin.close()
        assert process.wait(10) == 0
        assert process.stdout.read() == b"", "nothing more is owed after stdin closed"
        assert not wait_gone(children, 2), "the upstream outlived the broker"
    finally:
        if process.poll() is None:
            process.kill()
            process.wait(5)
