"""OpaEngine against the real OPA (never skipped): the contract, the failures, reload, supervision.

OPA is found through ``MCP_BROKER_OPA`` or built once by ``scripts/install-opa.sh`` (a no-op
when cached). Without it these tests FAIL with the installer's message: a policy engine that
was not exercised is not "probably fine".

Policies are test-only Rego under ``opa_policies/``: ``base`` (three effects, reasons as
objects and as strings, an obligation, one deliberately slow input), ``garbage`` rules that
answer something other than a decision, ``v2`` (the valid change for reload) and two
broken sets (a syntax error, an ``opa check --strict`` violation).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path

import aiohttp
import pytest

from broker.policy.decision import Decision, Effect, Reason
from broker.policy.engine import AuthzRequest, PolicyLoadError
from broker.policy.opa import OpaEngine
from tests.support import opa as support_opa

ROOT = Path(__file__).resolve().parents[2]
POLICIES = Path(__file__).resolve().parent / "opa_policies"
TIMEOUT = 0.1

pytestmark = pytest.mark.anyio


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture(scope="session")
def opa_binary() -> str:
    """The real OPA ($MCP_BROKER_OPA, else scripts/install-opa.sh). Fails with the reason, never skips."""
    try:
        return str(support_opa.opa_binary())
    except AssertionError as exc:
        problem = str(exc)
    pytest.fail(
        f"{problem}\nInstall Go (the script builds OPA from source) or set MCP_BROKER_OPA.", pytrace=False
    )


@pytest.fixture
def policy_dir(tmp_path: Path) -> Path:
    """A private copy of opa_policies/base that a test may rewrite before a reload."""
    target = tmp_path / "rego"
    shutil.copytree(POLICIES / "base", target)
    return target


class Versions:
    """The policy_version function the app would pass: here a counter the test bumps."""

    def __init__(self) -> None:
        self.current = "v1"
        self.calls = 0

    def __call__(self) -> str:
        self.calls += 1
        return self.current


@pytest.fixture
def versions() -> Versions:
    return Versions()


@pytest.fixture
async def engine(opa_binary: str, policy_dir: Path, versions: Versions) -> AsyncIterator[OpaEngine]:
    eng = OpaEngine(
        mode="managed",
        policy_dir=policy_dir,
        url=None,
        binary=opa_binary,
        timeout=TIMEOUT,
        policy_version=versions,
        decision_logs=True,
    )
    await eng.start()
    try:
        yield eng
    finally:
        await eng.stop()


def request(
    *,
    tool: str = "github__create_issue",
    server: str = "github",
    roles: tuple[str, ...] = ("reviewer",),
    tags: tuple[str, ...] = (),
    read_only: bool = False,
    action: str = "call_tool",
) -> AuthzRequest:
    """The authorization request document (the contract in ARCHITECTURE.md)."""
    return {
        "principal": {
            "type": "Agent",
            "id": "code-review-bot",
            "tenant": "acme",
            "roles": list(roles),
            "claims": {"sub": "code-review-bot"},
            "acting_for": None,
        },
        "action": action,
        "resource": {
            "type": "Tool",
            "id": tool,
            "name": tool.split("__", 1)[-1],
            "server": server,
            "annotations": {
                "readOnlyHint": read_only,
                "destructiveHint": False,
                "idempotentHint": False,
                "openWorldHint": True,
            },
            "tags": list(tags),
        },
        "context": {
            "arguments": {"repo": "acme/api"},
            "argument_digest": "sha256:00",
            "paths": [],
            "hosts": [],
            "argument_limits": {},
            "transport": "streamable-http",
            "protocol_version": "2025-11-25",
            "time": "2026-11-21T10:00:00Z",
            "session": None,
            "trace_id": None,
            "listing": False,
            "approval": {"granted": False},
        },
    }


ALLOW = request()
DENY = request(tags=("blocked",))
APPROVAL = request(tags=("write",))
SLOW = request(tool="slow__tool")
MAINTAINER = request(roles=("maintainer",))


def assert_policy_error(decision: Decision, *fragments: str) -> None:
    assert decision.effect is Effect.DENY, decision
    assert decision.reasons, decision
    assert decision.reasons[0].id == "policy_error", decision
    assert decision.error is not None
    for fragment in fragments:
        assert fragment in decision.error, (fragment, decision.error)


def process_gone(pid: int) -> bool:
    """True once `pid` no longer runs (absent, or a zombie waiting to be reaped)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, ProcessLookupError):
        return True
    return state in ("Z", "X")


