"""Load and fault test (issue #9): many sessions, a mix of decisions, faults in the middle,
and afterwards proof that nothing was lost and nothing was forwarded without an allow.

What runs (everything on 127.0.0.1, every process stopped by PID at the end):

  direct      S sessions ─HTTP─▶ echo (examples/echo_server.py): the baseline of the same run
  broker      `python -m broker.cli serve` with API-key identity (callers alice and bob, approver
              ops), the test policies of tests/support/policies/load (Cedar or Rego, same meaning),
              an fsync'd audit trail, a rate limit on counter__hit, and two stdio upstreams: the
              counter fixture (it counts the hits that really reach it) and the echo example
  echo phase  S sessions ─HTTP─▶ broker ─stdio─▶ echo, allowed echo calls only (vs direct)
  mixed phase S sessions for T seconds, each looping over a fixed mix of
                echo__echo             allowed
                counter__hit           allowed, past the rate limit: rate_limited
                counter__count         allowed (read-only; in flight when the counter is killed)
                counter__reset         denied (forwarded, it would zero the counter: visible)
                counter__hit_destructive   require-approval; an approver task approves it via the API
              every call carrying a unique marker in its arguments ("L-<session>-<n>"), while
                at 0.4 T  the counter process (a child of the broker) is killed with SIGKILL —
                          counter calls are held back for the moment the counts are read, so
                          the count before the kill is exact; the broker restarts it
                at 0.65 T (OPA mode) the OPA sidecar the broker manages is killed; the broker
                          restarts it, decisions in between are denied with policy_error
              and the broker's RSS is sampled from /proc/PID/status.

Afterwards, with the broker stopped cleanly (SIGTERM), the invariants (exit 1 if any fails):
  - `mcp-broker audit verify DIR` passes;
  - every call a client saw answered (result or JSON-RPC error) has exactly one request record,
    whose effect and outcome (status, reason) match what the client saw;
  - every answer is one the call's kind allows (a denied tool never returns a result, an echo
    returns its own marker, policy_error only in OPA mode, …); no call went unanswered;
  - no record shows a call forwarded without an allow;
  - the counter's own hits (read before the kill + after the restart) equal the ok records
    of counter__hit and counter__hit_destructive; the rate limit held;
  - both faults happened and were recovered from; the broker's RSS stayed under the limits.

    python bench/load.py [--sessions 200] [--seconds 60] [--engine cedar|opa|both] [--json OUT]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import hashlib
import json
import logging
import math
import os
import signal
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import httpx
import httpx2
import mcp_types as types
import yaml
from mcp import Client
from mcp.client.streamable_http import streamable_http_client
from mcp.shared.exceptions import MCPError

ROOT = Path(__file__).resolve().parents[1]
ECHO = ROOT / "examples" / "echo_server.py"
COUNTER = ROOT / "tests" / "fixtures" / "servers" / "counter.py"
POLICIES = ROOT / "tests" / "support" / "policies" / "load"
RESOURCE = "http://127.0.0.1/mcp"

KEYS = {name: f"mcpb_{name}-load-key-0123456789" for name in ("alice", "bob", "ops")}
ROLES = {"alice": ["caller"], "bob": ["caller"], "ops": ["approver"]}
CALLERS = ("alice", "bob")
APPROVER = "ops"

MIX = ("echo", "hit", "count", "reset", "destructive", "hit")
"""One loop of a session: the kinds of call, in order."""

TOOLS = {
    "echo": "echo__echo",
    "hit": "counter__hit",
    "count": "counter__count",
    "reset": "counter__reset",
    "destructive": "counter__hit_destructive",
}
COUNTED = {"hit", "destructive"}
"""Kinds the counter counts: held back while the counts are read before the kill."""

UPSTREAM_GAP = {"upstream_unavailable", "upstream_closed", "upstream_timeout", "unknown_tool"}
EXPECTED_ERRORS: dict[str, set[str]] = {
    "echo": set(),
    "hit": {"rate_limited"} | UPSTREAM_GAP,
    "count": set(UPSTREAM_GAP),
    "reset": {"policy_denied"},
    "destructive": set(UPSTREAM_GAP),
}
"""Besides policy_error in OPA mode: the error reasons each kind may see. Only `reset` may not succeed."""

NOT_ALLOWED_EFFECTS = {"deny", "require_approval"}
QUIESCE_SECONDS = 30.0
OPEN_SECONDS = 120.0
RESTART_WAIT_SECONDS = 30.0


# -- options and results ---------------------------------------------------------------------------


@dataclass
class Options:
    sessions: int = 200
    seconds: float = 60.0
    engine: str = "cedar"
    baseline_seconds: float | None = None
    """Length of the direct and broker echo phases; None: min(15, seconds / 4)."""
    hit_limit: int = 20
    """counter__hit calls per second and principal before rate_limited."""
    max_loops: int = 100_000
    """Loops of the mix per session at most (the count bound; T is the time bound)."""
    drain_seconds: float = 60.0
    """After T, how long calls in flight may take to finish before they are cancelled."""
    rss_limit_mb: float = 1024.0
    rss_growth_mb: float = 256.0
    """The broker's RSS may grow this much from the mixed phase's start to its end."""
    opa: str | None = None
    """The OPA binary; None: $MCP_BROKER_OPA, else scripts/install-opa.sh builds it."""
    open_concurrency: int = 16
    workdir: Path | None = None
    """Where config, trail and logs go; None: a temporary directory removed afterwards."""

    def baseline(self) -> float:
        return self.baseline_seconds if self.baseline_seconds is not None else min(15.0, self.seconds / 4)


@dataclass
class CallResult:
    """One call as the client saw it."""

    marker: str
    kind: str
    principal: str
    started: float
    latency_ms: float
    answer: str
    """`result`, `error` (a JSON-RPC error), or `lost` (no answer: transport failure or cancelled)."""
    is_error: bool = False
    reason: str | None = None
    code: int | None = None
    text: str | None = None


@dataclass
class PhaseStats:
    phase: str
    sessions: int
    seconds: float
    calls: int
    calls_per_s: float
    p50_ms: float
    p99_ms: float
    x_direct_calls_per_s: float | None = None
    x_direct_p50: float | None = None
    broker_cpu_ms_per_call: float | None = None
    """The broker process's CPU (utime + stime, its children not counted) per call of the phase."""


