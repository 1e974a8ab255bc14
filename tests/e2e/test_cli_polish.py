"""The command line's polish (issue #10): help with runnable examples, progress, one-line errors.

Run as a user would: the installed `mcp-broker` console script in a subprocess, on real
audit trails written by the real FileAuditSink, a real git repository of policies decided by
Cedar, and a real pseudo-terminal for the redrawn progress line.
"""

from __future__ import annotations

import argparse
import asyncio
import io
import json
import os
import pty
import re
import select
import shlex
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from broker.audit.config import AuditConfig
from broker.audit.file_sink import FileAuditSink
from broker.cli import CommandLineParser, build_parser
from broker.identity.principal import Principal
from broker.policy.request import CallFacts, build_request
from broker.policytools.catalog import render
from broker.progress import ProgressMode, ProgressReporter
from tests.fixtures import REPO_ROOT
from tests.support.broker import broker_env
from tests.unit.audit.conftest import record
from tests.unit.policytools.conftest import APPROVALS_CEDAR, BASE_CEDAR, CASES, CATALOG, SCHEMA

MCP_BROKER = str(Path(sys.executable).parent / "mcp-broker")
PERCENT = re.compile(r"(\d+)%")


def run(*args: str, cwd: Path = REPO_ROOT, timeout: float = 60) -> subprocess.CompletedProcess[str]:
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


# --- help: every command, at every level, has a description and a runnable example ----------------


def walk(
    parser: argparse.ArgumentParser, path: tuple[str, ...] = ()
) -> Iterator[tuple[tuple[str, ...], Any]]:
    yield path, parser
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                yield from walk(sub, (*path, name))


PARSER = build_parser()
COMMANDS = dict(walk(PARSER))


def examples(epilog: str | None) -> list[str]:
    """The indented lines under the epilog's `example:` / `examples:` heading."""
    found: list[str] = []
    heading = False
    for line in (epilog or "").splitlines():
        if re.fullmatch(r"examples?:", line.strip()):
            heading = True
        elif heading and line.startswith("  ") and line.strip():
            found.append(line.strip())
        else:
            heading = False
    return found


def test_the_tree_is_walked_to_every_leaf() -> None:
    paths = set(COMMANDS)
    assert {("serve",), ("audit", "verify"), ("policy", "diff"), ("registry", "scan")} <= paths
    assert {("approvals", "approve"), ("approvals", "deny"), ("connect",), ("api-key",)} <= paths
    assert len(paths) >= 25, sorted(paths)


@pytest.mark.parametrize("path", sorted(COMMANDS), ids=lambda p: " ".join(p) or "top-level")
def test_every_command_has_a_description_and_a_runnable_example(path: tuple[str, ...]) -> None:
    parser = COMMANDS[path]
    assert isinstance(parser, CommandLineParser), "a subparser that does not report errors in one line"
    assert parser.description and len(parser.description) > 20, parser.description
    found = examples(parser.epilog)
    assert found, f"no example: in the epilog of {' '.join(path)!r}: {parser.epilog!r}"
    assert "exit codes:" in (parser.epilog or "")
    for example in found:
        words = shlex.split(example)
        while words and re.fullmatch(r"[A-Z_]+=\S*", words[0]):  # VAR=value mcp-broker …
            words.pop(0)
        assert words[0] == "mcp-broker", example
        assert tuple(words[1 : 1 + len(path)]) == path, f"{example!r} is not an example of {path}"
        args = PARSER.parse_args(words[1:])  # a usage error exits: the example would not run
        func = parser.get_default("func")
        if func is not None:
            assert args.func is func, f"{example!r} runs another command"
        else:
            assert callable(args.func)


@pytest.mark.parametrize("path", sorted(COMMANDS), ids=lambda p: " ".join(p) or "top-level")
def test_help_of_every_command_shows_its_example(path: tuple[str, ...]) -> None:
    result = run(*path, "--help")
    assert result.returncode == 0, result.stderr
    assert result.stderr == ""
    first = examples(COMMANDS[path].epilog)[0]
    assert re.search(r"^examples?:$", result.stdout, re.MULTILINE), result.stdout
    assert f"  {first}\n" in result.stdout, result.stdout


def test_the_policy_cli_offers_the_engines_that_exist() -> None:
    from broker.policytools import cli, engines

    assert cli.ENGINE_CHOICES == engines.ENGINE_CHOICES


# --- errors: one line, saying what to do, exit 2, no traceback ------------------------------------


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def one_error_line(result: subprocess.CompletedProcess[str]) -> str:
    assert result.returncode == 2, result
    assert result.stdout == ""
    assert "Traceback" not in result.stderr
    lines = result.stderr.splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("error: "), lines[0]
    return lines[0]