async def wait_until(check: Callable[[], bool], within: float, what: str) -> None:
    end = time.monotonic() + within
    while not check():
        if time.monotonic() > end:
            pytest.fail(f"timed out after {within} s waiting for {what}")
        await asyncio.sleep(0.01)


def opa_processes_under(directory: str) -> list[int]:
    """PIDs of live processes whose command line mentions `directory` (the engine's runtime dir)."""
    found = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        with contextlib.suppress(OSError):
            if directory in (proc / "cmdline").read_bytes().decode(errors="replace") and not process_gone(
                int(proc.name)
            ):
                found.append(int(proc.name))
    return found


def exists(path: str) -> bool:
    return os.path.lexists(path)


def runtime_dir(engine: OpaEngine) -> str:
    assert engine.url is not None
    assert engine.url.startswith("unix://")
    return str(Path(engine.url.removeprefix("unix://")).parent)


# --- the contract --------------------------------------------------------------------------------


async def test_three_effects_round_trip_with_reasons_and_decision_id(engine: OpaEngine) -> None:
    allow = await engine.decide(ALLOW)
    assert allow.effect is Effect.ALLOW
    assert allow.reasons == (Reason("reviewer_github", "reviewers may use the github tools"),)
    assert allow.error is None
    assert allow.engine == "opa"
    assert allow.policy_version == "v1" == engine.policy_version
    assert allow.decision_id is not None
    assert len(allow.decision_id) == 36  # a UUID, from OPA's decision log
    assert 0 < allow.latency_ms < TIMEOUT * 1000

    deny = await engine.decide(DENY)
    assert deny.effect is Effect.DENY
    assert deny.reasons == (Reason("blocked_tool", "tool github__create_issue is blocked"),)
    assert deny.error is None

    approval = await engine.decide(APPROVAL)
    assert approval.effect is Effect.REQUIRE_APPROVAL
    assert approval.reasons == (Reason("write_needs_approval", "writes need a human approval"),)
    assert approval.obligations == ({"type": "notify", "channel": "#approvals"},)
    assert len({allow.decision_id, deny.decision_id, approval.decision_id}) == 3


