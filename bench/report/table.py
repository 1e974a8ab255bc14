"""The report as Markdown: a header naming the machine and workload, then one row per path."""

from __future__ import annotations

from bench.report.results import PathResult, Report


def latency_cell(path: PathResult, sessions: int) -> str:
    level = path.level(sessions)
    return "-" if level is None else f"{level.p50_ms:.2f} / {level.p99_ms:.2f}"


def rate_cell(path: PathResult, sessions: int, base: PathResult | None) -> str:
    level = path.level(sessions)
    if level is None:
        return "-"
    base_level = base.level(sessions) if base is not None else None
    if base_level is None or base_level.calls_per_s <= 0:
        return f"{level.calls_per_s:.0f}"
    return f"{level.calls_per_s:.0f} ({level.calls_per_s / base_level.calls_per_s:.2f}x)"


def table(report: Report) -> str:
    """One row per path; a path not run (or stopped early) says why in its last column."""
    levels = [b.sessions for b in report.budgets]
    head = ["path"]
    for s in levels:
        noun = "session" if s == 1 else "sessions"
        head += [f"{s} {noun}: p50 / p99 ms", f"{s} {noun}: calls/s (x {report.baseline})"]
    head += ["gateway CPU ms/call", "note"]
    lines = ["| " + " | ".join(head) + " |", "|---|" + "---:|" * (2 * len(levels) + 1) + "---|"]
    base = report.base()
    for path in report.paths:
        cells = [path.name]
        for s in levels:
            cells += [latency_cell(path, s), rate_cell(path, s, base)]
        cpu = path.cpu_ms_per_call()
        cells += ["-" if cpu is None else f"{cpu:.2f}", path.note or ""]
        lines.append("| " + " | ".join(cell.replace("|", "\\|") for cell in cells) + " |")
    return "\n".join(lines)


def document(report: Report, chart_name: str | None) -> str:
    """The whole Markdown file: what ran where, the table, what each path is, the chart."""
    m = report.machine
    load = " / ".join(f"{x:.2f}" for x in m.load_average)
    end = (
        " → " + " / ".join(f"{x:.2f}" for x in report.load_average_end)
        if report.load_average_end is not None
        else ""
    )
    budgets = "; ".join(
        f"S={b.sessions}: ≤{b.calls_per_session} calls a session in ≤{b.seconds:g} s "
        f"after {b.warmup_per_session} warm-up"
        for b in report.budgets
    )
    versions = ", ".join(f"{k} {v}" for k, v in report.versions.items())
    out = [
        f"# Benchmark report {report.stamp}",
        "",
        f"Machine: {m.cores} cores, {m.cpu_model}, {m.system}, Python {m.python}, `mcp` {m.mcp_sdk}; "
        f"load average {load}{end} (1 / 5 / 15 min, at start → end: other work shares the machine).",
        "",
        f"Workload: the official SDK client ({report.era} era) calling `echo` of examples/echo_server.py "
        f"in S concurrent sessions, each a closed loop: {budgets}. Latency is per call; calls/s is all "
        f"sessions together; the ratio is against {report.baseline} of the same run, at the same S. "
        "Gateway CPU is utime + stime of the gateway's processes (OPA sidecar and workers included, "
        "the echo upstream not) per timed call.",
        "",
        f"Versions: {versions}.",
        "",
        table(report),
        "",
    ]
    out += [f"- **{p.name}**: {p.what}" for p in report.paths]
    if chart_name:
        out += ["", f"![p50 latency and throughput per path]({chart_name})"]
    return "\n".join(out) + "\n"