def test_a_bad_argument_is_one_line_naming_the_help() -> None:
    line = one_error_line(run("serve", "--port", "eighty"))
    assert line == "error: argument --port: invalid int value: 'eighty'; see `mcp-broker serve --help`"


def test_a_missing_command_is_one_line() -> None:
    line = one_error_line(run())
    assert line == "error: the following arguments are required: COMMAND; see `mcp-broker --help`"


def test_connect_with_a_missing_token_file(tmp_path: Path) -> None:
    line = one_error_line(run("connect", "http://127.0.0.1:1/mcp", "--token-file", str(tmp_path / "none")))
    assert line.startswith(f"error: cannot read the token file {tmp_path / 'none'}: No such file")
    assert "--token-env" in line


def test_audit_verify_of_a_missing_directory(tmp_path: Path) -> None:
    line = one_error_line(run("audit", "verify", str(tmp_path / "audit")))
    assert line.startswith(
        f"error: {tmp_path / 'audit'}: no such file or directory; give the audit directory"
    )


def test_policy_diff_without_a_base() -> None:
    line = one_error_line(run("policy", "diff", "--log", "audit.jsonl"))
    assert line == (
        "error: the following arguments are required: --base; see `mcp-broker policy diff --help`"
    )


def test_registry_with_a_missing_config(tmp_path: Path) -> None:
    line = one_error_line(run("registry", "scan", "-c", str(tmp_path / "broker.yaml")))
    config = tmp_path / "broker.yaml"
    assert line == f"error: the config {config} does not exist; give the broker's config with -c FILE"


def test_approvals_with_no_broker_listening() -> None:
    port = closed_port()
    line = one_error_line(run("approvals", "list", "--url", f"http://127.0.0.1:{port}"))
    assert line.startswith(f"error: cannot reach the broker at http://127.0.0.1:{port}/approvals")
    assert "is it running? Name it with --url URL, -c CONFIG or $MCP_BROKER_URL" in line


def test_approvals_with_an_invalid_config_lists_its_problems_then_one_error(tmp_path: Path) -> None:
    config = tmp_path / "broker.yaml"
    config.write_text("server:\n  nmae: typo\nupstreams: {}\n")
    result = run("approvals", "list", "-c", str(config))
    assert result.returncode == 2 and result.stdout == "" and "Traceback" not in result.stderr
    *problems, last = result.stderr.splitlines()
    assert problems and all(p.startswith(f"{config}:") for p in problems), result.stderr
    assert (
        last == f"error: the config {config} is not valid; fix the problems above "
        f"(mcp-broker check-config {config}) or give --url"
    )


# --- progress -------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def big_trail(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A real trail of ~4 MB (3,000 records of ~1.3 KB) in one file, written by the FileAuditSink."""
    directory = tmp_path_factory.mktemp("trail") / "audit"

    async def write() -> None:
        sink = FileAuditSink(AuditConfig(directory=directory, durability="write"))
        await sink.start()
        for i in range(3000):
            await sink.append(record(i, arguments={"text": f"{i:05d}" * 180}))
        await sink.close()

    asyncio.run(write())
    size = sum(p.stat().st_size for p in directory.glob("*.jsonl"))
    assert size > 3_000_000, size
    return directory


def percentages(text: str) -> list[int]:
    return [int(p) for p in PERCENT.findall(text)]


def test_audit_verify_progress_in_a_log_does_not_touch_stdout(big_trail: Path) -> None:
    quiet = run("audit", "verify", str(big_trail), "--format", "json")
    shown = run("audit", "verify", str(big_trail), "--format", "json", "--progress")
    assert quiet.returncode == shown.returncode == 0, shown.stderr
    assert quiet.stderr == "", "no progress when stderr is not a terminal and --progress is not given"
    assert json.loads(shown.stdout) == json.loads(quiet.stdout)
    assert shown.stdout == quiet.stdout
    lines = shown.stderr.splitlines()
    assert all(line.startswith("audit verify: ") for line in lines), lines
    seen = [percentages(line)[0] for line in lines]
    assert seen == sorted(set(seen)), seen  # increasing, each step once
    assert len(seen) >= 5 and seen[-1] == 100, seen
    assert " MB" in lines[-1] and "\r" not in shown.stderr


def test_no_progress_silences_it(big_trail: Path) -> None:
    result = run("audit", "verify", str(big_trail), "--no-progress")
    assert result.returncode == 0 and result.stderr == ""