@dataclass
class Fault:
    what: str
    at_s: float
    old_pid: int | None
    new_pid: int | None = None
    restarted_after_s: float | None = None
    note: str = ""


@dataclass
class EngineReport:
    engine: str
    phases: list[PhaseStats] = field(default_factory=list)
    kinds: dict[str, dict[str, int]] = field(default_factory=dict)
    faults: list[Fault] = field(default_factory=list)
    approvals: dict[str, int] = field(default_factory=dict)
    counter: dict[str, int] = field(default_factory=dict)
    rss_mb: dict[str, float] = field(default_factory=dict)
    rate_limited_share: float = 0.0
    records: int = 0
    log_errors: dict[str, int] = field(default_factory=dict)
    """ERROR lines of the broker's log by message (reported, not an invariant)."""
    failures: list[str] = field(default_factory=list)


# -- processes -------------------------------------------------------------------------------------


def read_ready(path: Path, proc: subprocess.Popen[bytes], log: Path | None, timeout: float = 60.0) -> str:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if path.exists() and path.read_text().strip():
            return path.read_text().strip()
        if proc.poll() is not None:
            tail = log.read_text(errors="replace")[-3000:] if log else ""
            raise RuntimeError(f"{proc.args!r} exited with {proc.returncode}\n{tail}")
        time.sleep(0.05)
    raise TimeoutError(f"{path} did not appear within {timeout}s")


def parents_from_proc() -> dict[int, int]:
    parents: dict[int, int] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            with contextlib.suppress(OSError, IndexError):
                parents[int(entry.name)] = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
    return parents


def descendants(pid: int) -> list[int]:
    """Every live process below `pid`, from /proc."""
    parents = parents_from_proc()
    found: list[int] = []
    frontier = [pid]
    while frontier:
        current = frontier.pop()
        for child, parent in parents.items():
            if parent == current and child not in found:
                found.append(child)
                frontier.append(child)
    return [p for p in found if alive(p)]


def alive(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def cmdline(pid: int) -> list[str]:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace").split("\0")
    except OSError:
        return []


def child_matching(pid: int, match: Callable[[list[str]], bool]) -> int | None:
    for child in descendants(pid):
        if match(cmdline(child)):
            return child
    return None


def is_counter(argv: list[str]) -> bool:
    return str(COUNTER) in argv


def is_opa(argv: list[str]) -> bool:
    return bool(argv) and Path(argv[0]).name == "opa" and "run" in argv


CLK_TCK = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def log_errors(log: Path) -> dict[str, int]:
    counts: Counter[str] = Counter()
    for line in log.read_text(errors="replace").splitlines():
        if " ERROR " in line:
            counts[line.split(" ERROR ", 1)[1][:120]] += 1
    return dict(counts.most_common(10))


def rss_mb(pid: int) -> float | None:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    except OSError:
        return None
    return None


def terminate(proc: subprocess.Popen[bytes], grace: float = 20.0) -> int | None:
    """SIGTERM, then SIGKILL after `grace`; the exit code, or None when it had to be killed."""
    if proc.poll() is not None:
        return proc.returncode
    proc.send_signal(signal.SIGTERM)
    try:
        return proc.wait(grace)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(10)
        return None


def opa_path(given: str | None) -> str:
    if given:
        return given
    if os.environ.get("MCP_BROKER_OPA"):
        return os.environ["MCP_BROKER_OPA"]
    done = subprocess.run(
        [str(ROOT / "scripts" / "install-opa.sh")], capture_output=True, text=True, check=True, timeout=1800
    )
    return done.stdout.strip().splitlines()[-1]


@contextlib.contextmanager
def echo_server(tmp: Path) -> Iterator[str]:
    """The echo example over Streamable HTTP on a free loopback port: the direct path."""
    port_file = tmp / "echo.url"
    port_file.unlink(missing_ok=True)
    proc = subprocess.Popen(
        [sys.executable, str(ECHO), "--transport", "http", "--port", "0", "--port-file", str(port_file)],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        yield read_ready(port_file, proc, None)
    finally:
        terminate(proc, 5)


def broker_config(tmp: Path, engine: str, opa: str | None, hit_limit: int) -> dict[str, Any]:
    keys = [
        {
            "sha256": hashlib.sha256(KEYS[name].encode()).hexdigest(),
            "principal": {"type": "User", "id": name, "roles": ROLES[name]},
        }
        for name in KEYS
    ]
    policy: dict[str, Any] = {"engine": engine, "path": str(POLICIES), "watch": False}
    if engine == "opa":
        policy["opa"] = {"binary": opa}
    stdio = {"transport": "stdio", "command": sys.executable}
    return {
        "http": {"port": 0},
        "logging": {"level": "warning"},
        "policy": policy,
        "identity": {"authentication": {"resource": RESOURCE, "api_keys": keys}},
        "approvals": {"path": str(tmp / "approvals.db"), "timeout": 120, "progress_interval": 60},
        "audit": {"directory": str(tmp / "audit"), "durability": "fsync"},
        "traffic": {
            "rate_limits": [
                {
                    "name": "load-hits",
                    "match": {"tool": TOOLS["hit"]},
                    "per": ["principal"],
                    "limits": [f"{hit_limit}/second"],
                }
            ]
        },
        "upstreams": {
            "counter": {**stdio, "args": [str(COUNTER)]},
            "echo": {**stdio, "args": [str(ECHO)]},
        },
    }


@dataclass
class BrokerProcess:
    url: str
    proc: subprocess.Popen[bytes]
    log: Path

    @property
    def pid(self) -> int:
        return self.proc.pid

    @property
    def base_url(self) -> str:
        return self.url.rsplit("/", 1)[0]


@contextlib.contextmanager
def running_broker(tmp: Path, config: dict[str, Any]) -> Iterator[BrokerProcess]:
    """`mcp-broker serve`; stopped by PID on the way out (its children too, if it left any)."""
    path = tmp / "broker.yaml"
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    ready = tmp / "broker.url"
    ready.unlink(missing_ok=True)
    log_path = tmp / "broker.log"
    env = {**os.environ, "XDG_STATE_HOME": str(tmp / "state"), "PYTHONUNBUFFERED": "1"}
    with log_path.open("wb") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "broker.cli", "serve", "-c", str(path), "--ready-file", str(ready)],
            cwd=ROOT,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            env=env,
        )
    broker = BrokerProcess("", proc, log_path)
    try:
        broker.url = read_ready(ready, proc, log_path)
        yield broker
    finally:
        children = descendants(proc.pid) if proc.poll() is None else []
        terminate(proc)
        for pid in children:
            if alive(pid):
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)