async def test_decision_logs_keep_tool_arguments_out(
    engine: OpaEngine, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level("INFO", logger="broker.policy.opa.decisions")
    single = await engine.decide(ALLOW)
    batch = (await engine.decide_many([ALLOW, DENY]))[0]

    def logged() -> list[str]:
        return [r.getMessage() for r in caplog.records if r.name == "broker.policy.opa.decisions"]

    await wait_until(lambda: len(logged()) >= 2, 5.0, "OPA's decision log lines")
    lines = logged()
    assert any(single.decision_id in line for line in lines)
    assert any(batch.decision_id is not None and batch.decision_id in line for line in lines)
    assert all("acme/api" not in line for line in lines), lines  # context.arguments is masked
    assert any('"/input/requests/1/context/arguments"' in line for line in lines)


async def test_plain_string_reasons_are_reason_ids(engine: OpaEngine) -> None:
    decision = await engine.decide(request(server="notes", roles=(), read_only=True))
    assert decision.effect is Effect.ALLOW
    assert decision.reasons == (Reason("read_only"),)


async def test_no_matching_rule_is_the_policy_default_deny(engine: OpaEngine) -> None:
    decision = await engine.decide(request(server="notes", roles=()))
    assert decision.effect is Effect.DENY
    assert decision.reasons == (Reason("no_permit", "no rule permits this"),)
    assert decision.error is None


async def test_undefined_rule_is_a_deny_that_says_to_add_a_default(opa_binary: str, policy_dir: Path) -> None:
    rule = "data.mcp.garbage.no_default"
    eng = OpaEngine(
        mode="managed", policy_dir=policy_dir, url=None, binary=opa_binary, rule=rule,
        timeout=TIMEOUT, policy_version=lambda: "v1",
    )  # fmt: skip
    await eng.start()
    try:
        expected = f"the rule {rule} is undefined for this input — give it a default"
        assert_policy_error(await eng.decide(ALLOW), expected)
        many = await eng.decide_many([ALLOW, DENY])
        assert len(many) == 2
        for decision in many:
            assert_policy_error(decision, expected)
    finally:
        await eng.stop()


@pytest.mark.parametrize(
    ("rule", "fragment"),
    [
        ("data.mcp.garbage.text", 'returned "allow" (a string), not a decision object'),
        ("data.mcp.garbage.maybe", "returned effect 'maybe'; expected allow, deny or require_approval"),
        ("data.mcp.garbage.bad_reasons", "malformed reason 42"),
        ("data.mcp.garbage.bad_obligations", "obligations that are not a list of objects"),
    ],
)
async def test_garbage_results_deny(opa_binary: str, policy_dir: Path, rule: str, fragment: str) -> None:
    eng = OpaEngine(
        mode="managed", policy_dir=policy_dir, url=None, binary=opa_binary, rule=rule,
        timeout=TIMEOUT, policy_version=lambda: "v1",
    )  # fmt: skip
    await eng.start()
    try:
        assert_policy_error(await eng.decide(ALLOW), rule, fragment)
        for decision in await eng.decide_many([ALLOW, DENY]):  # the batch path reads answers the same way
            assert_policy_error(decision, rule, fragment)
    finally:
        await eng.stop()


# --- failures at run time ------------------------------------------------------------------------


async def test_killed_opa_denies_fast_then_recovers(engine: OpaEngine) -> None:
    assert (await engine.decide(ALLOW)).effect is Effect.ALLOW
    pid = engine.pid
    assert pid is not None
    os.kill(pid, signal.SIGKILL)
    await wait_until(lambda: process_gone(pid), 2.0, "the killed OPA to exit")

    started = time.monotonic()
    down = await engine.decide(ALLOW)
    elapsed = time.monotonic() - started
    assert_policy_error(down)
    # Refused at once, or — when the restarted OPA already holds the socket but is still
    # loading — at the deadline; never waiting past it (a generous bound: no hang, not a benchmark).
    assert "is unreachable" in (down.error or "") or "did not answer" in (down.error or ""), down
    assert elapsed < 10 * TIMEOUT, f"a dead OPA must deny by the deadline, took {elapsed * 1000:.0f} ms"

    # The supervisor restarts it (backoff starts at 0.1 s); decisions come back on their own.
    end = time.monotonic() + 10
    while (decision := await engine.decide(ALLOW)).effect is not Effect.ALLOW:
        assert_policy_error(decision)
        assert time.monotonic() < end, f"OPA was not restarted within 10 s: {decision.error}"
        await asyncio.sleep(0.02)
    assert engine.pid not in (None, pid)
    assert (await engine.decide(DENY)).reasons[0].id == "blocked_tool"


async def test_slow_policy_denies_at_the_deadline(engine: OpaEngine) -> None:
    started = time.monotonic()
    decision = await engine.decide(SLOW)
    elapsed = time.monotonic() - started
    assert_policy_error(decision, f"OPA did not answer within {TIMEOUT * 1000:.0f} ms")
    assert TIMEOUT * 0.9 <= elapsed < TIMEOUT + 0.1, f"deadline {TIMEOUT} s, took {elapsed:.3f} s"
    assert decision.latency_ms == pytest.approx(TIMEOUT * 1000, abs=100)
    # The next decision is not held up by the abandoned one (OPA cancels it when we hang up).
    assert (await engine.decide(ALLOW)).effect is Effect.ALLOW


async def test_rule_conflict_in_a_batch_denies_only_the_conflicting_item(
    opa_binary: str, policy_dir: Path
) -> None:
    eng = OpaEngine(
        mode="managed", policy_dir=policy_dir, url=None, binary=opa_binary,
        rule="data.mcp.garbage.conflict", timeout=TIMEOUT, policy_version=lambda: "v1",
    )  # fmt: skip
    await eng.start()
    try:
        conflicting, fine = await eng.decide_many([ALLOW, request(action="list_tools")])
        assert_policy_error(conflicting, "OPA answered HTTP 500", "eval_conflict_error")
        assert fine.effect is Effect.DENY
        assert fine.error is None
    finally:
        await eng.stop()


# --- reload --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("broken", "where", "what"),
    [
        ("broken_syntax", "authz.rego:6", "rego_parse_error"),
        ("broken_strict", "authz.rego:7", "assigned var unused unused"),
    ],
)
async def test_invalid_reload_is_refused_and_the_old_policy_keeps_deciding(
    engine: OpaEngine, policy_dir: Path, versions: Versions, broken: str, where: str, what: str
) -> None:
    pid = engine.pid
    shutil.copy(POLICIES / broken / "authz.rego", policy_dir / "authz.rego")
    versions.current = "v2-broken"

    result = await engine.reload()

    assert not result.ok
    assert f"{policy_dir}/{where}" in result.message, result.message  # the operator's file, not a copy
    assert what in result.message
    assert result.policy_version == "v1" == engine.policy_version
    assert engine.pid == pid
    decision = await engine.decide(ALLOW)
    assert decision.effect is Effect.ALLOW
    assert decision.policy_version == "v1"


