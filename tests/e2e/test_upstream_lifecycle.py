"""Upstream lifecycle through the real broker: crashes, failed starts, timeouts, shutdown, isolation.

Every test runs `mcp-broker serve` as a subprocess with stdio fixture upstreams
(tests/fixtures/servers) and talks to it with the official SDK client in both eras
(`mode="legacy"` = 2025-11-25 handshake, `mode="auto"` = 2026-07-28). Timeouts and
back-offs in the configs are short so the whole file runs in well under a minute;
every wait is a bounded poll.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import anyio
import httpx
import mcp_types as types
import pytest
from mcp import Client
from mcp.shared.exceptions import MCPError

from broker.identity.authenticator import api_key_digest
from tests.fixtures import REPO_ROOT, fixture_script
from tests.support.broker import (
    BrokerProcess,
    alive,
    broker_config,
    broker_env,
    descendants,
    running_broker,
    stdio_upstream,
    write_config,
)
from tests.support.tokens import bearer_client

MODES = ("legacy", "auto")
TIMEOUTS = {"call": 2, "startup": 10, "ping_interval": 0}
RESTART = {"initial_backoff": 0.2, "max_backoff": 1}
CRASH_EXIT_STATUS = 3  # crashy.py: crash() calls os._exit(3)


# --- helpers --------------------------------------------------------------------------------


def upstream(script: str, *args: str, **options: Any) -> dict[str, Any]:
    return stdio_upstream(script, *args, **{"timeouts": TIMEOUTS, "restart": RESTART, **options})


def wait_gone(pids: list[int], seconds: float) -> list[int]:
    """Poll until none of `pids` is alive or `seconds` pass; return those still alive."""
    deadline = time.monotonic() + seconds
    while any(alive(pid) for pid in pids) and time.monotonic() < deadline:
        time.sleep(0.05)
    return [pid for pid in pids if alive(pid)]


def kill_all(pids: list[int]) -> None:
    for pid in pids:
        if alive(pid):
            os.kill(pid, signal.SIGKILL)


def text(result: types.CallToolResult) -> str:
    assert not result.is_error, result
    block = result.content[0]
    assert isinstance(block, types.TextContent)
    return block.text


async def readiness(broker: BrokerProcess) -> dict[str, Any]:
    async with httpx.AsyncClient(timeout=10) as http:
        response = await http.get(broker.base_url + "/readyz")
    assert response.status_code == 200, response.text
    state: dict[str, Any] = response.json()
    return state


def warnings_about(log: str, upstream_name: str) -> list[str]:
    return [line for line in log.splitlines() if " WARNING " in line and f"upstream {upstream_name}:" in line]


# --- a crash in the middle of a call ----------------------------------------------------------


@pytest.fixture(scope="module")
def broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[BrokerProcess]:
    """crashy.py (crash/ok/slow/pid) and interactive.py (wait_cancel/cancelled_count), over stdio."""
    config = broker_config({"crashy": upstream("crashy"), "inter": upstream("interactive")})
    with running_broker(tmp_path_factory.mktemp("lifecycle"), config) as process:
        yield process


@pytest.mark.anyio
@pytest.mark.parametrize("mode", MODES)
async def test_crash_mid_call_is_reported_and_the_upstream_restarts(broker: BrokerProcess, mode: str) -> None:
    async with Client(broker.url, mode=mode) as client:
        before = int(text(await client.call_tool("crashy__pid", {})))
        restarts = (await readiness(broker))["upstreams"]["crashy"]["restarts"]

        with pytest.raises(MCPError) as caught:
            await client.call_tool("crashy__crash", {})
        error = caught.value.error
        assert error.code == -32000
        assert "upstream crashy exited" in error.message
        assert f"code {CRASH_EXIT_STATUS}" in error.message
        assert error.data["reason"] == "upstream_closed"

        after: int | None = None
        refusals: list[str] = []
        for _ in range(50):  # at most ~10 s
            try:
                after = int(text(await client.call_tool("crashy__pid", {})))
                break
            except MCPError as exc:  # restarting: "upstream crashy is not available: ..."
                refusals.append(exc.error.message)
            await anyio.sleep(0.2)
        assert after is not None, f"crashy did not come back: {refusals[-1:]}\n{broker.log()[-2000:]}"
        assert all("upstream crashy is not available" in r for r in refusals), refusals
        assert after != before, "pid() answered from the crashed process"
        assert not alive(before)
        assert text(await client.call_tool("crashy__ok", {})) == "ok"

    state = (await readiness(broker))["upstreams"]["crashy"]
    assert state["state"] == "ready"
    assert state["restarts"] == restarts + 1
    assert "exited with code 3" in broker.log()


# --- a call longer than the upstream's timeouts.call ----------------------------------------------


@pytest.mark.anyio
@pytest.mark.parametrize("mode", MODES)
async def test_slow_call_times_out_and_the_upstream_is_told(broker: BrokerProcess, mode: str) -> None:
    async with Client(broker.url, mode=mode) as client:
        cancelled_before = int(text(await client.call_tool("inter__cancelled_count", {})))

        started = time.monotonic()
        with pytest.raises(MCPError) as caught:
            await client.call_tool("inter__wait_cancel", {"seconds": 30})
        elapsed = time.monotonic() - started
        error = caught.value.error
        assert error.code == -32000
        assert error.message == "upstream inter did not answer tools/call within 2s"
        assert error.data["reason"] == "upstream_timeout"
        assert 1.9 <= elapsed < 6, elapsed

        # The broker sent notifications/cancelled: the upstream's handler was cancelled.
        deadline = time.monotonic() + 5
        cancelled = cancelled_before
        while cancelled == cancelled_before and time.monotonic() < deadline:
            await anyio.sleep(0.1)
            cancelled = int(text(await client.call_tool("inter__cancelled_count", {})))
        assert cancelled == cancelled_before + 1, "the upstream was never told the call was cancelled"

        assert text(await client.call_tool("inter__wait_cancel", {"seconds": 0.1})) == "finished"


# --- upstreams that cannot start --------------------------------------------------------------


@pytest.mark.anyio
async def test_failing_upstreams_do_not_stop_the_broker(tmp_path: Path) -> None:
    config = broker_config(
        {
            "good": upstream("counter"),
            "broken": upstream("crashy", "--fail-start"),
            "ghost": {
                "transport": "stdio",
                "command": str(tmp_path / "no-such-server"),
                "timeouts": TIMEOUTS,
                "restart": RESTART,
            },
        }
    )
    with running_broker(tmp_path, config) as broker:
        async with Client(broker.url, mode="legacy") as client:
            tools = sorted(tool.name for tool in (await client.list_tools()).tools)
            assert tools == ["good__count", "good__hit", "good__hit_destructive", "good__reset"]
            assert text(await client.call_tool("good__hit", {})) == "1"

            with pytest.raises(MCPError) as broken:
                await client.call_tool("broken__ok", {})
            assert broken.value.error.data == {"reason": "upstream_unavailable", "upstream": "broken"}
            assert "upstream broken is not available" in broken.value.error.message
            assert "exited with code 2" in broken.value.error.message
            assert "refusing to start (--fail-start)" in broken.value.error.message

            with pytest.raises(MCPError) as ghost:
                await client.call_tool("ghost__anything", {})
            assert "upstream ghost is not available" in ghost.value.error.message
            assert "No such file or directory" in ghost.value.error.message

        # Let both be retried a few times: the reason must still be logged once.
        deadline = time.monotonic() + 12
        while time.monotonic() < deadline:
            log = broker.log()
            retries = {
                name: len(re.findall(rf"upstream {name}: attempt \d+ failed again", log))
                for name in ("broken", "ghost")
            }
            if min(retries.values()) >= 2:
                break
            await anyio.sleep(0.2)
        assert min(retries.values()) >= 2, f"no retries seen: {retries}\n{log[-3000:]}"

        broken_warnings = warnings_about(log, "broken")
        assert len(broken_warnings) == 1, broken_warnings
        assert "not available: upstream broken exited with code 2" in broken_warnings[0]
        assert "refusing to start (--fail-start)" in broken_warnings[0]
        ghost_warnings = warnings_about(log, "ghost")
        assert len(ghost_warnings) == 1, ghost_warnings
        assert f"cannot start '{tmp_path / 'no-such-server'}': No such file or directory" in ghost_warnings[0]
        assert not warnings_about(log, "good")

        state = await readiness(broker)
        assert state["upstreams"]["good"] == {"state": "ready", "last_error": None, "restarts": 0}
        assert state["upstreams"]["broken"]["state"] in ("backoff", "starting")
        assert "exited with code 2" in state["upstreams"]["broken"]["last_error"]
        assert state["upstreams"]["ghost"]["state"] in ("backoff", "starting")
        assert "No such file or directory" in state["upstreams"]["ghost"]["last_error"]
        assert state["catalog"]["tools"] == 4


# --- SIGTERM --------------------------------------------------------------------------------------

# An upstream that ignores SIGTERM and, like an `npx` wrapper, leaves a helper process in
# its process group; the helper also ignores SIGTERM and never reads stdin, so only the
# broker's group SIGKILL (broker/upstream/stdio.py StdioTransport.close) can end it.
HELPER = "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); time.sleep(30)"
STUBBORN = f"""
import os, runpy, signal, subprocess, sys
signal.signal(signal.SIGTERM, signal.SIG_IGN)
subprocess.Popen([sys.executable, "-c", {HELPER!r}], stdin=subprocess.DEVNULL,
                 stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
script = sys.argv[1]
sys.path.insert(0, os.path.dirname(script))
sys.argv = [script]
runpy.run_path(script, run_name="__main__")
"""


def is_helper(pid: int) -> bool:
    return Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")[1:3] == [b"-c", HELPER.encode()]


@dataclass
class SigtermOutcome:
    exit_code: int | None
    seconds: float
    before: list[int]
    left: list[int] = field(default_factory=list)
    log: str = ""


@pytest.fixture(scope="module")
def sigterm(tmp_path_factory: pytest.TempPathFactory) -> SigtermOutcome:
    """Start a broker with a plain and a stubborn upstream, SIGTERM it, record what happened."""
    stubborn = {
        "transport": "stdio",
        "command": sys.executable,
        "args": ["-c", STUBBORN, str(fixture_script("crashy"))],
        "timeouts": TIMEOUTS,
        "restart": RESTART,
    }
    config = broker_config({"plain": upstream("crashy"), "stubborn": stubborn})
    with running_broker(tmp_path_factory.mktemp("sigterm"), config) as broker:
        before = descendants(broker.pid)
        assert len(before) == 3, before  # plain, stubborn, and the stubborn one's helper
        assert len([pid for pid in before if is_helper(pid)]) == 1, before
        started = time.monotonic()
        broker.process.send_signal(signal.SIGTERM)
        try:
            code: int | None = broker.process.wait(15)
        except subprocess.TimeoutExpired:
            code = None  # running_broker kills it at teardown
        outcome = SigtermOutcome(code, time.monotonic() - started, before)
        outcome.left = wait_gone(before, 1)  # a SIGKILLed process may take a moment to be reaped
        kill_all(outcome.left)
        outcome.log = broker.log()
    return outcome


def test_sigterm_exits_within_seconds_with_code_0(sigterm: SigtermOutcome) -> None:
    assert sigterm.exit_code is not None, "the broker ignored SIGTERM for 15 s"
    assert sigterm.exit_code == 0, f"exit code {sigterm.exit_code}\n{sigterm.log[-2000:]}"
    assert sigterm.seconds < 8, sigterm


def test_sigterm_leaves_no_descendant_process(sigterm: SigtermOutcome) -> None:
    # Includes the stubborn upstream's helper, which ignores SIGTERM and stdin EOF alike.
    assert not sigterm.left, f"still running after the broker exited: {sigterm.left} of {sigterm.before}"


# --- tool name collision ----------------------------------------------------------------------


def test_tool_name_collision_refuses_to_start(tmp_path: Path) -> None:
    config = broker_config(
        {"one": upstream("counter", namespace=False), "two": upstream("counter", namespace=False)}
    )
    path = write_config(tmp_path, config)
    ready = tmp_path / "ready"
    result = subprocess.run(
        [sys.executable, "-m", "broker.cli", "serve", "-c", str(path), "--ready-file", str(ready)],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=REPO_ROOT,
        env=broker_env(),
        check=False,
    )
    output = result.stdout + result.stderr
    assert result.returncode == 2, output
    assert not ready.exists(), "the broker announced itself although it refused to start"
    refusals = [line for line in output.splitlines() if "cannot start:" in line]
    assert refusals, output
    for tool in ("hit", "hit_destructive", "count", "reset"):
        line = next((r for r in refusals if f"tool name '{tool}'" in r), None)
        assert line is not None, f"no refusal names tool {tool!r}:\n{output}"
        assert "upstream 'one'" in line
        assert "upstream 'two'" in line
        assert "namespacing" in line  # what to do about it
    started = [int(pid) for pid in re.findall(r"started .* \(pid (\d+)\)", output)]
    assert len(started) == 2, output
    assert not [pid for pid in started if alive(pid)], "the refused broker left its upstreams running"


# --- isolation: per_session -------------------------------------------------------------------


@pytest.fixture(scope="module")
def isolated(tmp_path_factory: pytest.TempPathFactory) -> Iterator[BrokerProcess]:
    config = broker_config({"crashy": upstream("crashy", isolation="per_session")})
    with running_broker(tmp_path_factory.mktemp("per-session"), config) as process:
        yield process


async def wait_gone_async(pid: int, seconds: float) -> bool:
    for _ in range(int(seconds / 0.05)):
        if not alive(pid):
            return True
        await anyio.sleep(0.05)
    return not alive(pid)


@pytest.mark.anyio
async def test_per_session_isolation(isolated: BrokerProcess) -> None:
    shared = isolated.children()
    assert len(shared) == 1, shared  # the supervisor's own connection (listings, health)
    async with Client(isolated.url, mode="legacy") as first:
        async with Client(isolated.url, mode="legacy") as second:
            pid_first = int(text(await first.call_tool("crashy__pid", {})))
            pid_second = int(text(await second.call_tool("crashy__pid", {})))
            assert pid_first != pid_second
            assert shared[0] not in (pid_first, pid_second)
            assert int(text(await first.call_tool("crashy__pid", {}))) == pid_first
            assert int(text(await second.call_tool("crashy__pid", {}))) == pid_second
        # `second` has left (its DELETE closed the session): its upstream goes, the others stay
        assert await wait_gone_async(pid_second, 5), f"upstream {pid_second} outlived its session"
        assert alive(pid_first)
        assert int(text(await first.call_tool("crashy__pid", {}))) == pid_first
    assert await wait_gone_async(pid_first, 5), f"upstream {pid_first} outlived its session"
    assert isolated.children() == shared


ALICE_KEY = "mcpb_alice-0123456789abcdef"
BOB_KEY = "mcpb_bob-0123456789abcdef"


@pytest.fixture(scope="module")
def isolated_by_principal(tmp_path_factory: pytest.TempPathFactory) -> Iterator[BrokerProcess]:
    keys = [
        {"sha256": api_key_digest(ALICE_KEY), "principal": {"type": "User", "id": "alice"}},
        {"sha256": api_key_digest(BOB_KEY), "principal": {"type": "User", "id": "bob"}},
    ]
    crashy = upstream("crashy", isolation="per_session", timeouts={**TIMEOUTS, "idle": 3.0})
    identity = {"authentication": {"resource": "http://127.0.0.1/mcp", "api_keys": keys}}
    config = broker_config({"crashy": crashy}, identity=identity)
    with running_broker(tmp_path_factory.mktemp("per-principal"), config) as process:
        yield process


@pytest.mark.anyio
async def test_per_session_isolation_for_stateless_callers_is_per_principal(
    isolated_by_principal: BrokerProcess,
) -> None:
    broker = isolated_by_principal
    shared = broker.children()
    async with (
        bearer_client(broker.url, ALICE_KEY, mode="auto") as alice,
        bearer_client(broker.url, BOB_KEY, mode="auto") as bob,
        bearer_client(broker.url, ALICE_KEY, mode="auto") as alice_again,
    ):
        assert alice.protocol_version == "2026-07-28"
        pid_alice = int(text(await alice.call_tool("crashy__pid", {})))
        assert int(text(await alice_again.call_tool("crashy__pid", {}))) == pid_alice  # same principal
        pid_bob = int(text(await bob.call_tool("crashy__pid", {})))
        assert pid_alice != pid_bob
        assert not {pid_alice, pid_bob} & set(shared)
    # no session ends for a stateless caller: the idle timeout (3 s here) closes their upstreams
    assert await wait_gone_async(pid_alice, 10), f"upstream {pid_alice} outlived timeouts.idle"
    assert await wait_gone_async(pid_bob, 10), f"upstream {pid_bob} outlived timeouts.idle"
    assert broker.children() == shared