def test_on_a_terminal_the_progress_is_one_redrawn_line(big_trail: Path) -> None:
    """stderr is a pseudo-terminal: `\\r`-redrawn updates ending at 100 %, stdout (a pipe) unchanged."""
    leader, follower = pty.openpty()
    process = subprocess.Popen(
        [MCP_BROKER, "audit", "verify", str(big_trail)],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=follower,
        cwd=REPO_ROOT,
        env=broker_env(),
    )
    os.close(follower)
    terminal = b""
    deadline = time.monotonic() + 60
    try:
        while time.monotonic() < deadline:
            ready, _, _ = select.select([leader], [], [], 0.5)
            if ready:
                try:
                    chunk = os.read(leader, 65536)
                except OSError:  # EIO: the child closed its end
                    break
                if not chunk:
                    break
                terminal += chunk
            elif process.poll() is not None:
                break
        out = process.communicate(timeout=30)[0].decode()
    finally:
        os.close(leader)
        if process.poll() is None:
            process.kill()
            process.wait(5)
    assert process.returncode == 0
    assert out == run("audit", "verify", str(big_trail)).stdout, "the report is the same on a terminal"
    text = terminal.decode()
    assert "\r" in text and text.endswith("\n"), repr(text[-200:])
    frames = [f for f in text.replace("\r\n", "\n").split("\r") if f.strip()]
    assert frames and all(f.lstrip("\n").startswith("audit verify: ") for f in frames), frames[:3]
    seen = [percentages(f)[0] for f in frames]
    assert seen == sorted(seen) and seen[-1] == 100, seen
    assert "\n" not in text.rstrip("\n").replace("\r\n", ""), "the line was not redrawn in place"
    assert "audit verify" not in out


def test_the_terminal_line_is_redrawn_at_most_ten_times_a_second() -> None:
    """A producer that reports on every line must not flood the terminal (injected clock)."""
    now = [0.0]
    stream = io.StringIO()
    reporter = ProgressReporter("x", mode=ProgressMode.TERMINAL, stream=stream, clock=lambda: now[0])
    for done in range(1, 1001):  # one second of updates, every millisecond
        now[0] = done / 1000
        reporter.update(done, 1000)
    reporter.finish()
    draws = stream.getvalue().count("\r")
    assert 9 <= draws <= 11, draws
    assert stream.getvalue().rstrip().endswith(")") and " 100% " in stream.getvalue().rsplit("\r", 1)[1]


def git(root: Path, *args: str) -> None:
    subprocess.run(
        ["git", "-C", str(root), "-c", "user.name=t", "-c", "user.email=t@example.com", *args],
        capture_output=True,
        check=True,
    )


def test_policy_diff_over_a_large_log_shows_decisions_done(tmp_path: Path) -> None:
    for relative, text in {
        "policies/cedar/base.cedar": BASE_CEDAR,
        "policies/cedar/approvals.cedar": APPROVALS_CEDAR,
        "schemas/mcp.cedarschema": SCHEMA.read_text(encoding="utf-8"),
        "policy-tests/catalog.yaml": render(CATALOG),
        "policy-tests/basic.yaml": CASES,
    }.items():
        (tmp_path / relative).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / relative).write_text(text, encoding="utf-8")
    git(tmp_path, "init", "-q", "-b", "main")
    git(tmp_path, "add", ".")
    git(tmp_path, "commit", "-q", "-m", "policies")
    cedar = tmp_path / "policies" / "cedar" / "base.cedar"
    cedar.write_text(cedar.read_text().replace('Mcp::Role::"engineer"', 'Mcp::Role::"admin"'))
    engineer = Principal("User", "bob", "acme", ("engineer",))
    lines = []
    for i in range(1500):
        tool = ("notes__write_note", "notes__read_note")[i % 2]
        request, _ = build_request(
            engineer,
            "call_tool",
            CATALOG["tools"][tool],
            {"note_id": f"n{i}"},
            CallFacts("stdio", "2025-11-25"),
        )
        lines.append(json.dumps({"request": request}))
    (tmp_path / "audit.jsonl").write_text("\n".join(lines) + "\n")
    argv = [
        "policy",
        "diff",
        "--base",
        "HEAD",
        "--engine",
        "cedar",
        "--log",
        "audit.jsonl",
        "--format",
        "json",
    ]
    quiet = run(*argv, cwd=tmp_path, timeout=120)
    shown = run(*argv, "--progress", cwd=tmp_path, timeout=120)
    assert quiet.returncode == shown.returncode == 1, shown.stderr  # writes by engineers now denied
    assert shown.stdout == quiet.stdout and quiet.stderr == ""
    progress = shown.stderr.splitlines()
    assert all(line.startswith("policy diff: ") and " decisions" in line for line in progress), progress
    seen = [percentages(line)[0] for line in progress]
    assert seen == sorted(set(seen)) and len(seen) >= 5 and seen[-1] == 100, seen
    assert "3,014 decisions/3,014 decisions" in progress[-1]  # (1,500 logged + 7 cases) x base and head
