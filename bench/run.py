"""Benchmark: the broker against direct calls to the same echo upstream, in one run.

Paths measured (each with the official SDK client, in the protocol era chosen):
  direct stdio             client ─stdio─▶ echo
  direct http              client ─HTTP─▶ echo (Streamable HTTP)
  broker[cedar] → stdio    client ─HTTP─▶ broker (embedded Cedar) ─stdio─▶ echo
  broker[opa] → stdio      client ─HTTP─▶ broker (OPA sidecar) ─stdio─▶ echo
  broker[cedar] → http     client ─HTTP─▶ broker (embedded Cedar) ─HTTP─▶ echo

Every broker path decides every call with the repository's policies (policies/): the
caller is an engineer, echo is read-only, so calls are allowed after a real decision.

For each: sequential p50/p99 over N calls after a warm-up, throughput with S concurrent
sessions, and for broker paths the broker's CPU time per forwarded call (utime+stime
from /proc, the upstream child not counted). Ratios are against direct http of the
same run: absolute numbers move with the machine, ratios transfer.

    python bench/run.py [--calls 1000] [--sessions 16] [--per-session 200] [--era legacy|auto|both]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from mcp import Client, StdioServerParameters

ROOT = Path(__file__).resolve().parents[1]
ECHO = ROOT / "examples" / "echo_server.py"
RESULTS = ROOT / "bench" / "results"
CLK_TCK = os.sysconf("SC_CLK_TCK")


@dataclass
class Row:
    path: str
    era: str
    seq_p50_ms: float
    seq_p99_ms: float
    calls_per_s: float
    broker_cpu_ms_per_call: float | None = None
    added_p50_ms: float | None = None
    throughput_ratio: float | None = None


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def wait_for_file(path: Path, proc: subprocess.Popen[bytes], timeout: float = 30.0) -> str:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if path.exists() and path.read_text().strip():
            return path.read_text().strip()
        if proc.poll() is not None:
            raise RuntimeError(f"process {proc.args!r} exited with {proc.returncode}")
        time.sleep(0.05)
    raise TimeoutError(f"{path} did not appear within {timeout}s")


def stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


@contextlib.contextmanager
def echo_http(tmp: Path) -> Any:
    port_file = tmp / "echo.url"
    port_file.unlink(missing_ok=True)  # a file left by an earlier run would name a dead server
    proc = subprocess.Popen(
        [sys.executable, str(ECHO), "--transport", "http", "--port", "0", "--port-file", str(port_file)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        yield wait_for_file(port_file, proc)
    finally:
        stop(proc)


def opa_binary() -> str:
    done = subprocess.run(
        [str(ROOT / "scripts" / "install-opa.sh")], capture_output=True, text=True, check=True
    )
    return done.stdout.strip().splitlines()[-1]


@contextlib.contextmanager
def broker(tmp: Path, upstream: str, name: str, engine: str, extra: str = "") -> Any:
    if upstream.startswith("http"):
        block = f"    transport: streamable_http\n    url: {upstream}\n"
    else:
        block = f"    transport: stdio\n    command: {sys.executable}\n    args: [{str(ECHO)!r}]\n"
    opa = f"  opa: {{binary: {opa_binary()!r}}}\n" if engine == "opa" else ""
    config = tmp / f"{name}.yaml"
    config.write_text(
        "http:\n  port: 0\nlogging:\n  level: warning\n"
        f"policy:\n  engine: {engine}\n  path: {str(ROOT / 'policies')!r}\n  watch: false\n{opa}"
        "identity:\n  default_principal: {type: User, id: bench, roles: [engineer]}\n"
        + audit_section(tmp / f"{name}-audit", extra)
        + "upstreams:\n  echo:\n"
        + block
        + "    namespace: false\n    timeouts: {ping_interval: 0}\n"
    )
    ready = tmp / f"{name}.url"
    ready.unlink(missing_ok=True)
    proc = subprocess.Popen(
        [sys.executable, "-m", "broker.cli", "serve", "-c", str(config), "--ready-file", str(ready)],
        cwd=ROOT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        yield wait_for_file(ready, proc), proc.pid
    finally:
        stop(proc)


Target = str | StdioServerParameters


@contextlib.asynccontextmanager
async def client(target: Target, era: str) -> AsyncIterator[Client]:
    async with Client(target, mode=era) as c:  # type: ignore[arg-type]
        yield c


async def sequential(target: Target, era: str, calls: int, warmup: int) -> list[float]:
    async with client(target, era) as c:
        for _ in range(warmup):
            await c.call_tool("echo", {"text": "warm"})
        samples = []
        for i in range(calls):
            t0 = time.perf_counter()
            result = await c.call_tool("echo", {"text": f"m{i}"})
            samples.append((time.perf_counter() - t0) * 1000)
            if result.is_error:
                raise RuntimeError(f"echo failed: {result}")
    return samples


async def concurrent(target: Target, era: str, sessions: int, per_session: int) -> float:
    stack = contextlib.AsyncExitStack()
    async with stack:
        clients = [await stack.enter_async_context(client(target, era)) for _ in range(sessions)]
        for c in clients:
            await c.call_tool("echo", {"text": "warm"})

        async def run(c: Client) -> None:
            for i in range(per_session):
                await c.call_tool("echo", {"text": f"c{i}"})

        t0 = time.perf_counter()
        await asyncio.gather(*(run(c) for c in clients))
        elapsed = time.perf_counter() - t0
    return sessions * per_session / elapsed


def quantile(samples: list[float], q: float) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


async def measure(
    path: str, target: Target, era: str, args: argparse.Namespace, cpu: Callable[[], float] | None
) -> Row:
    samples = await sequential(target, era, args.calls, args.warmup)
    cpu_before = cpu() if cpu else 0.0
    rate = await concurrent(target, era, args.sessions, args.per_session)
    cpu_ms = None
    if cpu is not None:
        forwarded = args.sessions * (args.per_session + 1)
        cpu_ms = (cpu() - cpu_before) * 1000 / forwarded
    row = Row(path, era, statistics.median(samples), quantile(samples, 0.99), rate, cpu_ms)
    print(
        f"  {path:<22} {era:<7} p50 {row.seq_p50_ms:6.2f} ms  p99 {row.seq_p99_ms:6.2f} ms  "
        f"{rate:7.0f} calls/s" + (f"  broker CPU {cpu_ms:.2f} ms/call" if cpu_ms is not None else ""),
        flush=True,
    )
    return row


async def run_era(era: str, args: argparse.Namespace, tmp: Path) -> list[Row]:
    rows = []
    stdio = StdioServerParameters(command=sys.executable, args=[str(ECHO)])
    rows.append(await measure("direct stdio", stdio, era, args, None))
    with echo_http(tmp) as url:
        rows.append(await measure("direct http", url, era, args, None))
        for engine in ("cedar", "opa"):
            with broker(tmp, "stdio", f"b-stdio-{engine}-{era}", engine) as (broker_url, pid):
                path = f"broker[{engine}] → stdio"
                rows.append(await measure(path, broker_url, era, args, lambda pid=pid: cpu_seconds(pid)))
        with broker(tmp, url, f"b-http-{era}", "cedar") as (broker_url, pid):
            rows.append(
                await measure("broker[cedar] → http", broker_url, era, args, lambda: cpu_seconds(pid))
            )
        if args.telemetry:
            rows += await telemetry_rows(era, args, tmp)
    base = next(r for r in rows if r.path == "direct http")
    for row in rows:
        row.added_p50_ms = row.seq_p50_ms - base.seq_p50_ms
        row.throughput_ratio = row.calls_per_s / base.calls_per_s
    return rows


def audit_section(directory: Path, extra: str) -> str:
    """The trail in the run's temporary directory (fsync, the default), unless `extra` sets `audit:`."""
    if extra.startswith("audit:"):
        return extra.replace("{audit_dir}", repr(str(directory)))
    return f"audit: {{directory: {str(directory)!r}}}\n" + extra