# -- clients ---------------------------------------------------------------------------------------


@contextlib.asynccontextmanager
async def session(url: str, key: str | None) -> AsyncIterator[Client]:
    """An SDK client in the handshake era (sessions have ids), with the caller's API key if any."""
    if key is None:  # the direct path: the SDK's own HTTP client, as bench/run.py measures it
        async with Client(url, mode="legacy") as direct:
            yield direct
        return
    headers = {"Authorization": f"Bearer {key}"}
    timeout = httpx2.Timeout(30.0, read=300.0)
    async with (
        httpx2.AsyncClient(headers=headers, timeout=timeout) as http,
        Client(streamable_http_client(url, http_client=http), mode="legacy") as client,
    ):
        yield client


def arguments(kind: str, marker: str) -> dict[str, Any]:
    if kind == "echo":
        return {"text": marker}
    if kind == "count":
        return {"tool": "hit", "marker": marker}
    return {"marker": marker}


async def call(client: Client, kind: str, marker: str, principal: str, direct: bool = False) -> CallResult:
    """One call; `direct`: to the upstream itself, whose tool names carry no `server__` prefix."""
    started = time.perf_counter()
    out = CallResult(marker, kind, principal, time.monotonic(), 0.0, "lost")
    tool = TOOLS[kind].split("__", 1)[1] if direct else TOOLS[kind]
    try:
        result = await client.call_tool(tool, arguments(kind, marker))
        out.answer, out.is_error = "result", bool(result.is_error)
        block = result.content[0] if result.content else None
        out.text = block.text if isinstance(block, types.TextContent) else None
    except MCPError as exc:
        data = exc.error.data if isinstance(exc.error.data, dict) else {}
        out.answer, out.code = "error", exc.error.code
        out.reason = data.get("reason") if isinstance(data.get("reason"), str) else None
        out.text = exc.error.message
    except asyncio.CancelledError:
        out.latency_ms = (time.perf_counter() - started) * 1000
        raise
    except Exception as exc:
        out.reason = f"{type(exc).__name__}: {exc}"[:200]
    out.latency_ms = (time.perf_counter() - started) * 1000
    return out


def quantile(samples: list[float], q: float) -> float:
    if not samples:
        return math.nan
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def stats(phase: str, sessions: int, seconds: float, results: list[CallResult], start: float) -> PhaseStats:
    """Calls completed within the window [start, start + seconds]; latency over the answered ones."""
    done = [r for r in results if r.answer != "lost" and r.started + r.latency_ms / 1000 <= start + seconds]
    latencies = [r.latency_ms for r in done]
    return PhaseStats(
        phase,
        sessions,
        seconds,
        len(done),
        len(done) / seconds,
        quantile(latencies, 0.5),
        quantile(latencies, 0.99),
    )


# -- the phases ------------------------------------------------------------------------------------


class Run:
    """Shared state of one phase: the sessions' results, the time bound, the counter gate."""

    def __init__(self, sessions: int, seconds: float, max_loops: int, open_concurrency: int) -> None:
        self.sessions = sessions
        self.seconds = seconds
        self.max_loops = max_loops
        self.results: list[CallResult] = []
        self.opening = asyncio.Semaphore(open_concurrency)
        self.opened = 0
        self.open_failures: list[str] = []
        self.all_open = asyncio.Event()
        self.go = asyncio.Event()
        self.start = 0.0
        self.counter_open = asyncio.Event()
        self.counter_open.set()
        self.counter_in_flight = 0
        self.counter_idle = asyncio.Event()
        self.counter_idle.set()

    def opened_one(self, failure: str | None = None) -> None:
        if failure is None:
            self.opened += 1
        else:
            self.open_failures.append(failure)
        if self.opened + len(self.open_failures) >= self.sessions:
            self.all_open.set()

    def over(self) -> bool:
        return time.monotonic() >= self.start + self.seconds

    def elapsed(self) -> float:
        return time.monotonic() - self.start

    @contextlib.asynccontextmanager
    async def counter_call(self, kind: str) -> AsyncIterator[None]:
        """Counted calls wait while the counts are read (so the count before the kill is exact)."""
        if kind not in COUNTED:
            yield
            return
        await self.counter_open.wait()
        self.counter_in_flight += 1
        self.counter_idle.clear()
        try:
            yield
        finally:
            self.counter_in_flight -= 1
            if not self.counter_in_flight:
                self.counter_idle.set()