async def test_valid_reload_applies_without_restarting_the_broker(
    engine: OpaEngine, policy_dir: Path, versions: Versions
) -> None:
    assert (await engine.decide(ALLOW)).effect is Effect.ALLOW
    assert (await engine.decide(MAINTAINER)).effect is Effect.DENY
    old_pid = engine.pid
    shutil.copy(POLICIES / "v2" / "authz.rego", policy_dir / "authz.rego")
    versions.current = "v2"

    result = await engine.reload()

    assert result.ok, result.message
    assert result.policy_version == "v2" == engine.policy_version
    reviewer, maintainer = await engine.decide(ALLOW), await engine.decide(MAINTAINER)
    assert reviewer.effect is Effect.DENY
    assert reviewer.reasons[0].id == "no_permit"
    assert maintainer.effect is Effect.ALLOW
    assert maintainer.reasons[0].id == "maintainer_github"
    assert maintainer.policy_version == "v2"
    assert old_pid is not None
    assert process_gone(old_pid)  # blue/green: the old OPA is stopped


async def test_decisions_during_reloads_never_fail(
    engine: OpaEngine, policy_dir: Path, versions: Versions
) -> None:
    decisions: list[Decision] = []
    stop = asyncio.Event()

    async def keep_deciding() -> None:
        while not stop.is_set():
            decisions.append(await engine.decide(ALLOW))

    workers = [asyncio.create_task(keep_deciding()) for _ in range(4)]
    try:
        for n, variant in enumerate(["v2", "base", "v2"]):
            shutil.copy(POLICIES / variant / "authz.rego", policy_dir / "authz.rego")
            versions.current = f"r{n}"
            assert (await engine.reload()).ok
            await asyncio.sleep(0.05)
    finally:
        stop.set()
        await asyncio.gather(*workers)
    assert len(decisions) > 20
    failures = [d.error for d in decisions if d.error is not None]
    assert not failures, failures[:3]


async def test_start_with_an_invalid_policy_raises_with_file_and_line(
    opa_binary: str, tmp_path: Path
) -> None:
    broken = tmp_path / "rego"
    shutil.copytree(POLICIES / "broken_syntax", broken)
    eng = OpaEngine(
        mode="managed", policy_dir=broken, url=None, binary=opa_binary, policy_version=lambda: "v1"
    )
    with pytest.raises(PolicyLoadError, match=r"authz\.rego:6: rego_parse_error"):
        await eng.start()
    assert eng.pid is None
    assert_policy_error(await eng.decide(ALLOW), "not running")


async def test_a_missing_binary_says_how_to_install(tmp_path: Path, policy_dir: Path) -> None:
    eng = OpaEngine(
        mode="managed", policy_dir=policy_dir, url=None, binary=str(tmp_path / "no-opa"),
        policy_version=lambda: "v1",
    )  # fmt: skip
    with pytest.raises(PolicyLoadError, match=r"cannot run OPA .*scripts/install-opa\.sh"):
        await eng.start()


