"""The benchmark report (bench/report): a tiny real run through its table and chart code.

Real echo processes over stdio, the real report command writing real files; the peers are
pointed at an empty cache so their rows must say why they did not run. No timings are asserted:
only that the numbers are there, consistent, and land in the table, the chart and the JSON.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from mcp import StdioServerParameters

from bench.report import __main__ as report_cli
from bench.report import table
from bench.report.cpu import tree_cpu_seconds
from bench.report.machine import cpu_model, describe
from bench.report.paths import ECHO, PathSpec, Running
from bench.report.results import PathResult, Report
from bench.report.workload import Budget, Endpoint, LevelResult, quantile, run_level

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def echo_stdio() -> Endpoint:
    return Endpoint(StdioServerParameters(command=sys.executable, args=[str(ECHO)]))


def test_a_level_over_real_stdio_sessions_counts_every_timed_call() -> None:
    level = asyncio.run(run_level(echo_stdio(), "legacy", Budget(2, 3, 60.0, 1)))
    assert level.sessions == 2
    assert level.calls == 6  # 2 sessions x 3 calls, warm-up calls not counted
    assert 0 < level.p50_ms <= level.p99_ms
    assert level.calls_per_s == pytest.approx(6 / level.elapsed_s)
    assert level.gateway_cpu_s is None and level.gateway_cpu_ms_per_call is None


def test_quantile_is_by_rank() -> None:
    samples = [float(v) for v in range(1, 101)]
    assert quantile(samples, 0.5) == 51.0
    assert quantile(samples, 0.99) == 100.0
    assert quantile([7.0], 0.99) == 7.0
    with pytest.raises(ValueError, match="no samples"):
        quantile([], 0.5)


def test_gateway_cpu_counts_the_tree_but_not_the_upstream() -> None:
    # pid → (ppid, cpu seconds, cmdline): gateway 10 with a sidecar 11 and the upstream 12 (whose
    # child 13 is upstream too); 20 is some other process.
    procs = {
        10: (1, 1.0, "python -m broker.cli serve"),
        11: (10, 0.5, "opa run --server"),
        12: (10, 4.0, f"python {ECHO}"),
        13: (12, 8.0, "helper"),
        20: (1, 16.0, "unrelated"),
    }
    assert tree_cpu_seconds(10, procs, lambda cmd: str(ECHO) in cmd) == pytest.approx(1.5)
    assert tree_cpu_seconds(99, procs, lambda cmd: False) == 0.0


def test_cpu_model_reads_the_first_model_name() -> None:
    info = "processor\t: 0\nvendor_id\t: X\nmodel name\t: Example CPU 9000\n\nmodel name\t: other\n"
    assert cpu_model(info) == "Example CPU 9000"
    assert cpu_model("processor : 0\n") == "unknown"


def level(sessions: int, p50: float, rate: float, cpu_s: float | None = None) -> LevelResult:
    return LevelResult(sessions, 100, 100 / rate, p50, p50 * 2, rate, cpu_s)


def test_table_has_a_row_per_path_ratios_and_reasons() -> None:
    budgets = [Budget(1, 100, 10, 1), Budget(16, 10, 10, 1)]
    paths = [
        PathResult("direct http", "baseline", [level(1, 3.0, 300.0), level(16, 30.0, 500.0)]),
        PathResult("gw", "a gateway", [level(1, 4.0, 250.0, 0.2), level(16, 40.0, 400.0, 0.1)]),
        PathResult("gw2", "stopped", [level(1, 5.0, 200.0)], note="stopped at 16 sessions: X | Y"),
        PathResult("peer", "missing", note="not run: peer 1.0 not installed"),
    ]
    report = Report("20260101-000000", describe(), "legacy", budgets, {"x": "1"}, paths)
    rows = table.table(report).splitlines()
    assert len(rows) == 2 + len(paths)
    assert "16 sessions: calls/s (x direct http)" in rows[0]
    assert rows[1].count("|") == rows[0].count("|")
    base, gw, gw2, peer = rows[2:]
    assert "| 3.00 / 6.00 | 300 (1.00x) |" in base
    assert "| 40.00 / 80.00 | 400 (0.80x) |" in gw
    assert "| 1.50 |" in gw  # (0.2 + 0.1) s over 200 timed calls
    assert "stopped at 16 sessions: X \\| Y" in gw2  # a reason cannot break the table
    assert peer.startswith("| peer | - | - | - | - | - | not run: peer 1.0 not installed |")
    doc = table.document(report, "chart.png")
    assert f"Machine: {report.machine.cores} cores, {report.machine.cpu_model}" in doc
    assert "![p50 latency and throughput per path](chart.png)" in doc


def test_the_report_command_on_a_tiny_run(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "empty-cache"))  # no peer installed here
    out = tmp_path / "results"
    md = report_cli.main(
        ["--sessions", "1,2", "--calls", "4,2", "--seconds", "60", "--warmup", "1",
         "--only", "direct stdio", "mcp-proxy", "ContextForge", "--out", str(out)]
    )  # fmt: skip
    text = md.read_text()
    rows = [line for line in text.splitlines() if line.startswith("| ")]
    assert [r.split(" | ")[0] for r in rows[1:]] == [
        "| direct stdio",
        "| mcp-proxy 0.13.0 → stdio",
        "| ContextForge 1.1.0 → translate → stdio",
        "| ContextForge 1.1.0 → http",
    ]
    assert "not run: mcp-proxy 0.13.0 not installed (run scripts/install-peers.sh)" in rows[2]
    assert "not run: contextforge 1.1.0 not installed" in rows[3]
    assert "cores" in text and "Python" in text and "load average" in text
    png = md.with_suffix(".png")
    assert png.read_bytes()[:8] == PNG_MAGIC
    assert f"]({png.name})" in text
    data = json.loads(md.with_suffix(".json").read_text())
    stdio = data["paths"][0]
    assert [lv["calls"] for lv in stdio["levels"]] == [4, 4]
    assert stdio["note"] is None


def test_a_path_that_fails_to_start_is_reported_not_dropped(tmp_path: Path) -> None:
    @contextlib.contextmanager
    def broken(tmp: Path) -> Iterator[Running]:
        raise RuntimeError("exited with 1: port in use")
        yield Running(echo_stdio())  # unreachable: makes this a generator

    spec = PathSpec("broken gw", "cannot start", broken)
    result = asyncio.run(report_cli.measure_path(spec, [Budget(1, 2, 10, 1)], "legacy", tmp_path))
    assert result.levels == []
    assert result.note == "not run: failed to start: RuntimeError: exited with 1: port in use"
