"""The report as a PNG: per path, p50 latency (p99 as a tick) and throughput, one bar per level.

matplotlib is a bench extra, not a broker dependency: it is imported here, when a chart is drawn,
so the table still comes out on a machine without it (the caller reports the chart as skipped).
"""

from __future__ import annotations

from pathlib import Path

from bench.report.results import Report

COLOURS = ("#4c72b0", "#dd8452", "#55a868", "#c44e52", "#8172b3")


def draw(report: Report, out: Path) -> Path:
    """Two panels side by side, paths on the x axis; a path that did not run is labelled so."""
    import matplotlib

    matplotlib.use("Agg")  # no display: the file is the product
    import matplotlib.pyplot as plt

    levels = [b.sessions for b in report.budgets]
    names = [p.name if p.levels else f"{p.name}\n(not run)" for p in report.paths]
    width = 0.8 / max(1, len(levels))
    fig, (lat, rate) = plt.subplots(1, 2, figsize=(max(10.0, 2.2 * len(names)), 5.5))
    for i, sessions in enumerate(levels):
        xs, p50, p99, cps = [], [], [], []
        for x, path in enumerate(report.paths):
            level = path.level(sessions)
            if level is None:
                continue
            xs.append(x + (i - (len(levels) - 1) / 2) * width)
            p50.append(level.p50_ms)
            p99.append(level.p99_ms)
            cps.append(level.calls_per_s)
        colour = COLOURS[i % len(COLOURS)]
        label = f"{sessions} session" + ("" if sessions == 1 else "s")
        lat.bar(xs, p50, width, color=colour, label=label)
        lat.scatter(xs, p99, marker="_", s=120, color="black", zorder=3)
        rate.bar(xs, cps, width, color=colour, label=label)
    for ax, title, unit in (
        (lat, "latency per call: bar p50, tick p99 (log scale)", "ms"),
        (rate, "throughput, all sessions together", "calls/s"),
    ):
        ax.set_xticks(range(len(names)), names, rotation=30, ha="right", fontsize=8)
        ax.set_title(title, fontsize=10)
        ax.set_ylabel(unit)
        ax.grid(axis="y", alpha=0.3)
        ax.legend(fontsize=8)
    if any(p.levels for p in report.paths):
        from matplotlib.ticker import FuncFormatter, NullFormatter

        lat.set_yscale("log")
        lat.yaxis.set_major_formatter(FuncFormatter(lambda value, _pos: f"{value:g}"))
        lat.yaxis.set_minor_formatter(NullFormatter())
    m = report.machine
    fig.suptitle(
        f"MCP gateways, echo tool, {report.era} era — {m.cores} cores {m.cpu_model}, Python {m.python}, "
        f"{report.stamp}",
        fontsize=10,
    )
    fig.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=110)
    plt.close(fig)
    return out
