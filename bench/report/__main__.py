"""Benchmark report (issue #10): direct paths, the broker and peer gateways, one workload, one run.

    python -m bench.report [--sessions 1,16,64] [--calls 400,40,15] [--seconds 20]
                           [--only NAME ...] [--no-peers] [--no-chart] [--out DIR]

Paths, in this order: direct stdio, direct http, broker[cedar] → stdio, broker[opa] → stdio
(audit on, fsync: the defaults), then the peers installed by scripts/install-peers.sh
(mcp-proxy, IBM ContextForge); a peer that cannot run here gets a row saying why.
At each level S sessions run closed loops of `echo` calls, bounded in calls (per session) and
seconds. Writes bench/results/report-<stamp>.{md,png,json} and prints the table.
"""

from __future__ import annotations

import argparse
import asyncio
import importlib.metadata
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bench import run as bench_run
from bench.peers import CONTEXTFORGE_VERSION, MCP_PROXY_VERSION, peer_paths
from bench.report import chart, table
from bench.report.machine import describe
from bench.report.paths import PathSpec, own_paths
from bench.report.results import PathResult, Report
from bench.report.workload import Budget, run_level

ROOT = Path(__file__).resolve().parents[2]
RESULTS = ROOT / "bench" / "results"


def budgets(sessions: list[int], calls: list[int], seconds: float, warmup: int) -> list[Budget]:
    """One budget per level; a single session warms up longer (it is the sequential figure)."""
    if len(calls) != len(sessions):
        raise SystemExit(f"--calls needs one count per level ({len(sessions)}), got {len(calls)}")
    return [Budget(s, c, seconds, warmup if s == 1 else 1) for s, c in zip(sessions, calls, strict=True)]


async def measure_path(spec: PathSpec, levels: list[Budget], era: str, tmp: Path) -> PathResult:
    """All levels of one path under one start of it; any failure becomes the row's note."""
    result = PathResult(spec.name, spec.what)
    if spec.unavailable:
        result.note = f"not run: {spec.unavailable}"
        print(f"  {spec.name:<40} {result.note}", flush=True)
        return result
    try:
        with spec.start(tmp) as running:
            for budget in levels:
                try:
                    level = await run_level(running.endpoint, era, budget, running.cpu)
                except Exception as exc:
                    result.note = f"stopped at {budget.sessions} sessions: {one_line(exc)}"
                    break
                result.levels.append(level)
                cpu = level.gateway_cpu_ms_per_call
                print(
                    f"  {spec.name:<40} S={budget.sessions:<3} {level.calls:5d} calls  "
                    f"p50 {level.p50_ms:7.2f} ms  p99 {level.p99_ms:7.2f} ms  "
                    f"{level.calls_per_s:6.0f} calls/s"
                    + (f"  gateway CPU {cpu:.2f} ms/call" if cpu is not None else ""),
                    flush=True,
                )
    except Exception as exc:
        if not result.levels:
            result.note = f"not run: failed to start: {one_line(exc)}"
        elif result.note is None:
            result.note = f"stopped: {one_line(exc)}"
    if result.note:
        print(f"  {spec.name:<40} {result.note}", flush=True)
    return result


def one_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split()) or type(exc).__name__
    return f"{type(exc).__name__}: {text}"[:240]


def versions(with_opa: bool) -> dict[str, str]:
    """Versions of what was measured; OPA's only when an OPA path ran (asking may build it)."""
    found = {
        "mcp-authz-broker": importlib.metadata.version("mcp-authz-broker"),
        "cedarpy": importlib.metadata.version("cedarpy"),
    }
    if with_opa:
        found["OPA"] = "?"
        try:
            out = subprocess.run(
                [bench_run.opa_binary(), "version"], capture_output=True, text=True, timeout=60
            )
            lines = [ln for ln in out.stdout.splitlines() if ln.startswith("Version")]
            found["OPA"] = lines[0].split(":", 1)[1].strip() if lines else "?"
        except (OSError, subprocess.SubprocessError):
            pass
    found["mcp-proxy"] = MCP_PROXY_VERSION
    found["ContextForge"] = CONTEXTFORGE_VERSION
    return found


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m bench.report",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--sessions", default="1,16,64", help="concurrency levels (default 1,16,64)")
    parser.add_argument("--calls", default="400,40,15", help="calls per session at each level")
    parser.add_argument("--seconds", type=float, default=20.0, help="time cap of each level's timed loop")
    parser.add_argument("--warmup", type=int, default=30, help="warm-up calls at 1 session (1 each above)")
    parser.add_argument("--era", choices=["legacy", "auto"], default="legacy")
    parser.add_argument("--only", nargs="*", help="only paths whose name starts with one of these")
    parser.add_argument("--no-peers", action="store_true", help="leave the peer gateways out")
    parser.add_argument("--no-chart", action="store_true", help="table only (no matplotlib needed)")
    parser.add_argument("--out", type=Path, default=RESULTS, help="where report-<stamp>.* go")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> Path:
    args = parse_args(argv)
    levels = budgets(
        [int(s) for s in args.sessions.split(",")], [int(c) for c in args.calls.split(",")], args.seconds,
        args.warmup,
    )  # fmt: skip
    specs = own_paths() + ([] if args.no_peers else peer_paths())
    if args.only:
        specs = [s for s in specs if any(s.name.startswith(prefix) for prefix in args.only)]
    stamp = time.strftime("%Y%m%d-%H%M%S")
    machine = describe()
    print(f"report {stamp}: {machine.cores} cores, {machine.cpu_model}, Python {machine.python}", flush=True)
    results: list[PathResult] = []
    with tempfile.TemporaryDirectory(prefix="bench-report-") as tmp:
        for spec in specs:
            results.append(asyncio.run(measure_path(spec, levels, args.era, Path(tmp))))
    report = Report(
        stamp,
        machine,
        args.era,
        levels,
        versions(any("opa" in r.name and r.levels for r in results)),
        results,
        load_average_end=os.getloadavg(),
    )
    out: Path = args.out
    out.mkdir(parents=True, exist_ok=True)
    md = out / f"report-{stamp}.md"
    png_name: str | None = None
    if not args.no_chart:
        try:
            png_name = chart.draw(report, out / f"report-{stamp}.png").name
        except ImportError as exc:
            print(f"chart skipped: {exc} (pip install -e '.[bench]')", file=sys.stderr)
    md.write_text(table.document(report, png_name))
    (out / f"report-{stamp}.json").write_text(json.dumps(report.to_json(), indent=2, default=str))
    print()
    print(table.table(report))
    print(f"\n{md}" + (f"\n{out / png_name}" if png_name else ""))
    return md


if __name__ == "__main__":
    main()