async def session_loop(
    run: Run, url: str, index: int, principal: str | None, mix: tuple[str, ...], prefix: str
) -> None:
    async with contextlib.AsyncExitStack() as stack:
        try:
            async with run.opening:
                client = await stack.enter_async_context(session(url, KEYS[principal] if principal else None))
        except Exception as exc:
            run.opened_one(f"session {index}: {type(exc).__name__}: {exc}"[:300])
            return
        run.opened_one()
        await run.go.wait()
        n = 0
        for _ in range(run.max_loops):
            for kind in mix:
                if run.over():
                    return
                async with run.counter_call(kind):
                    marker = f"{prefix}-{index}-{n}"
                    n += 1
                    run.results.append(await call(client, kind, marker, principal or "-", principal is None))


async def start_sessions(
    run: Run, url: str, mix: tuple[str, ...], prefix: str, with_keys: bool
) -> list[asyncio.Task[None]]:
    tasks = [
        asyncio.create_task(
            session_loop(run, url, i, CALLERS[i % 2] if with_keys else None, mix, prefix), name=f"{prefix}{i}"
        )
        for i in range(run.sessions)
    ]
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(run.all_open.wait(), OPEN_SECONDS)
    run.start = time.monotonic()
    run.go.set()
    return tasks


async def finish(tasks: list[asyncio.Task[None]], bound: float) -> int:
    """Wait for the sessions (bounded); cancel the rest. Returns how many had to be cancelled."""
    _, pending = await asyncio.wait(tasks, timeout=bound) if tasks else (set(), set())
    for task in pending:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    return len(pending)


async def echo_phase(url: str, options: Options, prefix: str, with_keys: bool) -> tuple[Run, int]:
    run = Run(options.sessions, options.baseline(), options.max_loops, options.open_concurrency)
    tasks = await start_sessions(run, url, ("echo",), prefix, with_keys)
    cancelled = await finish(tasks, run.seconds + options.drain_seconds)
    return run, cancelled


class Approver:
    """Polls the broker's pending approvals as the approver principal and approves each one."""

    def __init__(self, base_url: str) -> None:
        self.base_url = base_url
        self.outcomes: Counter[str] = Counter()
        self.seen: set[str] = set()
        self.stop = asyncio.Event()

    async def run(self) -> None:
        headers = {"authorization": f"Bearer {KEYS[APPROVER]}"}
        async with httpx.AsyncClient(timeout=30, headers=headers) as http:
            while not self.stop.is_set():
                try:
                    listed = await http.get(f"{self.base_url}/approvals", params={"status": "pending"})
                    pending = listed.json().get("approvals", []) if listed.status_code == 200 else []
                    if listed.status_code != 200:
                        self.outcomes[f"list {listed.status_code}"] += 1
                except (httpx.HTTPError, ValueError) as exc:
                    self.outcomes[f"list {type(exc).__name__}"] += 1
                    pending = []
                fresh = [a["id"] for a in pending if a["id"] not in self.seen]
                self.seen.update(fresh)
                answers = await asyncio.gather(*(self._approve(http, i) for i in fresh))
                self.outcomes.update(answers)
                # A refusal that may pass later (403 while the policy engine is down, a timeout) is
                # tried again on the next poll, as a person would; approved or gone (409) is final.
                self.seen.difference_update(i for i, a in zip(fresh, answers, strict=True) if a != "approved")
                if not fresh:
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(self.stop.wait(), 0.1)

    async def _approve(self, http: httpx.AsyncClient, approval_id: str) -> str:
        try:
            reply = await http.post(f"{self.base_url}/approvals/{approval_id}/approve", json={"note": "load"})
        except httpx.HTTPError as exc:
            return f"approve {type(exc).__name__}"
        return "approved" if reply.status_code == 200 else f"approve {reply.status_code}"


class Sampler:
    """The broker's RSS, and which counter / OPA processes it runs, every `interval` seconds."""

    def __init__(self, pid: int, interval: float = 0.25) -> None:
        self.pid = pid
        self.interval = interval
        self.rss: list[tuple[float, float]] = []
        self.counter_pids: list[int] = []
        self.opa_pids: list[int] = []
        self.stop = asyncio.Event()

    def sample(self) -> None:
        value = rss_mb(self.pid)
        if value is not None:
            self.rss.append((time.monotonic(), value))
        for match, seen in ((is_counter, self.counter_pids), (is_opa, self.opa_pids)):
            child = child_matching(self.pid, match)
            if child is not None and child not in seen:
                seen.append(child)

    async def run(self) -> None:
        while not self.stop.is_set():
            await asyncio.to_thread(self.sample)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.stop.wait(), self.interval)


async def wait_for_child(pid: int, match: Callable[[list[str]], bool], old: int | None) -> int | None:
    deadline = time.monotonic() + RESTART_WAIT_SECONDS
    while time.monotonic() < deadline:
        child = await asyncio.to_thread(child_matching, pid, match)
        if child is not None and child != old:
            return child
        await asyncio.sleep(0.05)
    return None