# --- lists ---------------------------------------------------------------------------------------


async def test_decide_many_answers_each_item_in_order(engine: OpaEngine) -> None:
    items = [ALLOW, DENY, APPROVAL, MAINTAINER, request(server="notes", roles=(), read_only=True)] * 8
    many = await engine.decide_many(items)
    singles = [await engine.decide(item) for item in items]
    assert [d.effect for d in many] == [d.effect for d in singles]
    assert [d.reasons for d in many] == [d.reasons for d in singles]
    assert [d.effect for d in many[:5]] == [
        Effect.ALLOW, Effect.DENY, Effect.REQUIRE_APPROVAL, Effect.DENY, Effect.ALLOW,
    ]  # fmt: skip
    assert all(d.error is None for d in many)
    assert len({d.decision_id for d in many}) == 1  # one OPA query decided the whole list
    assert await engine.decide_many([]) == []


# --- external mode -------------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


@contextlib.contextmanager
def own_opa(opa_binary: str, addr: str) -> Iterator[subprocess.Popen[bytes]]:
    """An OPA the test runs itself, as an operator's sidecar would be."""
    proc = subprocess.Popen(
        [opa_binary, "run", "--server", "--addr", addr, "--skip-version-check", "--log-level", "error",
         str(POLICIES / "base")],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True,
    )  # fmt: skip
    try:
        yield proc
    finally:
        proc.kill()
        proc.wait()


@pytest.mark.parametrize("transport", ["tcp", "unix"])
async def test_external_mode_uses_an_opa_it_does_not_own(
    opa_binary: str, tmp_path: Path, versions: Versions, transport: str
) -> None:
    if transport == "tcp":
        port = free_port()
        addr, url = f"127.0.0.1:{port}", f"http://127.0.0.1:{port}"
    else:
        addr = url = f"unix://{tmp_path / 'opa.sock'}"
    with own_opa(opa_binary, addr) as proc:
        eng = OpaEngine(
            mode="external", policy_dir=None, url=url, binary="unused", timeout=TIMEOUT,
            policy_version=versions,
        )  # fmt: skip
        await eng.start()  # waits (bounded) for the sidecar to become healthy
        try:
            assert eng.pid is None
            assert (await eng.decide(ALLOW)).effect is Effect.ALLOW
            many = await eng.decide_many([ALLOW, DENY, APPROVAL] * 10)  # single requests, bounded concurrency
            assert [d.effect for d in many[:3]] == [Effect.ALLOW, Effect.DENY, Effect.REQUIRE_APPROVAL]
            assert all(d.error is None for d in many)

            versions.current = "bundle-42"
            result = await eng.reload()
            assert result.ok
            assert result.policy_version == "bundle-42" == eng.policy_version

            proc.kill()
            proc.wait()
            started = time.monotonic()
            assert_policy_error(await eng.decide(ALLOW), "is unreachable")
            assert time.monotonic() - started < TIMEOUT
            result = await eng.reload()
            assert not result.ok
            assert "is not healthy" in result.message
        finally:
            await eng.stop()
        assert proc.returncode is not None


async def test_external_mode_refuses_to_start_without_a_healthy_opa(tmp_path: Path) -> None:
    eng = OpaEngine(
        mode="external", policy_dir=None, url=f"unix://{tmp_path / 'none.sock'}", binary="unused",
        policy_version=lambda: "v1", startup_timeout=0.3,
    )  # fmt: skip
    with pytest.raises(PolicyLoadError, match="is not healthy"):
        await eng.start()


# --- managed over loopback TCP -------------------------------------------------------------------