TELEMETRY_VARIANTS = {
    "broker[cedar] audit off": "audit: {enabled: false}\n",
    "broker[cedar] audit write": "audit: {directory: {audit_dir}, durability: write}\n",
    "broker[cedar] tracing on": "tracing: {enabled: true, endpoint: '{collector}'}\n",
}
"""Each against `broker[cedar] → stdio` (audit fsync, tracing off: the defaults) of the same run."""


async def telemetry_rows(era: str, args: argparse.Namespace, tmp: Path) -> list[Row]:
    rows = []
    with collector() as url:
        for path, extra in TELEMETRY_VARIANTS.items():
            name = "b-" + path.split("] ")[1].replace(" ", "-") + f"-{era}"
            extra = extra.replace("{collector}", f"{url}/v1/traces")
            with broker(tmp, "stdio", name, "cedar", extra) as (broker_url, pid):
                rows.append(await measure(path, broker_url, era, args, lambda pid=pid: cpu_seconds(pid)))
    return rows


@contextlib.contextmanager
def collector() -> Any:
    """An OTLP/HTTP trace endpoint on 127.0.0.1 that accepts and drops what it is sent."""
    import threading

    import uvicorn

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return
        while (await receive()).get("more_body"):
            pass
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b""})

    import socket

    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", lifespan="off"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    while not server.started:
        time.sleep(0.01)
    try:
        yield f"http://127.0.0.1:{sock.getsockname()[1]}"
    finally:
        server.should_exit = True
        thread.join(10)
        sock.close()


def table(rows: list[Row]) -> str:
    lines = [
        "| path | era | seq p50 ms | seq p99 ms | added p50 vs direct http "
        "| calls/s (16 sessions) | x direct http | broker CPU ms/call |",
        "|---|---|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        cpu = f"{r.broker_cpu_ms_per_call:.2f}" if r.broker_cpu_ms_per_call is not None else "-"
        lines.append(
            f"| {r.path} | {r.era} | {r.seq_p50_ms:.2f} | {r.seq_p99_ms:.2f} | {r.added_p50_ms:+.2f} | "
            f"{r.calls_per_s:.0f} | {r.throughput_ratio:.2f} | {cpu} |"
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--calls", type=int, default=1000)
    parser.add_argument("--warmup", type=int, default=100)
    parser.add_argument("--sessions", type=int, default=16)
    parser.add_argument("--per-session", type=int, default=200)
    parser.add_argument("--era", choices=["legacy", "auto", "both"], default="both")
    parser.add_argument(
        "--telemetry",
        action="store_true",
        help="also audit off / write-only and tracing on (vs the defaults)",
    )
    args = parser.parse_args()
    eras = ["legacy", "auto"] if args.era == "both" else [args.era]
    rows: list[Row] = []
    with tempfile.TemporaryDirectory() as tmp:
        for era in eras:
            print(f"era {era} (legacy = 2025-11-25 handshake, auto = 2026-07-28):", flush=True)
            rows += asyncio.run(run_era(era, args, Path(tmp)))
    report = table(rows)
    print()
    print(report)
    RESULTS.mkdir(parents=True, exist_ok=True)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    (RESULTS / f"run-{stamp}.json").write_text(
        json.dumps(
            {
                "args": vars(args),
                "machine": " ".join(os.uname()),
                "cpus": os.cpu_count(),
                "rows": [asdict(r) for r in rows],
            },
            indent=2,
        )
    )
    (RESULTS / f"run-{stamp}.md").write_text(report + "\n")


if __name__ == "__main__":
    main()