async def read_counts(client: Client, marker: str) -> dict[str, int]:
    counts = {}
    for tool in ("hit", "hit_destructive"):
        result = await client.call_tool(TOOLS["count"], {"tool": tool, "marker": f"{marker}-{tool}"})
        block = result.content[0]
        assert isinstance(block, types.TextContent) and not result.is_error, result
        counts[tool] = int(block.text)
    return counts


@dataclass
class FaultPlan:
    """What the fault task did: the counts read before the kill (None if they could not be)."""

    faults: list[Fault] = field(default_factory=list)
    counts_before: dict[str, int] | None = None
    problems: list[str] = field(default_factory=list)
    probes: list[CallResult] = field(default_factory=list)
    """Calls sent right after each kill until one succeeds: what a caller sees during the gap."""


async def probe_gap(client: Client, kind: str, prefix: str, fault: Fault, plan: FaultPlan) -> None:
    """Call at once after a kill, then every 20 ms, until a call succeeds (bounded): the gap's answers."""
    deadline = time.monotonic() + RESTART_WAIT_SECONDS
    n = 0
    while time.monotonic() < deadline:
        result = await call(client, kind, f"{prefix}-{n}", CALLERS[0])
        plan.probes.append(result)
        n += 1
        if result.answer == "result" and not result.is_error:
            break
        await asyncio.sleep(0.02)
    answers = Counter("ok" if r.answer == "result" else (r.reason or r.answer) for r in plan.probes[-n:])
    fault.note = f"{n} probe call(s) from the kill on: {dict(answers)}"


async def inject_faults(run: Run, broker: BrokerProcess, engine: str, plan: FaultPlan) -> None:
    async with session(broker.url, KEYS[CALLERS[0]]) as client:
        await asyncio.sleep(max(0.0, run.start + 0.4 * run.seconds - time.monotonic()))
        run.counter_open.clear()
        try:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(run.counter_idle.wait(), QUIESCE_SECONDS)
            if run.counter_in_flight:
                plan.problems.append(f"{run.counter_in_flight} counted calls still in flight after 30 s")
            else:
                plan.counts_before = await read_counts(client, "K-before")
            old = await asyncio.to_thread(child_matching, broker.pid, is_counter)
            fault = Fault("kill -9 counter upstream", run.elapsed(), old)
            if old is not None:
                os.kill(old, signal.SIGKILL)
            else:
                plan.problems.append("no counter process found below the broker")
        finally:
            run.counter_open.set()
        plan.faults.append(fault)
        killed = time.monotonic()
        await probe_gap(client, "count", "K-counter", fault, plan)
        fault.new_pid = await wait_for_child(broker.pid, is_counter, old)
        fault.restarted_after_s = time.monotonic() - killed if fault.new_pid else None
        if engine != "opa":
            return
        await asyncio.sleep(max(0.0, run.start + 0.65 * run.seconds - time.monotonic()))
        old = await asyncio.to_thread(child_matching, broker.pid, is_opa)
        fault = Fault("kill -9 OPA sidecar", run.elapsed(), old)
        plan.faults.append(fault)
        if old is None:
            plan.problems.append("no OPA process found below the broker")
            return
        os.kill(old, signal.SIGKILL)
        killed = time.monotonic()
        await probe_gap(client, "echo", "K-opa", fault, plan)
        fault.new_pid = await wait_for_child(broker.pid, is_opa, old)
        fault.restarted_after_s = time.monotonic() - killed if fault.new_pid else None


@dataclass
class MixedOutcome:
    run: Run
    plan: FaultPlan
    approver: Approver
    sampler: Sampler
    cancelled: int
    counts_after: dict[str, int] | None
    final: list[CallResult]


async def mixed_phase(broker: BrokerProcess, options: Options, sampler: Sampler) -> MixedOutcome:
    run = Run(options.sessions, options.seconds, options.max_loops, options.open_concurrency)
    approver = Approver(broker.base_url)
    approving = asyncio.create_task(approver.run())
    tasks = await start_sessions(run, broker.url, MIX, "L", True)
    sampler.rss.append((time.monotonic(), rss_mb(broker.pid) or math.nan))
    plan = FaultPlan()
    faults = asyncio.create_task(inject_faults(run, broker, options.engine, plan))
    cancelled = await finish(tasks, run.seconds + options.drain_seconds)
    with contextlib.suppress(asyncio.TimeoutError):
        await asyncio.wait_for(faults, RESTART_WAIT_SECONDS * 2)
    if not faults.done():
        faults.cancel()
        plan.problems.append("the fault task did not finish")
    elif faults.exception() is not None:
        plan.problems.append(f"the fault task failed: {faults.exception()!r}")
    sampler.rss.append((time.monotonic(), rss_mb(broker.pid) or math.nan))
    counts_after = None
    final: list[CallResult] = []
    try:
        async with session(broker.url, KEYS[CALLERS[1]]) as client:
            counts_after = await read_counts(client, "K-after")
            final.append(await call(client, "echo", "K-final", CALLERS[1]))
    except Exception as exc:
        plan.problems.append(f"reading the counts after the run failed: {exc!r}")
    approver.stop.set()
    await approving
    return MixedOutcome(run, plan, approver, sampler, cancelled, counts_after, final)


# -- the invariants --------------------------------------------------------------------------------


def audit_records(directory: Path) -> list[dict[str, Any]]:
    out = []
    for path in sorted(directory.glob("audit-*.jsonl")):
        for line in path.read_text().splitlines():
            if line.strip():
                out.append(json.loads(line))
    return out


def marker_of(record: dict[str, Any]) -> str | None:
    summary = ((record.get("arguments") or {}).get("summary")) or {}
    value = summary.get("marker", summary.get("text"))
    return value if isinstance(value, str) else None


def approved(record: dict[str, Any]) -> bool:
    return (record.get("approval") or {}).get("status") == "approved"