async def test_managed_tcp_serves_decisions_and_refuses_policy_writes(
    opa_binary: str, policy_dir: Path
) -> None:
    eng = OpaEngine(
        mode="managed", policy_dir=policy_dir, url=None, binary=opa_binary, timeout=TIMEOUT,
        policy_version=lambda: "v1", listen="tcp",
    )  # fmt: skip
    await eng.start()
    try:
        assert eng.url is not None
        assert eng.url.startswith("http://127.0.0.1:")
        assert (await eng.decide(ALLOW)).effect is Effect.ALLOW
        assert [d.effect for d in await eng.decide_many([DENY, APPROVAL])] == [
            Effect.DENY, Effect.REQUIRE_APPROVAL,
        ]  # fmt: skip
        async with aiohttp.ClientSession() as http:
            evil = 'package mcp.authz\n\ndecision := {"effect": "allow"}\n'
            async with http.put(f"{eng.url}/v1/policies/evil", data=evil) as resp:
                assert resp.status == 401, await resp.text()
            async with http.get(f"{eng.url}/v1/data") as resp:
                assert resp.status == 401
        assert (await eng.decide(DENY)).effect is Effect.DENY
    finally:
        await eng.stop()


# --- stop ----------------------------------------------------------------------------------------


async def test_stop_leaves_no_process_and_no_files(
    opa_binary: str, policy_dir: Path, versions: Versions
) -> None:
    eng = OpaEngine(
        mode="managed", policy_dir=policy_dir, url=None, binary=opa_binary, policy_version=versions
    )
    await eng.start()
    first = eng.pid
    versions.current = "v2"
    assert (await eng.reload()).ok
    second = eng.pid
    runtime = runtime_dir(eng)
    assert first is not None
    assert second is not None
    assert first != second
    assert opa_processes_under(runtime) == [second]

    await eng.stop()

    assert process_gone(first)
    assert process_gone(second)
    assert opa_processes_under(runtime) == []
    assert not exists(runtime)
    assert eng.pid is None
    assert_policy_error(await eng.decide(ALLOW), "not running")
    await eng.stop()  # idempotent


ORPHAN_CHECK = """
import asyncio, sys
from pathlib import Path
from broker.policy.opa import OpaEngine
from tests.support import opa as support_opa

async def main() -> None:
    eng = OpaEngine(mode="managed", policy_dir=Path(sys.argv[1]), url=None, binary=sys.argv[2],
                    policy_version=lambda: "v1")
    await eng.start()
    print(eng.pid, eng.url, flush=True)
    await asyncio.sleep(60)

asyncio.run(main())
"""


async def test_a_killed_broker_takes_its_opa_with_it(opa_binary: str, policy_dir: Path) -> None:
    broker = await asyncio.create_subprocess_exec(
        sys.executable, "-c", ORPHAN_CHECK, str(policy_dir), opa_binary,
        stdout=asyncio.subprocess.PIPE, cwd=ROOT,
    )  # fmt: skip
    assert broker.stdout is not None
    line = (await asyncio.wait_for(broker.stdout.readline(), 15)).decode().split()
    opa_pid, url = int(line[0]), line[1]
    assert not process_gone(opa_pid)
    broker.kill()  # SIGKILL: no stop(), no cleanup code runs
    await broker.wait()
    try:
        await wait_until(lambda: process_gone(opa_pid), 3.0, "the orphaned OPA to die (PR_SET_PDEATHSIG)")
    finally:
        if not process_gone(opa_pid):  # the check failed: do not leave the orphan behind
            os.kill(opa_pid, signal.SIGKILL)
        shutil.rmtree(Path(url.removeprefix("unix://")).parent, ignore_errors=True)


def test_constructor_refuses_bad_values() -> None:
    for rule in ("mcp.authz.decision", "data.mcp.authz['x']", "data.mcp authz", "data."):
        with pytest.raises(ValueError, match=r"data\.package\.rule"):
            OpaEngine(
                mode="external", policy_dir=None, url="http://127.0.0.1:1", binary="opa", rule=rule,
                policy_version=lambda: "v1",
            )  # fmt: skip
    for url in ("127.0.0.1:8181", "ftp://opa", "unix://", "http://"):
        with pytest.raises(ValueError, match="http://host:port or unix:///path"):
            OpaEngine(mode="external", policy_dir=None, url=url, binary="opa", policy_version=lambda: "v1")
    with pytest.raises(ValueError, match="needs policy_dir"):
        OpaEngine(mode="managed", policy_dir=None, url=None, binary="opa", policy_version=lambda: "v1")
