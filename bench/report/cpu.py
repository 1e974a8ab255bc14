"""CPU time a gateway spends, read from /proc: the figure that transfers between machines.

A gateway may be several processes (ContextForge's workers, the broker's OPA sidecar), so the
whole process tree under the gateway counts, except the upstream echo server it starts (and
that server's own children): the upstream is the same for every path and is not the gateway.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

CLK_TCK = os.sysconf("SC_CLK_TCK")


def process_table(proc: Path = Path("/proc")) -> dict[int, tuple[int, float, str]]:
    """pid → (parent pid, utime + stime in seconds, command line) for every process readable now."""
    table: dict[int, tuple[int, float, str]] = {}
    for entry in proc.iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:  # exited between listing and reading
            continue
        table[int(entry.name)] = (int(fields[1]), (int(fields[11]) + int(fields[12])) / CLK_TCK, cmdline)
    return table


def tree_cpu_seconds(
    root: int, table: dict[int, tuple[int, float, str]], exclude: Callable[[str], bool]
) -> float:
    """utime + stime of `root` and its descendants, skipping any subtree whose command `exclude`s."""
    children: dict[int, list[int]] = {}
    for pid, (ppid, _, _) in table.items():
        children.setdefault(ppid, []).append(pid)
    total = 0.0
    pending = [root]
    while pending:
        pid = pending.pop()
        if pid not in table or (pid != root and exclude(table[pid][2])):
            continue
        total += table[pid][1]
        pending.extend(children.get(pid, []))
    return total


def gateway_cpu(root: int, upstream_marker: str) -> Callable[[], float]:
    """A reader of the gateway's CPU seconds; processes whose command contains the marker are upstream."""

    def read() -> float:
        return tree_cpu_seconds(root, process_table(), lambda cmdline: upstream_marker in cmdline)

    return read