def check_record(result: CallResult, record: dict[str, Any]) -> str | None:
    """Why the record does not tell what the client saw (None: it does)."""
    outcome = record.get("outcome") or {}
    effect = (record.get("decision") or {}).get("effect")
    error = outcome.get("error") or {}
    if record.get("target", {}).get("id") != TOOLS[result.kind]:
        return f"target {record.get('target')} for a {result.kind} call"
    if result.answer == "result":
        status = "is_error" if result.is_error else "ok"
        if outcome.get("status") != status:
            return f"client got a result ({status}), record says {outcome.get('status')}"
        if effect != "allow" and not (effect == "require_approval" and approved(record)):
            return f"client got a result, record's effect is {effect}"
        return None
    expected = result.reason or "upstream_error"
    if error.get("reason") != expected:
        return f"client got {expected}, record says {outcome.get('status')}/{error.get('reason')}"
    if expected in {"policy_denied", "policy_error"} and effect != "deny":
        return f"{expected} with effect {effect}"
    if expected == "rate_limited" and effect != "allow":
        return f"rate_limited with effect {effect}"
    return None


def forwarded_without_allow(record: dict[str, Any]) -> bool:
    """The upstream was called (a result, or an error after an upstream latency) without an allow."""
    effect = (record.get("decision") or {}).get("effect")
    outcome = record.get("outcome") or {}
    status = outcome.get("status")
    reached = status in {"ok", "is_error"} or (status == "error" and outcome.get("latency_ms") is not None)
    if not reached or record.get("method") != "tools/call":
        return False
    return effect != "allow" and not (effect == "require_approval" and approved(record))


def kind_table(results: list[CallResult]) -> dict[str, dict[str, int]]:
    table: dict[str, Counter[str]] = {}
    for r in results:
        label = "ok" if r.answer == "result" and not r.is_error else (r.reason or r.answer)
        table.setdefault(r.kind, Counter())[label] += 1
    return {kind: dict(counts) for kind, counts in sorted(table.items())}


def verify_trail(directory: Path) -> str | None:
    done = subprocess.run(
        [sys.executable, "-m", "broker.cli", "audit", "verify", str(directory)],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=300,
        check=False,
    )
    return (
        None if done.returncode == 0 else f"audit verify exit {done.returncode}: {done.stdout}{done.stderr}"
    )


def check_invariants(
    report: EngineReport,
    options: Options,
    outcome: MixedOutcome,
    baseline: list[CallResult],
    trail: list[dict[str, Any]],
) -> None:
    fail = report.failures.append
    run, plan = outcome.run, outcome.plan
    results = baseline + run.results + plan.probes + outcome.final
    report.failures.extend(f"fault task: {p}" for p in plan.problems)
    if run.open_failures:
        fail(f"{len(run.open_failures)} sessions could not open: {run.open_failures[:3]}")
    requests = [r for r in trail if r.get("kind") == "request" and r.get("method") == "tools/call"]
    by_marker: dict[str, list[dict[str, Any]]] = {}
    for record in requests:
        marker = marker_of(record)
        if marker is not None:
            by_marker.setdefault(marker, []).append(record)
    report.records = len(requests)

    lost = [r for r in results if r.answer == "lost"]
    if lost:
        fail(f"{len(lost)} calls got no answer, e.g. {[(r.marker, r.reason) for r in lost[:3]]}")
    if outcome.cancelled:
        fail(f"{outcome.cancelled} sessions were still busy {options.drain_seconds} s after the end")
    mismatched: list[str] = []
    unexpected: Counter[str] = Counter()
    for result in results:
        if result.answer == "lost":
            continue
        found = by_marker.get(result.marker, [])
        if len(found) != 1:
            mismatched.append(f"{result.marker} ({result.kind}): {len(found)} records")
            continue
        why = check_record(result, found[0])
        if why:
            mismatched.append(f"{result.marker} ({result.kind}): {why}")
        allowed = EXPECTED_ERRORS[result.kind] | ({"policy_error"} if options.engine == "opa" else set())
        if result.answer == "result":
            if result.kind == "reset" or result.is_error:
                unexpected[f"{result.kind}: result (is_error={result.is_error})"] += 1
            elif result.kind == "echo" and result.text != result.marker:
                unexpected[f"echo: returned {result.text!r} for {result.marker}"] += 1
        elif result.reason not in allowed:
            unexpected[f"{result.kind}: {result.reason}"] += 1
    if mismatched:
        fail(f"{len(mismatched)} answered calls without exactly one matching record: {mismatched[:5]}")
    if unexpected:
        fail(f"unexpected answers: {dict(unexpected)}")
    forwarded = [r for r in requests if forwarded_without_allow(r)]
    if forwarded:
        fail(f"{len(forwarded)} calls forwarded without an allow, e.g. seq {forwarded[0].get('seq')}")

    ok_records = Counter(
        (r.get("target") or {}).get("id") for r in requests if (r.get("outcome") or {}).get("status") == "ok"
    )
    before, after = plan.counts_before, outcome.counts_after
    if before is not None and after is not None:
        report.counter = {
            "hit_before_kill": before["hit"],
            "hit_after_restart": after["hit"],
            "hit_ok_records": ok_records[TOOLS["hit"]],
            "destructive_before_kill": before["hit_destructive"],
            "destructive_after_restart": after["hit_destructive"],
            "destructive_ok_records": ok_records[TOOLS["destructive"]],
        }
        for tool, kind in (("hit", "hit"), ("hit_destructive", "destructive")):
            reached = before[tool] + after[tool]
            if reached != ok_records[TOOLS[kind]]:
                fail(
                    f"the counter saw {reached} {tool} calls ({before[tool]} before the kill + "
                    f"{after[tool]} after), the trail has {ok_records[TOOLS[kind]]} forwarded with outcome ok"
                )
        if len(outcome.sampler.counter_pids) > 2:
            fail(
                f"the counter ran as {len(outcome.sampler.counter_pids)} processes (restarted more than once)"
            )
    else:
        fail("the counter's counts could not be read before the kill and after the run")

    admitted: Counter[str] = Counter()
    hits = [r for r in run.results if r.kind == "hit"]
    for record in requests:
        if (record.get("target") or {}).get("id") != TOOLS["hit"]:
            continue
        reason = ((record.get("outcome") or {}).get("error") or {}).get("reason")
        if (record.get("decision") or {}).get("effect") == "allow" and reason != "rate_limited":
            admitted[(record.get("principal") or {}).get("id") or "?"] += 1
    # Sliding windows never admit more than the limit in one fixed window (one per second since
    # the epoch); the hits were sent within `span` seconds, so they touched at most span + 2 windows.
    span = max((r.started + r.latency_ms / 1000 - run.start for r in hits), default=0.0)
    bound = options.hit_limit * (math.ceil(span) + 2)
    for principal, n in admitted.items():
        if n > bound:
            fail(f"{principal}: {n} counter__hit calls passed the rate limit, at most {bound} may")
    limited = sum(1 for r in hits if r.reason == "rate_limited")
    report.rate_limited_share = limited / len(hits) if hits else 0.0
    if not limited:
        fail("no call was rate-limited: the rate-limit path was not exercised")
    if not any(r.reason == "policy_denied" for r in run.results):
        fail("no call was denied: the deny path was not exercised")
    if not any(r.kind == "destructive" and r.answer == "result" for r in run.results):
        fail("no approval completed: the approval path was not exercised")

    for fault in plan.faults:
        if fault.old_pid is None or fault.new_pid is None:
            fail(
                f"{fault.what}: not done or not recovered (old pid {fault.old_pid}, new pid {fault.new_pid})"
            )
    expected_faults = 2 if options.engine == "opa" else 1
    if len(plan.faults) != expected_faults:
        fail(f"{len(plan.faults)} faults injected, {expected_faults} planned")

    mixed = [v for t, v in outcome.sampler.rss if run.start <= t and not math.isnan(v)]
    if mixed:
        report.rss_mb = {
            "start": round(mixed[0], 1),
            "max": round(max(mixed), 1),
            "end": round(mixed[-1], 1),
            "growth": round(mixed[-1] - mixed[0], 1),
            "samples": len(mixed),
        }
        if max(mixed) > options.rss_limit_mb:
            fail(f"broker RSS reached {max(mixed):.0f} MB (limit {options.rss_limit_mb:.0f})")
        if mixed[-1] - mixed[0] > options.rss_growth_mb:
            growth = mixed[-1] - mixed[0]
            fail(f"broker RSS grew {growth:.0f} MB during the run (limit {options.rss_growth_mb:.0f})")
    else:
        fail("no RSS sample of the broker")


# -- one engine, end to end -----------------------------------------------------------------------


async def engine_run(
    options: Options, tmp: Path, direct: PhaseStats, report: EngineReport
) -> tuple[MixedOutcome, list[CallResult]]:
    config = broker_config(
        tmp, options.engine, opa_path(options.opa) if options.engine == "opa" else None, options.hit_limit
    )
    with running_broker(tmp, config) as broker:
        sampler = Sampler(broker.pid)
        sampling = asyncio.create_task(sampler.run())
        try:
            cpu = cpu_seconds(broker.pid)
            echo, cancelled = await echo_phase(broker.url, options, "B", True)
            echo_cpu = cpu_seconds(broker.pid) - cpu
            if cancelled:
                report.failures.append(f"broker echo phase: {cancelled} sessions had to be cancelled")
            row = stats(
                f"broker[{options.engine}] echo", options.sessions, echo.seconds, echo.results, echo.start
            )
            row.broker_cpu_ms_per_call = echo_cpu * 1000 / max(1, len(echo.results))
            report.phases.append(row)
            cpu = cpu_seconds(broker.pid)
            outcome = await mixed_phase(broker, options, sampler)
            mixed_cpu = cpu_seconds(broker.pid) - cpu
        finally:
            sampler.stop.set()
            await sampling
        mixed = outcome.run
        row = stats(
            f"broker[{options.engine}] mixed", options.sessions, mixed.seconds, mixed.results, mixed.start
        )
        row.broker_cpu_ms_per_call = mixed_cpu * 1000 / max(1, len(mixed.results))
        report.phases.append(row)
        echo_only = [r for r in mixed.results if r.kind == "echo"]
        report.phases.append(
            stats(
                f"broker[{options.engine}] mixed, echo calls",
                options.sessions,
                mixed.seconds,
                echo_only,
                mixed.start,
            )
        )
        children = descendants(broker.pid)
        code = await asyncio.to_thread(terminate, broker.proc)
    report.log_errors = log_errors(broker.log)
    if code != 0:
        report.failures.append(f"the broker exited with {code} after SIGTERM (log: {broker.log})")
    if left := [pid for pid in children if alive(pid)]:
        report.failures.append(f"the broker left child processes behind: {left}")
    for row in report.phases:
        if not row.phase.endswith("echo calls"):  # a sixth of the mix: its rate compares to nothing
            row.x_direct_calls_per_s = row.calls_per_s / direct.calls_per_s
        row.x_direct_p50 = row.p50_ms / direct.p50_ms
    report.kinds = kind_table(echo.results + mixed.results)
    report.faults = outcome.plan.faults
    report.approvals = dict(outcome.approver.outcomes)
    return outcome, echo.results + outcome.final


def run_engine(options: Options, direct: PhaseStats, tmp: Path) -> EngineReport:
    report = EngineReport(options.engine)
    outcome, baseline = asyncio.run(engine_run(options, tmp, direct, report))
    if problem := verify_trail(tmp / "audit"):
        report.failures.append(problem)
    check_invariants(report, options, outcome, baseline, audit_records(tmp / "audit"))
    return report


async def direct_phase(options: Options, tmp: Path) -> PhaseStats:
    with echo_server(tmp) as url:
        run, cancelled = await echo_phase(url, options, "D", False)
    if cancelled or run.open_failures or any(r.answer != "result" for r in run.results):
        bad = [(r.answer, r.reason) for r in run.results if r.answer != "result"][:3]
        raise RuntimeError(
            f"the direct echo phase failed: {run.open_failures[:3]} {bad} cancelled {cancelled}"
        )
    return stats("direct echo (http)", options.sessions, run.seconds, run.results, run.start)


def run(options: Options) -> tuple[PhaseStats, list[EngineReport]]:
    """The whole test for `options.engine` (`cedar`, `opa`, `both`): the direct baseline, then each engine."""
    engines = ["cedar", "opa"] if options.engine == "both" else [options.engine]
    with contextlib.ExitStack() as stack:
        base = options.workdir or Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="mcp-load-")))
        base.mkdir(parents=True, exist_ok=True)
        direct = asyncio.run(direct_phase(options, base))
        direct.x_direct_calls_per_s = direct.x_direct_p50 = 1.0
        reports = []
        for engine in engines:
            tmp = base / engine
            tmp.mkdir(exist_ok=True)
            one = Options(**{**asdict(options), "engine": engine})
            reports.append(run_engine(one, direct, tmp))
    return direct, reports


# -- output ----------------------------------------------------------------------------------------


def ratio(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}"


def table(direct: PhaseStats, reports: list[EngineReport]) -> str:
    lines = [
        "| phase | sessions | s | calls | calls/s | x direct | p50 ms | p99 ms | p50 x direct "
        "| broker CPU ms/call |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for row in [direct, *(p for r in reports for p in r.phases)]:
        lines.append(
            f"| {row.phase} | {row.sessions} | {row.seconds:.0f} | {row.calls} | {row.calls_per_s:.0f} | "
            f"{ratio(row.x_direct_calls_per_s)} | {row.p50_ms:.1f} | {row.p99_ms:.1f} | "
            f"{ratio(row.x_direct_p50)} | {ratio(row.broker_cpu_ms_per_call)} |"
        )
    for r in reports:
        lines.append("")
        lines.append(f"{r.engine}: answers by kind: {json.dumps(r.kinds)}")
        lines.append(
            f"{r.engine}: {r.records} tools/call records; rate-limited share of counter__hit "
            f"{r.rate_limited_share:.0%}; approvals {r.approvals}; counter {r.counter}"
        )
        for f in r.faults:
            lines.append(
                f"{r.engine}: {f.what} at {f.at_s:.1f} s (pid {f.old_pid} -> {f.new_pid}, "
                f"back after {f.restarted_after_s or math.nan:.2f} s); {f.note}"
            )
        lines.append(f"{r.engine}: broker RSS MB {r.rss_mb}")
        if r.log_errors:
            lines.append(f"{r.engine}: ERROR lines in the broker log: {r.log_errors}")
        lines.append(f"{r.engine}: " + ("all invariants hold" if not r.failures else "FAILED:"))
        lines.extend(f"  - {failure}" for failure in r.failures)
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--sessions", type=int, default=200)
    parser.add_argument("--seconds", type=float, default=60.0)
    parser.add_argument("--engine", choices=["cedar", "opa", "both"], default="cedar")
    parser.add_argument(
        "--baseline-seconds", type=float, default=None, help="direct/echo phases (min(15, T/4))"
    )
    parser.add_argument(
        "--hit-limit", type=int, default=20, help="counter__hit calls per second and principal"
    )
    parser.add_argument("--rss-limit-mb", type=float, default=1024.0)
    parser.add_argument("--rss-growth-mb", type=float, default=256.0)
    parser.add_argument("--opa", default=None, help="OPA binary (default: $MCP_BROKER_OPA or install-opa.sh)")
    parser.add_argument("--workdir", type=Path, default=None, help="keep config, trail and logs here")
    parser.add_argument("--json", type=Path, default=None, help="write the numbers here")
    args = parser.parse_args(argv)
    # The sessions call tools without listing them first; the SDK client warns about each such call.
    logging.getLogger("client").setLevel(logging.ERROR)
    options = Options(
        sessions=args.sessions,
        seconds=args.seconds,
        engine=args.engine,
        baseline_seconds=args.baseline_seconds,
        hit_limit=args.hit_limit,
        rss_limit_mb=args.rss_limit_mb,
        rss_growth_mb=args.rss_growth_mb,
        opa=args.opa,
        workdir=args.workdir,
    )
    direct, reports = run(options)
    print(table(direct, reports))
    if args.json:
        args.json.write_text(
            json.dumps(
                {
                    "options": {k: str(v) if isinstance(v, Path) else v for k, v in asdict(options).items()},
                    "machine": " ".join(os.uname()),
                    "cpus": os.cpu_count(),
                    "direct": asdict(direct),
                    "engines": [asdict(r) for r in reports],
                },
                indent=2,
            )
        )
    return 1 if any(r.failures for r in reports) else 0


if __name__ == "__main__":
    sys.exit(main())
